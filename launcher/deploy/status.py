"""What runs against what the topology renders, read-only: `status` rows with their drift, and `diff`.

Drift, per program: a host on another generation than the one the topology renders now, a
process started from an older config of its owner, programs supervisord runs that the plan
does not have, unreachable hosts, and owners waiting for a dependency.
"""
from __future__ import annotations

from dataclasses import replace
from typing import Mapping

from ..core.plan import File, Program
from .records import ALIVE, Detail, DiffRow, Drift, DriftKind, GangRecord, HostState, StatusRow, Waiting, \
    orphan_container, orphan_pids, rendered_hashes
from .readiness import live_specs, probe_now
from .session import STATE_TIMEOUT, Session


def status_rows(session: Session, desired: str | None = None) -> list[StatusRow]:
    """One row per program the plan expects, joined with what runs on its host, plus drift
    (``desired``: the generation the topology renders now)."""
    states, failures = session.fan_out(lambda c: c.state(timeout=STATE_TIMEOUT))
    readiness = _readiness(session, states)
    gangs: dict[str, GangRecord] = {}
    waiting: dict[str, Waiting] = {}
    for st in states.values():  # each gang's record (and the agent's wait) lives on its leader's host
        gangs.update(st.gangs)
        waiting.update(st.waiting)
    rows: list[StatusRow] = []
    for hp in session.plan.hosts:
        name = hp.host.name
        if name in failures:
            why = str(getattr(failures[name], "detail", failures[name]))
            rows.extend(StatusRow(p.owner, name, p.rank, p.name, "UNREACHABLE", desired_generation=desired,
                                  drift=(Drift(DriftKind.UNREACHABLE, why=why),)) for p in hp.programs)
            continue
        rows.extend(_with_readiness(_host_rows(hp.programs, name, states[name], gangs, waiting, desired),
                                    readiness))
    return rows


def _readiness(session: Session, states: Mapping[str, HostState]) -> dict[tuple[str, str], str | None]:
    """(owner, host) -> None when it answers its probe, else what the probe saw; for every owner
    alive on a reached host that has a probe (once, no wait). A host running another launcher's
    runtime is not asked (that would install ours: `status` changes nothing)."""
    wanted = {h: [o for o in dict.fromkeys(p.group for p in st.programs if p.alive)]
              for h, st in states.items() if not st.runtime_missing}
    found, failures = probe_now(session, wanted)
    for h, exc in failures.items():  # the host answered `state` a moment ago: its probes are not known
        for o in wanted[h]:
            if live_specs(session, o, h):
                found.setdefault((o, h), f"its probe could not be run: {exc}")
    return found


def _with_readiness(rows: list[StatusRow], readiness: Mapping[tuple[str, str], str | None]) -> list[StatusRow]:
    """Each running program of the plan with whether its owner answers its probe on that host."""
    out = []
    for r in rows:
        key = (r.instance, r.host)
        if r.in_plan and r.state in ALIVE and key in readiness:
            r = replace(r, ready=readiness[key] is None, probe_error=readiness[key])
        out.append(r)
    return out


def _host_rows(programs: tuple[Program, ...], host: str, st: HostState, gangs: Mapping[str, GangRecord],
               waiting: Mapping[str, Waiting], desired: str | None) -> list[StatusRow]:
    running = {p.name: p for p in st.programs}
    gen = st.generation
    host_drift = (Drift(DriftKind.GENERATION, runs=gen, wants=desired),) if desired and gen != desired else ()
    rows: list[StatusRow] = []
    for p in programs:
        info = running.get(p.name)
        g = gangs.get(p.owner, GangRecord())
        state = info.state if info else "ABSENT" if not st.supervisord else "UNKNOWN"
        orphaned = orphan_pids(st.orphans, p.name) if info is None or not info.alive else ()
        if orphaned:  # supervisord is gone, the rank is not: it runs, and nothing watches it
            state = "ORPHANED"
        waits = waiting.get(p.owner)
        if g.state == "FAILED" and not orphaned:  # a FAILED gang's orphans still run: say that
            state = "FAILED"
        elif waits and state not in ALIVE:
            state = "WAITING"
        started = st.started.get(p.owner)
        drift = list(host_drift)
        stale = state in ALIVE and st.runs_older_config(p.owner, st.hashes.get(p.owner))
        if stale:
            drift.append(Drift(DriftKind.OLD_CONFIG, runs=started.generation if started else None, wants=gen))
        if waits:
            drift.append(Drift(DriftKind.WAITING, why=waits.reason, on=waits.on))
        box = orphan_container(st.orphans, p.name) if orphaned else None
        if orphaned:
            drift.append(Drift(DriftKind.ORPHANED, program=p.name, pids=orphaned, container=box))
        rows.append(StatusRow(
            p.owner, host, p.rank, p.name, state, pid=info.pid if info else orphaned[0] if orphaned else None,
            uptime=info.uptime if info else None, restarts=g.restarts, generation=gen, drift=tuple(drift),
            waiting_on=waits.on if waits else (), desired_generation=desired,
            waiting_since=waits.since if waits else None,
            detail=Detail(started_generation=started.generation if started else None, stale=stale,
                          exitstatus=info.exitstatus if info else None,
                          reason=g.reason if g.state == "FAILED" or not waits else waits.reason,
                          last_log=g.last_log if state == "FAILED" else ()),
            container=info.container if info and info.container else box,
            container_state=info.container_state if info and info.container else "running" if box else None))
    planned = {p.name for p in programs}
    for name in dict.fromkeys(o.name for o in st.orphans if o.name not in planned and o.group != "launcher-agent"):
        pids = orphan_pids(st.orphans, name)
        box = orphan_container(st.orphans, name)
        rows.append(StatusRow(next(o.group for o in st.orphans if o.name == name), host, None, name, "ORPHANED",
                              pid=pids[0], generation=gen, in_plan=False, desired_generation=desired,
                              drift=(Drift(DriftKind.ORPHANED, program=name, pids=pids, container=box),),
                              container=box, container_state="running" if box else None))
    for extra in st.programs:
        if extra.name not in planned and extra.group != "launcher-agent":
            rows.append(StatusRow(extra.group, host, None, extra.name, extra.state, pid=extra.pid,
                                  uptime=extra.uptime, generation=gen, in_plan=False, desired_generation=desired,
                                  drift=(Drift(DriftKind.NOT_IN_PLAN, program=extra.name, state=extra.state),)))
    return rows


def diff(session: Session, files: Mapping[str, Mapping[str, File]], generation: str) -> list[DiffRow]:
    """What `up` would do, per host and owner, without changing anything."""
    states = session.each("reading hosts", lambda c: c.state(timeout=STATE_TIMEOUT))
    rows = []
    for host, st in states.items():
        old = st.hashes
        new = rendered_hashes(files[host])
        alive = {p.group for p in st.programs if p.alive}
        for owner in sorted(set(old) | set(new)):
            if owner not in new:
                change = "remove"
            elif owner not in old:
                change = "add"
            elif old[owner] != new[owner]:
                change = "restart (changed)"
            elif st.runs_older_config(owner, new[owner]):
                change = "restart (runs an older config)"
            elif owner not in alive:
                change = "start (not running)"
            else:
                change = "none"
            rows.append(DiffRow(host, owner, change, st.generation, generation))
    return rows
