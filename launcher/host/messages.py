"""The agents' messages: signed JSON lines, refused for a wrong key, a skewed clock or a replay.

One JSON line each, HMAC-SHA256 under the deployment key, stamped with the sender's time and a
random nonce.

A receiver refuses a message whose MAC is wrong ("bad signature": another key), one whose
time is off from its own clock by more than WINDOW ("clock skew": the sender's or its own
clock is wrong; the MAC was right, so the key is not to blame), and one whose nonce it has
seen before inside the window (a replay: the window alone lets a captured message be sent
again for WINDOW seconds). Each refusal says which, so both sides can log it and `status`
can show it.

The agent reads its time through host_clock(): the seconds in ROOT/state/test-clock-offset,
a file only tests write, shift it. Hosts of one testbed share the kernel's clock, so a host
with a skewed clock cannot be made there otherwise; without the file it is time.time().
"""
from __future__ import annotations

import hashlib
import hmac
import json
import os
import threading
import time

from .state import secret

WINDOW = 300.0  # seconds a message's time may differ from the receiver's clock


def host_clock(root: str) -> float:
    try:
        with open(os.path.join(root, "state", "test-clock-offset"), encoding="utf-8") as fh:
            return time.time() + float(fh.read())
    except (OSError, ValueError):
        return time.time()


def send_signed(root: str, address: str, port: int, body: dict, timeout: float, connect_timeout: float = 10.0) -> dict:
    """Send ``body`` signed with ROOT's deployment key to the agent at ADDRESS:PORT; its reply,
    or RuntimeError with the agent's error (the callers name the host)."""
    import socket
    key = secret(root)
    if key is None:
        raise RuntimeError("no deployment secret on this host")
    with socket.create_connection((address, port), timeout=min(timeout, connect_timeout)) as s:
        s.settimeout(timeout)
        s.sendall(sign(key, body, now=host_clock(root)))
        data = s.makefile("rb").readline()
    reply = json.loads(data or b"{}")
    if not reply.get("ok"):
        raise RuntimeError(str(reply.get("error", "no reply")))
    return reply


class Refused(Exception):
    """A message the receiver will not act on; str() says why."""


def sign(key: bytes, body: dict, now: float | None = None) -> bytes:
    body = {**body, "ts": time.time() if now is None else now, "nonce": os.urandom(16).hex()}
    payload = json.dumps(body, sort_keys=True)
    mac = hmac.new(key, payload.encode(), hashlib.sha256).hexdigest()
    return (json.dumps({"body": payload, "mac": mac}) + "\n").encode()


class Verifier:
    """Checks messages and remembers the nonces it accepted for as long as they could pass."""

    def __init__(self) -> None:
        self.seen: dict[str, float] = {}  # nonce -> when accepted (receiver's clock)
        self.lock = threading.Lock()

    def verify(self, key: bytes | None, line: bytes, now: float | None = None) -> dict:
        now = time.time() if now is None else now
        try:
            msg = json.loads(line)
            payload, mac = msg["body"], msg["mac"]
            body = json.loads(payload)
        except (ValueError, KeyError, TypeError):
            raise Refused("bad message: not a signed JSON line") from None
        if key is None:
            raise Refused("no deployment secret on this host")
        if not isinstance(mac, str) or not hmac.compare_digest(
                hmac.new(key, payload.encode(), hashlib.sha256).hexdigest(), mac):
            raise Refused("bad signature: signed with another key (redeploy the deployment's secret)")
        if not isinstance(body, dict):
            raise Refused("bad message: the body is not an object")
        ts = body.get("ts")
        if not isinstance(ts, (int, float)):
            raise Refused("bad message: no time stamp")
        if abs(now - ts) > WINDOW:
            raise Refused(f"clock skew: the message is stamped {ts - now:+.0f} s from this host's clock "
                          f"(at most {WINDOW:.0f} s allowed); fix the clocks (NTP)")
        nonce = body.get("nonce")
        if not isinstance(nonce, str) or not nonce:
            raise Refused("bad message: no nonce")
        with self.lock:
            for old in [n for n, t in self.seen.items() if now - t > 2 * WINDOW]:
                del self.seen[old]
            if nonce in self.seen:
                raise Refused("replayed message: this nonce was seen before")
            self.seen[nonce] = now
        return body
