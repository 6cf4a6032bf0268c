"""Per program, what supervisord forgets and the metrics need: its restarts and how its last run ended.

supervisord's process info has only the last start and an exit status of -1 for any signal. The
agent calls ``observe`` on every poll (every process state change): a program seen with another
start than last time was started again; one seen ended (EXITED, STOPPED) is recorded once per run,
its signal read from supervisord's own log line (``exited: NAME (terminated by SIGKILL; ...)``).
Kept in state/program-stats.json, so the counts survive an agent's and supervisord's restart;
``down --purge`` removes them with the rest of ROOT.
"""
from __future__ import annotations

import os
import re
import signal

from .state import read_json, state_path, tail, update_state

ENDED = {"EXITED", "STOPPED"}  # a run that ended (FATAL/BACKOFF: it never ran; their exit status is stale)
STATS = "program-stats.json"
SUPERVISORD_LOG_LINES = 200


def observe(root: str, programs: list[dict]) -> None:
    """Count restarts and record last exits from one getAllProcessInfo (the agent's poll)."""
    stats = read_json(state_path(root, STATS), {})
    changes: dict[str, dict] = {}
    for p in programs:
        if p.get("group") == "launcher-agent" or not p.get("start"):
            continue
        rec = dict(stats.get(p["name"]) or {"restarts": 0})
        if rec.get("start") not in (None, p["start"]):
            rec["restarts"] = rec.get("restarts", 0) + 1
        rec["start"] = p["start"]
        if p["state"] in ENDED and rec.get("exit_of") != p["start"]:
            code = p.get("exitstatus")
            rec.update(exit_of=p["start"], exit_code=code,
                       exit_signal=killed_by(root, p["name"]) if code == -1 else 0)
        if rec != stats.get(p["name"]):
            changes[p["name"]] = rec
    if changes:
        update_state(root, STATS, changes)


def killed_by(root: str, program: str) -> int | None:
    """The signal number of the program's last `terminated by SIGxxx` line in supervisord's log."""
    pattern = re.compile(rf"(?:exited|stopped): {re.escape(program)} \(terminated by (SIG[A-Z0-9]+)")
    for line in reversed(tail(os.path.join(root, "logs", "supervisord.log"), SUPERVISORD_LOG_LINES)):
        m = pattern.search(line)
        if m:
            try:
                return int(signal.Signals[m.group(1)])
            except KeyError:
                return None
    return None


def read_stats(root: str) -> dict[str, dict]:
    return read_json(state_path(root, STATS), {})
