"""This host's supervision facts in the Prometheus text format (version 0.0.4), what /metrics serves.

Read from what the agent already keeps, never from a process of its own: state/snapshot.json (the
agent rewrites it on every process state change: programs, gang records, waits, orphans), the
generation's gang.json (which gangs this host leads, the budget), state/desired.json,
state/program-stats.json (program_stats.py) and the agent's queue. A gang's facts come from its
leader's host (the one that restarts it), a program's from the host it runs on. Every metric is in
METRICS below and in docs/METRICS.md (a test holds the two together); every series carries the
`deployment` and `host` labels; cause labels come from the fixed set CAUSES.
"""
from __future__ import annotations

import os
import time

from .program_stats import read_stats
from .state import desired, read_json, state_path

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (type checkers know the name)
if TYPE_CHECKING:
    from typing import Iterable

P = "ascend_launcher_"
METRICS: dict[str, tuple[str, str]] = {  # name -> (type, help)
    P + "generation_info": ("gauge", "The generation this host runs (label generation); 1."),
    P + "supervisord_up": ("gauge", "1 when this host's supervisord answered the agent's last look."),
    P + "snapshot_timestamp_seconds": ("gauge", "When the agent last read this host's state (unix time)."),
    P + "agent_reports_pending": ("gauge", "Failure reports this agent has not delivered to a gang leader yet."),
    P + "agent_tasks_running": ("gauge", "Gang work under way in the agent (reports, stops, restarts)."),
    P + "drift_programs": ("gauge", "Programs that differ from the plan, by kind: old_config, not_in_plan, orphaned."),
    P + "program_up": ("gauge", "1 when the program is RUNNING under supervisord."),
    P + "program_start_time_seconds": ("gauge", "When supervisord last started the program (unix time)."),
    P + "program_restarts_total": ("counter", "Times supervisord started the program again (any cause)."),
    P + "program_last_exit_code": ("gauge", "Exit code of the program's last run (-1: killed by a signal)."),
    P + "program_last_exit_signal": ("gauge", "Signal that ended the program's last run (0: it exited)."),
    P + "gang_state": ("gauge", "1 for the gang's state (label state), 0 for the others; on its leader's host."),
    P + "gang_restarts_total": ("counter", "Gang restarts by its agents, by cause; on its leader's host."),
    P + "gang_restart_budget_remaining": ("gauge", "Restarts the gang may still take in the restart window."),
    P + "gang_last_restart_timestamp_seconds": ("gauge", "When the gang's agents last restarted it (unix time)."),
    P + "gang_members_unreachable": ("gauge", "Member hosts the leader waits for before it can restart the gang."),
    P + "gang_generation_info": ("gauge", "The generation the gang's programs on this host were started from; 1."),
}
GANG_STATES = ("running", "restarting", "waiting", "failed", "stopped")
CAUSES = ("exit", "signal", "supervisord", "restart_with")  # gang_restarts_total's cause label
UNKNOWN_CAUSE = "unknown"  # restarts recorded before causes were (a gang record of an older runtime)


def restart_cause(report: dict | None) -> str:
    """A gang restart's cause label: the failure report's kind (members.failure_cause's words), or
    restart_with for a follower's restart (no report)."""
    if report is None:
        return "restart_with"
    if not report.get("start"):
        return "supervisord"  # not running under a new supervisord: the one it ran under died
    return "signal" if report.get("exitstatus") == -1 else "exit"


def counted(record: dict, cause: str) -> dict:
    """The gang record's per-cause restart counts with one more of ``cause``."""
    causes = dict(record.get("causes") or {})
    causes[cause] = causes.get(cause, 0) + 1
    return causes


def _escape(value: object) -> str:
    return str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _number(v: float | int) -> str:
    return repr(float(v)) if isinstance(v, float) else str(int(v))


def exposition(samples: Iterable[tuple[str, dict[str, object], float | int]], base: dict[str, object]) -> str:
    """The text format: samples grouped by metric, each with HELP and TYPE once, METRICS' order."""
    by_name: dict[str, list[str]] = {name: [] for name in METRICS}
    for name, labels, value in samples:
        text = ",".join(f'{k}="{_escape(v)}"' for k, v in {**base, **labels}.items())
        by_name[name].append(f"{name}{{{text}}} {_number(value)}")
    out = []
    for name, lines in by_name.items():
        if lines:
            kind, help_text = METRICS[name]
            out += [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}", *lines]
    return "\n".join(out) + "\n"


def gang_state(record: dict, waiting: object, wanted: bool) -> str:
    if record.get("state") == "FAILED":
        return "failed"
    if waiting:
        return "waiting"
    if record.get("state") == "RESTARTING":
        return "restarting"
    return "running" if wanted else "stopped"


def samples(conf: dict, snap: dict, want: dict[str, bool], stats: dict[str, dict], pending: int, busy: int,
            now: float) -> list[tuple[str, dict[str, object], float | int]]:
    """Every sample of one host (pure: the inputs are the files above, read by ``render``)."""
    out: list[tuple[str, dict[str, object], float | int]] = []
    add = lambda name, value, **labels: out.append((P + name, labels, value))  # noqa: E731
    waits = snap.get("waiting") or {}
    add("generation_info", 1, generation=snap.get("generation") or "")
    add("supervisord_up", 1 if snap.get("supervisord") else 0)
    add("snapshot_timestamp_seconds", float(snap.get("time") or 0.0))
    add("agent_reports_pending", pending + sum(1 for w in waits.values() if isinstance(w, dict)
                                               and w.get("kind") == "reporting"))
    add("agent_tasks_running", busy)
    planned = {p["name"]: p for p in (snap.get("manifest") or {}).get("programs", [])}
    programs = [p for p in snap.get("programs", []) if p.get("group") != "launcher-agent"]
    hashes = {p["owner"]: p.get("owner_hash") for p in planned.values()}
    started = snap.get("started") or {}
    alive = {p["group"] for p in programs if p["state"] == "RUNNING"}
    old = sum(1 for p in programs if p["state"] == "RUNNING" and p["group"] in hashes
              and (started.get(p["group"]) or {}).get("owner_hash") not in (None, hashes[p["group"]]))
    add("drift_programs", old, kind="old_config")
    add("drift_programs", sum(1 for p in programs if p["name"] not in planned), kind="not_in_plan")
    add("drift_programs", len(snap.get("orphans") or []), kind="orphaned")
    for p in programs:
        labels: dict[str, object] = {"gang": p["group"], "program": p["name"]}
        if planned.get(p["name"], {}).get("rank") is not None:
            labels["rank"] = planned[p["name"]]["rank"]
        add("program_up", 1 if p["state"] == "RUNNING" else 0, **labels)
        if p.get("start"):
            add("program_start_time_seconds", float(p["start"]), **labels)
        rec = stats.get(p["name"]) or {}
        add("program_restarts_total", rec.get("restarts", 0), **labels)
        if "exit_code" in rec and rec["exit_code"] is not None:
            add("program_last_exit_code", rec["exit_code"], **labels)
            if rec.get("exit_signal") is not None:
                add("program_last_exit_signal", rec["exit_signal"], **labels)
    for group, how in sorted(started.items()):
        if group in alive and isinstance(how, dict) and how.get("generation"):
            add("gang_generation_info", 1, gang=group, generation=how["generation"])
    for group, gang in sorted((conf.get("gangs") or {}).items()):
        if gang.get("leader") != conf.get("host"):
            continue
        rec, wait = (snap.get("gang") or {}).get(group) or {}, waits.get(group)
        state = gang_state(rec, wait, bool(want.get(group)))
        for s in GANG_STATES:
            add("gang_state", 1 if s == state else 0, gang=group, state=s)
        causes = dict(rec.get("causes") or {})
        unknown = rec.get("restarts", 0) - sum(causes.values())
        for cause in CAUSES + ((UNKNOWN_CAUSE,) if unknown > 0 else ()):
            add("gang_restarts_total", causes.get(cause, unknown if cause == UNKNOWN_CAUSE else 0),
                gang=group, cause=cause)
        recent = [t for t in rec.get("history", []) if now - t < conf.get("restart_window", 600)]
        left = 0 if state == "failed" else max(0, conf.get("restart_max", 3) - len(recent))
        add("gang_restart_budget_remaining", left, gang=group)
        if rec.get("last_restart"):
            add("gang_last_restart_timestamp_seconds", float(rec["last_restart"]), gang=group)
        cut = wait.get("on", []) if isinstance(wait, dict) and isinstance(wait.get("report"), dict) else []
        add("gang_members_unreachable", len(cut), gang=group)
    return out


def render(root: str, pending: int = 0, busy: int = 0) -> str:
    """/metrics of the host whose ROOT this is."""
    conf = read_json(os.path.join(root, "current", "gang.json"), {})
    snap = read_json(state_path(root, "snapshot.json"), {})
    base = {"deployment": conf.get("deployment", ""), "host": conf.get("host", "")}
    return exposition(samples(conf, snap, desired(root), read_stats(root), pending, busy, time.time()), base)
