"""A program is its whole process tree: what it started goes when it stops, is restarted or dies.

supervisord stops a program through its process group (stopasgroup/killasgroup) and, when the
program's own process has exited, considers it stopped. Whatever left that group (a worker that
called setsid) or outlived its parent (kill -9 of `ray start`, whose GCS server then holds the port
the restart needs) runs on. Those are the program's *leftovers*: processes carrying its name
(SUPERVISOR_PROCESS_NAME beside ROOT's SUPERVISOR_SERVER_URL, which supervisord puts into every
program's environment and children inherit) while supervisord runs no process for that program.
A leftover's descendants are leftovers too, whatever their environment.

Where they are looked for: supervisord is a child subreaper (supervisord.py), so a program's
orphaned descendants are re-parented to it, not to init, even after setsid or a double fork. The
leftovers are then supervisord's children that are not a supervised process, and their subtrees:
one read of supervisord's children and of those few processes, not of the whole process table.
A supervisord that is not a subreaper (started by an older runtime; run/subreaper does not name
it) falls back to one scan of /proc for the marker, in supervisord's mount namespace only (the
testbed's hosts share one /proc and one deploy path, each in its own mount namespace).

Stopped with SIGTERM to each leftover and to its process group (never the caller's, never a
group whose live leader is not a leftover), GRACE seconds, then SIGKILL; pids are checked
against their start time before every signal. Never a process without the marker, except a
leftover's descendant. Never a program supervisord runs (a daemonized child of a running program
is part of that program). One read per operation, whatever the number of programs.
"""
from __future__ import annotations

import os
import signal
import time

from .orphans import _marker, _supervisord_pid, proc_stat
from .supervisor_rpc import rpc

GRACE = 10.0      # s after SIGTERM before SIGKILL (a leftover got no SIGTERM from supervisord's stop)
KILL_WAIT = 5.0   # s after SIGKILL (a process in uninterruptible sleep, e.g. in a device driver)


def subreaper_path(root: str) -> str:
    """Holds the pid of ROOT's supervisord once it made itself a subreaper."""
    return os.path.join(root, "run", "subreaper")


def _children(pid: int) -> list[int]:
    """Children of every thread of ``pid`` (/proc/PID/task/TID/children)."""
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return []
    out: list[int] = []
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/children", "rb") as fh:
                out.extend(int(c) for c in fh.read().split())
        except (OSError, ValueError):
            pass
    return out


def _read(pid: int, marker: bytes) -> dict | None:
    """pid, ppid, pgid, start, and the program's name and group when it carries ``marker``;
    None when gone or a zombie."""
    st = proc_stat(pid)
    if st is None or st[0] in ("Z", "X"):
        return None
    try:
        with open(f"/proc/{pid}/environ", "rb") as fh:
            env = fh.read().split(b"\0")
    except OSError:
        env = []
    name = group = None
    if marker in env:
        names = dict(e.split(b"=", 1) for e in env if e.startswith(b"SUPERVISOR_") and b"=" in e)
        name = names.get(b"SUPERVISOR_PROCESS_NAME", b"").decode("utf-8", "replace")
        group = names.get(b"SUPERVISOR_GROUP_NAME", b"").decode("utf-8", "replace")
    return {"pid": pid, "ppid": st[1], "pgid": st[2], "start": st[3], "name": name, "group": group}


def _mount_ns(pid: int) -> str | None:
    try:
        return os.readlink(f"/proc/{pid}/ns/mnt")
    except OSError:
        return None


def _candidates(root: str, sup: int, marker: bytes) -> list[dict]:
    """Marked processes that may be leftovers, read before supervisord is asked what it runs (a
    process started after this read is never a candidate)."""
    try:
        with open(subreaper_path(root), encoding="ascii") as fh:
            subreaper = int(fh.read().strip()) == sup
    except (OSError, ValueError):
        subreaper = False
    if subreaper:
        found = (_read(pid, marker) for pid in _children(sup))
        return [p for p in found if p is not None and p["name"] is not None and p["ppid"] == sup]
    ns, me = _mount_ns(sup), os.getpid()
    out = []
    for d in os.listdir("/proc"):
        if d.isdigit() and int(d) != me:
            p = _read(int(d), marker)
            if p is not None and p["name"] is not None and _mount_ns(p["pid"]) == ns:
                out.append(p)
    return out


def find_leftovers(root: str, groups: list[str] | None = None, programs: list[str] | None = None) -> list[dict]:
    """The leftovers of ``groups``' and ``programs``' processes (None and None: of every program),
    with their descendants; [] when no supervisord of ROOT runs (orphans.py's case)."""
    sup = _supervisord_pid(root)
    if sup is None:
        return []
    marker, everything = _marker(root), groups is None and programs is None
    candidates = [p for p in _candidates(root, sup, marker)
                  if everything or p["group"] in (groups or ()) or p["name"] in (programs or ())]
    if not candidates:  # the usual stop or start: no RPC
        return []
    # asked after the read: a program started meanwhile is in the answer, so never taken for a leftover
    running = {p["name"] for p in rpc(root, 10.0).supervisor.getAllProcessInfo() if p["pid"]}
    roots = [p for p in candidates if p["name"] not in running]
    out: dict[int, dict] = {}
    todo = roots
    while todo:  # the subtrees: a leftover's descendants are leftovers, whatever their environment
        p = todo.pop()
        if p["pid"] in out:
            continue
        out[p["pid"]] = p
        for child in _children(p["pid"]):
            c = _read(child, marker)
            if c is not None and c["ppid"] == p["pid"]:
                todo.append({**c, "name": p["name"], "group": p["group"]})
    return sorted(out.values(), key=lambda p: p["pid"])


def _alive(p: dict) -> bool:
    st = proc_stat(p["pid"])
    return st is not None and st[0] not in ("Z", "X") and st[3] == p["start"]


def _groups(procs: list[dict]) -> set[int]:
    """Process groups to signal: each live leftover's current group, when its leader is a leftover
    or gone (the dead parent's group), never the caller's own or init's."""
    me = os.getpgid(0)
    pids = {p["pid"] for p in procs}
    out = set()
    for p in procs:
        st = proc_stat(p["pid"])
        if st is None or st[3] != p["start"] or st[0] in ("Z", "X"):
            continue
        g = st[2]  # while a member lives the group's id cannot be reused
        if g in (0, 1, me):
            continue
        leader = proc_stat(g)
        if g in pids or leader is None or leader[0] in ("Z", "X"):
            out.add(g)
    return out


def terminate(procs: list[dict], grace: float = GRACE) -> list[int]:
    """SIGTERM ``procs`` and their groups, wait up to ``grace``, SIGKILL what is left; returns the
    pids still alive after that (a process stuck in the kernel)."""
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, KILL_WAIT)):
        for g in _groups(procs):
            try:
                os.killpg(g, sig)
            except OSError:
                pass
        for p in procs:
            if _alive(p):
                try:
                    os.kill(p["pid"], sig)
                except OSError:
                    pass
        deadline = time.monotonic() + wait
        while any(_alive(p) for p in procs) and time.monotonic() < deadline:
            time.sleep(0.05)
        if not any(_alive(p) for p in procs):
            return []
    return [p["pid"] for p in procs if _alive(p)]
