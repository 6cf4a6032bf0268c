"""Gangs: start an owner on all of its hosts at once, wait until it is ready, relink its decoders."""
from __future__ import annotations

import json
import time
from typing import Any, Mapping

from ..core.errors import LauncherError
from ..core.graph import relink_after
from ..core.probes import READY_TIMEOUT, probe_specs
from .records import HostState
from .remote import HostClient
from .session import Session


def alive_anywhere(owner: str, hosts: list[str], states: Mapping[str, HostState]) -> bool:
    """Any program of ``owner`` runs on any of ``hosts`` (as ``states`` found them)."""
    return any(states[h].alive(owner) for h in hosts)


def gang_start(session: Session, owner: str, hosts: list[str]) -> float:
    """Stop the owner's programs everywhere, then start them on all hosts at once; returns the skew (s)."""
    session.each(f"stop {owner}", lambda c: c.call("stop", owner), hosts)
    started = session.each(f"start {owner}", lambda c: c.call("start", owner), hosts)
    times = [r["started_at"] for r in started.values()]
    return max(times) - min(times) if times else 0.0


def wait_ready(session: Session, instance: str, hosts: list[str], timeout: float) -> str | None:
    """None when the instance is ready on every host, else why not."""
    def one(c: HostClient) -> dict[str, Any]:
        specs = probe_specs(session.plan, instance, c.name)
        if not specs:  # no probe: ready once its programs run
            time.sleep(1.0)
            st = c.state(timeout=30)
            bad = [p.name for p in st.of(instance) if p.state != "RUNNING"]
            return {"ready": not bad, "probes": [{"probe": "running", "error": f"not running: {bad}" if bad else None}]}
        return c.call("probe", str(timeout), stdin=json.dumps([s.to_json() for s in specs]).encode(),
                      timeout=timeout + 60)
    replies = session.each(f"probe {instance}", one, hosts)
    bad = [f"{h}: {p['probe']}: {p['error']}" for h, r in replies.items() for p in r["probes"] if p["error"]]
    return None if all(r["ready"] for r in replies.values()) else "; ".join(bad)


def relink_decoders(session: Session, restarted: list[str], owners: dict[str, list[str]],
                    ready_timeout: float = READY_TIMEOUT) -> list[str]:
    """LLM-DataDist: once the restarted prompt instances listen again (their readiness probe),
    gang-restart every decoder instance linked to them, so it links again; returns those.

    Raises LauncherError when a prompt does not become ready: its decoders are left as they are."""
    decoders = relink_after(session.plan.links, restarted)
    if not decoders:
        return []
    prompts = [p for p in restarted if relink_after(session.plan.links, [p])]
    for p in prompts:
        why = wait_ready(session, p, owners[p], ready_timeout)
        if why:
            raise LauncherError(f"{p} was restarted but does not listen ({why}); its decoders "
                                f"{', '.join(decoders)} were not restarted and cannot link to it")
    for d in decoders:
        gang_start(session, d, owners[d])
    session.progress(f"  relinked {', '.join(decoders)}: restarted after {', '.join(prompts)} listened again "
                     "(an LLM-DataDist link does not survive the prompt's restart)")
    return decoders
