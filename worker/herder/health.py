"""The worker's HTTP port: Prometheus metrics on /metrics and readiness on /readyz.

Readiness fails (503) while the worker drains. That is what makes a drained pod rank first for
the ReplicaSet controller: it ranks not-Ready pods before Ready ones *before* it looks at
pod-deletion-cost, so a drained pod must be not Ready to lose to a busy pod whose probe timed out.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest


def serve(
    port: int,
    ready: Callable[[], bool],
    *,
    addr: str = "0.0.0.0",
    registry: CollectorRegistry = REGISTRY,
) -> ThreadingHTTPServer:
    """Serve on a daemon thread; returns the server (call shutdown() to stop it)."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path in ("/readyz", "/healthz"):
                ok = path == "/healthz" or ready()
                body = b"ok\n" if ok else b"draining\n"
                self._reply(200 if ok else 503, "text/plain; charset=utf-8", body)
            elif path in ("/metrics", "/"):
                self._reply(200, CONTENT_TYPE_LATEST, generate_latest(registry))
            else:
                self._reply(404, "text/plain; charset=utf-8", b"not found\n")

        def _reply(self, code: int, ctype: str, body: bytes) -> None:
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            return  # probes every few seconds: not worth a log line

    server = ThreadingHTTPServer((addr, port), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="herder-http", daemon=True).start()
    return server
