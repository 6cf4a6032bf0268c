"""One operation at a time per deployment: a lease on the deployment's first host.

`up`, `restart` and `down` take it; a second one is refused and told who holds it. The lock
is a directory made with mkdir(2) (atomic, no Python needed on the host yet) holding the
holder's identity and a lease that the holder renews while it works. A lease that ran out,
or a holder on this machine whose process is gone, is stale and taken over with a warning.
"""
from __future__ import annotations

import getpass
import json
import os
import socket
import threading
import time
from contextlib import contextmanager
from typing import Iterator

from ..core.errors import LauncherError
from .remote import HostClient

LEASE = 120.0   # seconds a holder may go silent before its lock counts as stale
RENEW = 30.0

ACQUIRE = ('r=$1; mkdir -p "$r/state" && if mkdir "$r/state/lock.d" 2>/dev/null; then '
           'cat > "$r/state/lock.d/holder.json" && echo acquired; else echo held; '
           'cat "$r/state/lock.d/holder.json" 2>/dev/null; echo; fi; date +%s')
RENEW_CMD = ('r=$1; grep -q "\\"id\\": \\"$2\\"" "$r/state/lock.d/holder.json" 2>/dev/null && '
             'cat > "$r/state/lock.d/holder.json.new" && mv "$r/state/lock.d/holder.json.new" '
             '"$r/state/lock.d/holder.json"')
RELEASE = ('r=$1; grep -q "\\"id\\": \\"$2\\"" "$r/state/lock.d/holder.json" 2>/dev/null && '
           'rm -rf "$r/state/lock.d"; true')
BREAK = 'r=$1; mv "$r/state/lock.d" "$r/state/lock.stale-$2" 2>/dev/null && rm -rf "$r/state/lock.stale-$2"; true'


class Locked(LauncherError):
    """Someone else is running an operation on this deployment."""


def _holder(command: str) -> dict:
    me = f"{socket.gethostname()}:{os.getpid()}:{time.time():.6f}"
    return {"id": me, "user": getpass.getuser(), "machine": socket.gethostname(), "pid": os.getpid(),
            "command": command, "since": time.time(), "expires": time.time() + LEASE}


def is_stale(holder: dict, host_now: float) -> str | None:
    """Why a lock no longer protects anything, or None while it does."""
    if holder.get("machine") == socket.gethostname():
        try:
            os.kill(int(holder.get("pid", -1)), 0)
        except ProcessLookupError:
            return f"its process {holder.get('pid')} on {holder.get('machine')} is gone"
        except (PermissionError, ValueError):
            pass
    if float(holder.get("expires", 0)) < host_now:
        return f"its lease ran out {host_now - float(holder.get('expires', 0)):.0f} s ago"
    return None


def describe(holder: dict) -> str:
    since = time.strftime("%H:%M:%S", time.localtime(float(holder.get("since", 0))))
    return (f"`{holder.get('command')}` by {holder.get('user')} on {holder.get('machine')} "
            f"(pid {holder.get('pid')}, since {since})")


def _run(client: HostClient, script: str, *args: str, stdin: bytes | None = None) -> list[str]:
    res = client.transport.run(["sh", "-c", script, "sh", client.root, *args], stdin=stdin, timeout=30)
    return res.stdout.decode("utf-8", "replace").splitlines()


@contextmanager
def deployment_lock(client: HostClient, command: str, warn=print) -> Iterator[dict]:
    """Hold the deployment's lock on ``client``'s host for the block; Locked if someone else has it."""
    holder = _holder(command)
    for attempt in range(2):
        lines = _run(client, ACQUIRE, stdin=json.dumps(holder).encode())
        if lines and lines[0] == "acquired":
            break
        try:
            other = json.loads(lines[1]) if len(lines) > 2 and lines[1].strip() else {}
            host_now = float(lines[-1])
        except ValueError:
            other, host_now = {}, time.time()
        why = is_stale(other, host_now) if other else "it holds no holder record"
        if why is None or attempt:
            raise Locked(f"deployment is busy: {describe(other)} holds its lock on {client.name}; "
                         "try again when it has finished")
        warn(f"taking over a stale lock of {describe(other) if other else 'an unknown holder'}: {why}")
        _run(client, BREAK, str(os.getpid()))
    stop = threading.Event()

    def renew() -> None:
        while not stop.wait(RENEW):
            holder["expires"] = time.time() + LEASE
            try:
                _run(client, RENEW_CMD, holder["id"], stdin=json.dumps(holder).encode())
            except LauncherError:
                pass  # the next renewal tries again; the lease covers a few misses

    thread = threading.Thread(target=renew, daemon=True)
    thread.start()
    try:
        yield holder
    finally:
        stop.set()
        try:
            _run(client, RELEASE, holder["id"])
        except LauncherError:
            warn(f"could not release the lock on {client.name}; it expires by itself in {LEASE:.0f} s")
