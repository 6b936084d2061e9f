"""A small health and metrics endpoint for the supervisor, on a daemon thread.

    GET /health   JSON from the `health` callable; 200 if its "status" is "ok", else 503,
                  so a load balancer or `curl --fail` sees a crash loop as unhealthy
    GET /metrics  the Prometheus text format of a registry

It binds 127.0.0.1 unless told otherwise: the endpoint has no authentication, and the
metrics name queues and tasks. Port 0 picks a free port; `HealthServer.port` says which.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

__all__ = ["HealthServer", "serve_health_and_metrics"]

logger = logging.getLogger(__name__)


class HealthServer:
    """A running endpoint: where it listens, and how to stop it."""

    def __init__(self, server: ThreadingHTTPServer, thread: threading.Thread) -> None:
        self._server = server
        self.thread = thread
        address = server.server_address
        self.host = str(address[0])
        self.port = int(address[1])

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def close_in_child(self) -> None:
        """In a forked child: drop the inherited listening socket, so the port is freed
        when the supervisor exits even if an orphaned child lives on."""
        self._server.socket.close()

    def close(self) -> None:
        """Stop serving and release the port."""
        self._server.shutdown()
        self._server.server_close()
        self.thread.join(5)


class _Server(ThreadingHTTPServer):
    daemon_threads = True  # a slow scraper must not hold up the supervisor's exit
    health: Callable[[], Mapping[str, Any]]
    registry: CollectorRegistry | None


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    server_version = "pgqueue"

    def do_GET(self) -> None:
        path = urlsplit(self.path).path.rstrip("/") or "/"
        if path == "/health":
            self._health()
        elif path == "/metrics" and self.server.registry is not None:
            self._send(200, CONTENT_TYPE_LATEST, generate_latest(self.server.registry))
        else:
            self._send(404, "text/plain; charset=utf-8", b"not found: try /health or /metrics\n")

    def _health(self) -> None:
        try:
            report = dict(self.server.health())
        except Exception as error:  # the endpoint reports a broken check, it does not die
            logger.exception("health check failed", extra={"action": "health_failed"})
            report = {"status": "error", "error": str(error)}
        code = 200 if report.get("status") == "ok" else 503
        body = json.dumps(report, default=str, sort_keys=True).encode() + b"\n"
        self._send(code, "application/json", body)

    def _send(self, code: int, content_type: str, body: bytes) -> None:
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug("http %s " + format, self.address_string(), *args)


def serve_health_and_metrics(
    *,
    health: Callable[[], Mapping[str, Any]],
    registry: CollectorRegistry | None = None,
    host: str = "127.0.0.1",
    port: int = 0,
) -> HealthServer:
    """Serve /health and /metrics from a daemon thread; returns once the port is bound."""
    server = _Server((host, port), _Handler)
    server.health = health
    server.registry = registry
    thread = threading.Thread(target=server.serve_forever, name="pgqueue-http", daemon=True)
    thread.start()
    running = HealthServer(server, thread)
    logger.info("health and metrics on %s", running.url, extra={"action": "http_listening"})
    return running
