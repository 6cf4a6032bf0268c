"""A program whose workers outlive it, for tests/integration/host/test_process_tree.py.

Forks two listeners on 127.0.0.1 (PORT1: in a session of its own, via setsid; PORT2: in the
program's own process group), both ignoring SIGTERM, and waits for them. A listener that cannot
bind (its port held by a previous run's leftovers) exits 1, and so does the program then: each
restart against such a port fails, as a Ray head against its old GCS server's port does.
Usage: python listeners.py PORT1 PORT2
"""
from __future__ import annotations

import os
import signal
import socket
import sys


def listener(port: int, own_session: bool) -> int:
    pid = os.fork()
    if pid:
        return pid
    if own_session:
        os.setsid()
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    try:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", port))
        sock.listen()
    except OSError as exc:
        print(f"listener on {port}: {exc}", flush=True)
        os._exit(1)
    print(f"listening on {port} (pid {os.getpid()}, session {os.getsid(0)})", flush=True)
    while True:
        conn, _ = sock.accept()
        conn.close()


def main() -> int:
    ports = [int(p) for p in sys.argv[1:3]]
    listener(ports[0], own_session=True)
    listener(ports[1], own_session=False)
    while True:
        _, status = os.wait()  # a listener that failed ends the program with its status
        return os.waitstatus_to_exitcode(status) or 1


if __name__ == "__main__":
    sys.exit(main())
