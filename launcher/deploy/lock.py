"""One operation at a time per deployment: a lease on the deployment's first host, and a fencing token.

`up`, `restart` and `down` take it; a second one is refused and told who holds it. The lock is
state/lock.json on the first host: the holder, its lease's expiry and the fencing token, every
read-modify-write of it under one flock (a few lines of stdlib Python on the host: LOCK_SCRIPT).
The expiry is written and compared by the host, on its own clock: the operator's clock never
enters. The token is a counter the host raises on every acquisition and take-over; every host
call of the command carries it (fencing.py, remote.BOOTSTRAP), so a command whose lease ran
out and was taken over is refused by every host the new holder has fenced, and stops.

A holder is stale when its lease ran out, or when it is a process of this very machine (same
boot id and PID namespace) that is gone (its pid's start time differs or it has none): the
holder's id is random per acquisition, so two containers or CI runners that share a hostname
and pid are never taken for one another. A stale lock is taken over with a warning, and every
host fenced before anything is read or changed. A renewal that finds the lock taken, or that
cannot reach the host for a whole lease, stops the command at its next host call.
"""
from __future__ import annotations

import getpass
import json
import os
import secrets
import socket
import threading
import time
from contextlib import contextmanager
from typing import Any, Callable, Iterator, Mapping

from ..core.errors import LauncherError
from ..host.state import BLANK_MARKS
from .fencing import Fence, LeaseLost
from .remote import HostClient
from .transport import HostsFailed, fan_out, warm_up

LEASE = 120.0   # seconds a holder may go silent before its lock counts as stale
RENEW = 30.0
RETRY = 5.0     # after a renewal that did not reach the host

# argv: ROOT OP ID ...; one JSON line out. acquire ID LEASE [BROKEN-ID] (stdin: the holder),
# renew ID TOKEN LEASE, release ID TOKEN
LOCK_SCRIPT = r"""
import fcntl, json, os, sys, time
root, op, me = sys.argv[1:4]
MARKS = @MARKS@
st = os.path.join(root, 'state')
try:
    os.makedirs(st, exist_ok=True)
    fd = os.open(st, os.O_RDONLY)
except OSError as exc:
    sys.exit('%s: %s' % (type(exc).__name__, exc))
fcntl.flock(fd, fcntl.LOCK_EX)  # the state dir: every read-modify-write of the lock, one at a time
path = os.path.join(st, 'lock.json')
try:
    with open(path) as fh:
        rec = json.load(fh)
except (OSError, ValueError):
    rec = {}
holder, now = rec.get('holder'), time.time()
def save():
    with open(path + '.new', 'w') as fh:
        json.dump(rec, fh)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(path + '.new', path)
    os.fsync(fd)
def mine():
    return bool(holder) and holder.get('id') == me and rec.get('token') == int(sys.argv[4])
out = {}
if op == 'acquire':
    if holder and holder.get('id') != (sys.argv[5] if len(sys.argv) > 5 else None):
        out = {'held': holder, 'left': rec.get('expires', 0) - now}
    else:
        holder = dict(json.load(sys.stdin), since=now)
        rec = {'token': int(rec.get('token', 0)) + 1, 'holder': holder, 'expires': now + float(sys.argv[4])}
        save()
        # and whether this root has nothing of the deployment (`up` then uploads without a state round)
        out = {'acquired': rec['token'], 'blank': not any(os.path.lexists(os.path.join(root, m)) for m in MARKS)}
elif op == 'renew':
    if mine():
        rec['expires'] = now + float(sys.argv[5])
        save()
        out = {'renewed': True}
    else:
        out = {'lost': holder}
elif op == 'release' and mine():
    rec = {'token': rec['token']}
    save()
print(json.dumps(out))
""".strip().replace("@MARKS@", repr(BLANK_MARKS))


class Locked(LauncherError):
    """Someone else is running an operation on this deployment."""


def _read(path: str) -> str:
    try:
        with open(path, encoding="ascii") as fh:
            return fh.read().strip()
    except OSError:
        return ""


def _start_time(pid: int | str) -> str:
    """A process's start time (clock ticks since boot; /proc/PID/stat field 22), "" when it has none."""
    stat = _read(f"/proc/{pid}/stat")
    fields = stat.rsplit(")", 1)[-1].split()
    return fields[19] if len(fields) > 19 else ""


def _pid_namespace() -> str:
    try:
        return str(os.stat("/proc/self/ns/pid").st_ino)
    except OSError:
        return ""


def _holder(command: str) -> dict[str, Any]:
    return {"id": secrets.token_hex(16), "user": getpass.getuser(), "machine": socket.gethostname(),
            "pid": os.getpid(), "boot": _read("/proc/sys/kernel/random/boot_id"), "pidns": _pid_namespace(),
            "start": _start_time(os.getpid()), "command": command}


def is_stale(holder: dict[str, Any], left: float) -> str | None:
    """Why a lock no longer protects anything (``left``: its lease's seconds left on the lock
    host's clock), or None while it does."""
    here = _holder("")
    if holder.get("boot") and (holder.get("boot"), holder.get("pidns")) == (here["boot"], here["pidns"]):
        if _start_time(holder.get("pid", "-")) != holder.get("start"):  # this machine, this PID namespace
            return f"its process {holder.get('pid')} on {holder.get('machine')} is gone"
    if left < 0:
        return f"its lease ran out {-left:.0f} s ago"
    return None


def describe(holder: dict[str, Any] | None) -> str:
    if not holder:
        return "an unknown holder"
    since = time.strftime("%H:%M:%S", time.localtime(float(holder.get("since", 0))))
    return (f"`{holder.get('command')}` by {holder.get('user')} on {holder.get('machine')} "
            f"(pid {holder.get('pid')}, since {since})")


def _run(client: HostClient, what: str, *args: str, stdin: bytes | None = None) -> dict[str, Any]:
    """LOCK_SCRIPT's reply; LauncherError naming the host and ``what`` when it failed."""
    res = client.transport.run(["python3", "-I", "-S", "-c", LOCK_SCRIPT, client.root, *args], stdin=stdin,
                               timeout=30)
    try:
        reply = json.loads(res.stdout.decode("utf-8", "replace").strip().splitlines()[-1])
    except (ValueError, IndexError):
        reply = None
    if res.exit_code != 0 or not isinstance(reply, dict):
        err = res.stderr.decode("utf-8", "replace").strip().splitlines()
        raise LauncherError(f"host {client.name}: cannot {what} (exit code {res.exit_code})"
                            + (f": {err[-1]}" if err else ""))
    return reply


def _acquire(client: HostClient, holder: dict[str, Any], warn: Callable[[str], None]) -> Fence:
    broken: tuple[str, ...] = ()
    for attempt in range(2):
        reply = _run(client, "take the deployment lock", "acquire", holder["id"], str(LEASE), *broken,
                     stdin=json.dumps(holder).encode())
        if "acquired" in reply:
            return Fence(int(reply["acquired"]), client.name, took_over=bool(broken),
                         lock_host_blank=bool(reply.get("blank")))
        other = reply.get("held") or {}
        why = is_stale(other, float(reply.get("left", 0)))
        if why is None or attempt:
            raise Locked(f"deployment is busy: {describe(other)} holds its lock on {client.name}; "
                         "try again when it has finished")
        warn(f"taking over a stale lock of {describe(other)}: {why}")
        broken = (str(other.get("id", "")),)  # only that holder: another may have taken it over meanwhile
    raise AssertionError("unreachable")


@contextmanager
def deployment_lock(client: HostClient, command: str, warn: Callable[[str], None] = print) -> Iterator[Fence]:
    """Hold the deployment's lock on ``client``'s host for the block; Locked if someone else has it."""
    holder = _holder(command)
    fence = _acquire(client, holder, warn)
    token = str(fence.token)
    stop = threading.Event()

    def renew() -> None:
        last_ok, wait = time.monotonic(), RENEW
        while not stop.wait(wait):
            sent = time.monotonic()
            try:
                reply = _run(client, "renew the deployment lock", "renew", holder["id"], token, str(LEASE))
            except LauncherError as exc:
                if time.monotonic() - last_ok >= LEASE:  # its lease has run out for sure by now
                    fence.lose(f"its lease could not be renewed for {LEASE:.0f} s: {exc}")
                    return
                warn(f"{exc}; trying again in {RETRY:.0f} s")
                wait = RETRY
                continue
            if not reply.get("renewed"):
                fence.lose(f"its lease was broken; the lock is now held by {describe(reply.get('lost'))}")
                return
            last_ok, wait = sent, RENEW

    thread = threading.Thread(target=renew, daemon=True)
    thread.start()
    try:
        yield fence
    finally:
        stop.set()
        try:
            _run(client, "release the deployment lock", "release", holder["id"], token)
        except LauncherError:
            warn(f"could not release the lock on {client.name}; it expires by itself in {LEASE:.0f} s")


@contextmanager
def fenced(clients: Mapping[str, HostClient], command: str, warn: Callable[[str], None] = print,
           forks: int = 16) -> Iterator[Fence]:
    """The deployment lock (on the first host) for the block, its token on every host call of
    ``clients``; after a take-over every host is fenced first. A block that fails after the lock
    was lost says so, whatever the host call that noticed."""
    first = next(iter(clients.values()))
    warm_up([c.transport for c in clients.values() if c is not first], forks)  # while the lock is taken
    with deployment_lock(first, command, warn) as fence:
        for c in clients.values():
            c.fence = fence
        try:
            if fence.took_over:  # the stale holder may run on: no host takes its calls from now on
                _, failed = fan_out(list(clients.values()), lambda c: c.call("fence"), key=lambda c: c.name,
                                    forks=forks)
                if failed:
                    raise HostsFailed(failed, "fencing the hosts against the stale holder")
            yield fence
        except LauncherError as exc:
            if fence.lost and not isinstance(exc, LeaseLost):
                raise LeaseLost(fence.message()) from exc
            raise
        finally:
            for c in clients.values():
                c.fence = None
        if fence.lost:
            warn(f"the deployment lock was lost ({fence.lost}) after this command's last host call")
