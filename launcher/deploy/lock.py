"""One operation at a time per deployment: a lease on the deployment's first host.

`up`, `restart` and `down` take it; a second one is refused and told who holds it. The lock
is the directory state/lock.d holding the holder's identity and a lease that the holder
renews while it works. It comes into being complete: the holder is written into a private
directory first, which is then renamed into place (rename(2) is atomic and fails when
lock.d exists; no Python needed on the host yet), so nobody ever sees a lock without its
holder. A lease that ran out, or a holder on this machine whose process is gone, is stale
and taken over with a warning. A lock command that fails (no state dir, a full disk) is an
error naming the host, never mistaken for a lock held by someone.
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

# $2 is the holder's id. The new lock is complete before it is visible: `mv -T` renames the
# private directory onto lock.d and fails if lock.d exists (rename(2) onto a non-empty dir).
ACQUIRE = ('r=$1; l="$r/state/lock.d"; t="$r/state/lock.new-$2"; '
           'mkdir -p "$r/state" || exit 3; rm -rf "$t"; '
           'mkdir "$t" && cat > "$t/holder.json" || { rm -rf "$t"; exit 3; }; '
           'if err=$(mv -T "$t" "$l" 2>&1); then echo acquired; else rm -rf "$t"; '
           'if [ ! -d "$l" ]; then echo "$err" >&2; exit 3; fi; '
           'echo held; cat "$l/holder.json" 2>/dev/null; echo; fi; date +%s')
RENEW_CMD = ('r=$1; grep -qF "\\"id\\": \\"$2\\"" "$r/state/lock.d/holder.json" || exit 4; '
             'cat > "$r/state/lock.d/holder.json.new" && mv "$r/state/lock.d/holder.json.new" '
             '"$r/state/lock.d/holder.json"')
# moved aside before it is removed: a lock removed in place would be empty for a moment, and an
# empty lock.d is one that rename(2) may replace
RELEASE = ('r=$1; grep -qF "\\"id\\": \\"$2\\"" "$r/state/lock.d/holder.json" 2>/dev/null || exit 0; '
           'mv -T "$r/state/lock.d" "$r/state/lock.gone-$3" && rm -rf "$r/state/lock.gone-$3"')
# only the stale holder seen ($2; empty: a lock without a holder record): another operator
# may have broken it and taken the lock meanwhile
BREAK = ('r=$1; h="$r/state/lock.d/holder.json"; '
         'if [ -n "$2" ]; then grep -qF "\\"id\\": \\"$2\\"" "$h" 2>/dev/null || exit 0; '
         'elif [ -e "$h" ]; then exit 0; fi; '
         'mv -T "$r/state/lock.d" "$r/state/lock.stale-$3" 2>/dev/null || exit 0; rm -rf "$r/state/lock.stale-$3"')


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
    if not holder:
        return "an unknown holder"
    since = time.strftime("%H:%M:%S", time.localtime(float(holder.get("since", 0))))
    return (f"`{holder.get('command')}` by {holder.get('user')} on {holder.get('machine')} "
            f"(pid {holder.get('pid')}, since {since})")


def _run(client: HostClient, what: str, script: str, *args: str, stdin: bytes | None = None) -> list[str]:
    """The script's stdout lines; LauncherError naming the host and ``what`` when it failed."""
    res = client.transport.run(["sh", "-c", script, "sh", client.root, *args], stdin=stdin, timeout=30)
    if res.exit_code != 0:
        err = res.stderr.decode("utf-8", "replace").strip().splitlines()
        raise LauncherError(f"host {client.name}: cannot {what} (exit code {res.exit_code})"
                            + (f": {err[-1]}" if err else ""))
    return res.stdout.decode("utf-8", "replace").splitlines()


@contextmanager
def deployment_lock(client: HostClient, command: str, warn=print) -> Iterator[dict]:
    """Hold the deployment's lock on ``client``'s host for the block; Locked if someone else has it."""
    holder = _holder(command)
    for attempt in range(2):
        lines = _run(client, "take the deployment lock", ACQUIRE, holder["id"], stdin=json.dumps(holder).encode())
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
        warn(f"taking over a stale lock of {describe(other)}: {why}")
        _run(client, "break the stale deployment lock", BREAK, str(other.get("id", "")), str(os.getpid()))
    stop = threading.Event()

    def renew() -> None:
        while not stop.wait(RENEW):
            holder["expires"] = time.time() + LEASE
            try:
                _run(client, "renew the deployment lock", RENEW_CMD, holder["id"], stdin=json.dumps(holder).encode())
            except LauncherError as exc:  # the next renewal tries again; the lease covers a few misses
                warn(str(exc))

    thread = threading.Thread(target=renew, daemon=True)
    thread.start()
    try:
        yield holder
    finally:
        stop.set()
        try:
            _run(client, "release the deployment lock", RELEASE, holder["id"], str(os.getpid()))
        except LauncherError:
            warn(f"could not release the lock on {client.name}; it expires by itself in {LEASE:.0f} s")
