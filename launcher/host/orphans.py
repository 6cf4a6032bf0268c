"""Processes of this deployment still alive from a supervisord that is gone: found, reported, stopped.

supervisord puts ``SUPERVISOR_SERVER_URL=unix://ROOT/run/supervisor.sock`` (and the program's
and group's names) into every program's environment, which the program's own children inherit.
/proc/PID/environ is the environment a process started with, so a pid reused by another
process never carries ROOT's marker: pid reuse cannot make a stranger look like one of ours.
Scanned only when supervisord does not answer (`state`) and before one starts (never two
copies of a rank on a host), so the usual `status` costs nothing more.
"""
from __future__ import annotations

import os
import signal
import time

from . import engine
from .supervisor_rpc import socket_path

GONE_TIMEOUT = 30.0  # after SIGTERM, before SIGKILL (as supervisord's stopwaitsecs)


def _marker(root: str) -> bytes:
    return b"SUPERVISOR_SERVER_URL=unix://" + socket_path(root).encode()


def proc_stat(pid: int) -> tuple[str, int, int, int] | None:
    """(state, ppid, pgid, start time in clock ticks since boot) of a process; None when gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            fields = fh.read().rsplit(b")", 1)[1].split()
        return fields[0].decode(), int(fields[1]), int(fields[2]), int(fields[19])
    except (OSError, IndexError, ValueError):
        return None


def _alive(pid: int, start: int) -> bool:
    """Still the same process (same start time) and not a zombie."""
    st = proc_stat(pid)
    return st is not None and st[0] not in ("Z", "X") and st[3] == start


def _supervisord_pid(root: str) -> int | None:
    """The pid in run/supervisord.pid while that process lives and is a supervisord."""
    try:
        with open(os.path.join(root, "run", "supervisord.pid"), encoding="ascii") as fh:
            pid = int(fh.read().strip())
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            cmd = fh.read()
    except (OSError, ValueError):
        return None
    st = proc_stat(pid)
    return pid if st and st[0] not in ("Z", "X") and b"supervisord" in cmd else None


def find_orphans(root: str) -> list[dict]:
    """Every live process carrying ROOT's marker that no live supervisord of ROOT is an ancestor
    of (this process and its ancestors excluded: the agent scans too, and it carries the marker)."""
    marker = _marker(root)
    keep = {os.getpid()}
    ppid = os.getppid()
    while ppid > 1 and ppid not in keep:  # our ancestors
        keep.add(ppid)
        st = proc_stat(ppid)
        ppid = st[1] if st else 0
    try:
        pids = [int(d) for d in os.listdir("/proc") if d.isdigit()]
    except OSError:
        return []
    found: dict[int, dict] = {}
    stats: dict[int, tuple[str, int, int, int]] = {}
    for pid in pids:
        if pid in keep:
            continue
        try:
            with open(f"/proc/{pid}/environ", "rb") as fh:
                env = fh.read().split(b"\0")
        except OSError:  # gone, or another user's
            continue
        if marker not in env:
            continue
        st = proc_stat(pid)
        if st is None or st[0] in ("Z", "X"):
            continue
        stats[pid] = st
        names = dict(e.split(b"=", 1) for e in env if e.startswith(b"SUPERVISOR_") and b"=" in e)
        found[pid] = {"pid": pid, "pgid": st[2], "start": st[3],
                      "name": names.get(b"SUPERVISOR_PROCESS_NAME", b"").decode("utf-8", "replace"),
                      "group": names.get(b"SUPERVISOR_GROUP_NAME", b"").decode("utf-8", "replace")}
    live = _supervisord_pid(root)
    if live is not None:  # a supervisord of ROOT runs: what descends from it is supervised
        def supervised(pid: int) -> bool:
            seen = set()
            while pid > 1 and pid not in seen:
                if pid == live:
                    return True
                seen.add(pid)
                st = stats.get(pid) or proc_stat(pid)
                pid = st[1] if st else 0
            return False
        found = {p: o for p, o in found.items() if not supervised(p)}
    return sorted(found.values(), key=lambda o: o["pid"])


def by_program(orphans: list[dict]) -> dict[str, list[int]]:
    """program name -> its orphaned pids (the program's own process first: the lowest pid)."""
    out: dict[str, list[int]] = {}
    for o in orphans:
        out.setdefault(o["name"], []).append(o["pid"])
    return out


def stop_orphans(root: str, timeout: float = GONE_TIMEOUT) -> list[dict]:
    """SIGTERM each orphan's process group (a rank's children die with it, as supervisord's
    stopasgroup does), wait, then SIGKILL what is left; returns what was found."""
    orphans = find_orphans(root)
    if not orphans:
        return _remove_containers(root)
    me = os.getpgid(0)
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for o in orphans:
            if _alive(o["pid"], o["start"]):
                for target in ((-o["pgid"],) if o["pgid"] not in (me, 0, 1) else ()) + (o["pid"],):
                    try:
                        os.kill(target, sig)
                    except OSError:  # gone meanwhile, or a group of another user's processes
                        pass
        deadline = time.time() + timeout
        while time.time() < deadline and any(_alive(o["pid"], o["start"]) for o in orphans):
            time.sleep(0.05)
        if not any(_alive(o["pid"], o["start"]) for o in orphans):
            break
    left = [o["pid"] for o in orphans if _alive(o["pid"], o["start"])]
    if left:
        raise RuntimeError(f"processes of a dead supervisord survive SIGKILL: {left}")
    return orphans + _remove_containers(root)


def _remove_containers(root: str) -> list[dict]:
    """After the processes (a runner stops its container with the grace period): what is left of
    ROOT's containers; supervisord is down, so none of them is supervised."""
    return [engine.as_orphan(c) for c in engine.remove_all(root)]
