"""The agent's TCP port: one signed JSON line in, one JSON line out, a thread per connection.

Every message is checked (messages.Verifier: key, clock window, replay) before the agent acts
on it; a refusal is said to the sender too, so its log and `status` show why.
"""
from __future__ import annotations

import json
import socketserver
import time

from .members import log
from .messages import Refused, host_clock
from .state import secret

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (type checkers know the name)
if TYPE_CHECKING:
    from .agent_api import AgentApi


def serve(agent: AgentApi) -> None:
    """Listen on this host's address and the deployment's agent port (retrying while it is taken)."""

    class Handler(socketserver.StreamRequestHandler):
        def handle(self) -> None:
            try:
                body = agent.verifier.verify(secret(agent.root), self.rfile.readline(65536), host_clock(agent.root))
            except Refused as exc:
                log(f"refused a message from {self.client_address[0]}: {exc}")
                self.wfile.write((json.dumps({"ok": False, "error": f"refused: {exc}"}) + "\n").encode())
                return
            try:
                reply = agent.dispatch(body)
            except Exception as exc:
                reply = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
            self.wfile.write((json.dumps(reply) + "\n").encode())

    class Server(socketserver.ThreadingTCPServer):
        allow_reuse_address = True
        daemon_threads = True

    conf = agent.conf()
    while True:
        try:
            server = Server((conf["address"], conf["agent_port"]), Handler)
            break
        except OSError as exc:
            log(f"cannot listen on {conf['address']}:{conf['agent_port']}: {exc} (retrying)")
            time.sleep(2)
    log(f"listening on {conf['address']}:{conf['agent_port']}")
    server.serve_forever()
