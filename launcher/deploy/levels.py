"""Phase 4 of `up`: start what changed, dependency level by dependency level.

- An owner (instance or service) starts only when every owner it depends on passes its
  readiness probe, whether that one was restarted in this `up` or has been running for days.
  One that cannot start is recorded on its hosts as waiting (status shows on what), and what
  runs of it keeps running: nothing is taken down for a change that cannot be applied yet.
- Owners not running anywhere start at once, each as a gang.
- Owners that run and changed are restarted by strategy: `rolling` K at a time, each ready
  before the next, stopping at the first that is not; `all` every one at once. `auto` rolls
  when any of them has a readiness probe (it serves traffic), else restarts all.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Mapping

from ..core.errors import LauncherError
from .gang import alive_anywhere, gang_start, wait_ready
from .records import HostState
from .session import Progress, Session

STRATEGIES = ("auto", "rolling", "all")


@dataclass
class LevelRun:
    started: list[str] = field(default_factory=list)
    not_ready: dict[str, str] = field(default_factory=dict)      # dependency -> why it is not ready
    waiting: dict[str, list[str]] = field(default_factory=dict)  # owner -> dependencies it waits for
    roll_failed: tuple[str, str] | None = None                   # (owner, why) that stopped a roll
    untouched: list[str] = field(default_factory=list)           # left as they were after a stopped roll
    unready: dict[str, str] = field(default_factory=dict)        # started, has a probe, never passed it

    def raise_if_incomplete(self) -> None:
        lines: list[str] = []
        for dep, why in self.not_ready.items():
            waiters = self._waiters_of(dep)
            if waiters:
                lines.append(f"{dep} did not become ready ({why}); not started, as they wait for it: "
                             f"{', '.join(waiters)}")
        if self.roll_failed:
            owner, why = self.roll_failed
            lines.append(f"rolling update stopped: {owner} did not become ready ({why}); "
                         f"untouched (still on their previous config): {', '.join(self.untouched) or 'none'}")
        for owner, why in self.unready.items():
            lines.append(f"{owner} was started but did not become ready ({why})")
        if lines:
            raise LauncherError("\n".join(lines))

    def _waiters_of(self, dep: str) -> list[str]:
        """Everything held back by ``dep``: directly, or through another owner that waits."""
        held = {dep}
        grew = True
        while grew:
            more = {o for o, deps in self.waiting.items() if held & set(deps)} - held
            held |= more
            grew = bool(more)
        return [o for o in self.waiting if o in held]


def _has_probe(session: Session, owner: str) -> bool:
    return any(p.probe is not None for hp in session.plan.hosts for p in hp.programs if p.owner == owner)


def resolve_strategy(session: Session, strategy: str, warm: list[str]) -> str:
    if strategy not in STRATEGIES:
        raise LauncherError(f"unknown strategy {strategy!r}; one of {', '.join(STRATEGIES)}")
    if strategy != "auto":
        return strategy
    return "rolling" if any(_has_probe(session, o) for o in warm) else "all"


def start_levels(session: Session, rest: list[str], owners: dict[str, list[str]], old: Mapping[str, HostState], *,
                 generation: str, strategy: str, max_unavailable: int, ready_timeout: float,
                 not_ready: dict[str, str], skew: dict[str, float], say: Progress,
                 started_first: tuple[str, ...] = ()) -> LevelRun:
    """Start ``rest`` (owners to (re)start, in any order) by levels; see the module doc."""
    if max_unavailable < 1:
        raise LauncherError("--max-unavailable must be at least 1")
    plan = session.plan
    run = LevelRun(not_ready=dict(not_ready))
    ready: set[str] = set()
    pending = [o for level in plan.levels for o in level if o in rest]

    def probe(owner: str) -> str | None:
        """Wait until ``owner`` passes its probe; None when it did, else why not."""
        why = wait_ready(session, owner, owners[owner], ready_timeout)
        say(f"  {owner} is NOT ready: {why}" if why else f"  {owner} is ready")
        if not why:
            ready.add(owner)
        return why

    def blockers(owner: str) -> list[str]:
        out: list[str] = []
        for dep in plan.depends.get(owner, ()):
            if dep not in owners:
                continue
            if dep not in ready and dep not in run.waiting and dep not in run.untouched \
                    and dep not in run.not_ready and (why := probe(dep)):
                run.not_ready[dep] = why
            if dep not in ready:
                out.append(dep)
        return out

    def where() -> str:
        left = [o for o in pending if o not in run.started]
        return (f"every host is on generation {generation}; restarted: {', '.join(run.started) or 'none'}; "
                f"not yet (still on their previous config or stopped): {', '.join(left) or 'none'}; "
                "`launcher up` again finishes it")

    def restart(owner: str) -> None:
        try:
            skew[owner] = gang_start(session, owner, owners[owner])
        except LauncherError as exc:  # a host lost (sshd gone): say where every owner was left
            left = [o for o in pending if o not in run.started and o != owner]
            raise LauncherError(f"{exc}\nevery host is on generation {generation}; restarted: "
                                f"{', '.join(run.started) or 'none'}; not restarted (still on their previous "
                                f"config, or not started): {', '.join(left) or 'none'}") from exc
        run.started.append(owner)

    for level in plan.levels:
        batch = [o for o in level if o in rest]
        if not batch:
            continue
        if run.roll_failed:
            run.untouched.extend(batch)
            continue
        go: list[str] = []
        for owner in batch:
            deps = blockers(owner)
            if deps:
                run.waiting[owner] = deps
            else:
                go.append(owner)
        _record_waiting(session, {o: run.waiting[o] for o in batch if o in run.waiting}, owners, run.not_ready)
        cold = [o for o in go if not alive_anywhere(o, owners[o], old)]
        warm = [o for o in go if o not in cold]
        for owner in cold:
            session.interrupt.check(where())
            restart(owner)
        if cold:
            say(f"  [4/4] started {', '.join(f'{o} (skew {skew[o] * 1000:.0f} ms)' for o in cold)}")
        if not warm:
            continue
        how = resolve_strategy(session, strategy, warm)
        step = max_unavailable if how == "rolling" else len(warm)
        if how == "rolling":
            say(f"  rolling restart of {', '.join(warm)}: at most {max_unavailable} down, each ready before the next")
        for i in range(0, len(warm), step):
            session.interrupt.check(where())
            group = warm[i:i + step]
            for owner in group:
                restart(owner)
            say(f"  [4/4] restarted {', '.join(f'{o} (skew {skew[o] * 1000:.0f} ms)' for o in group)}")
            if how != "rolling":
                continue
            for owner in group:
                why = probe(owner)
                if why:
                    run.roll_failed = (owner, why)
                    run.untouched.extend(warm[i + step:])
                    say(f"  the roll stops at {owner}")
                    break
            if run.roll_failed:
                break
    # what nothing waits for is checked too, where it has a probe: `up` ends when it is ready
    for owner in [*started_first, *run.started]:
        checked = ready | set(run.not_ready) | {run.roll_failed[0] if run.roll_failed else ""}
        if owner not in checked and _has_probe(session, owner) and (why := probe(owner)):
            run.unready[owner] = why
    return run


def _record_waiting(session: Session, waiting: dict[str, list[str]], owners: dict[str, list[str]],
                    not_ready: dict[str, str]) -> None:
    """Tell the hosts of each waiting owner what it waits for, so `status` can say so."""
    if not waiting:
        return
    per_host: dict[str, dict[str, dict[str, Any]]] = {}
    for owner, deps in waiting.items():
        reason = "; ".join(f"{d} not ready: {not_ready[d]}" if d in not_ready else f"{d} waits itself"
                           for d in deps)
        for h in owners[owner]:
            per_host.setdefault(h, {})[owner] = {"on": deps, "reason": reason}
    session.each("record what waits", lambda c: c.call("wait", stdin=json.dumps(per_host[c.name]).encode()),
                 list(per_host))
