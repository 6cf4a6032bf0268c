"""The agent's TCP port: one signed JSON line in, one signed JSON line out.

One thread reads every connection's request line (a selector, no thread per connection): a
client has READ_TIMEOUT to send it, and at most MAX_PENDING connections wait for theirs (one
more drops the oldest). So clients that connect and send nothing cost a descriptor each for a
while, never a thread, and never delay an agent's request (a member's stop in a gang
restart). A complete line is checked (messages.Verifier: key, recipient, deployment, clock
window, replay) before anything runs; only a message that passes gets a thread of its own to
be acted on. A refusal is said to the sender too (signed), so its log and `status` show why.
"""
from __future__ import annotations

import json
import selectors
import socket
import threading
import time

from .members import log
from .messages import Refused, sign_reply
from .state import secret

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (type checkers know the name)
if TYPE_CHECKING:
    from .agent_api import AgentApi

READ_TIMEOUT = 10.0   # s a client has to send its request line after connecting
MAX_PENDING = 256     # connections waiting for their request line (the oldest goes first)
MAX_LINE = 65536
REPLY_TIMEOUT = 30.0  # s to hand a reply to a client that does not read it
REFUSAL_TIMEOUT = 1.0  # the same for a refusal, which the reading thread sends itself


def _answer(agent: AgentApi, conn: socket.socket, key: bytes | None, reply: dict, nonce: str | None,
            timeout: float = REPLY_TIMEOUT) -> None:
    try:
        conn.settimeout(timeout)
        conn.sendall(sign_reply(key or b"", reply, nonce, agent.conf().get("host", "")))
    except OSError:
        pass  # the client went away: its own timeout tells it
    finally:
        conn.close()


def _act(agent: AgentApi, conn: socket.socket, key: bytes | None, body: dict) -> None:
    try:
        reply = agent.dispatch(body)
    except Exception as exc:
        reply = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
    _answer(agent, conn, key, reply, body["nonce"])


def _request(agent: AgentApi, conn: socket.socket, line: bytes) -> None:
    """A complete request line: refused at once, or acted on in a thread of its own."""
    conf, key = agent.conf(), secret(agent.root)
    try:
        body = agent.verifier.verify(key, line, time.time(), host=conf.get("host", ""),
                                     deployment=conf.get("deployment", ""))
    except Refused as exc:
        try:
            peer = conn.getpeername()[0]
        except OSError:
            peer = "?"
        log(f"refused a message from {peer}: {exc}")
        try:
            nonce = json.loads(json.loads(line)["body"])["nonce"]
        except (ValueError, KeyError, TypeError):
            nonce = None
        # from the reading thread: a client that does not read its refusal does not hold it up
        _answer(agent, conn, key, {"ok": False, "error": f"refused: {exc}"}, nonce if isinstance(nonce, str) else None,
                timeout=REFUSAL_TIMEOUT)
        return
    threading.Thread(target=_act, args=(agent, conn, key, body), daemon=True).start()


def _listen(agent: AgentApi) -> socket.socket:
    conf = agent.conf()
    while True:  # retrying while the port is taken (a previous agent on its way out)
        try:
            sock = socket.create_server((conf["address"], conf["agent_port"]), backlog=128)
            break
        except OSError as exc:
            log(f"cannot listen on {conf['address']}:{conf['agent_port']}: {exc} (retrying)")
            time.sleep(2)
    sock.setblocking(False)
    log(f"listening on {conf['address']}:{conf['agent_port']}")
    return sock


def serve(agent: AgentApi) -> None:
    """Listen on this host's address and the deployment's agent port, forever."""
    listener = _listen(agent)
    sel = selectors.DefaultSelector()
    sel.register(listener, selectors.EVENT_READ)
    pending: dict[socket.socket, tuple[float, bytearray]] = {}  # oldest first: deadline, bytes so far

    def drop(conn: socket.socket) -> None:
        pending.pop(conn, None)
        sel.unregister(conn)
        conn.close()

    while True:
        for key, _ in sel.select(timeout=1.0):
            if key.fileobj is listener:
                while True:
                    try:
                        conn, _ = listener.accept()
                    except (BlockingIOError, InterruptedError):
                        break
                    except OSError as exc:  # out of descriptors: the oldest waiting client makes room
                        log(f"agent port: accept failed: {exc}")
                        if pending:
                            drop(next(iter(pending)))
                        break
                    if len(pending) >= MAX_PENDING:
                        drop(next(iter(pending)))
                    conn.setblocking(False)
                    pending[conn] = (time.monotonic() + READ_TIMEOUT, bytearray())
                    sel.register(conn, selectors.EVENT_READ)
                continue
            conn = key.fileobj  # type: ignore[assignment]
            try:
                data = conn.recv(MAX_LINE)
            except (BlockingIOError, InterruptedError):
                continue
            except OSError:
                data = b""
            if not data:
                drop(conn)
                continue
            buf = pending[conn][1]
            buf += data
            if b"\n" in buf:
                pending.pop(conn)
                sel.unregister(conn)
                conn.setblocking(True)
                try:
                    _request(agent, conn, bytes(buf.partition(b"\n")[0]))
                except Exception as exc:  # never the end of the agent port
                    log(f"agent port: {type(exc).__name__}: {exc}")
                    conn.close()
            elif len(buf) > MAX_LINE:
                drop(conn)
        now = time.monotonic()
        for conn in [c for c, (deadline, _) in pending.items() if deadline < now]:
            drop(conn)  # READ_TIMEOUT without a request line
