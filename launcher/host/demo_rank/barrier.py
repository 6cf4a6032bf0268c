"""A demo rank's second act: the barrier, where every rank of the world meets rank 0 over TCP.

Wire format (TCP to MASTER_ADDR:MASTER_PORT, one UTF-8 JSON object per line):
  peer -> rank 0   {"rank": 2, "host": "node-b", "device_id": 0, "instance": "demo", "pid": 4242}
  rank 0 -> peer   {"go": true, "world": [<hello of rank 0>, <hello of rank 1>, ...]}  (by rank)
               or  {"go": false, "code": 3, "error": "..."}  (rank 0 gave up; the peer exits with code)
"""
from __future__ import annotations

import errno
import json
import os
import selectors
import socket
import time
from dataclasses import dataclass, field
from typing import Any, Mapping

from .errors import EXIT_BARRIER, EXIT_MISMATCH, BarrierFailed, BarrierRejected, DemoRankError, EnvError
from .identity import Identity
from .net import Log, json_line, read_line, retry_in_use

MAX_HELLO = 64 << 10    # a hello is ~100 bytes; more without a newline is not one of ours
NOTE_EVERY_S = 10.0     # how often rank 0 repeats who it is still waiting for
# A peer retries a refused connection to rank 0 after 20 ms, doubling up to 200 ms: ranks of a
# gang start together, and rank 0 usually listens a moment after its peers first try, so a
# fixed 200 ms made every (re)start wait for it; a long wait still costs 5 attempts a second
RETRY_FIRST_S = 0.02
RETRY_MAX_S = 0.2


def hello_of(ident: Identity, pid: int) -> dict[str, Any]:
    """The hello a rank sends to rank 0 (rank 0 lists its own first in the world)."""
    return {"rank": ident.rank, "host": ident.host, "device_id": ident.device_id,
            "instance": ident.instance, "pid": pid}


def check_hello(msg: Mapping[str, Any], world_size: int, instance: str) -> int:
    """Return the rank a peer's hello claims; raise BarrierRejected if it cannot be of this world."""
    rank = msg.get("rank")
    who = f"host {msg.get('host')!r} pid {msg.get('pid')!r}"
    if type(rank) is not int or not 1 <= rank < world_size:  # type() check: True is not rank 1
        raise BarrierRejected(f"hello from {who} claims rank {rank!r}, expected one of 1..{world_size - 1}")
    if msg.get("instance") != instance:
        raise BarrierRejected(f"hello from rank {rank} ({who}) names instance {msg.get('instance')!r}, "
                              f"expected {instance!r} (two instances sharing MASTER_PORT?)")
    return rank


def check_go(msg: Mapping[str, Any], ident: Identity) -> list[dict[str, Any]]:
    """Return the world of a go reply; raise BarrierRejected if rank 0 formed a different world."""
    world = msg.get("world")
    if not isinstance(world, list) or not all(isinstance(h, dict) for h in world):
        raise BarrierRejected(f"go from rank 0 carries no world list: {world!r:.80}")
    ranks = [h.get("rank") for h in world]
    if ranks != list(range(ident.world_size)):
        raise BarrierRejected(f"rank 0 formed a world of ranks {ranks!r:.200}, expected "
                              f"0..{ident.world_size - 1} (WORLD_SIZE={ident.world_size})")
    return world


def _alive(sock: socket.socket) -> bool:
    """Whether the peer on sock has not closed its end (nothing is consumed)."""
    try:
        return sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) != b""
    except BlockingIOError:
        return True
    except OSError:
        return False


@dataclass
class _Peer:
    """Rank 0's view of one accepted connection."""

    addr: str
    buf: bytearray = field(default_factory=bytearray)
    rank: int | None = None


def _listen(ident: Identity, deadline: float, log: Log) -> socket.socket:
    """Rank 0's listening socket on MASTER_ADDR:MASTER_PORT (create_server sets SO_REUSEADDR)."""
    target = f"{ident.master_addr}:{ident.master_port}"
    try:
        family = socket.getaddrinfo(ident.master_addr, ident.master_port, type=socket.SOCK_STREAM)[0][0]
    except socket.gaierror as exc:
        raise EnvError(f"MASTER_ADDR={ident.master_addr!r} does not resolve: {exc.strerror}") from None
    try:
        return retry_in_use(target, lambda: socket.create_server(
            (ident.master_addr, ident.master_port), family=family, backlog=max(128, ident.world_size)),
            deadline, log)
    except OSError as exc:
        hint = ("another rank 0 of this world, or another program, holds it" if exc.errno == errno.EADDRINUSE
                else "is MASTER_ADDR an address of this host?")
        raise BarrierFailed(f"rank 0 cannot listen on {target} (MASTER_ADDR:MASTER_PORT): "
                            f"{exc.strerror or exc}; {hint}") from None


def barrier_master(ident: Identity, me: dict[str, Any], timeout: float, log: Log) -> list[dict[str, Any]]:
    """Rank 0: wait for one hello from every other rank, then send go to all; return the world."""
    deadline = time.monotonic() + timeout
    listener = _listen(ident, deadline, log)
    log(f"listening on {ident.master_addr}:{ident.master_port}; waiting for {ident.world_size - 1} ranks")
    sel = selectors.DefaultSelector()
    peers: dict[socket.socket, _Peer] = {}
    arrived: dict[int, tuple[socket.socket, dict[str, Any]]] = {}

    def drop(sock: socket.socket) -> None:
        sel.unregister(sock)
        peers.pop(sock, None)
        sock.close()

    def on_readable(sock: socket.socket, peer: _Peer) -> None:
        try:
            data = sock.recv(65536)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            if peer.rank is not None and arrived.get(peer.rank, (None,))[0] is sock:
                # A peer that died before go will be restarted and say hello again: forget this one.
                del arrived[peer.rank]
                log(f"rank {peer.rank} disconnected before go; waiting for it again")
            drop(sock)
            return
        if peer.rank is not None:
            return  # nothing is expected after a hello
        peer.buf += data
        if b"\n" not in peer.buf:
            if len(peer.buf) > MAX_HELLO:
                log(f"ignoring {peer.addr}: no hello line in {MAX_HELLO} bytes")
                drop(sock)
            return
        try:
            msg = json.loads(peer.buf.split(b"\n", 1)[0])
        except ValueError:
            msg = None
        if not isinstance(msg, dict):
            # Something else knocked on the port (a port scan, a TCP probe): not a member, not fatal.
            log(f"ignoring {peer.addr}: not a JSON hello")
            drop(sock)
            return
        rank = check_hello(msg, ident.world_size, ident.instance)
        if rank in arrived:
            old_sock, old = arrived[rank]
            if _alive(old_sock):
                raise BarrierRejected(
                    f"duplicate rank {rank}: host {old.get('host')!r} pid {old.get('pid')!r} and "
                    f"host {msg.get('host')!r} pid {msg.get('pid')!r} both claim it")
            drop(old_sock)
        arrived[rank] = (sock, msg)
        peer.rank = rank
        log(f"hello from rank {rank} (host {msg.get('host')}, device {msg.get('device_id')}, "
            f"pid {msg.get('pid')}): {len(arrived) + 1}/{ident.world_size} present")

    try:
        listener.setblocking(False)
        sel.register(listener, selectors.EVENT_READ)
        next_note = time.monotonic() + NOTE_EVERY_S
        while len(arrived) < ident.world_size - 1:
            now = time.monotonic()
            missing = [r for r in range(1, ident.world_size) if r not in arrived]
            if now >= deadline:
                raise BarrierFailed(f"barrier timeout after {timeout:g} s: missing ranks {missing} "
                                    f"({len(arrived) + 1}/{ident.world_size} present)")
            if now >= next_note:
                log(f"still waiting for ranks {missing}")
                next_note = now + NOTE_EVERY_S
            for key, _ in sel.select(min(deadline - now, 1.0)):
                if key.fileobj is listener:
                    try:
                        sock, addr = listener.accept()
                    except (BlockingIOError, InterruptedError, ConnectionAbortedError):
                        continue
                    sock.setblocking(False)
                    peers[sock] = _Peer(f"{addr[0]}:{addr[1]}")
                    sel.register(sock, selectors.EVENT_READ)
                else:
                    sock = key.fileobj  # type: ignore[assignment]
                    if sock in peers:
                        on_readable(sock, peers[sock])
        world = [me] + [arrived[r][1] for r in sorted(arrived)]
        go = json_line({"go": True, "world": world})
        for r in sorted(arrived):
            sock = arrived[r][0]
            try:
                sock.settimeout(5.0)  # blocking again: a large world's go may not fit the send buffer
                sock.sendall(go)
            except OSError as exc:
                log(f"could not send go to rank {r}: {exc}")
        return world
    except DemoRankError as exc:
        # Tell the waiting peers why, so they exit now with the same code instead of timing out.
        refusal = json_line({"go": False, "code": exc.code, "error": str(exc)})
        for sock in list(peers):
            try:
                sock.settimeout(1.0)
                sock.sendall(refusal)
            except OSError:
                pass
        raise
    finally:
        for sock in list(peers):
            sock.close()
        sel.close()
        listener.close()



def barrier_peer(ident: Identity, me: dict[str, Any], timeout: float, log: Log) -> list[dict[str, Any]]:
    """Rank > 0: connect to rank 0 (retrying: start order is not guaranteed), say hello, wait for go."""
    deadline = time.monotonic() + timeout
    target = f"{ident.master_addr}:{ident.master_port}"
    hello = json_line(me)
    last_error = "no attempt"
    connected = False
    noted = False
    pause = RETRY_FIRST_S
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            if not connected:
                raise BarrierFailed(f"rank 0 at {target} unreachable: no connection within {timeout:g} s "
                                    f"(last error: {last_error})")
            raise BarrierFailed(f"barrier timeout after {timeout:g} s: connected to rank 0 at {target} "
                                f"but no go arrived (other ranks missing?)")
        try:
            sock = socket.create_connection((ident.master_addr, ident.master_port), timeout=min(remaining, 2.0))
        except OSError as exc:
            last_error = exc.strerror or str(exc) or type(exc).__name__
            if not noted:
                log(f"rank 0 at {target} not reachable yet ({last_error}); retrying")
                noted = True
            time.sleep(max(0.0, min(pause, deadline - time.monotonic())))
            pause = min(pause * 2, RETRY_MAX_S)
            continue
        with sock:
            if not connected:
                log(f"connected to rank 0 at {target}; hello sent, waiting for go")
            connected = True
            try:
                sock.sendall(hello)
                reply = read_line(sock, deadline)
            except OSError:
                reply = None
        if reply is None:
            if deadline - time.monotonic() > 0:
                log("connection to rank 0 closed before go; reconnecting")
                time.sleep(0.2)
            continue
        try:
            msg = json.loads(reply)
        except ValueError:
            msg = None
        if not isinstance(msg, dict):
            raise BarrierFailed(f"{target} answered the hello with something that is not a barrier reply: "
                                f"{reply[:80]!r}")
        if msg.get("go") is True:
            return check_go(msg, ident)
        code = msg.get("code") if msg.get("code") in (EXIT_MISMATCH, EXIT_BARRIER) else EXIT_BARRIER
        raise DemoRankError(f"rank 0 gave up the barrier: {msg.get('error')}", code=code)


def barrier(ident: Identity, timeout: float, log: Log) -> list[dict[str, Any]]:
    """Meet every rank of the world; return its hellos by rank."""
    me = hello_of(ident, os.getpid())
    if ident.world_size == 1:
        return [me]
    if ident.rank == 0:
        return barrier_master(ident, me, timeout, log)
    return barrier_peer(ident, me, timeout, log)
