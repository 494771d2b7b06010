"""The HTTP(S) server: paths, switched-off routes, limits (slots, deadlines), garbage, certificate reload, stop."""

from __future__ import annotations

import http.client
import json
import os
import select
import socket
import ssl
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from webhook_support import loopback_pair, sample, write_pair

from harness.pki import CertificateAuthority
from tcr_assistant.admission import review as admission
from tcr_assistant.admission.server import WEBHOOK_PATH, WebhookServer
from tcr_assistant.k8s.connections import ServerLimits, SlotDecision, slot_decision
from tcr_assistant.k8s.httpserver import BoundedServer

CLIENT_TIMEOUT = 30  # a bound so a broken server fails the test instead of hanging it; never asserted on


def client_context(ca: CertificateAuthority) -> ssl.SSLContext:
    return ssl.create_default_context(cadata=ca.cert_pem.decode())


def connect(server: WebhookServer, ca: CertificateAuthority) -> http.client.HTTPSConnection:
    return http.client.HTTPSConnection("127.0.0.1", server.port, context=client_context(ca), timeout=CLIENT_TIMEOUT)


def review_body(uid: str = "uid-1", obj: Any = None) -> bytes:
    return json.dumps(
        {
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "request": {
                "uid": uid,
                "operation": "CREATE",
                "resource": {"group": "tcr.tencentcloudcr.com", "version": "v1", "resource": "imagepullsecrets"},
                "object": sample() if obj is None else obj,
            },
        }
    ).encode()


def post(conn: http.client.HTTPSConnection, body: bytes, path: str = WEBHOOK_PATH + "?timeout=5s") -> tuple[int, Any]:
    conn.request("POST", path, body=body, headers={"Content-Type": "application/json"})
    response = conn.getresponse()
    data = response.read()
    return response.status, json.loads(data) if data.startswith(b"{") else data


def tls_socket(server: WebhookServer, ca: CertificateAuthority) -> ssl.SSLSocket:
    raw = socket.create_connection(("127.0.0.1", server.port), timeout=CLIENT_TIMEOUT)
    return client_context(ca).wrap_socket(raw, server_hostname="127.0.0.1")


def read_all(sock: socket.socket) -> bytes:
    chunks = []
    while True:
        try:
            chunk = sock.recv(65536)
        except (ConnectionResetError, ssl.SSLError):
            break
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks)


def test_healthz(webhook_server: WebhookServer, webhook_ca: CertificateAuthority) -> None:
    conn = connect(webhook_server, webhook_ca)
    conn.request("GET", "/healthz")
    response = conn.getresponse()
    assert (response.status, response.read()) == (200, b"ok")


def test_review_over_https_with_keep_alive(webhook_server: WebhookServer, webhook_ca: CertificateAuthority) -> None:
    conn = connect(webhook_server, webhook_ca)
    status, doc = post(conn, review_body("a"))
    assert status == 200
    assert doc["response"] == {"uid": "a", "allowed": True}
    status, doc = post(conn, review_body("b", sample(docker__server="https://x")))  # same connection
    assert status == 200
    assert doc["response"]["uid"] == "b"
    assert doc["response"]["allowed"] is False
    assert "spec.docker.server" in doc["response"]["status"]["message"]


def test_other_paths_and_methods(webhook_server: WebhookServer, webhook_ca: CertificateAuthority) -> None:
    conn = connect(webhook_server, webhook_ca)
    status, _ = post(conn, review_body(), path="/validate-something-else")
    assert status == 404
    conn = connect(webhook_server, webhook_ca)
    conn.request("PUT", WEBHOOK_PATH, body=b"{}")
    assert conn.getresponse().status == 405


def test_garbage_gets_400(webhook_server: WebhookServer, webhook_ca: CertificateAuthority) -> None:
    conn = connect(webhook_server, webhook_ca)
    status, doc = post(conn, b"\x00\xffnot json")
    assert status == 400
    assert doc["response"]["uid"] == ""
    assert doc["response"]["allowed"] is False


def test_oversized_body_is_refused_without_reading_it(
    webhook_server: WebhookServer, webhook_ca: CertificateAuthority
) -> None:
    too_large = webhook_server.limits.max_body_bytes + 1
    sock = tls_socket(webhook_server, webhook_ca)
    sock.sendall(
        f"POST {WEBHOOK_PATH} HTTP/1.1\r\nHost: x\r\nContent-Length: {too_large}\r\n\r\n".encode()
        + b"{" * 1000
    )
    reply = read_all(sock)
    assert reply.startswith(b"HTTP/1.1 413")


def test_missing_content_length_gets_411(webhook_server: WebhookServer, webhook_ca: CertificateAuthority) -> None:
    sock = tls_socket(webhook_server, webhook_ca)
    sock.sendall(f"POST {WEBHOOK_PATH} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n".encode())
    assert read_all(sock).startswith(b"HTTP/1.1 411")


def test_bad_request_lines_are_answered(webhook_server: WebhookServer, webhook_ca: CertificateAuthority) -> None:
    sock = tls_socket(webhook_server, webhook_ca)
    sock.sendall(b"\x00\x01garbage garbage garbage garbage\r\n\r\n")
    assert b"400" in read_all(sock)  # an HTTP/0.9-style error page: the request line is unparseable
    sock = tls_socket(webhook_server, webhook_ca)
    sock.sendall(b"POST " + b"x" * 70_000 + b" HTTP/1.1\r\n\r\n")
    assert read_all(sock).startswith(b"HTTP/1.1 414")
    # Plain HTTP on the TLS port: the handshake fails, the server carries on.
    with socket.create_connection(("127.0.0.1", webhook_server.port), timeout=CLIENT_TIMEOUT) as plain:
        plain.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        read_all(plain)
    status, _ = post(connect(webhook_server, webhook_ca), review_body())
    assert status == 200


def test_stalled_clients_do_not_block_others_and_are_dropped(
    cert_dir: Path, webhook_ca: CertificateAuthority
) -> None:
    with WebhookServer("127.0.0.1", 0, cert_dir, limits=ServerLimits(request_timeout=0.5)) as server:
        silent = socket.create_connection(("127.0.0.1", server.port), timeout=CLIENT_TIMEOUT)  # no handshake
        half = tls_socket(server, webhook_ca)
        half.sendall(f"POST {WEBHOOK_PATH} HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{{".encode())
        # Others are served meanwhile.
        status, doc = post(connect(server, webhook_ca), review_body("other"))
        assert (status, doc["response"]["uid"]) == (200, "other")
        # The stalled ones are closed by the server (their reads end) instead of hanging forever.
        assert read_all(half) == b""
        assert read_all(silent) == b""
        silent.close()
        half.close()


def test_stop_closes_open_connections(cert_dir: Path, webhook_ca: CertificateAuthority) -> None:
    server = WebhookServer("127.0.0.1", 0, cert_dir)
    server.start()
    port = server.port
    conn = connect(server, webhook_ca)
    assert post(conn, review_body())[0] == 200
    server.stop()
    assert server.port == port
    with pytest.raises((OSError, http.client.HTTPException)):
        post(conn, review_body())
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=CLIENT_TIMEOUT).close()
    server.stop()  # idempotent


def test_starts_without_certificates_and_picks_them_up(tmp_path: Path, webhook_ca: CertificateAuthority) -> None:
    cert_dir = tmp_path / "later"
    with WebhookServer("127.0.0.1", 0, cert_dir) as server:
        with pytest.raises((OSError, ssl.SSLError)):
            post(connect(server, webhook_ca), review_body())
        write_pair(cert_dir, loopback_pair(webhook_ca))
        assert post(connect(server, webhook_ca), review_body())[0] == 200


def peer_serial(server: WebhookServer, ca: CertificateAuthority) -> int:
    conn = connect(server, ca)
    status, _ = post(conn, review_body())
    assert status == 200
    assert conn.sock is not None
    der = conn.sock.getpeercert(binary_form=True)
    assert der is not None
    from cryptography import x509

    return x509.load_der_x509_certificate(der).serial_number


def test_certificate_rotation_by_file_replacement(cert_dir: Path, webhook_ca: CertificateAuthority) -> None:
    with WebhookServer("127.0.0.1", 0, cert_dir) as server:
        first = peer_serial(server, webhook_ca)
        kept = connect(server, webhook_ca)
        assert post(kept, review_body())[0] == 200

        # A new CA and certificate, written the way a naive writer does: one file, then the other.
        new_ca = CertificateAuthority("rotated-ca")
        new_pair = loopback_pair(new_ca)
        (cert_dir / "tls.crt").write_bytes(new_pair.cert_pem)  # key not yet updated: pair mismatched
        assert peer_serial(server, webhook_ca) == first  # the old certificate keeps being served
        tmp = cert_dir / "tls.key.tmp"
        tmp.write_bytes(new_pair.key_pem)
        os.replace(tmp, cert_dir / "tls.key")

        second = peer_serial(server, new_ca)
        assert second != first
        with pytest.raises(ssl.SSLCertVerificationError):
            peer_serial(server, webhook_ca)  # the old CA no longer verifies new connections
        assert post(kept, review_body())[0] == 200  # an established connection keeps working
        assert server.certs.loads == 2


def test_certificate_rotation_like_a_secret_volume(tmp_path: Path, webhook_ca: CertificateAuthority) -> None:
    # kubelet's atomic writer: files are symlinks through "..data", which is swapped atomically.
    cert_dir = tmp_path / "secret-volume"
    cert_dir.mkdir()

    def publish(version: str, ca: CertificateAuthority) -> None:
        write_pair(cert_dir / version, loopback_pair(ca))
        link = cert_dir / "..data_tmp"
        link.symlink_to(version)
        os.replace(link, cert_dir / "..data")

    publish("..v1", webhook_ca)
    for name in ("tls.crt", "tls.key"):
        (cert_dir / name).symlink_to(f"..data/{name}")
    with WebhookServer("127.0.0.1", 0, cert_dir) as server:
        first = peer_serial(server, webhook_ca)
        new_ca = CertificateAuthority("rotated-ca-2")
        publish("..v2", new_ca)
        assert peer_serial(server, new_ca) != first


def test_connection_limit_drops_extra_connections_and_recovers(
    cert_dir: Path, webhook_ca: CertificateAuthority
) -> None:
    limits = ServerLimits(max_connections=2, max_connections_per_client=2, request_timeout=1.0)
    with WebhookServer("127.0.0.1", 0, cert_dir, limits=limits) as server:
        hogs = [tls_socket(server, webhook_ca) for _ in range(2)]  # hold both slots, send nothing
        extra = socket.create_connection(("127.0.0.1", server.port), timeout=CLIENT_TIMEOUT)
        assert read_all(extra) == b""  # closed at once, no handshake
        extra.close()
        for hog in hogs:  # the server times the idle ones out …
            assert read_all(hog) == b""
            hog.close()
        status, _ = post(connect(server, webhook_ca), review_body("after"))  # … and serves again
        assert status == 200


def test_denials_are_logged_without_values(
    webhook_server: WebhookServer, webhook_ca: CertificateAuthority, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("DEBUG", logger="tcr_assistant.admission.review")
    obj = sample(docker__password="hunter2-very-secret", docker__passwordSecretRef={"name": "x"})
    status, doc = post(connect(webhook_server, webhook_ca), review_body("logged", obj))
    assert status == 200 and doc["response"]["allowed"] is False
    assert "logged" in caplog.text and "spec.docker" in caplog.text
    assert "hunter2-very-secret" not in caplog.text


# ---- slots and deadlines (the security suite attacks them through the API server and on the node) ----


def test_slot_decision_caps_each_address_and_shares_a_full_server_fairly() -> None:
    limits = ServerLimits(max_connections=4, max_connections_per_client=3)
    assert slot_decision({}, "a", limits) == SlotDecision(True)
    assert slot_decision({"a": 3}, "a", limits) == SlotDecision(False, refusal="client_limit")
    assert slot_decision({"a": 3}, "b", limits) == SlotDecision(True)
    # Full: a newcomer takes the busiest address's oldest connection while that one holds more …
    assert slot_decision({"a": 3, "b": 1}, "c", limits) == SlotDecision(True, evict="a")
    assert slot_decision({"a": 3, "b": 1}, "b", limits) == SlotDecision(True, evict="a")
    # … but never from an address holding as many as it would (no ping-pong between equals).
    assert slot_decision({"a": 2, "b": 2}, "b", limits) == SlotDecision(False, refusal="total_limit")
    assert slot_decision({"a": 2, "b": 2}, "c", limits) == SlotDecision(True, evict="b")
    with pytest.raises(ValueError, match=r"max_connections_per_client \(3\) must not exceed max_connections"):
        ServerLimits(max_connections=2, max_connections_per_client=3)
    with pytest.raises(ValueError, match="request_timeout must be positive"):
        ServerLimits(request_timeout=0)


def test_the_deadline_covers_the_whole_request_not_each_read(cert_dir: Path, webhook_ca: CertificateAuthority) -> None:
    limits = ServerLimits(request_timeout=1.5)
    with WebhookServer("127.0.0.1", 0, cert_dir, limits=limits) as server:
        sock = tls_socket(server, webhook_ca)
        sock.sendall(f"POST {WEBHOOK_PATH} HTTP/1.1\r\nHost: x\r\nX-Slow: ".encode())
        sock.setblocking(False)
        started = time.monotonic()
        cut_after = None
        while cut_after is None and time.monotonic() - started < 10 * limits.request_timeout:
            try:
                sock.send(b"a")  # a byte every 0.2 s: no single read ever waits long
            except ssl.SSLWantWriteError:
                pass
            except OSError:
                cut_after = time.monotonic() - started
            readable, _, _ = select.select([sock], [], [], 0.2)
            if readable and cut_after is None:
                try:
                    if sock.recv(65536) == b"":
                        cut_after = time.monotonic() - started
                except ssl.SSLWantReadError:
                    pass  # TLS bookkeeping (session tickets)
                except OSError:
                    cut_after = time.monotonic() - started
        sock.close()
        print(f"\ntrickling connection cut after {cut_after} s (deadline {limits.request_timeout} s)")
        assert cut_after is not None
        assert server.drops["deadline"] == 1
        # A kept-alive connection gets a fresh deadline for each request.
        conn = connect(server, webhook_ca)
        for uid in ("k1", "k2", "k3"):
            time.sleep(limits.request_timeout / 2)
            assert post(conn, review_body(uid))[0] == 200


def test_switched_off_route_answers_404_saying_why(cert_dir: Path, webhook_ca: CertificateAuthority) -> None:
    with WebhookServer("127.0.0.1", 0, cert_dir, switched_off={"/mutate-v1-pod": "the Pod webhook is off"}) as server:
        status, doc = post(connect(server, webhook_ca), review_body(), path="/mutate-v1-pod")
        assert status == 404 and doc["response"]["status"]["message"] == "the Pod webhook is off"
        status, doc = post(connect(server, webhook_ca), review_body(), path="/elsewhere")
        assert status == 404 and doc["response"]["status"]["message"] == "not found"
    # A path that is served is never reported as switched off.
    with WebhookServer("127.0.0.1", 0, cert_dir, routes={"/mutate-v1-pod": admission.handle},
                       switched_off={"/mutate-v1-pod": "off"}) as server:
        assert post(connect(server, webhook_ca), review_body(), path="/mutate-v1-pod")[0] == 200


def test_plain_server_serves_pages_within_the_same_limits() -> None:
    pages = {"/healthz": lambda: (200, "text/plain", b"ok\n")}
    dropped: list[str] = []
    limits = ServerLimits(max_connections=2, max_connections_per_client=1)
    with BoundedServer("127.0.0.1", 0, name="health", limits=limits, pages=pages, on_drop=dropped.append) as server:
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=CLIENT_TIMEOUT)
        conn.request("GET", "/healthz")
        response = conn.getresponse()
        assert (response.status, response.read()) == (200, b"ok\n")
        hog = socket.create_connection(("127.0.0.1", server.port), timeout=CLIENT_TIMEOUT)
        assert read_all(hog) == b""  # the address already holds its one slot (conn, kept alive): closed at once
        hog.close()
        assert dropped == ["client_limit"] and server.drops["client_limit"] == 1
        conn.request("GET", "/nothing")
        response = conn.getresponse()
        assert (response.status, response.read()) == (404, b"not found\n")


class SlowRoute:
    """A POST route that answers only when released: a review still in flight while the server stops."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()

    def __call__(self, body: bytes, max_body_bytes: int) -> tuple[int, dict[str, Any]]:
        self.entered.set()
        self.release.wait(CLIENT_TIMEOUT)
        return 200, {"answered": True}


def stop_in_background(server: BoundedServer) -> threading.Thread:
    stopper = threading.Thread(target=server.stop, daemon=True)
    stopper.start()
    return stopper


def test_a_draining_server_answers_the_request_in_progress_and_closes_idle_connections_at_once() -> None:
    slow = SlowRoute()
    pages = {"/healthz": lambda: (200, "text/plain", b"ok\n")}
    # A drain far longer than the client bound: stop can only return in time because every connection closed.
    server = BoundedServer("127.0.0.1", 0, name="drain", pages=pages, routes={"/slow": slow}, drain=600)
    server.start()
    busy = http.client.HTTPConnection("127.0.0.1", server.port, timeout=CLIENT_TIMEOUT)
    idle = http.client.HTTPConnection("127.0.0.1", server.port, timeout=CLIENT_TIMEOUT)
    idle.request("GET", "/healthz")
    first = idle.getresponse()
    assert (first.status, first.read(), first.getheader("Connection")) == (200, b"ok\n", None)  # kept alive
    busy.request("POST", "/slow", body=b"{}", headers={"Content-Type": "application/json"})
    assert slow.entered.wait(CLIENT_TIMEOUT)
    stopper = stop_in_background(server)

    # The connection waiting for a request is closed without an answer, while the review is in progress.
    assert idle.sock is not None and read_all(idle.sock) == b""
    assert stopper.is_alive()
    # The review in progress gets its whole answer instead of a cut connection, and is told to go.
    slow.release.set()
    answer = busy.getresponse()
    assert (answer.status, json.loads(answer.read()), answer.getheader("Connection")) == (
        200, {"answered": True}, "close")
    stopper.join(CLIENT_TIMEOUT)
    assert not stopper.is_alive(), "stop waited for the drain although no connection was left"
    assert server.open_connections == 0 and sum(server.drops.values()) == 0
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", server.port), timeout=CLIENT_TIMEOUT).close()


def test_without_a_drain_a_review_in_flight_is_cut() -> None:
    # The failure the drain exists for: the client sent its POST, and the connection goes under it.
    slow = SlowRoute()
    server = BoundedServer("127.0.0.1", 0, name="nodrain", routes={"/slow": slow})
    server.start()
    busy = http.client.HTTPConnection("127.0.0.1", server.port, timeout=CLIENT_TIMEOUT)
    busy.request("POST", "/slow", body=b"{}", headers={"Content-Type": "application/json"})
    assert slow.entered.wait(CLIENT_TIMEOUT)
    server.stop()
    slow.release.set()
    with pytest.raises((http.client.RemoteDisconnected, ConnectionError)):
        busy.getresponse()


def test_a_drain_ends_when_its_time_is_up_whatever_the_client_does() -> None:
    # A client that never lets its request finish cannot keep the server from stopping.
    slow = SlowRoute()
    server = BoundedServer("127.0.0.1", 0, name="stuck", routes={"/slow": slow}, drain=0.5)
    server.start()
    busy = http.client.HTTPConnection("127.0.0.1", server.port, timeout=CLIENT_TIMEOUT)
    busy.request("POST", "/slow", body=b"{}", headers={"Content-Type": "application/json"})
    assert slow.entered.wait(CLIENT_TIMEOUT)
    server.stop()  # returns although the route has not answered
    assert server.open_connections == 0
    slow.release.set()
    with pytest.raises((http.client.RemoteDisconnected, ConnectionError)):
        busy.getresponse()


def test_a_negative_drain_is_refused() -> None:
    with pytest.raises(ValueError, match="drain must not be negative"):
        BoundedServer("127.0.0.1", 0, name="bad", drain=-1)
