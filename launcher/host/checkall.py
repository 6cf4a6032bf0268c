"""`check` on this host in one call: every link checker run, every TCP target and the container check at once.

The operator's `check` sends one JSON document per host (stdin)::

    {"links": [{"args": [HCCN_TOOL, DCMI_LIB], "spec": {...}}, ...],  # one per (instance, host) of the plan
     "tcp": ["ADDR:PORT", ...], "containers": [spec, ...] or null}

and gets the parts back in the same shape: ``links`` the checker replies in order (as `linkcheck`
answers), ``tcp`` as `tcpcheck`, ``containers`` as `containercheck`. A part that raised is
``{"error": ...}`` in its place: one broken part never hides the others' findings. The parts run
in threads (each waits on a subprocess or a socket), so the host's time is its slowest part's.
"""
from __future__ import annotations

import json

from . import upload
from .container import check as container_check
from .linkcheck import run_linkcheck
from .probes import tcp_reach

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Callable


def _guarded(fn: Callable[[], Any]) -> Any:
    try:
        return fn()
    except Exception as exc:  # the reply names it; the other parts still report
        return {"error": f"{type(exc).__name__}: {exc}"}


def act_check(root: str, args: list[str]) -> dict:
    """Run every part of the document on stdin concurrently; one reply with all of them."""
    from concurrent.futures import ThreadPoolExecutor
    doc = json.loads(upload.read_stdin() or b"{}")
    links = doc.get("links") or []

    def linkcheck(link: dict) -> Callable[[], Any]:
        return lambda: run_linkcheck(root, list(link["args"]), json.dumps(link["spec"]).encode())
    jobs = [linkcheck(link) for link in links]
    jobs.append(lambda: {"tcp": tcp_reach(list(doc.get("tcp") or []))})
    containers = doc.get("containers")
    if containers:
        jobs.append(lambda: container_check(containers))
    with ThreadPoolExecutor(max_workers=len(jobs)) as pool:
        done = list(pool.map(_guarded, jobs))
    out: dict[str, Any] = {"links": done[:len(links)], "tcp": done[len(links)]}
    if containers:
        out["containers"] = done[-1]
    return out
