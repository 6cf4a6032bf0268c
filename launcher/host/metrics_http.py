"""The agent's /metrics endpoint: plain HTTP/1.0 GET, the text rendered by metrics.py per request.

Where it listens comes from the generation's gang.json (`metrics`: address and port, from the
topology's defaults.metrics; null: no endpoint). It serves only what `launcher status` shows
anyway (names, states, counts), never the deployment key or an environment; it acts on nothing.
socketserver instead of http.server: the latter imports email and html, a third of the agent's
start-up imports, for a request line and a header block.
"""
from __future__ import annotations

import socketserver
import time

from .members import log
from .metrics import render

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (type checkers know the name)
if TYPE_CHECKING:
    from .agent_api import AgentApi

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
MAX_HEADER_LINES = 100


def _reply(wfile: object, status: str, body: bytes, content_type: str = "text/plain; charset=utf-8") -> None:
    head = (f"HTTP/1.0 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {len(body)}\r\n"
            "Connection: close\r\n\r\n").encode()
    wfile.write(head + body)  # type: ignore[attr-defined]


def serve(agent: AgentApi) -> None:
    """Serve /metrics where gang.json says, for as long as the agent runs (retrying a taken port)."""
    endpoint = agent.conf().get("metrics")
    if not endpoint:
        return

    class Handler(socketserver.StreamRequestHandler):
        timeout = 10  # a client that sends nothing does not hold a thread

        def handle(self) -> None:
            parts = self.rfile.readline(8192).decode("latin-1").split()
            for _ in range(MAX_HEADER_LINES):  # the headers: read and ignored
                if self.rfile.readline(8192) in (b"\r\n", b"\n", b""):
                    break
            if len(parts) < 2 or parts[0] not in ("GET", "HEAD"):
                _reply(self.wfile, "405 Method Not Allowed", b"only GET /metrics\n")
            elif parts[1].split("?")[0] != "/metrics":
                _reply(self.wfile, "404 Not Found", b"see /metrics\n")
            else:
                body = render(agent.root, len(agent.pending), agent.busy).encode()
                _reply(self.wfile, "200 OK", b"" if parts[0] == "HEAD" else body, CONTENT_TYPE)

    class Server(socketserver.ThreadingTCPServer):
        allow_reuse_address = True
        daemon_threads = True

    address, port = endpoint["address"], int(endpoint["port"])
    said = False
    while True:
        try:
            server = Server((address, port), Handler)
            break
        except OSError as exc:
            if not said:  # once: another deployment's agent may hold it for good
                log(f"metrics: cannot listen on {address}:{port}: {exc} (retrying every 10 s)")
                said = True
            time.sleep(10)
    log(f"metrics on http://{address}:{port}/metrics")
    server.serve_forever()
