"""The add-on's HTTP servers: the HTTPS admission webhook, and the plain health and metrics servers.

Standard library only, one implementation (``BoundedServer``) for all three:

- ``WebhookServer`` (HTTPS) serves ``POST /validate-tcr-tencentcloudcr-com-v1-imagepullsecret``
  (``admission.handle``) and whatever other POST routes it is given (the Pod webhook's); the
  query string is ignored (the API server appends ``?timeout=…``). ``GET /healthz`` and
  ``/readyz`` answer ``ok``. A route that is switched off (e.g. the Pod route when the Pod
  webhook is off) answers 404 saying so; other paths get 404, other methods 405.
- The health and metrics servers (plain HTTP) serve GET pages (``metrics.health_routes``,
  ``metrics.metrics_routes``).
- ``ServerLimits`` bounds every server the same way:

  * a total deadline per request (``request_timeout``) covering the TLS handshake, request line,
    headers, body and the answer; on a kept-alive connection the next request's deadline starts
    when the previous answer has been sent. A reaper thread shuts the socket down at the
    deadline, so a client that trickles one byte at a time cannot hold a connection longer;
  * at most ``max_connections`` open connections, and at most ``max_connections_per_client``
    from one client address. A connection over the per-client cap is closed at once. When
    every slot is taken, a newcomer from an address holding fewer connections than the busiest
    address takes the oldest connection of that address (fair share: an attacker spread over a
    few addresses cannot keep the API server out); otherwise it is closed at once. Every such
    close is counted (``drops``, and the ``on_drop`` callback feeding a metric);
  * bodies above ``max_body_bytes`` get 413 without being read; a body must come with
    ``Content-Length`` (411 otherwise).
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
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from tcr_assistant import admission
from tcr_assistant.admission import JSONDict
from tcr_assistant.api import WEBHOOK_PATH

#: Answers one AdmissionReview body: (body, max body bytes) -> (HTTP status, response document).
Review = Callable[[bytes, int], tuple[int, JSONDict]]
#: Answers a GET: () -> (HTTP status, content type, body).
Page = Callable[[], tuple[int, str, bytes]]

__all__ = [
    "DROP_REASONS",
    "HEALTH_PATH",
    "WEBHOOK_PATH",
    "BoundedServer",
    "CertificateStore",
    "ServerLimits",
    "SlotDecision",
    "WebhookServer",
    "slot_decision",
]

log = logging.getLogger(__name__)

HEALTH_PATH = "/healthz"

#: Why a connection was closed by the server rather than by its client (label of the drop metric).
DROP_CLIENT_LIMIT = "client_limit"  # its address already held max_connections_per_client
DROP_TOTAL_LIMIT = "total_limit"  # every slot taken, and its address had its fair share
DROP_EVICTED = "evicted"  # the oldest of the busiest address, to make room for a less busy one
DROP_DEADLINE = "deadline"  # its request was not done within request_timeout
DROP_REASONS = (DROP_CLIENT_LIMIT, DROP_TOTAL_LIMIT, DROP_EVICTED, DROP_DEADLINE)

#: A summary of drops is logged at most this often (a flood of connections must not flood the log).
DROP_LOG_INTERVAL = 60.0


@dataclass(frozen=True)
class ServerLimits:
    """Bounds of every server: body size, total time per request, open connections (all, per client)."""

    max_body_bytes: int = admission.MAX_BODY_BYTES
    request_timeout: float = 10.0
    max_connections: int = 64
    max_connections_per_client: int = 16
    linger: float = 1.0

    def __post_init__(self) -> None:
        for name in ("max_body_bytes", "request_timeout", "max_connections", "max_connections_per_client", "linger"):
            if not getattr(self, name) > 0:
                raise ValueError(f"ServerLimits.{name} must be positive, got {getattr(self, name)!r}")
        if self.max_connections_per_client > self.max_connections:
            raise ValueError(
                f"ServerLimits.max_connections_per_client ({self.max_connections_per_client}) must not exceed "
                f"max_connections ({self.max_connections}): lower it or raise max_connections"
            )


@dataclass(frozen=True)
class SlotDecision:
    """Whether a new connection is served; ``evict``: the address whose oldest connection makes room."""

    accept: bool
    evict: str | None = None
    refusal: str | None = None


def slot_decision(open_by_client: Mapping[str, int], client: str, limits: ServerLimits) -> SlotDecision:
    """Decide on a new connection from ``client``, given the connections open per client address."""
    mine = open_by_client.get(client, 0)
    if mine >= limits.max_connections_per_client:
        return SlotDecision(False, refusal=DROP_CLIENT_LIMIT)
    if sum(open_by_client.values()) < limits.max_connections:
        return SlotDecision(True)
    busiest = max(open_by_client, key=lambda address: (open_by_client[address], address))
    # Only from an address that would still hold more than the newcomer: no ping-pong between equals.
    if open_by_client[busiest] > mine + 1:
        return SlotDecision(True, evict=busiest)
    return SlotDecision(False, refusal=DROP_TOTAL_LIMIT)


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
# Open connections: slots and deadlines
# --------------------------------------------------------------------------------------------


class _Connection:
    """One open connection: its socket (the TLS one once wrapped), client address and current deadline."""

    __slots__ = ("client", "client_address", "deadline", "doomed", "sock")

    def __init__(self, sock: socket.socket, client_address: Any, deadline: float) -> None:
        self.sock = sock
        self.client_address = client_address
        self.client = str(client_address[0])
        self.deadline = deadline
        self.doomed = False  # shut down by the server; its thread is on its way out


class _Connections:
    """The open connections of one server: who gets a slot, and a reaper that enforces deadlines."""

    def __init__(self, name: str, limits: ServerLimits, on_drop: Callable[[str], None] | None) -> None:
        self.name = name
        self.limits = limits
        self.on_drop = on_drop
        self.drops: Counter[str] = Counter()
        self._open: list[_Connection] = []  # oldest first
        self._cond = threading.Condition()
        self._stopped = False
        self._reaper: threading.Thread | None = None
        self._unlogged: Counter[str] = Counter()
        self._last_log = 0.0

    def open(self, sock: socket.socket, client_address: Any) -> _Connection | None:
        """A slot for a new connection, or None (then the caller closes it at once)."""
        now = time.monotonic()
        conn = _Connection(sock, client_address, now + self.limits.request_timeout)
        with self._cond:
            live = [c for c in self._open if not c.doomed]
            decision = slot_decision(Counter(c.client for c in live), conn.client, self.limits)
            if not decision.accept:
                self._drop(decision.refusal or DROP_TOTAL_LIMIT, conn.client, now)
                return None
            if decision.evict is not None:
                victim = next(c for c in live if c.client == decision.evict)
                self._cut(victim, DROP_EVICTED, now)
            self._open.append(conn)
            self._cond.notify()
        return conn

    def wrap(self, conn: _Connection, context: ssl.SSLContext) -> ssl.SSLSocket:
        """Wrap in TLS (handshake not yet done) under the lock, so the reaper always holds the live socket."""
        with self._cond:
            tls = context.wrap_socket(conn.sock, server_side=True, do_handshake_on_connect=False)
            conn.sock = tls
            if conn.doomed:  # cut while the raw socket was being detached
                _shutdown(tls)
        return tls

    def renew(self, conn: _Connection) -> None:
        """The previous answer is out: the next request on this connection gets a deadline of its own."""
        with self._cond:
            conn.deadline = time.monotonic() + self.limits.request_timeout

    def close(self, conn: _Connection) -> None:
        with self._cond, contextlib.suppress(ValueError):
            self._open.remove(conn)

    def open_count(self) -> int:
        with self._cond:
            return sum(1 for c in self._open if not c.doomed)

    def shutdown_all(self) -> None:
        with self._cond:
            for conn in self._open:
                conn.doomed = True  # its slot is free at once, not when its thread has finished
                _shutdown(conn.sock)

    def start(self) -> None:
        self._stopped = False
        self._reaper = threading.Thread(target=self._reap, name=f"{self.name}-deadlines", daemon=True)
        self._reaper.start()

    def stop(self) -> None:
        with self._cond:
            self._stopped = True
            self._cond.notify()
        if self._reaper is not None:
            self._reaper.join(timeout=10)
            self._reaper = None

    def _reap(self) -> None:
        with self._cond:
            while not self._stopped:
                now = time.monotonic()
                for conn in self._open:
                    if not conn.doomed and conn.deadline <= now:
                        self._cut(conn, DROP_DEADLINE, now)
                pending = [c.deadline for c in self._open if not c.doomed]
                self._cond.wait(timeout=max(0.0, min(pending) - now) if pending else None)

    def _cut(self, conn: _Connection, reason: str, now: float) -> None:
        conn.doomed = True
        self._drop(reason, conn.client, now)  # counted before the client can see the close
        _shutdown(conn.sock)

    def _drop(self, reason: str, client: str, now: float) -> None:
        self.drops[reason] += 1
        self._unlogged[reason] += 1
        if self.on_drop is not None:
            self.on_drop(reason)
        log.debug("%s server: closed a connection from %s (%s)", self.name, client, reason)
        if now - self._last_log >= DROP_LOG_INTERVAL:
            summary = ", ".join(f"{count} {reason}" for reason, count in sorted(self._unlogged.items()))
            log.warning("%s server: closed connections (%s); limits: %d in all, %d per client address, %gs per "
                        "request", self.name, summary, self.limits.max_connections,
                        self.limits.max_connections_per_client, self.limits.request_timeout)
            self._unlogged.clear()
            self._last_log = now


def _shutdown(sock: socket.socket) -> None:
    """Shut the socket down under whichever thread is blocked on it (its read or write returns)."""
    with contextlib.suppress(OSError):
        # The plain socket's method: SSLSocket.shutdown would also drop the TLS state under the reader.
        socket.socket.shutdown(sock, socket.SHUT_RDWR)


# --------------------------------------------------------------------------------------------
# HTTP(S) server
# --------------------------------------------------------------------------------------------


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "tcr-assistant"
    sys_version = ""
    server: _Server

    def __init__(self, request: Any, client_address: Any, server: _Server, conn: _Connection) -> None:
        self.record = conn
        self.limits = server.limits
        super().__init__(request, client_address, server)

    def handle_one_request(self) -> None:
        super().handle_one_request()
        self.server.connections.renew(self.record)

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s http: %s " + format, self.server.name, self.client_address[0], *args)

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
        and ``linger`` seconds, and never past the request's deadline) until the client closes.
        """
        self.close_connection = True
        if self.command == "POST":
            self._send_json(status, admission.review_response("", False, code=status, message=message))
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
                 pages: Mapping[str, Page], routes: Mapping[str, Review], switched_off: Mapping[str, str],
                 on_drop: Callable[[str], None] | None) -> None:
        self.name = name
        self.limits = limits
        self.certs = certs
        self.pages = pages
        self.routes = routes
        self.switched_off = switched_off
        self.connections = _Connections(name, limits, on_drop)
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

    def serve(self, conn: _Connection) -> None:
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
    routes answering AdmissionReviews. ``switched_off``: paths that are not served, with the
    404 message saying why. ``on_drop``: called with the reason of every connection the server
    closes itself (one of ``DROP_REASONS``).
    """

    def __init__(self, host: str, port: int, *, name: str, limits: ServerLimits | None = None,
                 certs: CertificateStore | None = None, pages: Mapping[str, Page] | None = None,
                 routes: Mapping[str, Review] | None = None, switched_off: Mapping[str, str] | None = None,
                 on_drop: Callable[[str], None] | None = None) -> None:
        self.name = name
        self.host = host
        self.requested_port = port
        self.limits = limits if limits is not None else ServerLimits()
        self.certs = certs
        self.pages: dict[str, Page] = dict(pages or {})
        self.routes: dict[str, Review] = dict(routes or {})
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
        """AdmissionReview requests answered so far (since the last start)."""
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
                         self.routes, self.switched_off, self.on_drop)
        server.connections.start()
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.2}, name=f"{self.name}-server", daemon=True
        )
        self._thread.start()
        self._last_port = self.port
        log.info("%s: serving %s://%s:%d", self.name, "https" if self.certs else "http", self.host or "*", self.port)

    def stop(self) -> None:
        """Stop accepting, close every open connection, and wait for the serving thread."""
        server, thread = self._server, self._thread
        if server is None:
            return
        server.shutdown()
        server.server_close()
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


def _ok() -> tuple[int, str, bytes]:
    return HTTPStatus.OK, "text/plain; charset=utf-8", b"ok"


class WebhookServer(BoundedServer):
    """The HTTPS admission webhook, with certificates from ``cert_dir`` (see the module docstring)."""

    def __init__(self, host: str, port: int, cert_dir: Path, *, limits: ServerLimits | None = None,
                 routes: Mapping[str, Review] | None = None, switched_off: Mapping[str, str] | None = None,
                 on_drop: Callable[[str], None] | None = None) -> None:
        """``routes``: more POST paths (e.g. the Pod webhook's) and what answers them."""
        store = CertificateStore(Path(cert_dir))
        super().__init__(
            host, port, name="webhook", limits=limits, certs=store,
            pages={HEALTH_PATH: _ok, "/readyz": _ok}, routes={WEBHOOK_PATH: admission.handle, **(routes or {})},
            switched_off=switched_off, on_drop=on_drop,
        )
        self.certs: CertificateStore = store

    def start(self) -> None:
        """Bind and serve in a background thread. Missing certificates are logged, not fatal."""
        if self._server is None and self.certs.context() is None:
            log.warning(
                "webhook: no certificate in %s yet; connections are closed until one appears", self.certs.cert_dir
            )
        super().start()

    def __enter__(self) -> WebhookServer:
        self.start()
        return self
