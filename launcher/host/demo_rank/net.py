"""What the barrier, the health server and the LLM-DataDist act share: a log, one-line JSON over TCP, binds."""
from __future__ import annotations

import errno
import json
import socket
import time
from typing import Any, Callable

Log = Callable[[str], None]

IN_USE_RETRY_S = 10.0   # how long a gang restart's previous incarnation may take to release a port
MAX_REPLY = 16 << 20    # a go message for a very large world stays far below this


def retry_in_use(what: str, bind: Callable[[], Any], deadline: float, log: Log) -> Any:
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


def json_line(obj: Any) -> bytes:
    """One wire message."""
    return (json.dumps(obj, separators=(",", ":")) + "\n").encode()


def read_line(sock: socket.socket, deadline: float) -> bytes | None:
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
