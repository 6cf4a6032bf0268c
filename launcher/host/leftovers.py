"""Stop what outlived a program (proctree.py finds it): its processes, its container, its ranks in one.

Called before every start and after every stop (the agent, host actions, supervisord's start), so
a restart never meets a port or device its own leftovers hold.
"""
from __future__ import annotations

from .container_exec import leftovers_inside
from .engine import remove_leftovers
from .proctree import GRACE, find_leftovers, terminate

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (type checkers know the name)
if TYPE_CHECKING:
    from typing import Callable


def stop_leftovers(root: str, groups: list[str] | None = None, programs: list[str] | None = None,
                   grace: float = GRACE) -> dict:
    """Find and stop the leftovers of ``groups`` / ``programs`` (see find_leftovers), and the
    containers a runner killed without its cleanup left of them, and the ranks such a runner left
    running in an instance's container (container_exec.py); {"stopped": [...], "survivors":
    [pids], "containers": [...]}, all empty when there was nothing (the usual case)."""
    found = find_leftovers(root, groups, programs)
    removed = remove_leftovers(root, groups, programs)  # first: its engine client then ends
    found += leftovers_inside(root, groups, programs)  # a rank its killed runner left in its container
    survivors = terminate(found, grace) if found else []
    return {"stopped": found, "survivors": survivors, "containers": removed}


def describe(done: dict) -> str:
    """One log line for a stop_leftovers result ('' when it found nothing)."""
    if not done["stopped"] and not done["containers"]:
        return ""
    by: dict[str, list[str]] = {}
    for p in done["stopped"]:
        by.setdefault(p["name"] or p["group"] or "?", []).append(str(p["pid"]))
    parts = [f"{name} (pids {', '.join(pids)})" for name, pids in sorted(by.items())]
    parts += [f"container {c['name']} of {c['program']}" for c in done["containers"]]
    line = "stopped what outlived its program: " + "; ".join(parts)
    if done["survivors"]:
        line += f"; still alive after SIGKILL: {', '.join(map(str, done['survivors']))}"
    return line


def stop_logged(root: str, groups: list[str] | None, programs: list[str] | None, log: Callable[[str], None],
                then: Callable[[], object] | None = None) -> None:
    """stop_leftovers for the agent: logged, never raised (a failure here must not fail the stop
    or start around it); then ``then()`` (the agent's failure reports, once the leftovers are gone)."""
    what = ", ".join([*(groups or ()), *(programs or ())])
    try:
        if line := describe(stop_leftovers(root, groups, programs)):
            log(f"{what}: {line}")
            from .events import note  # here: events imports this module's neighbours, not the reverse
            note(root, "leftovers", f"{what}: {line}")
    except Exception as exc:
        log(f"{what}: could not stop what it left running: {exc}")
    if then is not None:
        then()
