"""The agent's port: silent clients cost no thread and are closed, and never delay a signed request."""
from __future__ import annotations

import json
import socket
import threading

import pytest

from launcher.host import agentport
from launcher.host.agent import Agent
from launcher.host.messages import send_signed, sign
from tests.helpers import wait_for

KEY = b"k" * 32


@pytest.fixture
def agent(tmp_path, monkeypatch):
    monkeypatch.setattr(agentport, "READ_TIMEOUT", 2.0)
    probe = socket.create_server(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    root = tmp_path / "root"
    (root / "state").mkdir(parents=True)
    (root / "state" / "secret").write_bytes(KEY)
    (root / "current").mkdir()
    (root / "current" / "gang.json").write_text(json.dumps(
        {"deployment": "d", "host": "h1", "address": "127.0.0.1", "agent_port": port, "gangs": {}}))
    a = Agent(str(root))
    threading.Thread(target=a.serve, daemon=True).start()
    wait_for(lambda: _connects(port), what="the agent port listening")
    return a


def _connects(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


def test_500_silent_clients_hold_no_thread_and_a_signed_request_is_answered(agent):
    port = agent.conf()["agent_port"]
    threads_before = threading.active_count()
    idle = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(500)]
    try:
        reply = send_signed(agent.root, "127.0.0.1", port, {"op": "ping"}, 10, to="h1")
        assert reply["ok"] is True and reply["from"] == "h1"
        assert threading.active_count() - threads_before < 10  # not a thread per connection (before: 500)
    finally:
        for s in idle:
            s.close()


def test_a_client_that_sends_nothing_is_closed_after_the_read_timeout(agent):
    port = agent.conf()["agent_port"]
    with socket.create_connection(("127.0.0.1", port), timeout=30) as silent:
        assert silent.recv(1) == b""  # closed by the agent (before: held open, and a thread, forever)


def test_a_request_for_another_host_is_refused_with_a_signed_reply(agent):
    port = agent.conf()["agent_port"]
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(sign(KEY, {"op": "stop", "group": "g"}, sender="h1", to="h2", deployment="d"))
        reply = json.loads(json.loads(s.makefile("rb").readline())["body"])
    assert reply["ok"] is False and reply["error"] == "refused: sent to 'h2' by 'h1', not to this host (h1)"
