"""`GET /health` and `GET /metrics` for the processes without a web framework (sender, scheduler)."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest


def start_status_server(
    port: int, health: Callable[[], dict[str, Any]], name: str, host: str = "0.0.0.0"
) -> ThreadingHTTPServer:
    """Serve in a daemon thread; `health()` gives the JSON body of /health (status "ok" answers 200, else 503)."""

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - scrapes would flood the log
            return None

        def do_GET(self) -> None:  # noqa: N802 - http.server's naming
            path = self.path.split("?", 1)[0]
            if path == "/metrics":
                self._reply(200, generate_latest(), CONTENT_TYPE_LATEST)
            elif path in ("/health", "/healthz"):
                body = health()
                code = 200 if body.get("status") == "ok" else 503
                self._reply(code, json.dumps(body).encode("utf-8"), "application/json")
            else:
                self._reply(404, b'{"detail": "not found"}', "application/json")

        def _reply(self, code: int, data: bytes, content_type: str) -> None:
            self.send_response(code)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name=f"{name}-status", daemon=True).start()
    return server
