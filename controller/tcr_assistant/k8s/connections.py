"""The connections of a bounded server: its limits, the decision on each newcomer (fair share
per client address), the deadline reaper, and the count of connections it closed itself.

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
"""

from __future__ import annotations

import contextlib
import logging
import socket
import ssl
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)

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

    max_body_bytes: int = 1 << 20  # the add-on's webhook passes its own (admission.MAX_BODY_BYTES, the same)
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
# Open connections: slots and deadlines
# --------------------------------------------------------------------------------------------


class Connection:
    """One open connection: its socket (the TLS one once wrapped), client address and current deadline."""

    __slots__ = ("busy", "client", "client_address", "deadline", "doomed", "sock")

    def __init__(self, sock: socket.socket, client_address: Any, deadline: float) -> None:
        self.sock = sock
        self.client_address = client_address
        self.client = str(client_address[0])
        self.deadline = deadline
        self.doomed = False  # shut down by the server; its thread is on its way out
        self.busy = False  # a request has arrived and its answer is not sent yet


class Connections:
    """The open connections of one server: who gets a slot, and a reaper that enforces deadlines."""

    def __init__(self, name: str, limits: ServerLimits, on_drop: Callable[[str], None] | None) -> None:
        self.name = name
        self.limits = limits
        self.on_drop = on_drop
        self.drops: Counter[str] = Counter()
        self._open: list[Connection] = []  # oldest first
        self._cond = threading.Condition()
        self._stopped = False
        self._reaper: threading.Thread | None = None
        self._unlogged: Counter[str] = Counter()
        self._last_log = 0.0
        self._draining = False

    @property
    def draining(self) -> bool:
        """Set by ``drain``: every answer from now on closes its connection."""
        return self._draining

    def open(self, sock: socket.socket, client_address: Any) -> Connection | None:
        """A slot for a new connection, or None (then the caller closes it at once)."""
        now = time.monotonic()
        conn = Connection(sock, client_address, now + self.limits.request_timeout)
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
            self._cond.notify_all()
        return conn

    def wrap(self, conn: Connection, context: ssl.SSLContext) -> ssl.SSLSocket:
        """Wrap in TLS (handshake not yet done) under the lock, so the reaper always holds the live socket."""
        with self._cond:
            tls = context.wrap_socket(conn.sock, server_side=True, do_handshake_on_connect=False)
            conn.sock = tls
            if conn.doomed:  # cut while the raw socket was being detached
                shutdown_socket(tls)
        return tls

    def begin(self, conn: Connection) -> bool:
        """A request has arrived on ``conn``; False when the connection was cut meanwhile."""
        with self._cond:
            conn.busy = True
            return not conn.doomed

    def renew(self, conn: Connection) -> None:
        """The previous answer is out: the next request on this connection gets a deadline of its own."""
        with self._cond:
            conn.busy = False
            conn.deadline = time.monotonic() + self.limits.request_timeout

    def close(self, conn: Connection) -> None:
        with self._cond:
            with contextlib.suppress(ValueError):
                self._open.remove(conn)
            self._cond.notify_all()  # a drain may be waiting for the last one

    def drain(self, timeout: float) -> int:
        """Let the requests in progress finish: from now on each answer closes its connection;
        connections waiting for a request are closed at once; wait up to ``timeout`` seconds for
        the busy ones. Returns how many are still open (``shutdown_all`` cuts them).

        A client sees an idle connection close before it reuses it, unless it sends on it in that
        very instant; a request it has sent is answered, not cut (clients do not resend a POST).
        """
        deadline = time.monotonic() + timeout
        with self._cond:
            self._draining = True
            for conn in self._open:
                if not conn.busy:
                    self._shut(conn)  # a normal close, not a drop
            while True:
                left = sum(1 for c in self._open if not c.doomed)
                remaining = deadline - time.monotonic()
                if not left or remaining <= 0:
                    return left
                self._cond.wait(timeout=remaining)

    def open_count(self) -> int:
        with self._cond:
            return sum(1 for c in self._open if not c.doomed)

    def shutdown_all(self) -> None:
        with self._cond:
            for conn in self._open:
                self._shut(conn)

    def start(self) -> None:
        self._stopped = False
        self._draining = False
        self._reaper = threading.Thread(target=self._reap, name=f"{self.name}-deadlines", daemon=True)
        self._reaper.start()

    def stop(self) -> None:
        with self._cond:
            self._stopped = True
            self._cond.notify_all()
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

    def _cut(self, conn: Connection, reason: str, now: float) -> None:
        self._drop(reason, conn.client, now)  # counted before the client can see the close
        self._shut(conn)

    @staticmethod
    def _shut(conn: Connection) -> None:
        conn.doomed = True  # its slot is free at once, not when its thread has finished
        shutdown_socket(conn.sock)

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


def shutdown_socket(sock: socket.socket) -> None:
    """Shut the socket down under whichever thread is blocked on it (its read or write returns)."""
    with contextlib.suppress(OSError):
        # The plain socket's method: SSLSocket.shutdown would also drop the TLS state under the reader.
        socket.socket.shutdown(sock, socket.SHUT_RDWR)
