"""Gangs: start an owner on all of its hosts at once, wait until it is ready, relink its decoders."""
from __future__ import annotations

import json
import time
from typing import Any, Mapping

from ..core.errors import LauncherError
from ..core.graph import relink_after, restart_after
from ..core.defaults import READY_TIMEOUT
from ..core.probes import probe_specs
from .readiness import exit_text
from .records import HostState
from .remote import HostClient
from .session import Session
from .transport import HostsFailed

GANG_START_TIMEOUT = 200.0  # s: the agents' wait for a member's agent to listen, then its start


def alive_anywhere(owner: str, hosts: list[str], states: Mapping[str, HostState]) -> bool:
    """Any program of ``owner`` runs on any of ``hosts`` (as ``states`` found them)."""
    return any(states[h].alive(owner) for h in hosts)


def gang_start(session: Session, owner: str, hosts: list[str]) -> float:
    """Stop the owner's programs everywhere, then start them on all hosts at once; returns the skew (s).

    If either step fails on a host, the owner is handed to its agents (see ``restore``) rather
    than left down, and the error says so."""
    _, failed = session.fan_out(lambda c: c.call("stop", owner), hosts)
    if failed:
        raise LauncherError(f"{HostsFailed(failed, f'stop {owner}')}\n{restore(session, owner, hosts, failed)}")
    started, failed = session.fan_out(lambda c: c.call("start", owner), hosts)
    if failed:
        raise LauncherError(f"{HostsFailed(failed, f'start {owner}')}\n{restore(session, owner, hosts, failed)}")
    times = [r["started_at"] for r in started.values()]
    return max(times) - min(times) if times else 0.0


def start_through_leaders(session: Session, owners_: list[str], owners: dict[str, list[str]]) -> dict[str, float]:
    """Start instances whose hosts are all freshly switched, each on all its hosts at once: one
    call per leader host, whose agent starts the members over the agent port
    (host/gangstart.py). Returns each one's start skew (s); raises HostsFailed naming the host."""
    by_leader: dict[str, list[str]] = {}
    for o in owners_:
        by_leader.setdefault(owners[o][0], []).append(o)  # an instance's leader: its first host
    if not by_leader:
        return {}
    replies, failed = session.fan_out(lambda c: c.call("gang-start", *by_leader[c.name], timeout=GANG_START_TIMEOUT),
                                      list(by_leader))
    if failed:
        raise HostsFailed(failed, f"start {', '.join(owners_)}")
    return {o: max(t.values()) - min(t.values()) for r in replies.values() for o, t in r["started"].items()}


def restore(session: Session, owner: str, hosts: list[str], failed: Mapping[str, BaseException]) -> str:
    """A deliberate stop or start of a gang failed on some hosts: what runs of it is half a gang.
    On the hosts still reachable it is marked to run and stopped, so their agents see a gang
    that should run and does not, and its leader restarts it on every member over the agent
    port (no SSH needed), each host on its current generation. Returns what was left where."""
    ok = [h for h in hosts if h not in failed]
    _, lost = session.fan_out(lambda c: c.call("restore", owner), ok)
    handed = [h for h in ok if h not in lost]
    if handed:
        return (f"{owner}: not left down: its agents restart it on all its hosts ({', '.join(hosts)}) on their "
                f"current generation (asked on {', '.join(handed)}); `launcher status` shows when it runs again")
    why = "; ".join(f"{h}: {str(lost[h]).removeprefix(f'host {h}: ')}" for h in ok if h in lost)
    return (f"{owner}: state unknown on {', '.join(hosts)} (no host could be asked to restore it"
            f"{': ' + why if why else ''}); it may be stopped: `launcher up` again restarts it")


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
    # a program that ended meanwhile (the host stopped waiting at once) says more than its probe
    bad = [f"{h}: {exit_text(r['exited'])}" for h, r in replies.items() if r.get("exited")] or \
        [f"{h}: {p['probe']}: {p['error']}" for h, r in replies.items() for p in r["probes"] if p["error"]]
    return None if all(r["ready"] for r in replies.values()) else "; ".join(bad)


def relink_decoders(session: Session, restarted: list[str], owners: dict[str, list[str]],
                    ready_timeout: float = READY_TIMEOUT) -> list[str]:
    """Restart what a restart of ``restarted`` restarts too, each once what it follows is ready
    again (its readiness probe): the decoder instances linked to a restarted prompt (LLM-DataDist:
    a link does not survive the prompt's restart) and the instances that say `restart_with:` one
    of them (a Ray driver whose head restarted has lost its actors); transitively. Returns those.

    Raises LauncherError when one they follow does not become ready: they are left as they are."""
    plan = session.plan
    followers = restart_after(plan.links, plan.restart_with, restarted)
    again, ready, said = [*restarted, *followers], set(), []
    for f in followers:  # in waves: what f follows is restarted (and started) before it
        leads = [x for x in again if x != f and (f in relink_after(plan.links, [x]) or x in plan.restart_with.get(f, ()))]
        for x in (x for x in leads if x not in ready):
            why = wait_ready(session, x, owners[x], ready_timeout)
            if why:
                rest = followers[followers.index(f):]
                raise LauncherError(f"{x} was restarted but is not ready ({why}); {', '.join(rest)}, which "
                                    f"restart after it, were not restarted")
            ready.add(x)
        gang_start(session, f, owners[f])
        said.append((f, leads))
    decoders = [f for f, leads in said if relink_after(plan.links, leads)]
    if decoders:
        prompts = [p for p in restarted if relink_after(plan.links, [p])]
        session.progress(f"  relinked {', '.join(decoders)}: restarted after {', '.join(prompts)} listened again "
                         "(an LLM-DataDist link does not survive the prompt's restart)")
    for f, leads in said:
        if f not in decoders:
            session.progress(f"  restarted {f} after {', '.join(leads)} was ready again (restart_with)")
    return followers
