"""Ranks exec'd in their instance's per-host container: wait for it, start, stop, find what a killed client left.

An instance in containers runs ONE container per host: its program ``<instance>-container``, run by
container.py like any container, whose command only holds it up (with the NPUs). Each rank is a
supervised program of its own whose runner (this module) starts it inside with ``ENGINE exec``: the
rank's output is the exec client's, so the program's own log; its exit code is the program's.

A killed exec client does not kill what it started: the process runs on in the container under the
engine's exec monitor. So everything a rank's runner starts carries ``LAUNCHER_EXEC=ROOT/PROGRAM`` in
its environment, and the runner finds it from the host's /proc (a container's processes are host
processes in the container's PID namespace): before it starts one (never two copies), when asked to
stop (SIGTERM, the container's stop_timeout, SIGKILL: not only the client), and whenever its client
ended (killed -9, or the rank exited and left children). What outlives a runner killed -9 dies with
the container: the container is a member of the instance's gang, and a gang restart stops it.

The container's runner announces it in ``run/containers/<program>.up`` once the engine says it
runs (the runner's and the container's first process's pid and start time, the generation it
mounts); a rank waits for that file, trusted only while both processes live, and runs only in a
container of its own generation.
"""
from __future__ import annotations

import json
import os
import signal
import sys
import time

from .engine import run_engine
from .orphans import proc_stat
from .proctree import _children, terminate

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Callable

MARK = "LAUNCHER_EXEC"
POLL = 0.05
BOX_WAIT = 600.0  # s a rank waits for its container (a first start may pull the image); a gang stop ends it


def up_path(root: str, program: str) -> str:
    return os.path.join(root, "run", "containers", f"{program}.up")


def marker(root: str, program: str) -> str:
    return f"{MARK}={root}/{program}"


def _start(pid: int) -> int | None:
    st = proc_stat(pid)
    return st[3] if st is not None and st[0] not in ("Z", "X") else None


def withdraw(root: str, program: str) -> None:
    try:
        os.unlink(up_path(root, program))
    except OSError:
        pass


def announce(root: str, gen: str, engine: str, owner: str, prog: dict, child: Any,
             stopping: Callable[[], bool]) -> None:
    """Wait until the engine says the container runs (or its client ended, or a stop came), then
    write run/containers/<program>.up for the ranks to find it."""
    me = os.getpid()
    fmt = "{{.State.Status}} {{.State.Pid}} {{.Id}}"
    delay = 0.1
    while child.poll() is None and not stopping():
        code, out = run_engine([engine, "inspect", "--format", fmt, prog["name"]])
        parts = out.split()
        if code == 0 and len(parts) == 3 and parts[0] == "running" and parts[1].isdigit() and parts[1] != "0":
            pid = int(parts[1])
            doc = {"runner": me, "runner_start": _start(me), "pid": pid, "start": _start(pid), "id": parts[2],
                   "generation": os.path.basename(gen.rstrip("/")), "owner": owner}
            path = up_path(root, prog["program"])
            with open(path + ".tmp", "w", encoding="utf-8") as fh:
                json.dump(doc, fh)
            os.replace(path + ".tmp", path)
            return
        time.sleep(delay)  # each `inspect` costs the engine's CPU: back off while an image is pulled
        delay = min(1.0, delay * 1.5)


def live_box(root: str, program: str) -> dict | None:
    """The container a runner announced, while that runner and the container's first process live."""
    try:
        with open(up_path(root, program), encoding="utf-8") as fh:
            doc = json.load(fh)
    except (OSError, ValueError):
        return None
    if doc.get("start") is None or _start(doc["runner"]) != doc["runner_start"] or _start(doc["pid"]) != doc["start"]:
        return None
    return doc


def in_container(box: dict, mark: str, prefix: bool = False) -> list[dict]:
    """The processes in the container's PID namespace carrying ``mark`` (or, ``prefix``, a marker
    starting with it), with their descendants."""
    try:
        ns = os.readlink(f"/proc/{box['pid']}/ns/pid")
    except OSError:
        return []  # the container is gone, and with its namespace everything in it
    want, found = mark.encode(), {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            if os.readlink(f"/proc/{d}/ns/pid") != ns:
                continue
            with open(f"/proc/{d}/environ", "rb") as fh:
                env = fh.read().split(b"\0")
            marks = [e for e in env if e.startswith(want)] if prefix else [want] if want in env else []
            if not marks:
                continue
        except OSError:
            continue
        st = proc_stat(int(d))
        if st is not None and st[0] not in ("Z", "X"):
            name = marks[0].rsplit(b"/", 1)[1].decode("utf-8", "replace")
            found[int(d)] = {"pid": int(d), "ppid": st[1], "pgid": st[2], "start": st[3], "name": name}
    todo = list(found)
    while todo:  # a descendant that cleared its environment is still the rank's
        parent = todo.pop()
        for c in _children(parent):
            st = proc_stat(c)
            if c not in found and st is not None and st[0] not in ("Z", "X"):
                found[c] = {"pid": c, "ppid": st[1], "pgid": st[2], "start": st[3], "name": found[parent]["name"]}
                todo.append(c)
    return sorted(found.values(), key=lambda p: p["pid"])


def leftovers_inside(root: str, groups: list[str] | None, programs: list[str] | None) -> list[dict]:
    """Ranks of ``groups`` / ``programs`` (None and None: every) running in a live container of
    ROOT while supervisord runs no process for their program: their runner was killed -9 and its
    exec client with it or after it. One listdir where no instance runs in a container."""
    try:
        names = [f[:-3] for f in os.listdir(os.path.join(root, "run", "containers")) if f.endswith(".up")]
    except OSError:
        return []
    everything = groups is None and programs is None
    found = []
    for box in (b for b in (live_box(root, n) for n in names) if b is not None):
        if everything or box.get("owner") in (groups or ()) or programs:
            found += [{**p, "group": box.get("owner", "")} for p in in_container(box, f"{MARK}={root}/", prefix=True)
                      if everything or box.get("owner") in (groups or ()) or p["name"] in (programs or ())]
    if not found:
        return []
    from .supervisor_rpc import rpc  # asked after the read: a rank started meanwhile is never taken
    try:
        running = {p["name"] for p in rpc(root, 10.0).supervisor.getAllProcessInfo() if p["pid"]}
    except Exception:  # supervisord down: its orphans are stop_orphans' (the container goes)
        return []
    return [p for p in found if p["name"] not in running]


def await_ranks(root: str, program: str, timeout: float) -> None:
    """Before the container ``program`` runs is stopped: wait (up to ``timeout``) until no rank
    runs in it. Each rank's runner got its stop at the same time and stops its rank with the grace
    period; the container's stop would end them at once (its first process gone, the kernel kills
    the rest of its PID namespace)."""
    box = live_box(root, program)
    deadline = time.monotonic() + timeout
    while box is not None and in_container(box, f"{MARK}={root}/", prefix=True) and time.monotonic() < deadline:
        time.sleep(0.1)


class ExecRunner:
    """One rank: ``ENGINE exec`` in the instance's container, in the foreground under supervisord."""

    def __init__(self, root: str, gen: str, spec: dict, slot: str):
        self.root, self.gen, self.spec, self.slot = root, gen, spec, slot
        self.prog = spec["programs"][slot]
        self.box_program = spec["programs"][self.prog["in"]]["program"]
        self.mark = marker(root, self.prog["program"])
        self.grace = float(spec["stop_timeout"])
        self.box: dict | None = None
        self.child: Any = None
        self.stopping = False

    def sweep(self, grace: float) -> list[dict]:
        """Stop what runs in the container under this rank's marker; what was found."""
        procs = in_container(self.box, self.mark) if self.box else []
        if procs:
            left = terminate(procs, grace)
            if left:
                print(f"ascend-launcher: {self.prog['program']}: still alive after SIGKILL in "
                      f"{self.prog['name']}: {left}", file=sys.stderr, flush=True)
        return procs

    def stop(self, _signum: int, _frame: object) -> None:
        """supervisord's stop: the rank inside, not only the client (which would leave it running)."""
        if not self.stopping:
            self.stopping = True
            self.sweep(self.grace)

    def wait_box(self) -> str | None:
        """Wait for this generation's container; None, or why the rank cannot start."""
        deadline = time.monotonic() + BOX_WAIT
        generation = os.path.basename(self.gen.rstrip("/"))
        while not self.stopping:
            self.box = live_box(self.root, self.box_program)
            if self.box is not None:
                if self.box["generation"] != generation:
                    return (f"its container {self.prog['name']} runs generation {self.box['generation']}, "
                            f"not {generation}: the gang restarts it")
                return None
            if time.monotonic() > deadline:
                return f"its container {self.prog['name']} ({self.box_program}) did not run within {BOX_WAIT:.0f} s"
            time.sleep(POLL)
        return None

    def run(self) -> int:
        import subprocess
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, self.stop)
        why = self.wait_box()
        if why:
            print(f"ascend-launcher: {self.prog['program']}: {why}", file=sys.stderr, flush=True)
            return 1
        if self.stopping:
            return 0
        stale = self.sweep(self.grace)  # never two copies: a run whose client was killed left it
        if stale:
            print(f"ascend-launcher: {self.prog['program']}: stopped a copy left running in {self.prog['name']} "
                  f"(pids {', '.join(str(p['pid']) for p in stale)})", file=sys.stderr, flush=True)
        owner = self.spec["owner"]
        argv = [self.spec["engine"], "exec", "-e", self.mark, self.prog["name"],
                "/bin/sh", f"{self.root}/current/bin/{owner}.in.sh"] + ([self.slot] if self.slot else [])
        if self.stopping:
            return 0
        # out of the program's process group: supervisord's stop (to the group) must not end the client
        # first, or the rank's last words (and the rank itself, by SIGPIPE) are lost; the runner ends
        # it by stopping the rank, and what a killed runner leaves of it is a leftover (proctree.py)
        self.child = subprocess.Popen(argv, stdin=subprocess.DEVNULL, start_new_session=True)
        while True:
            try:
                code = self.child.wait(timeout=1.0)
                break
            except subprocess.TimeoutExpired:
                if self.stopping:  # a stop that came before the rank was visible inside
                    self.sweep(self.grace)
        left = self.sweep(0.0 if code >= 0 else self.grace)  # killed client: the rank runs on inside
        if left and code < 0:
            print(f"ascend-launcher: {self.prog['program']}: its exec client was killed (signal {-code}); "
                  f"stopped the rank it left running (pids {', '.join(str(p['pid']) for p in left)})",
                  file=sys.stderr, flush=True)
        return 128 - code if code < 0 else code
