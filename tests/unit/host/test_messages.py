"""The agents' signed messages: a wrong key, a skewed clock and a replay are refused, each as itself."""
from __future__ import annotations

import json

import pytest

from launcher.host.messages import WINDOW, Refused, Verifier, sign as _sign

TO = {"host": "h1", "deployment": "d"}  # who checks: host h1 of deployment d


def sign(key, body, now=None, to="h1", deployment="d"):
    return _sign(key, body, now=now, sender="h2", to=to, deployment=deployment)

KEY = b"k" * 32


def test_a_signed_message_passes_once():
    v = Verifier()
    line = sign(KEY, {"op": "ping"}, now=1000.0)
    body = v.verify(KEY, line, now=1001.0, **TO)
    assert body["op"] == "ping" and body["ts"] == 1000.0 and len(body["nonce"]) == 32
    with pytest.raises(Refused, match="replayed message"):  # the same line again, inside the window
        v.verify(KEY, line, now=1002.0, **TO)
    assert v.verify(KEY, sign(KEY, {"op": "ping"}, now=1000.0), now=1002.0, **TO)  # a new one: a new nonce


def test_another_key_is_a_bad_signature_not_a_clock_problem():
    with pytest.raises(Refused, match="bad signature: signed with another key"):
        Verifier().verify(KEY, sign(b"other", {"op": "ping"}, now=1000.0), now=1000.0, **TO)
    # a wrong key on a skewed clock is still the key's fault: the MAC is checked first
    with pytest.raises(Refused, match="bad signature"):
        Verifier().verify(KEY, sign(b"other", {"op": "ping"}, now=1000.0), now=5000.0, **TO)


@pytest.mark.parametrize("offset", [WINDOW + 1, -(WINDOW + 60)])
def test_a_skewed_clock_is_said_with_how_far_off(offset):
    with pytest.raises(Refused) as err:
        Verifier().verify(KEY, sign(KEY, {"op": "failed"}, now=10_000.0 + offset), now=10_000.0, **TO)
    assert str(err.value).startswith(f"clock skew: the message is stamped {offset:+.0f} s from this host's clock")
    assert "at most 300 s" in str(err.value)


def test_inside_the_window_is_accepted_either_way():
    v = Verifier()
    assert v.verify(KEY, sign(KEY, {}, now=10_000.0 + WINDOW - 1), now=10_000.0, **TO)
    assert v.verify(KEY, sign(KEY, {}, now=10_000.0 - WINDOW + 1), now=10_000.0, **TO)


def test_nonces_are_forgotten_only_when_they_could_no_longer_pass():
    v = Verifier()
    line = sign(KEY, {}, now=0.0)
    v.verify(KEY, line, now=WINDOW, **TO)  # accepted at the edge of the window
    for t in (WINDOW + 1, 2 * WINDOW):
        v.verify(KEY, sign(KEY, {}, now=t), now=t, **TO)  # other traffic prunes old nonces
    with pytest.raises(Refused):
        v.verify(KEY, line, now=2 * WINDOW, **TO)  # replay: refused (by the window now, at the latest)
    assert len(v.seen) <= 3


@pytest.mark.parametrize("line", [b"", b"not json", b'{"body": "{}"}', json.dumps({"body": "[]", "mac": 1}).encode()])
def test_garbage_is_refused(line):
    with pytest.raises(Refused):
        Verifier().verify(KEY, line, now=0.0, **TO)


def test_a_message_without_a_nonce_is_refused():
    import hashlib
    import hmac
    payload = json.dumps({"op": "failed", "ts": 5.0, "to": "h1", "dep": "d"})  # no nonce
    line = json.dumps({"body": payload, "mac": hmac.new(KEY, payload.encode(), hashlib.sha256).hexdigest()})
    with pytest.raises(Refused, match="no nonce"):
        Verifier().verify(KEY, line.encode(), now=5.0, **TO)


def test_a_message_for_another_host_is_refused_there():
    """Every host holds the deployment's key: a `stop` captured on its way to h1 and sent to h2
    is refused by h2 (it names its recipient), as is one for another deployment."""
    line = sign(KEY, {"op": "stop", "group": "demo"}, now=1000.0, to="h1")
    with pytest.raises(Refused, match=r"sent to 'h1' by 'h2', not to this host \(h2\)"):
        Verifier().verify(KEY, line, now=1000.0, host="h2", deployment="d")
    with pytest.raises(Refused, match="sent for deployment 'other', not 'd'"):
        Verifier().verify(KEY, sign(KEY, {"op": "stop"}, now=1000.0, deployment="other"), now=1000.0, **TO)
    assert Verifier().verify(KEY, line, now=1000.0, **TO)["op"] == "stop"  # its own recipient takes it


def test_a_replay_is_refused_by_the_next_agent_too(tmp_path):
    """The nonces accepted are on disk (state/nonces): a new agent inside the window refuses a replay."""
    (tmp_path / "state").mkdir()
    line = sign(KEY, {"op": "stop", "group": "demo"}, now=1000.0)
    Verifier(str(tmp_path), now=1000.0).verify(KEY, line, now=1000.0, **TO)
    later = Verifier(str(tmp_path), now=1100.0)  # the agent restarted (kill -9, a new runtime)
    with pytest.raises(Refused, match="replayed message"):
        later.verify(KEY, line, now=1100.0, **TO)
    assert later.verify(KEY, sign(KEY, {"op": "ping"}, now=1100.0), now=1100.0, **TO)
    much_later = Verifier(str(tmp_path), now=1000.0 + 3 * WINDOW)  # expired nonces are dropped from the file
    assert much_later.seen == {} and (tmp_path / "state" / "nonces").read_text() == ""


def test_the_client_believes_only_a_signed_answer_to_its_own_request(tmp_path):
    """send_signed verifies the reply: an unsigned `ok` from whoever holds the address, a reply
    signed with another key, or a signed reply to another request are not taken."""
    import socket
    import threading

    from launcher.host.messages import nonce_of, send_signed, sign_reply
    (tmp_path / "state").mkdir()
    (tmp_path / "state" / "secret").write_bytes(KEY)
    (tmp_path / "current").mkdir()
    (tmp_path / "current" / "gang.json").write_text(json.dumps({"host": "h2", "deployment": "d"}))
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]
    answers = [lambda line: b'{"ok": true}\n',
               lambda line: sign_reply(b"other key", {"ok": True}, nonce_of(line), "h1"),
               lambda line: sign_reply(KEY, {"ok": True}, "another nonce", "h1"),
               lambda line: sign_reply(KEY, {"ok": True, "x": 1}, nonce_of(line), "h1")]
    seen = []

    def serve():
        for answer in answers:
            conn, _ = server.accept()
            with conn:
                line = conn.makefile("rb").readline()
                seen.append(json.loads(json.loads(line)["body"]))
                conn.sendall(answer(line))
    t = threading.Thread(target=serve, daemon=True)
    t.start()
    for why in ("no signed reply", "not signed with this host's key", "answers another request"):
        with pytest.raises(RuntimeError, match=why):
            send_signed(str(tmp_path), "127.0.0.1", port, {"op": "ping"}, 10, to="h1")
    assert send_signed(str(tmp_path), "127.0.0.1", port, {"op": "ping"}, 10, to="h1")["x"] == 1
    t.join(10)
    server.close()
    assert {(b["from"], b["to"], b["dep"]) for b in seen} == {("h2", "h1", "d")}
