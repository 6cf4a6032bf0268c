"""gangstart's wait for an agent that is still starting: a refused connection is tried again
until the deadline, anything else is not (real sockets on 127.0.0.1)."""
from __future__ import annotations

import socket
import threading
import time

import pytest

from launcher.host.gangstart import _refused_until


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ask(port: int) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        return s.recv(16)


def test_a_refused_connection_is_tried_again_until_the_agent_listens():
    port = _free_port()
    listening = threading.Event()

    def agent_starting_late() -> None:
        time.sleep(0.3)  # an agent's Python start on a busy host
        with socket.create_server(("127.0.0.1", port)) as srv:
            listening.set()
            conn, _ = srv.accept()
            with conn:
                conn.sendall(b"ok")

    t = threading.Thread(target=agent_starting_late, daemon=True)
    t.start()
    assert _refused_until(time.monotonic() + 10, lambda: _ask(port)) == b"ok"
    assert listening.is_set()
    t.join(5)


def test_an_agent_that_never_listens_is_given_up_at_the_deadline():
    port = _free_port()
    t0 = time.monotonic()
    with pytest.raises(ConnectionRefusedError):
        _refused_until(t0 + 0.3, lambda: _ask(port))


def test_an_error_other_than_refused_is_not_tried_again():
    calls = []

    def timed_out() -> bytes:
        calls.append(1)
        raise TimeoutError("timed out")
    with pytest.raises(TimeoutError):
        _refused_until(time.monotonic() + 10, timed_out)
    assert len(calls) == 1
