"""The values wizard (scripts/values) as an attacker's or a careless user's tool.

- A plain ``http://`` TCR API endpoint (``--endpoint`` or ``$TCR_API_ENDPOINT``) would carry the
  issued registry token and the private IP in clear, forgeable on the way: refused before any
  connection unless ``--insecure-http-endpoint`` is given (a local listener counts connections).
- Hosts entries the chart and every node refuse (loopback, Service and metadata names, short
  names; loopback, link-local, multicast, broadcast, unspecified addresses) are refused by the
  wizard too, naming the option, before anything is written.
"""

from __future__ import annotations

import io
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

from support import REPO_ROOT
from values_wizard.cli import main as wizard_main

API_KEY = {"TENCENTCLOUD_SECRET_ID": "AKIDsecuritytest000000000000000000", "TENCENTCLOUD_SECRET_KEY": "k" * 32}
TOKEN = ["--registry", "demo-vpc.tencentcloudcr.com", "--issue-token", "--instance-id", "tcr-abcd1234",
         "--region", "ap-guangzhou"]
PASSWORD = ["--registry", "demo-vpc.tencentcloudcr.com", "--username", "100012345678", "--password-stdin"]


@dataclass
class Listener:
    """A TCP port on 127.0.0.1 that counts the connections made to it (and closes them)."""

    port: int = 0
    connections: list[bytes] = field(default_factory=list)

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@pytest.fixture
def listener() -> Iterator[Listener]:
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(0.2)
    seen = Listener(server.getsockname()[1])
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            with conn:
                conn.settimeout(2)
                try:
                    seen.connections.append(conn.recv(4096))
                except OSError:
                    seen.connections.append(b"")

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield seen
    finally:
        stop.set()
        thread.join(5)
        server.close()


def wizard(args: list[str], env: dict[str, str] | None = None, stdin: str = "pw") -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    status = wizard_main(args, stdin=io.StringIO(stdin), stdout=out, stderr=err, environ=env or {})
    return status, out.getvalue(), err.getvalue()


@pytest.mark.parametrize("extra", [[], ["--private-ip", "auto"]], ids=["issue-token", "issue-token+private-ip-auto"])
def test_http_endpoint_option_is_refused_before_any_connection(listener: Listener, extra: list[str]) -> None:
    status, out, err = wizard([*TOKEN, *extra, "--endpoint", listener.http], API_KEY)
    assert status == 2, err
    assert f"error: --endpoint: '{listener.http}' is plain http" in err
    assert "in clear" in err and "use https://" in err and "--insecure-http-endpoint" in err
    assert listener.connections == [], "nothing was sent to the endpoint"
    assert out == ""
    assert API_KEY["TENCENTCLOUD_SECRET_KEY"] not in err


def test_http_endpoint_from_the_environment_is_refused_naming_the_variable(listener: Listener) -> None:
    args = [*PASSWORD, "--private-ip", "auto", "--instance-id", "tcr-abcd1234", "--region", "gz"]
    # The scheme in capitals is still http (urlsplit lower-cases it).
    status, out, err = wizard(args, {**API_KEY, "TCR_API_ENDPOINT": f"HTTP://127.0.0.1:{listener.port}"})
    assert status == 2, err
    assert f"error: TCR_API_ENDPOINT: 'HTTP://127.0.0.1:{listener.port}' is plain http" in err
    assert listener.connections == []
    assert out == ""


def test_the_insecure_flag_lets_a_local_http_stand_in_be_used(listener: Listener) -> None:
    """Control: with --insecure-http-endpoint the same call goes out (and fails on our mute listener)."""
    status, out, err = wizard([*TOKEN, "--endpoint", listener.http, "--insecure-http-endpoint"], API_KEY)
    assert status == 1, err
    assert len(listener.connections) >= 1 and listener.connections[0].startswith(b"POST / HTTP/1.1")
    assert "plain http" not in err and out == ""


def test_help_documents_the_insecure_flag() -> None:
    result = subprocess.run([sys.executable, str(REPO_ROOT / "scripts" / "values"), "--help"],
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    assert "--insecure-http-endpoint" in result.stdout
    assert "http://HOST:PORT, which is refused without --insecure-" in " ".join(result.stdout.split())


BAD_HOSTS = [
    ("localhost=10.0.0.10", "domain 'localhost' is a loopback name"),
    ("kubernetes.default.svc=10.0.0.10", "domain 'kubernetes.default.svc' is a cluster-internal Service name"),
    ("metadata.tencentyun.com=10.0.0.10", "domain 'metadata.tencentyun.com' is a cloud metadata service name"),
    ("registry=10.0.0.10", "domain 'registry' is a single-label name"),
    ("demo-vpc.tencentcloudcr.com=127.0.0.1", "'127.0.0.1' is a loopback address"),
    ("demo-vpc.tencentcloudcr.com=169.254.0.23", "'169.254.0.23' is a link-local address"),
    ("demo-vpc.tencentcloudcr.com=224.0.0.1", "'224.0.0.1' is a multicast address"),
    ("demo-vpc.tencentcloudcr.com=255.255.255.255", "'255.255.255.255' is the broadcast address"),
    ("demo-vpc.tencentcloudcr.com=0.0.0.0", "'0.0.0.0' is the unspecified address"),
]


@pytest.mark.parametrize(("host", "words"), BAD_HOSTS, ids=[h for h, _ in BAD_HOSTS])
def test_dangerous_host_entries_are_refused(tmp_path: Path, host: str, words: str) -> None:
    out = tmp_path / "values.yaml"
    status, stdout, err = wizard([*PASSWORD, "--host", host, "-o", str(out)])
    assert status == 2, err
    assert "error: --host: " in err and words in err, err
    assert not out.exists() and stdout == ""


@pytest.mark.parametrize(("args", "words"), [
    (["--registry", "metadata.tencentyun.com", "--private-ip", "10.0.0.10"],
     "error: --private-ip: registry domain 'metadata.tencentyun.com' is a cloud metadata service name"),
    (["--private-ip", "169.254.169.254"], "error: --private-ip: private IP: '169.254.169.254' is a link-local address"),
])
def test_dangerous_private_ip_entries_are_refused(tmp_path: Path, args: list[str], words: str) -> None:
    out = tmp_path / "values.yaml"
    base = ["--username", "100012345678", "--password-stdin"]
    if "--registry" not in args:
        base = ["--registry", "demo-vpc.tencentcloudcr.com", *base]
    status, _, err = wizard([*base, *args, "-o", str(out)])
    assert status == 2, err
    assert words in err, err
    assert not out.exists()


def test_an_ordinary_tke_style_entry_still_works(tmp_path: Path) -> None:
    out = tmp_path / "values.yaml"
    status, _, err = wizard([*PASSWORD, "--host", "demo-vpc.tencentcloudcr.com=10.0.0.10", "-o", str(out)])
    assert status == 0, err
    assert yaml.safe_load(out.read_text())["global"]["hosts"] == [
        {"domain": "demo-vpc.tencentcloudcr.com", "ip": "10.0.0.10", "disabled": False}]
