"""HTTPS server for the validating admission webhook (decisions: ``admission.py``).

Standard library only. ``WebhookServer`` serves ``admission.handle``:

- ``POST /validate-tcr-tencentcloudcr-com-v1-imagepullsecret`` (query string ignored: the API
  server appends ``?timeout=…``) answers an AdmissionReview v1; ``GET /healthz`` answers
  ``ok``. Other paths get 404, other methods 405.
- ``ServerLimits`` bounds every connection: bodies above ``max_body_bytes`` get 413 without
  being read; a body must come with ``Content-Length`` (411 otherwise); every socket has
  ``socket_timeout`` (TLS handshake, request line, headers, body, idle keep-alive); at most
  ``max_connections`` are served at once (further ones are closed at once).
- ``tls.crt`` / ``tls.key`` are read from ``cert_dir``; every new connection checks their
  inode, size and mtime (one ``stat`` each) and, when they changed, loads a new
  ``SSLContext`` (a half-written pair that fails to load keeps the previous context until
  the next try). Kubernetes' atomic Secret-volume updates (the ``..data`` symlink swap) and
  in-place rewrites are both picked up, without a restart.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import socketserver
import ssl
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from tcr_assistant import admission
from tcr_assistant.admission import JSONDict
from tcr_assistant.api import WEBHOOK_PATH

#: Answers one AdmissionReview body: (body, max body bytes) -> (HTTP status, response document).
Review = Callable[[bytes, int], tuple[int, JSONDict]]

__all__ = [
    "HEALTH_PATH",
    "WEBHOOK_PATH",
    "CertificateStore",
    "ServerLimits",
    "WebhookServer",
]

log = logging.getLogger(__name__)

HEALTH_PATH = "/healthz"


@dataclass(frozen=True)
class ServerLimits:
    """Bounds of the webhook server: body size, per-socket timeout, concurrent connections, linger."""

    max_body_bytes: int = admission.MAX_BODY_BYTES
    socket_timeout: float = 10.0
    max_connections: int = 64
    linger: float = 1.0

    def __post_init__(self) -> None:
        for name in ("max_body_bytes", "socket_timeout", "max_connections", "linger"):
            if not getattr(self, name) > 0:
                raise ValueError(f"ServerLimits.{name} must be positive")


# --------------------------------------------------------------------------------------------
# Certificates
# --------------------------------------------------------------------------------------------


class CertificateStore:
    """An SSLContext for ``cert_dir/tls.crt`` + ``tls.key``, rebuilt when either file changes."""

    def __init__(self, cert_dir: Path) -> None:
        self.cert_dir = Path(cert_dir)
        self._lock = threading.Lock()
        self._stamp: tuple[Any, ...] | None = None
        self._context: ssl.SSLContext | None = None
        self.loads = 0

    @property
    def cert_file(self) -> Path:
        return self.cert_dir / "tls.crt"

    @property
    def key_file(self) -> Path:
        return self.cert_dir / "tls.key"

    def _current_stamp(self) -> tuple[Any, ...] | None:
        stamps: list[Any] = []
        for path in (self.cert_file, self.key_file):
            try:
                st = os.stat(path)  # follows symlinks (Secret volumes swap a ..data symlink)
            except OSError:
                return None
            stamps.append((st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns))
        return tuple(stamps)

    def context(self) -> ssl.SSLContext | None:
        """The current context (reloaded if the files changed), or None if none could ever be loaded."""
        stamp = self._current_stamp()
        with self._lock:
            if stamp is not None and stamp != self._stamp:
                try:
                    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
                    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
                    ctx.load_cert_chain(self.cert_file, self.key_file)
                except (OSError, ssl.SSLError, ValueError) as exc:
                    log.warning(
                        "webhook: cannot load %s / %s (keeping the previous certificate): %s",
                        self.cert_file,
                        self.key_file,
                        exc,
                    )
                else:
                    self._context = ctx
                    self._stamp = stamp
                    self.loads += 1
                    log.info("webhook: serving certificate loaded from %s", self.cert_dir)
            return self._context


# --------------------------------------------------------------------------------------------
# HTTPS server
# --------------------------------------------------------------------------------------------


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "tcr-assistant-webhook"
    sys_version = ""
    server: _HTTPSServer

    def setup(self) -> None:
        super().setup()
        self.limits = self.server.limits
        self.connection.settimeout(self.limits.socket_timeout)  # read: request line, headers, body, idle

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("webhook http: %s " + format, self.client_address[0], *args)

    def _send(self, status: int, payload: bytes, content_type: str = "application/json") -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(payload)))
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(payload)

    def _send_json(self, status: int, doc: JSONDict) -> None:
        self._send(status, json.dumps(doc, separators=(",", ":")).encode())

    def _fail(self, status: int, message: str) -> None:
        """Answer with an error and close, after draining what the client still sends (bounded).

        Closing a socket with unread input makes the kernel send a reset that can destroy the
        answer before the client reads it; so read and discard (at most ``2 * max_body_bytes``
        and ``linger`` seconds) until the client closes.
        """
        self.close_connection = True
        self._send_json(status, admission.review_response("", False, code=status, message=message))
        with contextlib.suppress(OSError, ValueError):
            self.wfile.flush()
            self.connection.settimeout(self.limits.linger)
            drained = 0
            while drained < 2 * self.limits.max_body_bytes:
                chunk = self.connection.recv(65536)
                if not chunk:
                    break
                drained += len(chunk)

    def do_GET(self) -> None:
        if urlsplit(self.path).path in (HEALTH_PATH, "/readyz"):
            self._send(HTTPStatus.OK, b"ok", "text/plain; charset=utf-8")
        else:
            self._fail(HTTPStatus.NOT_FOUND, "not found")

    def do_POST(self) -> None:
        path = urlsplit(self.path).path
        answer = self.server.routes.get(path)
        if answer is None:
            self._fail(HTTPStatus.NOT_FOUND, "not found")
            return
        if self.headers.get("Transfer-Encoding"):
            self._fail(HTTPStatus.LENGTH_REQUIRED, "Content-Length is required (no chunked bodies)")
            return
        raw_length = self.headers.get("Content-Length")
        try:
            length = int(raw_length) if raw_length is not None else -1
        except ValueError:
            length = -1
        if raw_length is None:
            self._fail(HTTPStatus.LENGTH_REQUIRED, "Content-Length is required")
            return
        if length < 0:
            self._fail(HTTPStatus.BAD_REQUEST, "invalid Content-Length")
            return
        max_body_bytes = self.limits.max_body_bytes
        if length > max_body_bytes:
            self._fail(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, f"request body larger than {max_body_bytes} bytes")
            return
        body = self.rfile.read(length)
        if len(body) != length:
            self.close_connection = True
            return
        status, doc = answer(body, max_body_bytes)
        self.server.count_review()
        if status != HTTPStatus.OK:
            self.close_connection = True
        self._send_json(status, doc)

    def _method_not_allowed(self) -> None:
        self._fail(HTTPStatus.METHOD_NOT_ALLOWED, "method not allowed")

    do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = _method_not_allowed


class _HTTPSServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True

    def server_bind(self) -> None:
        # HTTPServer.server_bind resolves the host name (socket.getfqdn): a DNS lookup that can
        # stall start-up on hosts without DNS. The name is only used in CGI variables.
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name = str(host)
        self.server_port = int(port)

    def __init__(self, address: tuple[str, int], certs: CertificateStore, limits: ServerLimits,
                 routes: Mapping[str, Review]) -> None:
        self.certs = certs
        self.limits = limits
        self.routes = routes
        self._slots = threading.BoundedSemaphore(limits.max_connections)
        self._active: set[socket.socket] = set()
        self._active_lock = threading.Lock()
        self.reviews = 0
        family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        self.address_family = family
        super().__init__(address, _Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._slots.acquire(blocking=False):
            log.warning("webhook: too many connections, dropping one from %s", client_address)
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._slots.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()

    def count_review(self) -> None:
        with self._active_lock:
            self.reviews += 1

    def _track(self, sock: socket.socket, add: bool) -> None:
        with self._active_lock:
            if add:
                self._active.add(sock)
            else:
                self._active.discard(sock)

    def finish_request(self, request: Any, client_address: Any) -> None:
        raw: socket.socket = request
        raw.settimeout(self.limits.socket_timeout)
        # The answer goes out as headers, then body (two TLS records): with Nagle's algorithm the
        # second waits for the client's delayed ACK, about 40 ms per review.
        with contextlib.suppress(OSError):
            raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        context = self.certs.context()
        if context is None:
            log.warning("webhook: no usable certificate in %s yet, closing connection", self.certs.cert_dir)
            return
        self._track(raw, True)
        tls: ssl.SSLSocket | None = None
        try:
            tls = context.wrap_socket(raw, server_side=True)  # handshake, bounded by the timeout
            self._track(raw, False)
            self._track(tls, True)
            _Handler(tls, client_address, self)
        except (OSError, ssl.SSLError, ValueError) as exc:
            log.debug("webhook: connection from %s ended: %s", client_address, exc)
        finally:
            self._track(raw, False)
            if tls is not None:
                self._track(tls, False)
                with contextlib.suppress(OSError):
                    tls.close()

    def close_all_connections(self) -> None:
        with self._active_lock:
            active = list(self._active)
        for sock in active:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def handle_error(self, request: Any, client_address: Any) -> None:
        log.debug("webhook: error serving %s", client_address, exc_info=True)


class WebhookServer:
    """Serves the webhook on ``host:port`` (0 = any free port, see ``.port``) with certs from ``cert_dir``."""

    def __init__(self, host: str, port: int, cert_dir: Path, *, limits: ServerLimits | None = None,
                 routes: Mapping[str, Review] | None = None) -> None:
        """``routes``: more POST paths (e.g. the Pod webhook's) and what answers them."""
        self.routes: dict[str, Review] = {WEBHOOK_PATH: admission.handle, **(routes or {})}
        self.host = host
        self.requested_port = port
        self.limits = limits if limits is not None else ServerLimits()
        self.certs = CertificateStore(Path(cert_dir))
        self._server: _HTTPSServer | None = None
        self._thread: threading.Thread | None = None
        self._last_port = port

    @property
    def port(self) -> int:
        if self._server is None:
            return self._last_port
        return int(self._server.server_address[1])

    @property
    def reviews(self) -> int:
        """AdmissionReview requests answered so far (since the last start)."""
        return self._server.reviews if self._server is not None else 0

    def start(self) -> None:
        """Bind and serve in a background thread. Missing certificates are logged, not fatal."""
        if self._server is not None:
            return
        if self.certs.context() is None:
            log.warning(
                "webhook: no certificate in %s yet; connections are closed until one appears", self.certs.cert_dir
            )
        self._server = _HTTPSServer((self.host, self.requested_port), self.certs, self.limits, self.routes)
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.2}, name="webhook-server", daemon=True
        )
        self._thread.start()
        self._last_port = self.port
        log.info("webhook: serving https://%s:%d%s", self.host, self.port, WEBHOOK_PATH)

    def stop(self) -> None:
        """Stop accepting, close every open connection, and wait for the serving thread."""
        server, thread = self._server, self._thread
        if server is None:
            return
        server.shutdown()
        server.server_close()
        server.close_all_connections()
        if thread is not None:
            thread.join(timeout=30)
        self._server = None
        self._thread = None

    def close_connections(self) -> None:
        """Close every open connection (clients reconnect, and so handshake with the current certificate)."""
        if self._server is not None:
            self._server.close_all_connections()

    def __enter__(self) -> WebhookServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
