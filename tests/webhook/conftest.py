"""Fixtures for the webhook suite: its own control plane, serving certificates, a running WebhookServer.

Shared helpers (the seed sample, certificate files, the CRD and webhook configuration through
the real API server) are in ``webhook_support.py``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from kubernetes import client, config
from webhook_support import loopback_pair, write_pair

from harness import cluster
from harness.pki import CertificateAuthority
from support import pointed_at
from tcr_assistant.admission.server import WebhookServer


@pytest.fixture(scope="package")
def control_plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[cluster.ControlPlane]:
    """A control plane of the webhook suite's own: it swaps the CRD (with and without its rules) and
    registers webhooks for ImagePullSecrets, which must not disturb the other suites' shared plane."""
    with cluster.running(Path(tmp_path_factory.mktemp("webhook-plane"))) as plane, pointed_at(plane):
        yield plane


@pytest.fixture(scope="package")
def kube(control_plane: cluster.ControlPlane) -> client.ApiClient:
    return config.new_client_from_config(str(control_plane.kubeconfig))


@pytest.fixture(scope="session")
def webhook_ca() -> CertificateAuthority:
    return CertificateAuthority("tcr-addon-webhook-test-ca")


@pytest.fixture
def cert_dir(tmp_path: Path, webhook_ca: CertificateAuthority) -> Path:
    directory = tmp_path / "serving-certs"
    write_pair(directory, loopback_pair(webhook_ca))
    return directory


@pytest.fixture
def webhook_server(cert_dir: Path) -> Iterator[WebhookServer]:
    server = WebhookServer("127.0.0.1", 0, cert_dir)
    server.start()
    try:
        yield server
    finally:
        server.stop()
