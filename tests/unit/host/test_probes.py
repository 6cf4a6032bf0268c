"""The host's probe round (launcher/host/probes.py): every probe once, each result in its place."""
from __future__ import annotations

import socket

from launcher.host.probes import probe_all


def test_a_round_answers_each_probe_in_its_place():
    with socket.socket() as listening, socket.socket() as closed:
        listening.bind(("127.0.0.1", 0))
        listening.listen(4)
        closed.bind(("127.0.0.1", 0))  # bound, not listening: refused
        up, down = (f"127.0.0.1:{s.getsockname()[1]}" for s in (listening, closed))
        specs = [{"kind": "tcp", "target": down, "timeout": 2}, {"kind": "tcp", "target": up, "timeout": 2},
                 {"kind": "command", "target": ["sh", "-c", "echo wedged >&2; exit 3"], "timeout": 2}]
        got = probe_all("/nonexistent", specs)
    assert list(got) == [0, 1, 2]
    assert got[0] is not None and "Connection refused" in got[0]
    assert got[1] is None
    assert got[2] == "exit 3: wedged"
    # one probe alone (no thread): the listener is closed by now
    assert probe_all("/nonexistent", specs[1:2]) == {0: "ConnectionRefusedError: [Errno 111] Connection refused"}
