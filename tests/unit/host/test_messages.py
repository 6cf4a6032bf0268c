"""The agents' signed messages: a wrong key, a skewed clock and a replay are refused, each as itself."""
from __future__ import annotations

import json

import pytest

from launcher.host.messages import WINDOW, Refused, Verifier, sign

KEY = b"k" * 32


def test_a_signed_message_passes_once():
    v = Verifier()
    line = sign(KEY, {"op": "ping"}, now=1000.0)
    body = v.verify(KEY, line, now=1001.0)
    assert body["op"] == "ping" and body["ts"] == 1000.0 and len(body["nonce"]) == 32
    with pytest.raises(Refused, match="replayed message"):  # the same line again, inside the window
        v.verify(KEY, line, now=1002.0)
    assert v.verify(KEY, sign(KEY, {"op": "ping"}, now=1000.0), now=1002.0)  # a new one: a new nonce


def test_another_key_is_a_bad_signature_not_a_clock_problem():
    with pytest.raises(Refused, match="bad signature: signed with another key"):
        Verifier().verify(KEY, sign(b"other", {"op": "ping"}, now=1000.0), now=1000.0)
    # a wrong key on a skewed clock is still the key's fault: the MAC is checked first
    with pytest.raises(Refused, match="bad signature"):
        Verifier().verify(KEY, sign(b"other", {"op": "ping"}, now=1000.0), now=5000.0)


@pytest.mark.parametrize("offset", [WINDOW + 1, -(WINDOW + 60)])
def test_a_skewed_clock_is_said_with_how_far_off(offset):
    with pytest.raises(Refused) as err:
        Verifier().verify(KEY, sign(KEY, {"op": "failed"}, now=10_000.0 + offset), now=10_000.0)
    assert str(err.value).startswith(f"clock skew: the message is stamped {offset:+.0f} s from this host's clock")
    assert "at most 300 s" in str(err.value)


def test_inside_the_window_is_accepted_either_way():
    v = Verifier()
    assert v.verify(KEY, sign(KEY, {}, now=10_000.0 + WINDOW - 1), now=10_000.0)
    assert v.verify(KEY, sign(KEY, {}, now=10_000.0 - WINDOW + 1), now=10_000.0)


def test_nonces_are_forgotten_only_when_they_could_no_longer_pass():
    v = Verifier()
    line = sign(KEY, {}, now=0.0)
    v.verify(KEY, line, now=WINDOW)  # accepted at the edge of the window
    for t in (WINDOW + 1, 2 * WINDOW):
        v.verify(KEY, sign(KEY, {}, now=t), now=t)  # other traffic prunes old nonces
    with pytest.raises(Refused):
        v.verify(KEY, line, now=2 * WINDOW)  # replay: refused (by the window now, at the latest)
    assert len(v.seen) <= 3


@pytest.mark.parametrize("line", [b"", b"not json", b'{"body": "{}"}', json.dumps({"body": "[]", "mac": 1}).encode()])
def test_garbage_is_refused(line):
    with pytest.raises(Refused):
        Verifier().verify(KEY, line, now=0.0)


def test_a_message_without_a_nonce_is_refused():
    import hashlib
    import hmac
    payload = json.dumps({"op": "failed", "ts": 5.0})  # what an agent before nonces sent
    line = json.dumps({"body": payload, "mac": hmac.new(KEY, payload.encode(), hashlib.sha256).hexdigest()})
    with pytest.raises(Refused, match="no nonce"):
        Verifier().verify(KEY, line.encode(), now=5.0)
