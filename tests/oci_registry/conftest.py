"""Fixtures for the OCI archive and private registry tests: a CA, free loopback ports, registries."""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from harness import oci, pki, registry

HOSTNAME = "tcr-e2e-abc.tencentcloudcr.com"
USERNAME = "100012345678"
PASSWORD = "s3cret-Pa55word-7f1c9"


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="session")
def authority() -> pki.CertificateAuthority:
    return pki.CertificateAuthority("tcr-addon-registry-test-ca")


@pytest.fixture(scope="session")
def pause_archive(tmp_path_factory: pytest.TempPathFactory) -> oci.ImageInfo:
    return oci.pause_image(tmp_path_factory.mktemp("images") / "pause.tar")


RegistryFactory = Callable[..., registry.PrivateRegistry]


@pytest.fixture
def make_registry(tmp_path: Path, authority: pki.CertificateAuthority) -> Iterator[RegistryFactory]:
    """Start registries on 127.0.0.1:<free port> (ready on return); all stopped after the test."""
    started: list[registry.PrivateRegistry] = []

    def make(**overrides: object) -> registry.PrivateRegistry:
        options: dict[str, object] = {
            "hostname": HOSTNAME, "listen": f"127.0.0.1:{_free_port()}", "ca": authority,
            "username": USERNAME, "password": PASSWORD, "tie_to_parent": True,
        }
        options.update(overrides)
        instance = registry.PrivateRegistry(tmp_path / f"registry-{len(started)}", **options)  # type: ignore[arg-type]
        started.append(instance)
        instance.start()
        instance.wait_ready()
        return instance

    yield make
    for instance in started:
        instance.stop()


@pytest.fixture
def running_registry(make_registry: RegistryFactory) -> registry.PrivateRegistry:
    return make_registry()
