"""A demo rank's last act: serving GET /health (what it is and when its barrier passed) until stopped."""
from __future__ import annotations

import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

from ... import __version__
from .errors import HealthError
from .identity import Identity
from .net import IN_USE_RETRY_S, Log, retry_in_use
from .signals import start_helper

DEFAULT_HEALTH_PORT = 18610


def health_doc(ident: Identity, passed_at: float, pid: int) -> dict[str, Any]:
    """The body of GET /health."""
    return {"rank": ident.rank, "local_rank": ident.local_rank, "world_size": ident.world_size,
            "instance": ident.instance, "host": ident.host, "device_id": ident.device_id,
            "barrier_passed_at": passed_at, "pid": pid}


def start_health(host: str, port: int, body: bytes, log: Log) -> ThreadingHTTPServer:
    """Serve GET /health -> body (everything else 404) on a background thread."""

    class Handler(BaseHTTPRequestHandler):
        server_version = f"demo_rank/{__version__}"

        def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
            self._reply(with_body=True)

        def do_HEAD(self) -> None:  # noqa: N802 (some probes only look at the status)
            self._reply(with_body=False)

        def _reply(self, with_body: bool) -> None:
            found = urlsplit(self.path).path == "/health"
            payload = body if found else b'{"error": "not found"}\n'
            self.send_response(200 if found else 404)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            if with_body:
                self.wfile.write(payload)

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
            pass  # probes come every few seconds; logging each would drown the rank's own log

    class Server(ThreadingHTTPServer):
        address_family = socket.AF_INET6 if ":" in host else socket.AF_INET
        daemon_threads = True

    try:
        server = retry_in_use(f"health port {host}:{port}", lambda: Server((host, port), Handler),
                               time.monotonic() + IN_USE_RETRY_S, log)
    except OSError as exc:
        raise HealthError(f"cannot serve health on {host}:{port}: {exc.strerror or exc}") from None
    start_helper(threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.2},
                                  name="health", daemon=True))
    return server
