"""The host's event journal: what happened to its programs and gangs, one JSON line each, for `launcher events`.

Events are found by comparing each new snapshot with the last one the journal saw (``observe``,
called by snapshot.write_snapshot: the agent writes one after every process state change and every
gang decision, the host actions after every change), so no code path has to remember to log:
a generation switch, a program's start, its exit (code or signal, and its last log lines), a gang
restarting (cause, backoff), restarted (count), FAILED (budget spent), a wait (for a member, a
dependency, a leader) and its end, supervisord lost and back, orphans found and gone. ``note``
adds one directly (leftovers stopped: proctree.stop_logged). Times are the host's clock; an
event's time is the fact's own (a program's start, a wait's since) where the record has it.

ROOT/logs/events.jsonl, bounded: past MAX_BYTES it becomes events.jsonl.1 (one kept), so at most
about twice that on disk. It is a file, so it survives the agent's and supervisord's restarts;
`down --purge` removes it with ROOT. The journal's last view is state/events-seen.json; a
flock on state/events.lock keeps the agent's threads and the host actions from writing an
event twice.
"""
from __future__ import annotations

import fcntl
import json
import os
import time

from .program_stats import killed_by
from .state import read_json, state_path, tail, write_json

MAX_BYTES = 1 << 20
LOG_LINES = 10
DEAD = {"EXITED", "FATAL", "BACKOFF"}


def journal_path(root: str) -> str:
    return os.path.join(root, "logs", "events.jsonl")


def _append(root: str, events: list[dict]) -> None:
    path = journal_path(root)
    try:
        if os.path.getsize(path) > MAX_BYTES:
            os.replace(path, path + ".1")
    except OSError:
        pass
    with open(path, "a", encoding="utf-8") as fh:
        fh.write("".join(json.dumps(e, sort_keys=True) + "\n" for e in events))


class _Locked:
    def __init__(self, root: str):
        self.path = state_path(root, "events.lock")

    def __enter__(self) -> None:
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        fcntl.flock(self.fd, fcntl.LOCK_EX)

    def __exit__(self, *exc: object) -> None:
        os.close(self.fd)


def note(root: str, kind: str, message: str, **fields: object) -> None:
    """Record one event now (never raises: the journal must not fail what it records)."""
    try:
        with _Locked(root):
            _append(root, [{"time": time.time(), "host": _host(root), "kind": kind, "message": message, **fields}])
    except OSError:
        pass


def _host(root: str) -> str:
    return read_json(os.path.join(root, "current", "gang.json"), {}).get("host") or os.path.basename(root)


def observe(root: str, state: dict) -> None:
    """Journal what changed since the last snapshot the journal saw."""
    if not os.path.isdir(os.path.join(root, "logs")) or not os.path.isdir(os.path.join(root, "state")):
        return
    with _Locked(root):
        seen_path = state_path(root, "events-seen.json")
        seen = read_json(seen_path, {})
        now = float(state.get("time") or time.time())
        if now < float(seen.get("time") or 0):  # read before one already journaled (another thread's)
            return
        events = diff(root, seen, state)
        if events:
            host = _host(root)
            _append(root, [{"host": host, **e, "time": e.get("time") or now} for e in events])
        if (seen_now := view(state)) != {**seen, "time": None}:  # no write on the agent's idle ticks
            write_json(seen_path, {**seen_now, "time": now})


def view(state: dict) -> dict:
    """The part of a snapshot the journal compares."""
    return {"time": None, "generation": state.get("generation"), "supervisord": state.get("supervisord"),
            "programs": {p["name"]: {"start": p.get("start"), "state": p["state"], "group": p["group"]}
                         for p in state.get("programs", []) if p.get("group") != "launcher-agent"},
            "gang": {g: {k: r.get(k) for k in ("state", "restarts", "reason", "backoff", "last_restart", "failed_at")}
                     for g, r in (state.get("gang") or {}).items() if isinstance(r, dict)},
            "waiting": {g: {"on": w.get("on"), "reason": w.get("reason"), "since": w.get("since")}
                        for g, w in (state.get("waiting") or {}).items() if isinstance(w, dict)},
            "orphans": sorted({o["pid"] for o in state.get("orphans") or []})}


def diff(root: str, seen: dict, state: dict) -> list[dict]:
    new, out = view(state), []
    if seen.get("generation") and new["generation"] != seen["generation"]:
        out.append({"kind": "switch", "message": f"switched from generation {seen['generation']} to "
                                                 f"{new['generation'] or 'nothing'}",
                    "from": seen["generation"], "to": new["generation"]})
    if seen.get("supervisord") is not None and new["supervisord"] != seen["supervisord"]:
        out.append({"kind": "supervisord", "message": "supervisord answers again" if new["supervisord"]
                    else "supervisord does not answer (died?)", "up": bool(new["supervisord"])})
    before = seen.get("programs") or {}
    for p in state.get("programs", []):
        name, was = p["name"], before.get(p["name"]) or {}
        if name not in new["programs"] or not p.get("start"):
            continue
        fields = {"gang": p["group"], "program": name}
        if p["start"] != was.get("start"):
            out.append({**fields, "kind": "start", "time": float(p["start"]),
                        "message": f"{name} started" + (f" (pid {p['pid']})" if p.get("pid") else "")})
        if p["state"] in DEAD | {"STOPPED"} and (p["state"] != was.get("state") or p["start"] != was.get("start")):
            out.append({**fields, **_end(root, p)})
    out += _gang_events(seen.get("gang") or {}, new["gang"])
    out += _wait_events(seen.get("waiting") or {}, new["waiting"])
    old_orphans = set(seen.get("orphans") or [])
    gone, found = old_orphans - set(new["orphans"]), set(new["orphans"]) - old_orphans
    if found:
        out.append({"kind": "orphans", "message": f"unsupervised processes found: pids {sorted(found)}",
                    "pids": sorted(found)})
    if gone:
        out.append({"kind": "orphans_gone", "message": f"unsupervised processes gone: pids {sorted(gone)}",
                    "pids": sorted(gone)})
    return out


def _end(root: str, p: dict) -> dict:
    name, code = p["name"], p.get("exitstatus")
    if p["state"] == "STOPPED":
        return {"kind": "stop", "message": f"{name} stopped", "exit_code": code}
    sig = killed_by(root, name) if code == -1 else None
    how = f"killed by signal {sig}" if sig else "killed by a signal" if code == -1 else f"exited with code {code}"
    return {"kind": "exit", "message": f"{name} {how} ({p['state']})", "exit_code": code, "signal": sig,
            "log": tail(os.path.join(root, "logs", f"{name}.log"), LOG_LINES)}


def _gang_events(before: dict, after: dict) -> list[dict]:
    out = []
    for g, r in after.items():
        was = before.get(g) or {}
        if r.get("state") == "RESTARTING" and (was.get("state"), was.get("reason")) != ("RESTARTING", r.get("reason")):
            backoff = r.get("backoff") or 0
            out.append({"kind": "gang_restarting", "gang": g, "cause": r.get("reason"), "backoff": backoff,
                        "message": f"gang {g} restarting: {r.get('reason')}; "
                                   + (f"backoff {backoff:.0f} s" if backoff else "at once (first in the window)")})
        # (a record first seen with several restarts: a journal started late, not a restart now)
        if (r.get("restarts") or 0) > (was.get("restarts") or 0) and (was or r.get("restarts") == 1):
            out.append({"kind": "gang_restarted", "gang": g, "time": r.get("last_restart"), "restarts": r["restarts"],
                        "cause": r.get("reason"),
                        "message": f"gang {g} restarted on all its hosts (restart {r['restarts']}): {r.get('reason')}"})
        if r.get("state") == "FAILED" and was.get("state") != "FAILED":
            out.append({"kind": "gang_failed", "gang": g, "time": r.get("failed_at"), "cause": r.get("reason"),
                        "message": f"gang {g} FAILED: {r.get('reason')}"})
    return out


def _wait_events(before: dict, after: dict) -> list[dict]:
    out = []
    for g, w in after.items():
        if before.get(g) != w:  # a new wait at its start; one that changed (its reason) now
            out.append({"kind": "wait", "gang": g, "time": None if g in before else w.get("since"), "on": w.get("on"),
                        "message": f"gang {g} waits for {', '.join(map(str, w.get('on') or []))}: {w.get('reason')}"})
    for g in before.keys() - after.keys():
        out.append({"kind": "wait_over", "gang": g, "message": f"gang {g} no longer waits"})
    return out


def read(root: str, since: float) -> list[dict]:
    """Journal entries with time >= since, the rotated file's first."""
    out = []
    for path in (journal_path(root) + ".1", journal_path(root)):
        try:
            with open(path, encoding="utf-8") as fh:
                for line in fh:
                    try:
                        e = json.loads(line)
                    except ValueError:
                        continue  # a line cut by a full disk: skip it
                    if isinstance(e, dict) and float(e.get("time") or 0) >= since:
                        out.append(e)
        except OSError:
            continue
    return out
