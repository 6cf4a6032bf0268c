"""Stand-in for a model rank: checks its env and ranktable, meets its world over TCP, serves /health.

Run as `python -m launcher.host.demo_rank [--health-port N] ...` with the env the launcher gives a rank.
Standard library only: it runs on hosts that have nothing but python3 and the shipped package.

Barrier wire format (TCP to MASTER_ADDR:MASTER_PORT, one UTF-8 JSON object per line):
  peer -> rank 0   {"rank": 2, "host": "node-b", "device_id": 0, "instance": "demo", "pid": 4242}
  rank 0 -> peer   {"go": true, "world": [<hello of rank 0>, <hello of rank 1>, ...]}  (by rank)
               or  {"go": false, "code": 3, "error": "..."}  (rank 0 gave up; the peer exits with code)

Exit codes: 0 stopped by SIGTERM/SIGINT; 2 environment (or usage) invalid; 3 ranktable wrong or
not completed in time, or barrier membership wrong (duplicate rank, foreign instance); 4 barrier
failed (timeout, rank 0 unreachable, cannot listen); 5 --fail-barrier; 6 health port unavailable;
7 LLM-DataDist link failed (prompt side cannot listen; decoder side cannot link); 17 --crash-after elapsed.

With LAUNCHER_DATADIST_FILE (an LLM-DataDist cluster, seeds 000/001), after the barrier a prompt
rank listens on its listen ip:port and a decoder rank links to every prompt of its links; see
"LLM-DataDist link" below.
"""
from __future__ import annotations

import argparse
import errno
import json
import os
import selectors
import signal
import socket
import sys
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Mapping, Sequence
from urllib.parse import urlsplit

try:
    from .. import __version__
except ImportError:  # executed as a loose file, outside the package
    __version__ = "0+unknown"

EXIT_OK = 0
EXIT_ENV = 2
EXIT_MISMATCH = 3
EXIT_BARRIER = 4
EXIT_FAIL_BARRIER = 5
EXIT_HEALTH = 6
EXIT_LINK = 7
EXIT_CRASH = 17
STOP_GRACE = 5.0  # seconds between SIGTERM and a forced exit

COMPLETED = "completed"
DEFAULT_HEALTH_PORT = 18610
IN_USE_RETRY_S = 10.0   # how long a gang restart's previous incarnation may take to release a port
MAX_HELLO = 64 << 10    # a hello is ~100 bytes; more without a newline is not one of ours
MAX_REPLY = 16 << 20    # a go message for a very large world stays far below this
NOTE_EVERY_S = 10.0     # how often rank 0 repeats who it is still waiting for
LINK_RETRY_PAUSE_S = 0.5

Log = Callable[[str], None]


# --- errors ---------------------------------------------------------------------------------
class DemoRankError(Exception):
    """A failure that ends the process with `code` and one line of text."""

    code = 1

    def __init__(self, message: str, code: int | None = None):
        super().__init__(message)
        if code is not None:
            self.code = code


class EnvError(DemoRankError):
    """An environment variable is missing or invalid."""

    code = EXIT_ENV


class TableError(DemoRankError):
    """The ranktable is malformed, not completed, or disagrees with the env."""

    code = EXIT_MISMATCH


class BarrierRejected(DemoRankError):
    """A peer's hello cannot belong to this world (duplicate rank, other instance, bad rank)."""

    code = EXIT_MISMATCH


class BarrierFailed(DemoRankError):
    """The world did not meet: timeout, rank 0 unreachable, or rank 0 cannot listen."""

    code = EXIT_BARRIER


class HealthError(DemoRankError):
    """The health endpoint cannot be served."""

    code = EXIT_HEALTH


class LinkError(DemoRankError):
    """An LLM-DataDist link failed: cannot listen, prompt unreachable, or the link was refused."""

    code = EXIT_LINK


class Stopped(Exception):
    """SIGTERM or SIGINT arrived: stop cleanly."""


# --- pure part: identity, ranktable, hello ----------------------------------------------------
@dataclass(frozen=True, slots=True)
class Identity:
    """Who this rank is, as its environment says."""

    rank: int
    local_rank: int
    world_size: int
    ranktable: str
    ranktable_var: str
    device_id: int
    server_id: str
    device_ip: str
    master_addr: str
    master_port: int
    instance: str
    host: str


def _uint(raw: str) -> int | None:
    """A plain decimal non-negative integer, or None (int() would also take ' 3', '+3', '3_0')."""
    return int(raw) if raw.isascii() and raw.isdigit() else None


def parse_env(env: Mapping[str, str]) -> Identity:
    """Read the rank's identity from `env`; raise EnvError naming every bad variable."""
    problems: list[str] = []

    def text(name: str) -> str:
        raw = env.get(name)
        if raw is None:
            problems.append(f"{name} is not set")
            return ""
        if not raw.strip():
            problems.append(f"{name} is empty")
            return ""
        return raw

    def number(name: str, low: int = 0, high: int | None = None) -> int:
        raw = text(name)
        if not raw:
            return -1
        value = _uint(raw)
        if value is None or value < low or (high is not None and value > high):
            span = f"{low}..{high}" if high is not None else f">= {low}"
            problems.append(f"{name}={raw!r} is not an integer {span}")
            return -1
        return value

    rank = number("RANK")
    local_rank = number("LOCAL_RANK")
    world_size = number("WORLD_SIZE", low=1)
    # RANKTABLEFILE is what the launcher sets; RANK_TABLE_FILE is the name HCCL tools use.
    table_var = "RANKTABLEFILE" if env.get("RANKTABLEFILE", "").strip() else "RANK_TABLE_FILE"
    ranktable = env.get(table_var, "")
    if not ranktable.strip():
        problems.append("RANKTABLEFILE (or RANK_TABLE_FILE) is not set")
    device_id = number("DEVICE_ID")
    server_id = text("LAUNCHER_SERVER_ID")
    device_ip = text("LAUNCHER_DEVICE_IP")
    master_addr = text("MASTER_ADDR")
    master_port = number("MASTER_PORT", low=1, high=65535)
    instance = text("LAUNCHER_INSTANCE")
    host = text("LAUNCHER_HOST")
    if rank >= 0 and world_size >= 1 and rank >= world_size:
        problems.append(f"RANK={rank} is out of range for WORLD_SIZE={world_size} (expected 0..{world_size - 1})")
    if problems:
        raise EnvError("environment: " + "; ".join(problems))
    return Identity(rank, local_rank, world_size, ranktable, table_var, device_id, server_id, device_ip,
                    master_addr, master_port, instance, host)


@dataclass(frozen=True, slots=True)
class TableSlot:
    """One device entry of a ranktable, with where it was found."""

    where: str
    server_id: str
    device_id: str
    device_ip: str
    rank_id: str


def _string(entry: Mapping[str, Any], key: str, where: str) -> str:
    """The string at entry[key]; ranktables hold every value as a string."""
    if key not in entry:
        raise TableError(f"ranktable {where}: {key} is missing")
    value = entry[key]
    if not isinstance(value, str):
        raise TableError(f"ranktable {where}.{key}: expected a string, found {value!r}")
    return value


def table_slots(doc: Any) -> list[TableSlot]:
    """Flatten an HCCL v1.0 or PD local table into device entries in list order; raise TableError."""
    if not isinstance(doc, dict):
        raise TableError(f"ranktable: expected a JSON object, found {type(doc).__name__}")
    if "server_list" not in doc:
        hint = (" (a PD global table; the rank needs its instance's local table)"
                if "server_group_list" in doc else "")
        raise TableError(f"ranktable has no server_list{hint}")
    servers = doc["server_list"]
    if not isinstance(servers, list) or not servers:
        raise TableError(f"ranktable server_list: expected a non-empty list, found {servers!r:.80}")
    count = doc.get("server_count")
    if count is not None and count != str(len(servers)):
        raise TableError(f"ranktable server_count: expected {str(len(servers))!r} "
                         f"(entries in server_list), found {count!r}")
    slots: list[TableSlot] = []
    for i, server in enumerate(servers):
        where = f"server_list[{i}]"
        if not isinstance(server, dict):
            raise TableError(f"ranktable {where}: expected an object, found {server!r:.80}")
        server_id = _string(server, "server_id", where)
        if "server_ip" in server:  # PD local tables carry it; when present it must be a string too
            _string(server, "server_ip", where)
        devices = server.get("device")
        if not isinstance(devices, list):
            raise TableError(f"ranktable {where}.device: expected a list, found {devices!r:.80}")
        for j, dev in enumerate(devices):
            dwhere = f"{where}.device[{j}]"
            if not isinstance(dev, dict):
                raise TableError(f"ranktable {dwhere}: expected an object, found {dev!r:.80}")
            slots.append(TableSlot(dwhere, server_id, _string(dev, "device_id", dwhere),
                                   _string(dev, "device_ip", dwhere), _string(dev, "rank_id", dwhere)))
    return slots


def check_table(doc: Any, ident: Identity) -> TableSlot:
    """Return this rank's entry of a completed table; raise TableError on any disagreement."""
    slots = table_slots(doc)
    if len(slots) != ident.world_size:
        raise TableError(f"ranktable holds {len(slots)} devices, expected {ident.world_size} (WORLD_SIZE)")
    seen: dict[tuple[str, str], str] = {}
    for k, slot in enumerate(slots):
        if slot.rank_id != str(k):
            raise TableError(f"ranktable {slot.where}.rank_id: expected {str(k)!r} (rank ids run "
                             f"0..{ident.world_size - 1} across servers in list order), found {slot.rank_id!r}")
        key = (slot.server_id, slot.device_id)
        if key in seen:
            raise TableError(f"ranktable {slot.where}: device {slot.device_id} of server {slot.server_id} "
                             f"is listed twice (also at {seen[key]})")
        seen[key] = slot.where
    mine = slots[ident.rank]
    wrong = [f"{name}: expected {want!r} ({var}), found {got!r}"
             for name, var, want, got in (("server_id", "LAUNCHER_SERVER_ID", ident.server_id, mine.server_id),
                                          ("device_id", "DEVICE_ID", str(ident.device_id), mine.device_id),
                                          ("device_ip", "LAUNCHER_DEVICE_IP", ident.device_ip, mine.device_ip))
             if want != got]
    if wrong:
        raise TableError(f"ranktable entry of rank {ident.rank} ({mine.where}) disagrees with the env: "
                         + "; ".join(wrong))
    return mine


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


def health_doc(ident: Identity, passed_at: float, pid: int) -> dict[str, Any]:
    """The body of GET /health."""
    return {"rank": ident.rank, "local_rank": ident.local_rank, "world_size": ident.world_size,
            "instance": ident.instance, "host": ident.host, "device_id": ident.device_id,
            "barrier_passed_at": passed_at, "pid": pid}


# --- I/O: ranktable file ------------------------------------------------------------------------
def load_table(path: str, var: str, timeout: float, log: Log) -> Any:
    """Read the table, polling until its status is "completed"; raise EnvError or TableError."""
    deadline = time.monotonic() + timeout
    last_note = ""
    while True:
        try:
            with open(path, "rb") as fh:
                raw = fh.read()
        except FileNotFoundError:
            raise EnvError(f"{var}={path}: no such file") from None
        except OSError as exc:
            raise EnvError(f"{var}={path}: cannot read: {exc.strerror or exc}") from None
        try:
            doc = json.loads(raw)
        except ValueError as exc:  # a writer that does not rename atomically may be half way
            note = f"not valid JSON ({exc})"
        else:
            if not isinstance(doc, dict) or doc.get("status") == COMPLETED:
                return doc  # a non-object gets its message from check_table
            note = f"status is {doc.get('status')!r}, expected {COMPLETED!r}"
        now = time.monotonic()
        if now >= deadline:
            raise TableError(f"ranktable {path}: {note} after waiting {timeout:g} s")
        if note != last_note:
            log(f"ranktable {path}: {note}; waiting up to {timeout:g} s")
            last_note = note
        time.sleep(min(0.2, deadline - now))


# --- I/O: barrier ---------------------------------------------------------------------------------
def _retry_in_use(what: str, bind: Callable[[], Any], deadline: float, log: Log) -> Any:
    """Call bind(), retrying while the address is in use (a dying previous incarnation holds it)."""
    until = min(deadline, time.monotonic() + IN_USE_RETRY_S)
    noted = False
    while True:
        try:
            return bind()
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE or time.monotonic() >= until:
                raise
            if not noted:
                log(f"{what} is in use (a previous incarnation still stopping?); "
                    f"retrying for up to {IN_USE_RETRY_S:g} s")
                noted = True
            time.sleep(0.2)


def _line(obj: Any) -> bytes:
    """One wire message."""
    return (json.dumps(obj, separators=(",", ":")) + "\n").encode()


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
        return _retry_in_use(target, lambda: socket.create_server(
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
        go = _line({"go": True, "world": world})
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
        refusal = _line({"go": False, "code": exc.code, "error": str(exc)})
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


def _read_line(sock: socket.socket, deadline: float) -> bytes | None:
    """One line from sock before deadline; None on EOF, error or timeout."""
    buf = bytearray()
    while b"\n" not in buf:
        remaining = deadline - time.monotonic()
        if remaining <= 0 or len(buf) > MAX_REPLY:
            return None
        sock.settimeout(remaining)
        try:
            data = sock.recv(65536)
        except OSError:  # socket.timeout is an OSError
            return None
        if not data:
            return None
        buf += data
    return bytes(buf.split(b"\n", 1)[0])


def barrier_peer(ident: Identity, me: dict[str, Any], timeout: float, log: Log) -> list[dict[str, Any]]:
    """Rank > 0: connect to rank 0 (retrying: start order is not guaranteed), say hello, wait for go."""
    deadline = time.monotonic() + timeout
    target = f"{ident.master_addr}:{ident.master_port}"
    hello = _line(me)
    last_error = "no attempt"
    connected = False
    noted = False
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
            time.sleep(max(0.0, min(0.2, deadline - time.monotonic())))
            continue
        with sock:
            if not connected:
                log(f"connected to rank 0 at {target}; hello sent, waiting for go")
            connected = True
            try:
                sock.sendall(hello)
                reply = _read_line(sock, deadline)
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


# --- LLM-DataDist link (seeds 000, 001), acted out over TCP -------------------------------------
# The prompt side listens on its listen ip:port (llm.listenIpInfo); the decoder side, for each
# link, connects to every prompt listener of the link (LinkLlmClusters: P listens, D initiates).
# Wire format, one UTF-8 JSON object per line:
#   decoder -> prompt  {"comm_name": "pd_comm_1_3", "cluster_id": 3, "remote_cluster_id": 1}
#   prompt -> decoder  {"ok": true, "cluster_id": 1}  or  {"ok": false, "error": "..."}
# A connection that sends nothing (a TCP readiness probe) is closed without a word.
@dataclass(frozen=True, slots=True)
class LinkSpec:
    """One link (communication domain) as this cluster's LAUNCHER_DATADIST_FILE gives it."""

    comm_name: str
    clusters: tuple[int, ...]             # cluster_rank_info's cluster ids
    prompts: tuple[tuple[int, str], ...]  # (prompt cluster id, its listen ip:port)


@dataclass(frozen=True, slots=True)
class DataDist:
    """This rank's LLM-DataDist cluster: id, role, where it listens (prompt) and its links."""

    cluster_id: int
    role: str                 # prompt | decoder
    listen: str | None        # prompt: ip:port
    links: tuple[LinkSpec, ...]


def _hostport(text: Any, what: str) -> tuple[str, int]:
    """'ip:port' -> (ip, port); raise EnvError naming `what`."""
    host, _, port = text.rpartition(":") if isinstance(text, str) else ("", "", "")
    number = _uint(port)
    if not host or number is None or not 1 <= number <= 65535:
        raise EnvError(f"{what}: expected 'ip:port', found {text!r}")
    return host, number


def parse_datadist(doc: Any, path: str, cluster_env: str | None) -> DataDist:
    """Check a LAUNCHER_DATADIST_FILE document (see expand.py) and return what it says."""
    where = f"LAUNCHER_DATADIST_FILE={path}"
    if not isinstance(doc, dict):
        raise EnvError(f"{where}: expected a JSON object")
    cid = _uint(str(doc.get("cluster_id", "")))
    role = doc.get("role")
    if cid is None:
        raise EnvError(f"{where}: cluster_id {doc.get('cluster_id')!r} is not an integer")
    if cluster_env is not None and cluster_env != str(cid):
        raise EnvError(f"{where}: cluster_id {cid} but LAUNCHER_DATADIST_CLUSTER_ID={cluster_env!r}")
    if role not in ("prompt", "decoder"):
        raise EnvError(f"{where}: role {role!r} is neither 'prompt' nor 'decoder'")
    options = doc.get("options") if isinstance(doc.get("options"), dict) else {}
    listen = options.get("llm.listenIpInfo")
    if role == "prompt":
        _hostport(listen, f"{where}: options.llm.listenIpInfo")
    links = []
    for k, link in enumerate(doc.get("links") or []):
        lw = f"{where}: links[{k}]"
        if not isinstance(link, dict) or not isinstance(link.get("comm_name"), str):
            raise EnvError(f"{lw}: needs a comm_name")
        info = link.get("cluster_rank_info")
        ids = tuple(_uint(str(c)) for c in info) if isinstance(info, dict) else ()
        if not ids or None in ids or cid not in ids:
            raise EnvError(f"{lw}: cluster_rank_info {info!r} does not name this cluster ({cid})")
        listen_map = link.get("prompt_listen")
        if not isinstance(listen_map, dict):
            raise EnvError(f"{lw}: prompt_listen is missing (where the decoder side links to)")
        prompts = []
        for pid, addr in listen_map.items():
            _hostport(addr, f"{lw}: prompt_listen[{pid}]")
            pnum = _uint(str(pid))
            if pnum is None or pnum not in ids:
                raise EnvError(f"{lw}: prompt_listen names cluster {pid!r}, not in cluster_rank_info")
            prompts.append((pnum, addr))
        links.append(LinkSpec(link["comm_name"], tuple(c for c in ids if c is not None), tuple(prompts)))
    return DataDist(cid, role, listen if role == "prompt" else None, tuple(links))


def load_datadist(env: Mapping[str, str]) -> DataDist | None:
    """The cluster this rank is, from LAUNCHER_DATADIST_FILE; None when the rank is none."""
    path = env.get("LAUNCHER_DATADIST_FILE", "").strip()
    if not path:
        return None
    try:
        with open(path, "rb") as fh:
            doc = json.loads(fh.read())
    except OSError as exc:
        raise EnvError(f"LAUNCHER_DATADIST_FILE={path}: cannot read: {exc.strerror or exc}") from None
    except ValueError as exc:
        raise EnvError(f"LAUNCHER_DATADIST_FILE={path}: not valid JSON ({exc})") from None
    return parse_datadist(doc, path, env.get("LAUNCHER_DATADIST_CLUSTER_ID"))


def check_link_hello(msg: Any, dd: DataDist) -> str:
    """The prompt side's check of a decoder's hello: what to log about the link, or raise LinkError."""
    if not isinstance(msg, dict):
        raise LinkError(f"not a link hello: {msg!r:.80}")
    comm, peer, remote = msg.get("comm_name"), msg.get("cluster_id"), msg.get("remote_cluster_id")
    if remote != dd.cluster_id:
        raise LinkError(f"hello for cluster {remote!r}, this is cluster {dd.cluster_id}")
    link = next((lk for lk in dd.links if lk.comm_name == comm), None)
    if link is None:
        raise LinkError(f"cluster {dd.cluster_id} is in no link named {comm!r}")
    if type(peer) is not int or peer not in link.clusters or peer == dd.cluster_id:
        raise LinkError(f"cluster {peer!r} is not a member of link {comm} (members {list(link.clusters)})")
    return f"{comm} from cluster {peer}"


def _stamp() -> str:
    """Wall-clock time for ordering log lines across hosts (the e2e testbed shares one clock)."""
    return f"t={time.time():.6f}"


def serve_links(dd: DataDist, log: Log) -> socket.socket:
    """Prompt side: listen on the listen ip:port and answer link hellos on a background thread."""
    assert dd.listen is not None
    host, port = _hostport(dd.listen, "llm.listenIpInfo")
    try:
        listener = _retry_in_use(f"datadist listen {dd.listen}", lambda: socket.create_server(
            (host, port), backlog=64), time.monotonic() + IN_USE_RETRY_S, log)
    except OSError as exc:
        raise LinkError(f"cluster {dd.cluster_id} cannot listen on {dd.listen} (llm.listenIpInfo): "
                        f"{exc.strerror or exc}; is the listen IP a device IP of this host?") from None

    def answer(sock: socket.socket, addr: str) -> None:
        with sock:
            line = _read_line(sock, time.monotonic() + 5.0)
            if line is None:
                return  # a readiness probe, or a decoder that gave up
            try:
                what = check_link_hello(json.loads(line), dd)
                reply: dict[str, Any] = {"ok": True, "cluster_id": dd.cluster_id}
                log(f"datadist: accepted link {what} at {addr} ({_stamp()})")
            except (ValueError, LinkError) as exc:
                reply = {"ok": False, "error": str(exc)}
                log(f"datadist: refused a link from {addr}: {exc}")
            try:
                sock.sendall(_line(reply))
            except OSError:
                pass

    def accept_forever() -> None:
        while True:
            try:
                sock, peer = listener.accept()
            except OSError:
                return  # closed at exit
            threading.Thread(target=answer, args=(sock, f"{peer[0]}:{peer[1]}"), daemon=True).start()

    start_helper(threading.Thread(target=accept_forever, name="datadist", daemon=True))
    log(f"datadist: listening on {dd.listen} (cluster {dd.cluster_id}, {_stamp()})")
    return listener


def link_once(dd: DataDist, comm: str, remote: int, addr: str, local_ip: str | None,
              timeout: float) -> None:
    """One link attempt from the decoder side; raise OSError (cannot connect) or LinkError."""
    host, port = _hostport(addr, f"link {comm}")
    source = (local_ip, 0) if local_ip else None  # LinkLlmClusters' local_ip_infos: our device IP
    deadline = time.monotonic() + timeout
    with socket.create_connection((host, port), timeout=timeout, source_address=source) as sock:
        sock.sendall(_line({"comm_name": comm, "cluster_id": dd.cluster_id, "remote_cluster_id": remote}))
        reply = _read_line(sock, deadline)
    if reply is None:
        raise LinkError(f"{addr} accepted the connection but sent no link reply within {timeout:g} s")
    try:
        msg = json.loads(reply)
    except ValueError:
        msg = None
    if not isinstance(msg, dict) or msg.get("ok") is not True or msg.get("cluster_id") != remote:
        why = msg.get("error") if isinstance(msg, dict) else f"{reply[:80]!r}"
        raise LinkError(f"cluster {remote} at {addr} refused link {comm}: {why}")


def link_all(dd: DataDist, local_ip: str | None, retries: int, timeout: float, log: Log) -> list[dict[str, Any]]:
    """Decoder side: link to every prompt listener of every link; raise LinkError at the first
    that fails after `retries` more attempts (0: one attempt, so only start order can make it work)."""
    done = []
    for link in dd.links:
        for remote, addr in link.prompts:
            for attempt in range(retries + 1):
                try:
                    link_once(dd, link.comm_name, remote, addr, local_ip, timeout)
                    break
                except OSError as exc:
                    why = exc.strerror or str(exc) or type(exc).__name__
                    if attempt == retries:
                        raise LinkError(f"link {link.comm_name}: cannot reach prompt cluster {remote} at {addr} "
                                        f"after {retries + 1} attempt(s): {why} (is the prompt side listening? "
                                        "it must start first)") from None
                    log(f"datadist: link {link.comm_name} to {addr}: {why}; retry {attempt + 1}/{retries}")
                    time.sleep(LINK_RETRY_PAUSE_S)
            log(f"datadist: linked {link.comm_name} to {addr} (cluster {dd.cluster_id} -> {remote}, {_stamp()})")
            done.append({"comm_name": link.comm_name, "remote_cluster_id": remote, "peer": addr})
    return done


# --- I/O: health endpoint ---------------------------------------------------------------------
def start_health(host: str, port: int, body: bytes, log: Log) -> ThreadingHTTPServer:
    """Serve GET /health -> body (everything else 404) on a background thread."""

    class Handler(BaseHTTPRequestHandler):
        server_version = f"demo_rank/{__version__}"

        def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
            self._reply(with_body=True)

        def do_HEAD(self) -> None:  # noqa: N802 (some probes only look at the status)
            self._reply(with_body=False)

        def _reply(self, with_body: bool) -> None:
            found = urlsplit(self.path).path == "/health"
            payload = body if found else b'{"error": "not found"}\n'
            self.send_response(200 if found else 404)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            if with_body:
                self.wfile.write(payload)

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
            pass  # probes come every few seconds; logging each would drown the rank's own log

    class Server(ThreadingHTTPServer):
        address_family = socket.AF_INET6 if ":" in host else socket.AF_INET
        daemon_threads = True

    try:
        server = _retry_in_use(f"health port {host}:{port}", lambda: Server((host, port), Handler),
                               time.monotonic() + IN_USE_RETRY_S, log)
    except OSError as exc:
        raise HealthError(f"cannot serve health on {host}:{port}: {exc.strerror or exc}") from None
    start_helper(threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.2},
                                  name="health", daemon=True))
    return server


# --- main -------------------------------------------------------------------------------------
def _logger(prefix: str) -> Log:
    """A log function writing one prefixed line to stderr."""
    def log(message: str) -> None:
        print(f"{prefix} {message}", file=sys.stderr, flush=True)
    return log


STOP_SIGNALS = {signal.SIGTERM, signal.SIGINT}


def start_helper(thread: threading.Thread) -> None:
    """Start a helper thread with SIGTERM/SIGINT blocked (it, and every thread it starts, inherits
    the mask), so the kernel delivers them to the main thread. Python runs handlers only in the
    main thread: a SIGTERM taken by a helper thread (likely while health requests keep helpers
    busy) waited for the main thread's sleep to end, and the rank lived on until supervisord's
    SIGKILL 30 s later, failing the launcher's `stop`."""
    old = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    try:
        thread.start()
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def _arm_signals() -> None:
    """SIGTERM/SIGINT raise Stopped once; later ones are ignored so cleanup is not interrupted."""
    def on_signal(signum: int, _frame: Any) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        # whatever the main thread is blocked in, be gone within STOP_GRACE: a gang restart
        # waits for every rank to stop, and supervisord would otherwise wait 30 s to SIGKILL
        watchdog = threading.Timer(STOP_GRACE, os._exit, (EXIT_OK,))
        watchdog.daemon = True  # never delays a clean exit
        watchdog.start()
        raise Stopped(signal.Signals(signum).name)
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)


def _non_negative(text: str) -> float:
    """argparse type: seconds >= 0."""
    value = float(text)
    if not value >= 0:  # also rejects nan
        raise argparse.ArgumentTypeError(f"expected seconds >= 0, got {text!r}")
    return value


def _count(text: str) -> int:
    """argparse type: an integer >= 0."""
    value = _uint(text)
    if value is None:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}")
    return value


def _port(text: str) -> int:
    """argparse type: a TCP port."""
    value = int(text)
    if not 1 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"expected a port 1..65535, got {text!r}")
    return value


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """The command line; usage errors exit 2 like bad env."""
    p = argparse.ArgumentParser(prog="python -m launcher.host.demo_rank",
                                description="Stand-in for a model rank: checks env and ranktable, meets "
                                            "its world over TCP, then serves GET /health.")
    p.add_argument("--table-timeout", type=_non_negative, default=30.0, metavar="SECONDS",
                   help="how long to wait for the ranktable's status to become 'completed' (default 30)")
    p.add_argument("--barrier-timeout", type=_non_negative, default=60.0, metavar="SECONDS",
                   help="how long to wait for every rank of the world (default 60)")
    p.add_argument("--health-port", type=_port, default=DEFAULT_HEALTH_PORT, metavar="PORT",
                   help=f"serve /health on PORT + LOCAL_RANK (default {DEFAULT_HEALTH_PORT})")
    p.add_argument("--health-host", default=os.environ.get("LAUNCHER_HOST_ADDRESS") or "0.0.0.0", metavar="ADDR",
                   help="address to serve /health on (default: this host's address from LAUNCHER_HOST_ADDRESS, "
                        "so several local 'hosts' on one machine do not collide; else 0.0.0.0)")
    p.add_argument("--crash-after", type=_non_negative, default=None, metavar="SECONDS",
                   help=f"exit {EXIT_CRASH} after serving this long (for restart-budget tests)")
    p.add_argument("--fail-barrier", action="store_true",
                   help=f"exit {EXIT_FAIL_BARRIER} just before the barrier (a rank that always crashes)")
    p.add_argument("--link-retry", type=_count, default=3, metavar="N",
                   help="decoder side: attempts after the first to reach a prompt listener (default 3; "
                        "0: one attempt, so a link succeeds only when the prompt side started first)")
    p.add_argument("--link-timeout", type=_non_negative, default=2.0, metavar="SECONDS",
                   help="decoder side: deadline of one link attempt (default 2)")
    p.add_argument("--version", action="version", version=f"demo_rank {__version__}")
    return p.parse_args(argv)


def _run(args: argparse.Namespace) -> int:
    """Env, table, barrier, health; return the exit code."""
    ident = parse_env(os.environ)
    log = _logger(f"[demo_rank rank={ident.rank} host={ident.host}]")
    try:
        return _run_as(ident, args, log)
    except Stopped as exc:
        log(f"{exc} received: stopped")
        return EXIT_OK


def _run_as(ident: Identity, args: argparse.Namespace, log: Log) -> int:
    """Table, barrier, health for a known identity; return the exit code."""
    health_port = args.health_port + ident.local_rank
    if health_port > 65535:
        raise EnvError(f"LOCAL_RANK={ident.local_rank}: --health-port {args.health_port} + LOCAL_RANK "
                       f"is beyond 65535")
    listener: socket.socket | None = None
    log(f"rank {ident.rank}/{ident.world_size} local_rank {ident.local_rank} instance {ident.instance} "
        f"device {ident.device_id} ({ident.device_ip}) server {ident.server_id} "
        f"master {ident.master_addr}:{ident.master_port} pid {os.getpid()}")
    try:
        doc = load_table(ident.ranktable, ident.ranktable_var, args.table_timeout, log)
        mine = check_table(doc, ident)
        log(f"ranktable {ident.ranktable}: ok ({ident.world_size} devices, rank {ident.rank} at {mine.where})")
        if args.fail_barrier:
            log(f"--fail-barrier: exiting {EXIT_FAIL_BARRIER} before the barrier")
            return EXIT_FAIL_BARRIER
        started = time.monotonic()
        world = barrier(ident, args.barrier_timeout, log)
        passed_at = time.time()
        log(f"barrier passed: {len(world)}/{ident.world_size} ranks in {time.monotonic() - started:.2f} s")
        doc = health_doc(ident, passed_at, os.getpid())
        dd = load_datadist(os.environ)
        if dd is not None:
            doc["datadist"] = {"cluster_id": dd.cluster_id, "role": dd.role}
            if dd.role == "prompt":
                listener = serve_links(dd, log)
                doc["datadist"]["listening"] = dd.listen
            else:
                doc["datadist"]["links"] = link_all(dd, ident.device_ip, args.link_retry, args.link_timeout, log)
        body = (json.dumps(doc) + "\n").encode()
        server = start_health(args.health_host, health_port, body, log)
    except DemoRankError as exc:
        log(f"error: {exc}")
        return exc.code
    try:
        log(f"serving http://{args.health_host}:{health_port}/health")
        print("ready", file=sys.stderr, flush=True)
        if args.crash_after is None:
            while True:
                time.sleep(3600)  # SIGTERM/SIGINT end this by raising Stopped
        time.sleep(args.crash_after)
        log(f"--crash-after {args.crash_after:g}: exiting {EXIT_CRASH}")
        return EXIT_CRASH
    finally:
        server.shutdown()
        server.server_close()
        if listener is not None:
            listener.close()


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the process exit code."""
    args = parse_args(argv)
    log = _logger("[demo_rank]")  # until the identity is known
    _arm_signals()
    try:
        return _run(args)
    except EnvError as exc:
        log(f"error: {exc}")
        return exc.code
    except Stopped as exc:
        log(f"{exc} received: stopped")
        return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
