"""A bounded HTTP(S) server, standard library only: one implementation for every server of the
process (the admission webhook, the health and metrics pages), which knows no route's meaning.

- ``ServerLimits`` bounds every server the same way (``connections``).
- GET pages answer (status, content type, body); POST routes answer a JSON document; a path
  that is switched off answers 404 saying why; other paths get 404, other methods 405.
- With a ``CertificateStore`` (``certstore``) it serves HTTPS, with the certificate files'
  current content.
"""

from __future__ import annotations

import contextlib
import json
import logging
import socket
import socketserver
import ssl
import threading
from collections import Counter
from collections.abc import Callable, Mapping
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any
from urllib.parse import urlsplit

from tcr_assistant.k8s.certstore import CertificateStore
from tcr_assistant.k8s.connections import Connection, Connections, ServerLimits

JSONDict = dict[str, Any]
#: Answers one POST body: (body, max body bytes) -> (HTTP status, JSON document).
PostRoute = Callable[[bytes, int], tuple[int, JSONDict]]
#: Answers a GET: () -> (HTTP status, content type, body).
Page = Callable[[], tuple[int, str, bytes]]
#: The JSON answer of a refused POST: (HTTP status, message) -> document.
ErrorDocument = Callable[[int, str], JSONDict]

log = logging.getLogger(__name__)


def plain_error(status: int, message: str) -> JSONDict:
    return {"code": status, "message": message}


def parse_bind(addr: str) -> tuple[str, int] | None:
    """ ":8081" -> ("", 8081); "0" -> None (disabled)."""
    if addr in ("0", ""):
        return None
    host, _, port = addr.rpartition(":")
    return host.strip("[]"), int(port)


HEALTH_PATH = "/healthz"

# --------------------------------------------------------------------------------------------
# HTTP(S) server
# --------------------------------------------------------------------------------------------


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "tcr-assistant"
    sys_version = ""
    server: _Server

    def __init__(self, request: Any, client_address: Any, server: _Server, conn: Connection) -> None:
        self.record = conn
        self.limits = server.limits
        super().__init__(request, client_address, server)

    def handle_one_request(self) -> None:
        super().handle_one_request()
        self.server.connections.renew(self.record)

    def parse_request(self) -> bool:
        # The request line has arrived: from here on a drain lets this request finish.
        if not self.server.connections.begin(self.record):
            self.close_connection = True
            return False
        return super().parse_request()

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s http: %s " + format, self.server.name, self.client_address[0], *args)

    def _send(self, status: int, payload: bytes, content_type: str = "application/json") -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(payload)))
        if self.server.connections.draining:
            self.close_connection = True  # the server is stopping: the client opens its next connection elsewhere
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
        and ``linger`` seconds, and never past the request's deadline) until the client closes.
        """
        self.close_connection = True
        if self.command == "POST":
            self._send_json(status, self.server.error_document(status, message))
        else:
            self._send(status, f"{message}\n".encode(), "text/plain; charset=utf-8")
        with contextlib.suppress(OSError, ValueError):
            self.wfile.flush()
            self.connection.settimeout(self.limits.linger)
            drained = 0
            while drained < 2 * self.limits.max_body_bytes:
                chunk = self.connection.recv(65536)
                if not chunk:
                    break
                drained += len(chunk)

    def _not_found(self, path: str) -> None:
        self._fail(HTTPStatus.NOT_FOUND, self.server.switched_off.get(path, "not found"))

    def do_GET(self) -> None:
        path = urlsplit(self.path).path
        page = self.server.pages.get(path)
        if page is None:
            self._not_found(path)
            return
        status, content_type, body = page()
        self._send(status, body, content_type)

    def do_POST(self) -> None:
        path = urlsplit(self.path).path
        answer = self.server.routes.get(path)
        if answer is None:
            self._not_found(path)
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


class _Server(HTTPServer):
    """Accepts on the listening socket; every admitted connection is served by a thread of its own."""

    allow_reuse_address = True
    # socketserver's default backlog is 5: under a connection flood the API server's SYN would wait
    # for a retransmission (a second or more) before our accept loop even sees it.
    request_queue_size = 128

    def __init__(self, name: str, address: tuple[str, int], limits: ServerLimits, certs: CertificateStore | None,
                 pages: Mapping[str, Page], routes: Mapping[str, PostRoute], switched_off: Mapping[str, str],
                 on_drop: Callable[[str], None] | None, error_document: ErrorDocument) -> None:
        self.name = name
        self.error_document = error_document
        self.limits = limits
        self.certs = certs
        self.pages = pages
        self.routes = routes
        self.switched_off = switched_off
        self.connections = Connections(name, limits, on_drop)
        self._count_lock = threading.Lock()
        self.reviews = 0
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        super().__init__(address, _Handler)  # type: ignore[arg-type]  # built per connection in serve()

    def server_bind(self) -> None:
        # HTTPServer.server_bind resolves the host name (socket.getfqdn): a DNS lookup that can
        # stall start-up on hosts without DNS. The name is only used in CGI variables.
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name = str(host)
        self.server_port = int(port)

    def process_request(self, request: Any, client_address: Any) -> None:
        conn = self.connections.open(request, client_address)
        if conn is None:
            self.shutdown_request(request)  # over a cap: closed at once, never queued
            return
        thread = threading.Thread(target=self.serve, args=(conn,), name=f"{self.name}-connection", daemon=True)
        try:
            thread.start()
        except BaseException:
            self.connections.close(conn)
            self.shutdown_request(request)
            raise

    def serve(self, conn: Connection) -> None:
        sock = conn.sock
        try:
            # Each read or write also times out (a backstop, later than the reaper's cut at the deadline).
            sock.settimeout(2 * self.limits.request_timeout)
            # The answer goes out as headers, then body (two writes): with Nagle's algorithm the
            # second waits for the client's delayed ACK, about 40 ms per review.
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self.certs is not None:
                context = self.certs.context()
                if context is None:
                    log.warning("%s: no usable certificate in %s yet, closing connection", self.name,
                                self.certs.cert_dir)
                    return
                sock = self.connections.wrap(conn, context)
                sock.do_handshake()  # within the request's deadline
            _Handler(sock, conn.client_address, self, conn)
        except (OSError, ssl.SSLError, ValueError) as exc:
            log.debug("%s: connection from %s ended: %s", self.name, conn.client_address, exc)
        except Exception:
            log.exception("%s: error serving %s", self.name, conn.client_address)
        finally:
            self.connections.close(conn)
            with contextlib.suppress(OSError):
                if not isinstance(sock, ssl.SSLSocket):
                    sock.shutdown(socket.SHUT_WR)
                sock.close()

    def count_review(self) -> None:
        with self._count_lock:
            self.reviews += 1

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Only the accept loop gets here (e.g. no thread could be started); connections log in serve().
        log.warning("%s: cannot serve a connection from %s", self.name, client_address, exc_info=True)


class BoundedServer:
    """An HTTP(S) server on ``host:port`` (0 = any free port, see ``.port``) within ``limits``.

    ``certs``: serve HTTPS with them (else plain HTTP). ``pages``: GET routes. ``routes``: POST
    routes answering JSON documents. ``switched_off``: paths that are not served, with the
    404 message saying why. ``on_drop``: called with the reason of every connection the server
    closes itself (one of ``DROP_REASONS``). ``drain``: on stop, how long clients may finish (see
    ``stop``).
    """

    def __init__(self, host: str, port: int, *, name: str, limits: ServerLimits | None = None,
                 certs: CertificateStore | None = None, pages: Mapping[str, Page] | None = None,
                 routes: Mapping[str, PostRoute] | None = None, switched_off: Mapping[str, str] | None = None,
                 on_drop: Callable[[str], None] | None = None, error_document: ErrorDocument = plain_error,
                 drain: float = 0.0) -> None:
        if drain < 0:
            raise ValueError(f"drain must not be negative, got {drain!r}")
        self.name = name
        self.drain = drain
        self.error_document = error_document
        self.host = host
        self.requested_port = port
        self.limits = limits if limits is not None else ServerLimits()
        self.certs = certs
        self.pages: dict[str, Page] = dict(pages or {})
        self.routes: dict[str, PostRoute] = dict(routes or {})
        self.switched_off: dict[str, str] = {p: m for p, m in (switched_off or {}).items() if p not in self.routes}
        self.on_drop = on_drop
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._last_port = port
        self._drops: Counter[str] = Counter()

    @property
    def port(self) -> int:
        if self._server is None:
            return self._last_port
        return int(self._server.server_address[1])

    @property
    def reviews(self) -> int:
        """POST requests answered so far (since the last start)."""
        return self._server.reviews if self._server is not None else 0

    @property
    def drops(self) -> Counter[str]:
        """Connections the server closed itself, by reason (since the last start)."""
        return Counter(self._server.connections.drops) if self._server is not None else Counter(self._drops)

    @property
    def open_connections(self) -> int:
        return self._server.connections.open_count() if self._server is not None else 0

    def start(self) -> None:
        """Bind and serve in a background thread."""
        if self._server is not None:
            return
        server = _Server(self.name, (self.host, self.requested_port), self.limits, self.certs, self.pages,
                         self.routes, self.switched_off, self.on_drop, self.error_document)
        server.connections.start()
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.2}, name=f"{self.name}-server", daemon=True
        )
        self._thread.start()
        self._last_port = self.port
        log.info("%s: serving %s://%s:%d", self.name, "https" if self.certs else "http", self.host or "*", self.port)

    def stop(self) -> None:
        """Drain, stop accepting, close every open connection, and wait for the serving thread.

        With ``drain`` > 0 the requests in progress get up to that many seconds to be answered
        (each answer closes its connection) while idle connections are closed at once: a request
        a client has sent gets its answer instead of a cut connection (HTTP clients do not resend
        a POST).
        """
        server, thread = self._server, self._thread
        if server is None:
            return
        server.shutdown()
        server.server_close()
        if self.drain > 0:
            left = server.connections.drain(self.drain)
            if left:
                log.warning("%s: %d request(s) still unanswered after a %gs drain, closing their connections",
                            self.name, left, self.drain)
        server.connections.shutdown_all()
        server.connections.stop()
        if thread is not None:
            thread.join(timeout=30)
        self._drops = Counter(server.connections.drops)
        self._server = None
        self._thread = None

    def close_connections(self) -> None:
        """Close every open connection (clients reconnect, and so handshake with the current certificate)."""
        if self._server is not None:
            self._server.connections.shutdown_all()

    def __enter__(self) -> BoundedServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
