"""Does the registry accept a credential? The probe against a real registry (distribution, htpasswd,
TLS from our CA) on this machine's own address, a Bearer-token stand-in (the Harbor/TCR flow),
and the pure parts: the challenge, the addresses refused, the condition and its pace."""

from __future__ import annotations

import base64
import http.server
import json
import socket
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from controller_support import free_port, host_address
from hypothesis import given
from hypothesis import strategies as st

from harness import pki, registry
from tcr_assistant.reconciler import credcheck
from tcr_assistant.reconciler.credcheck import (
    ACCEPTED,
    ADDRESS_REFUSED,
    REFUSED,
    TLS_ERROR,
    UNEXPECTED,
    UNREACHABLE,
    ProbeResult,
)
from tcr_assistant.reconciler.registryprobe import (
    RegistryProbe,
    address_refused,
    parse_challenge,
    split_server,
    token_url,
)

HOSTNAME = "probe-test.tencentcloudcr.com"  # resolves only through the probe's addresses
USERNAME = "100012345678"
PASSWORD = "pr0be-Pa55word-c41e"


@pytest.fixture(scope="module")
def authority() -> pki.CertificateAuthority:
    return pki.CertificateAuthority("tcr-addon-probe-test-ca")


@pytest.fixture(scope="module")
def ca_file(authority: pki.CertificateAuthority, tmp_path_factory: pytest.TempPathFactory) -> str:
    path = tmp_path_factory.mktemp("ca") / "ca.crt"
    path.write_bytes(authority.cert_pem)
    return str(path)


@pytest.fixture(scope="module")
def private(authority: pki.CertificateAuthority, tmp_path_factory: pytest.TempPathFactory
            ) -> Iterator[registry.PrivateRegistry]:
    address = host_address()
    with registry.PrivateRegistry(tmp_path_factory.mktemp("registry"), hostname=HOSTNAME,
                                  listen=f"{address}:{free_port(address)}", ca=authority, username=USERNAME,
                                  password=PASSWORD, tie_to_parent=True) as running:
        yield running


def probe_for(reg: registry.PrivateRegistry, ca_file: str | None) -> RegistryProbe:
    return RegistryProbe({HOSTNAME: reg.listen_host}, ca_file, timeout=5)


def test_the_registry_accepts_the_right_password_and_refuses_a_wrong_one(
        private: registry.PrivateRegistry, ca_file: str) -> None:
    probe = probe_for(private, ca_file)
    server = f"{HOSTNAME}:{private.port}"
    assert probe.check(server, USERNAME, PASSWORD).reason == ACCEPTED
    refused = probe.check(server, USERNAME, "wrong-" + PASSWORD)
    assert refused.reason == REFUSED and "401" in refused.message
    assert PASSWORD not in refused.message
    assert probe.check(f"https://{server}", "someone-else", PASSWORD).reason == REFUSED


def test_unreachable_and_untrusted_registries_say_so(private: registry.PrivateRegistry, ca_file: str) -> None:
    closed = free_port(private.listen_host)
    unreachable = probe_for(private, ca_file).check(f"{HOSTNAME}:{closed}", USERNAME, PASSWORD)
    assert unreachable.reason == UNREACHABLE and "refused" in unreachable.message.lower(), unreachable
    untrusted = probe_for(private, None).check(f"{HOSTNAME}:{private.port}", USERNAME, PASSWORD)
    assert untrusted.reason == TLS_ERROR and "CERTIFICATE_VERIFY_FAILED" in untrusted.message.upper(), untrusted
    unknown = RegistryProbe({}, ca_file).check(f"{HOSTNAME}:{private.port}", USERNAME, PASSWORD)
    assert unknown.reason == UNREACHABLE, unknown  # not in the hosts entries, not in DNS


class Listener:
    """A TCP port that records whether anyone connected (for the addresses the probe must refuse)."""

    def __init__(self, address: str) -> None:
        self.sock = socket.socket()
        self.sock.bind((address, 0))
        self.sock.listen(8)
        self.sock.settimeout(0.5)
        self.port = int(self.sock.getsockname()[1])

    def connected(self) -> bool:
        try:
            conn, _ = self.sock.accept()
        except TimeoutError:
            return False
        conn.close()
        return True


@pytest.mark.parametrize("where", ["hosts entry", "DNS", "literal"])
def test_the_credential_is_never_sent_to_loopback(where: str, ca_file: str) -> None:
    """An ImagePullSecret's author chooses the server: it must not aim the controller's request,
    with a credential it may not know (a marked Secret's), at the controller's own machine."""
    listener = Listener("127.0.0.1")
    name = "127.0.0.1" if where == "literal" else "internal.example"
    addresses = {name: "127.0.0.1"} if where == "hosts entry" else {}
    probe = RegistryProbe(addresses, ca_file, resolve=lambda host, port: ["127.0.0.1"])
    result = probe.check(f"{name}:{listener.port}", USERNAME, PASSWORD)
    assert result.reason == ADDRESS_REFUSED and "loopback" in result.message, result
    assert not listener.connected()


@pytest.mark.parametrize(("address", "why"), [
    ("127.0.0.53", "loopback"), ("::1", "loopback"), ("169.254.169.254", "link-local"), ("fe80::1", "link-local"),
    ("224.0.0.1", "multicast"), ("0.0.0.0", "unspecified"), ("240.0.0.1", "reserved"),
    ("::ffff:127.0.0.1", "loopback"), ("::ffff:169.254.169.254", "link-local")])
def test_addresses_refused(address: str, why: str) -> None:
    refused = address_refused(address)
    assert refused is not None and why in refused


@pytest.mark.parametrize("address", ["10.0.0.12", "172.16.5.4", "192.168.1.1", "100.64.0.1", "192.0.2.2", "8.8.8.8",
                                     "fd00::2", "2001:4860::8888"])
def test_addresses_allowed(address: str) -> None:
    assert address_refused(address) is None


# -- the Bearer token flow (Harbor, TCR) -------------------------------------------------------


class BearerStandIn(http.server.ThreadingHTTPServer):
    """/v2/ answers 401 with a Bearer challenge; the realm gives a token for the right Basic
    credential; /v2/ accepts that token. ``realm`` is what the challenge names."""

    def __init__(self, address: str, pair: pki.KeyPair, directory: Path) -> None:
        super().__init__((address, 0), BearerHandler)
        (directory / "cert.pem").write_bytes(pair.cert_pem)
        (directory / "key.pem").write_bytes(pair.key_pem)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(directory / "cert.pem", directory / "key.pem")
        self.socket = context.wrap_socket(self.socket, server_side=True)
        self.realm = f"https://{HOSTNAME}:{self.server_address[1]}/service/token"
        self.seen: list[tuple[str, str]] = []  # (path, authorization scheme)


class BearerHandler(http.server.BaseHTTPRequestHandler):
    server: BearerStandIn

    def do_GET(self) -> None:
        authorization = self.headers.get("Authorization", "")
        self.server.seen.append((self.path, authorization.split(" ")[0]))
        good = "Basic " + base64.b64encode(f"{USERNAME}:{PASSWORD}".encode()).decode()
        if self.path.startswith("/service/token"):
            if authorization == good and "service=probe-test" in self.path and "scope=" not in self.path:
                self._answer(200, json.dumps({"token": "t0ken", "expires_in": 1800}).encode())
            else:
                self._answer(401, b'{"errors":[{"code":"UNAUTHORIZED"}]}')
        elif self.path == "/v2/" and authorization == "Bearer t0ken":
            self._answer(200, b"{}")
        else:
            self._answer(401, b"{}", {"WWW-Authenticate": f'Bearer realm="{self.server.realm}",service="probe-test"'})

    def _answer(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def bearer(authority: pki.CertificateAuthority, tmp_path: Path) -> Iterator[BearerStandIn]:
    address = host_address()
    server = BearerStandIn(address, authority.issue(HOSTNAME, dns_names=(HOSTNAME,), server=True), tmp_path)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def test_the_token_flow_accepts_the_right_credential_and_refuses_a_wrong_one(
        bearer: BearerStandIn, ca_file: str) -> None:
    probe = RegistryProbe({HOSTNAME: str(bearer.server_address[0])}, ca_file)
    server = f"{HOSTNAME}:{bearer.server_address[1]}"
    assert probe.check(server, USERNAME, PASSWORD) == ProbeResult(ACCEPTED, f"{server}/v2/ with its token "
                                                                            "accepted the credential")
    assert [scheme for _, scheme in bearer.seen] == ["Basic", "Basic", "Bearer"]
    refused = probe.check(server, USERNAME, "wrong")
    assert refused.reason == REFUSED and "token service" in refused.message


@pytest.mark.parametrize(("realm", "reason"), [
    ("http://{host}:{port}/service/token", UNEXPECTED),  # the credential would cross in clear text
    ("https://169.254.169.254/latest/meta-data", ADDRESS_REFUSED),  # the cloud's metadata service
    ("https://localhost:{port}/service/token", ADDRESS_REFUSED)])
def test_a_realm_elsewhere_gets_no_credential(bearer: BearerStandIn, ca_file: str, realm: str, reason: str) -> None:
    bearer.realm = realm.format(host=HOSTNAME, port=bearer.server_address[1])
    probe = RegistryProbe({HOSTNAME: str(bearer.server_address[0]), "localhost": "127.0.0.1"}, ca_file)
    result = probe.check(f"{HOSTNAME}:{bearer.server_address[1]}", USERNAME, PASSWORD)
    assert result.reason == reason, result
    assert [path for path, _ in bearer.seen] == ["/v2/"]  # nothing was sent to the realm


# -- pure parts ------------------------------------------------------------------------------


def test_challenges_parse_as_registries_write_them() -> None:
    assert parse_challenge('Bearer realm="https://r.example/service/token",service="harbor-registry",'
                           'scope="repository:a/b:pull"') == ("bearer", {
        "realm": "https://r.example/service/token", "service": "harbor-registry", "scope": "repository:a/b:pull"})
    assert parse_challenge('Basic realm="tcr-addon private registry"') == ("basic", {
        "realm": "tcr-addon private registry"})
    assert parse_challenge("") == ("", {})


@given(st.text(max_size=200))
def test_any_challenge_parses_without_error(header: str) -> None:
    scheme, params = parse_challenge(header)
    assert scheme == scheme.lower() and all(key == key.lower() for key in params)


def test_token_urls_are_https_only_and_carry_what_the_registry_asked() -> None:
    assert token_url({"realm": "https://r.example/token", "service": "s"}) == "https://r.example/token?service=s"
    assert token_url({"realm": "https://r.example/token?a=1", "scope": "x y"}) == "https://r.example/token?a=1&scope=x+y"
    assert token_url({"realm": "http://r.example/token"}) is None
    assert token_url({"realm": "file:///etc/passwd"}) is None
    assert token_url({}) is None


def test_servers_split_as_docker_writes_them() -> None:
    assert split_server("demo.tencentcloudcr.com") == ("demo.tencentcloudcr.com", 443)
    assert split_server("https://demo.tencentcloudcr.com/") == ("demo.tencentcloudcr.com", 443)
    assert split_server("r.example:5000") == ("r.example", 5000)
    assert split_server("[fd00::2]:5000") == ("fd00::2", 5000)


def test_the_condition_is_unknown_until_the_registry_answered_for_this_credential() -> None:
    now, later = "2026-12-04T00:00:00Z", "2026-12-04T00:05:00Z"
    assert credcheck.accepted_condition(None, "fp1", None, now)["status"] == "Unknown"
    refused = credcheck.record_answer(None, "fp1", ProbeResult(REFUSED, "r.example:443/v2/ refused (HTTP 401)"))
    condition = credcheck.accepted_condition(refused, "fp1", None, now)
    assert condition == {"type": "CredentialsAccepted", "status": "False", "reason": REFUSED,
                         "message": "r.example:443/v2/ refused (HTTP 401)", "lastTransitionTime": now}
    assert credcheck.accepted_condition(refused, "fp1", [condition], later)["lastTransitionTime"] == now
    assert credcheck.accepted_condition(refused, "fp2", [condition], later)["status"] == "Unknown"  # a new password


def test_refusals_are_asked_again_sooner_backing_off_up_to_the_period() -> None:
    record = None
    waits = []
    for _ in range(7):
        record = credcheck.record_answer(record, "fp", ProbeResult(UNREACHABLE, "timed out"))
        waits.append(credcheck.next_check_after(record, 600))
    assert waits == [30, 60, 120, 240, 480, 600, 600]
    record = credcheck.record_answer(record, "fp", ProbeResult(ACCEPTED, "ok"))
    assert record.failures == 0 and credcheck.next_check_after(record, 600) == 600
    assert credcheck.record_answer(record, "fp2", ProbeResult(REFUSED, "no")).failures == 1


def test_after_a_restart_the_published_answer_stands_until_the_registry_is_asked_again() -> None:
    published = {"type": "CredentialsAccepted", "status": "False", "reason": UNREACHABLE,
                 "message": "cannot reach r.example:443: timed out", "lastTransitionTime": "2026-12-01T00:00:00Z"}
    ready = {"type": "Ready", "status": "True", "reason": "Synced", "message": "", "lastTransitionTime": "x"}
    now = "2026-12-04T00:00:00Z"
    assert credcheck.accepted_condition(None, "fp", [ready, published], now) == published  # no status write
    same = credcheck.record_answer(None, "fp", ProbeResult(UNREACHABLE, "cannot reach r.example:443: timed out"))
    assert credcheck.accepted_condition(same, "fp", [ready, published], now) == published
    accepted = credcheck.record_answer(same, "fp", ProbeResult(ACCEPTED, "ok"))
    assert credcheck.accepted_condition(accepted, "fp", [ready, published], now)["lastTransitionTime"] == now
