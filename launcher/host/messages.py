"""The agents' messages: signed JSON lines, refused for a wrong key, a skewed clock, a replay or another recipient.

One JSON line each way, HMAC-SHA256 under the deployment key. A request's body names its
sender (`from`), its recipient host (`to`) and the deployment (`dep`), and is stamped with the
sender's time and a random nonce. The reply is signed too and names the request's nonce
(`re`): a client believes only an answer to its own request from a holder of the key.

A receiver refuses a message whose MAC is wrong ("bad signature": another key), one sent to
another host or deployment (every host holds the same key, so without `to` a captured `stop`
for one host would be obeyed by all), one whose time is off from its own clock by more than
WINDOW ("clock skew": the sender's or its own clock is wrong; the MAC was right, so the key is
not to blame), and one whose nonce it has seen before inside the window (a replay). The nonces
it accepted are kept in ROOT/state/nonces as well as in memory, so an agent restarted inside
the window refuses a replay too. Each refusal says which, so both sides can log it and `status`
can show it.
"""
from __future__ import annotations

import hashlib
import hmac
import json
import os
import threading
import time

from .state import read_json, secret

WINDOW = 300.0  # seconds a message's time may differ from the receiver's clock
NONCES = "nonces"  # ROOT/state/NONCES: "<nonce> <accepted at>" lines, the replay cache across restarts


def _mac(key: bytes, payload: str) -> str:
    return hmac.new(key, payload.encode(), hashlib.sha256).hexdigest()


def _envelope(key: bytes, body: dict) -> bytes:
    payload = json.dumps(body, sort_keys=True)
    return (json.dumps({"body": payload, "mac": _mac(key, payload)}) + "\n").encode()


def sign(key: bytes, body: dict, now: float | None = None, *, sender: str = "", to: str = "",
         deployment: str = "") -> bytes:
    """A request: ``body`` plus who sends it to whom in which deployment, a time stamp and a nonce."""
    return _envelope(key, {**body, "from": sender, "to": to, "dep": deployment,
                           "ts": time.time() if now is None else now, "nonce": os.urandom(16).hex()})


def sign_reply(key: bytes, reply: dict, request_nonce: str | None, sender: str) -> bytes:
    """The answer to the request whose nonce was ``request_nonce`` (None: a line that was no request)."""
    return _envelope(key, {**reply, "re": request_nonce, "from": sender})


def nonce_of(line: bytes) -> str:
    """The nonce a request line carries (the client matches the reply against it)."""
    return str(json.loads(json.loads(line)["body"])["nonce"])


def open_reply(key: bytes, line: bytes, request_nonce: str) -> dict:
    """The reply's body, or RuntimeError when it is not a signed answer to this very request."""
    try:
        msg = json.loads(line)
        payload, mac = msg["body"], msg["mac"]
        body = json.loads(payload)
    except (ValueError, KeyError, TypeError):
        raise RuntimeError(f"no signed reply (got {line[:80]!r})") from None
    if not isinstance(mac, str) or not hmac.compare_digest(_mac(key, payload), mac) or not isinstance(body, dict):
        raise RuntimeError("the reply is not signed with this host's key (the hosts hold different keys: "
                           "redeploy the deployment's secret)")
    if body.get("re") != request_nonce:
        raise RuntimeError("the reply answers another request")
    return body


def conf_of(root: str) -> dict:
    """This host's name and deployment (the current generation's gang.json): a message's sender."""
    return read_json(os.path.join(root, "current", "gang.json"), {})


def send_signed(root: str, address: str, port: int, body: dict, timeout: float, connect_timeout: float = 10.0,
                *, to: str) -> dict:
    """Send ``body`` signed with ROOT's deployment key to host ``to``'s agent at ADDRESS:PORT; its
    verified reply, or RuntimeError with the agent's error or why its reply is not believed (the
    callers name the host). OSError when it cannot be reached."""
    import socket
    key = secret(root)
    if key is None:
        raise RuntimeError("no deployment secret on this host")
    conf = conf_of(root)
    line = sign(key, body, sender=str(conf.get("host", "")), to=to, deployment=str(conf.get("deployment", "")))
    with socket.create_connection((address, port), timeout=min(timeout, connect_timeout)) as s:
        s.settimeout(timeout)
        s.sendall(line)
        data = s.makefile("rb").readline()
    reply = open_reply(key, data, nonce_of(line))
    if not reply.get("ok"):
        raise RuntimeError(str(reply.get("error", "no reply")))
    return reply


class Refused(Exception):
    """A message the receiver will not act on; str() says why."""


class Verifier:
    """Checks messages and remembers the nonces it accepted for as long as they could pass, in
    memory and, given ``root``, in ROOT/state/nonces (read back by the next agent)."""

    def __init__(self, root: str | None = None, now: float | None = None) -> None:
        self.seen: dict[str, float] = {}  # nonce -> when accepted (receiver's clock)
        self.lock = threading.Lock()
        self.path = os.path.join(root, "state", NONCES) if root else None
        self.written = 0  # lines in the file: rewritten without the expired ones when it doubles
        if self.path:
            self._load(time.time() if now is None else now)

    def _load(self, now: float) -> None:
        try:
            with open(self.path or "", encoding="utf-8") as fh:
                for line in fh:
                    nonce, _, at = line.partition(" ")
                    try:
                        if now - float(at) <= 2 * WINDOW:
                            self.seen[nonce] = float(at)
                    except ValueError:
                        continue  # a line cut short by a crash
        except OSError:
            pass
        self._rewrite()

    def _rewrite(self) -> None:
        if not self.path:
            return
        tmp = f"{self.path}.tmp-{os.getpid()}"
        try:
            with open(tmp, "w", encoding="utf-8") as fh:
                fh.writelines(f"{n} {t}\n" for n, t in self.seen.items())
            os.replace(tmp, self.path)
        except OSError:
            return  # no state dir (yet), a full disk: the cache in memory still holds
        self.written = len(self.seen)

    def _remember(self, nonce: str, now: float) -> None:
        self.seen[nonce] = now
        if not self.path:
            return
        if self.written > 2 * len(self.seen) + 64:
            self._rewrite()
            return
        # before the message is acted on: a replay after a crash right after this is refused too
        try:
            with open(self.path, "a", encoding="utf-8") as fh:
                fh.write(f"{nonce} {now}\n")
        except OSError:
            return
        self.written += 1

    def verify(self, key: bytes | None, line: bytes, now: float | None = None, *, host: str,
               deployment: str) -> dict:
        now = time.time() if now is None else now
        try:
            msg = json.loads(line)
            payload, mac = msg["body"], msg["mac"]
            body = json.loads(payload)
        except (ValueError, KeyError, TypeError):
            raise Refused("bad message: not a signed JSON line") from None
        if key is None:
            raise Refused("no deployment secret on this host")
        if not isinstance(mac, str) or not hmac.compare_digest(_mac(key, payload), mac):
            raise Refused("bad signature: signed with another key (redeploy the deployment's secret)")
        if not isinstance(body, dict):
            raise Refused("bad message: the body is not an object")
        if body.get("dep") != deployment:
            raise Refused(f"sent for deployment {body.get('dep')!r}, not {deployment!r}")
        if body.get("to") != host:
            raise Refused(f"sent to {body.get('to')!r} by {body.get('from')!r}, not to this host ({host})")
        ts = body.get("ts")
        if not isinstance(ts, (int, float)):
            raise Refused("bad message: no time stamp")
        if abs(now - ts) > WINDOW:
            raise Refused(f"clock skew: the message is stamped {ts - now:+.0f} s from this host's clock "
                          f"(at most {WINDOW:.0f} s allowed); fix the clocks (NTP)")
        nonce = body.get("nonce")
        if not isinstance(nonce, str) or not nonce or not nonce.isalnum():
            raise Refused("bad message: no nonce")
        with self.lock:
            for old in [n for n, t in self.seen.items() if now - t > 2 * WINDOW]:
                del self.seen[old]
            if nonce in self.seen:
                raise Refused("replayed message: this nonce was seen before")
            self._remember(nonce, now)
        return body
