"""How `status` shows its rows to a person (a table, then drift lines) and to a script (--json)."""
from __future__ import annotations

import time
from typing import Any

from ..core.table import format_table
from ..deploy.records import Drift, DriftKind, StatusRow

COLUMNS = ("INSTANCE", "HOST", "RANK", "STATE", "PID", "UPTIME", "RESTARTS", "GENERATION")


def fmt_uptime(seconds: float | None) -> str | None:
    if seconds is None:
        return None
    s = int(seconds)
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


def fmt_since(since: float, now: float | None = None) -> str:
    """When a wait began, in the operator's local time: HH:MM:SS today, else with the date."""
    at, today = time.localtime(since), time.localtime(time.time() if now is None else now)
    return time.strftime("%H:%M:%S" if at[:3] == today[:3] else "%Y-%m-%d %H:%M:%S", at)


def waiting_text(r: StatusRow) -> str:
    """What a waiting gang waits for, since when, and why: `WAITING (tb-h2) since 12:01:05: member ...`."""
    since = f" since {fmt_since(r.waiting_since)}" if r.waiting_since is not None else ""
    why = next((d.why for d in r.drift if d.kind is DriftKind.WAITING), "")
    return f"WAITING ({', '.join(r.waiting_on)}){since}" + (f": {why}" if why else "")


def state_cell(r: StatusRow) -> str:
    if r.state == "WAITING" or r.waiting_on and r.state != "RUNNING":
        return waiting_text(r)
    if r.state == "ORPHANED":
        return f"ORPHANED (container {r.container} unsupervised)" if r.container else "ORPHANED (supervisord down)"
    if not r.in_plan:
        return f"{r.state} (not in plan)"
    notes = ["old config"] if r.stale else []
    if r.ready is False:  # it runs, and does not answer its probe: not what RUNNING promises
        notes.append(f"not ready: {r.probe_error}")
    return f"{r.state} ({'; '.join(notes)})" if notes else r.state


def drift_text(d: Drift) -> str:
    """A drift as one sentence (the table's drift lines and the rows' `drift` in --json)."""
    if d.kind is DriftKind.UNREACHABLE:
        return f"unreachable: {d.why}"
    if d.kind is DriftKind.GENERATION:
        return f"host runs generation {d.runs or 'none'}; the topology renders {d.wants}"
    if d.kind is DriftKind.OLD_CONFIG:
        return f"runs the config of generation {d.runs}; generation {d.wants} changed it (not restarted yet)"
    if d.kind is DriftKind.WAITING:
        return f"waits for {', '.join(d.on)}: {d.why}"
    if d.kind is DriftKind.ORPHANED and d.container:
        return (f"container {d.container} of {d.program} runs with nothing supervising it (pid "
                f"{', '.join(map(str, d.pids))}); `up` removes it and restarts its gang")
    if d.kind is DriftKind.ORPHANED:
        return (f"supervisord is down; {d.program} still runs unsupervised (pids {', '.join(map(str, d.pids))}); "
                "`up` stops it and restarts its gang")
    return f"{d.program} is not in the plan ({d.state})"


def drift_lines(rows: list[StatusRow]) -> list[str]:
    out = []
    for r in rows:
        for d in r.drift:  # what is about a whole host is said once per host, not per rank
            out.append(f"{r.host}: {drift_text(d)}" if d.host_wide else f"{r.host}: {r.instance}: {drift_text(d)}")
    return list(dict.fromkeys(out))


def status_json(r: StatusRow) -> dict[str, Any]:
    """A status row as `status --json` has it (a planned program on a reached host has more keys)."""
    out: dict[str, Any] = {
        "instance": r.instance, "host": r.host, "rank": r.rank, "program": r.program, "state": r.state,
        "pid": r.pid, "uptime": r.uptime, "restarts": r.restarts, "generation": r.generation, "in_plan": r.in_plan,
        "drift": [drift_text(d) for d in r.drift], "waiting_on": list(r.waiting_on),
        "orphan_pids": [p for d in r.drift if d.kind is DriftKind.ORPHANED for p in d.pids],
        "container": {"id": r.container, "state": r.container_state} if r.container else None,
        "ready": r.ready, "probe_error": r.probe_error,
        "waiting": {"on": list(r.waiting_on), "since": r.waiting_since,
                    "since_text": fmt_since(r.waiting_since) if r.waiting_since is not None else None,
                    "reason": next((d.why for d in r.drift if d.kind is DriftKind.WAITING), None)}
        if r.waiting_on else None}
    if r.detail is not None:
        out.update({"started_generation": r.detail.started_generation, "stale": r.detail.stale,
                    "exitstatus": r.detail.exitstatus, "reason": r.detail.reason,
                    "last_log": list(r.detail.last_log)})
    out["desired_generation"] = r.desired_generation
    return out


def status_table(rows: list[StatusRow]) -> str:
    """The table; a CONTAINER column (id and the engine's state) when any program runs in one."""
    cells = [(r.instance, r.host, r.rank, state_cell(r), r.pid, fmt_uptime(r.uptime), r.restarts, r.generation)
             for r in rows]
    if not any(r.container for r in rows):
        return format_table(COLUMNS, cells)
    return format_table(COLUMNS + ("CONTAINER",), [c + (f"{r.container} ({r.container_state})" if r.container
                                                        else None,) for c, r in zip(cells, rows)])
