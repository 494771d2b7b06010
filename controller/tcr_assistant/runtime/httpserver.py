"""A small HTTP server for health and metrics endpoints (GET only, one route table)."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Callable, Mapping
from typing import Any


def parse_bind(addr: str) -> tuple[str, int] | None:
    """ ":8081" -> ("", 8081); "0" -> None (disabled)."""
    if addr in ("0", ""):
        return None
    host, _, port = addr.rpartition(":")
    return host.strip("[]"), int(port)


class _HTTPServer(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True


def serve_http(addr: tuple[str, int], routes: Mapping[str, Callable[[], tuple[int, str, bytes]]]) -> _HTTPServer:
    class H(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            fn = routes.get(self.path.split("?", 1)[0])
            code, ctype, body = fn() if fn else (404, "text/plain", b"not found\n")
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = _HTTPServer(addr, H)
    threading.Thread(target=server.serve_forever, name=f"http-{addr[1]}", daemon=True).start()
    return server
