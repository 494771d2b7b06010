"""Through the real API server: the chart's CRD plus our webhook, registered as the chart does it
(rules, failurePolicy Fail, sideEffects None, matchPolicy Equivalent, admissionReviewVersions v1),
with ``clientConfig.url`` pointing at a WebhookServer on 127.0.0.1 (a host process: no Service reaches it).

- every bad object of ``BAD_CASES`` is refused by ``kubectl apply`` with a message naming the
  field (from the CRD's own rules or from the webhook, whichever the API server runs first);
- valid objects, the seed sample included, are admitted; an update breaking a valid one is refused;
- with the webhook down, ImagePullSecret writes fail closed with a clear message while
  Namespaces, ServiceAccounts, Secrets and Pods are still created;
- rotating the serving certificate (same CA, then a new CA announced in the caBundle first)
  keeps requests succeeding.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from webhook_support import (
    BAD_CASES,
    CHART_WEBHOOK_NAME,
    Webhook,
    chart_crd,
    installed_crd,
    kubectl_json,
    labelled,
    loopback_pair,
    running_webhook,
    sample,
    stopped_webhook,
    webhook_configuration,
    write_pair,
)

from harness.pki import CertificateAuthority
from support import kubectl, wait_for

pytestmark = pytest.mark.compat


@pytest.fixture(scope="module")
def crd(control_plane: Any) -> Iterator[dict[str, Any]]:
    with installed_crd(chart_crd(), reuse_foreign=True) as installed:
        yield installed


@pytest.fixture(scope="module")
def webhook(crd: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Webhook]:
    with running_webhook(tmp_path_factory.mktemp("webhook-certs")) as hook:
        yield hook


def unique(prefix: str = "ips") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def apply(obj: dict[str, Any]) -> Any:
    return kubectl_json("apply", obj=labelled(obj))


def test_seed_sample_is_admitted(webhook: Webhook) -> None:
    before = webhook.server.reviews
    obj = sample(unique("imagepullsecret-sample"))
    proc = apply(obj)
    assert proc.returncode == 0, proc.stderr
    assert webhook.server.reviews > before  # the webhook was asked, and allowed it
    stored = json.loads(kubectl("get", "ips", obj["metadata"]["name"], "-o", "json").stdout)
    assert stored["spec"]["docker"]["server"] == "fanjiankong-bj.tencentcloudcr.com"


@pytest.mark.parametrize(
    "changes",
    [
        {"namespaces": "team-a, team-b", "serviceAccounts": "default,builder"},
        {"docker__server": "registry.example.com:5000", "excludedNamespaces": "kube-system"},
        {"docker__password": None, "docker__passwordSecretRef": {"name": "registry-credential"}},
        {"namespaces": "", "serviceAccounts": ""},
    ],
    ids=["lists", "port-and-excluded", "secret-ref", "empty-lists"],
)
def test_valid_objects_are_admitted(webhook: Webhook, changes: dict[str, Any]) -> None:
    proc = apply(sample(unique(), **changes))
    assert proc.returncode == 0, proc.stderr


@pytest.mark.parametrize(("changes", "field", "fragment"), [c[1:] for c in BAD_CASES], ids=[c[0] for c in BAD_CASES])
def test_bad_objects_are_refused(webhook: Webhook, changes: dict[str, Any], field: str, fragment: str) -> None:
    name = unique()
    proc = apply(sample(name, **changes))
    assert proc.returncode != 0, f"stored an invalid object: {changes}"
    # The CRD's rule may name the enclosing object (spec.docker for password rules).
    assert field in proc.stderr or field.rsplit(".", 1)[0] + ":" in proc.stderr, proc.stderr
    assert "tcr.jwt.token" not in proc.stderr
    assert kubectl("get", "ips", name, check=False).returncode != 0


@pytest.mark.parametrize(
    ("name", "field"),
    [("a" * 247, "metadata.name"), ("Upper", "metadata.name"), ("under_score", "metadata.name")],
    ids=["too-long-for-tcr.ips-prefix", "upper", "underscore"],
)
def test_bad_names_are_refused(webhook: Webhook, name: str, field: str) -> None:
    proc = apply(sample(name))
    assert proc.returncode != 0
    assert field in proc.stderr, proc.stderr


def test_update_that_breaks_a_valid_object_is_refused(webhook: Webhook) -> None:
    obj = sample(unique())
    assert apply(obj).returncode == 0
    breaking: list[tuple[dict[str, Any], str]] = [
        ({"docker__server": "https://evil.example.com"}, "spec.docker.server"),
        ({"namespaces": "a,,b"}, "spec.namespaces"),
        ({"docker__username": ""}, "spec.docker.username"),
        ({"docker__passwordSecretRef": {"name": "cred"}}, "spec.docker"),
    ]
    for changes, field in breaking:
        broken = sample(obj["metadata"]["name"], **changes)
        proc = apply(broken)
        assert proc.returncode != 0, changes
        assert field in proc.stderr, proc.stderr
    # A merge patch straight to the API (no kubectl apply logic) is refused too.
    proc = kubectl(
        "patch",
        "ips",
        obj["metadata"]["name"],
        "--type=merge",
        "-p",
        json.dumps({"spec": {"serviceAccounts": "*,default"}}),
        check=False,
    )
    assert proc.returncode != 0 and "spec.serviceAccounts" in proc.stderr, proc.stderr
    stored = json.loads(kubectl("get", "ips", obj["metadata"]["name"], "-o", "json").stdout)
    assert stored["spec"]["docker"] == obj["spec"]["docker"]
    assert stored["spec"]["namespaces"] == obj["spec"]["namespaces"]
    # A valid update is admitted.
    assert apply(sample(obj["metadata"]["name"], namespaces="team-a")).returncode == 0


def test_webhook_down_fails_closed_but_core_objects_still_work(
    webhook: Webhook, tmp_path: Path, test_namespace: str
) -> None:
    with stopped_webhook(tmp_path / "certs", "tcr-addon-webhook-down-ca"):
        proc = apply(sample(unique()))
        assert proc.returncode != 0
        assert f'failed calling webhook "{CHART_WEBHOOK_NAME}"' in proc.stderr, proc.stderr
        # Core objects are not matched by the webhook's rules.
        ns = unique("ns")
        kubectl("create", "namespace", ns)
        try:
            kubectl("-n", test_namespace, "create", "serviceaccount", "builder")
            kubectl("-n", test_namespace, "create", "secret", "generic", "plain", "--from-literal=a=b")
            wait_for(
                lambda: (
                    kubectl("-n", test_namespace, "get", "serviceaccount", "default", check=False).returncode == 0
                ),
                timeout=60,
                what="the default ServiceAccount",
            )
            pod = {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": "stored-not-run", "namespace": test_namespace},
                "spec": {"containers": [{"name": "c", "image": "registry.example.com/app:1"}]},
            }
            kubectl_json("create", obj=pod, check=True)
            assert kubectl("-n", test_namespace, "get", "pod", "stored-not-run", check=False).returncode == 0
        finally:
            kubectl("delete", "namespace", ns, "--wait=false", check=False)


def test_update_fails_closed_while_webhook_down(webhook: Webhook, tmp_path: Path) -> None:
    obj = sample(unique())
    assert apply(obj).returncode == 0
    with stopped_webhook(tmp_path, "tcr-addon-webhook-down-ca-2"):
        proc = apply(sample(obj["metadata"]["name"], namespaces="team-b"))
        assert proc.returncode != 0
        assert "failed calling webhook" in proc.stderr, proc.stderr


def test_certificate_rotation_through_the_api_server(webhook: Webhook) -> None:
    loads = webhook.server.certs.loads
    # 1. Same CA, new key and certificate (what a renewal does).
    write_pair(webhook.cert_dir, loopback_pair(webhook.ca, "renewed"))
    webhook.server.close_connections()  # force the API server to handshake again
    assert apply(sample(unique())).returncode == 0
    assert webhook.server.certs.loads == loads + 1

    # 2. New CA: announce it in the caBundle first (old + new), then swap the serving certificate.
    new_ca = CertificateAuthority("tcr-addon-webhook-rotated-ca")
    bundle = webhook.ca.cert_pem + new_ca.cert_pem
    kubectl_json("apply", obj=webhook_configuration(webhook.name, webhook.server.port, bundle), check=True)
    write_pair(webhook.cert_dir, loopback_pair(new_ca, "rotated"))
    webhook.server.close_connections()
    before = webhook.server.reviews

    def admitted() -> bool:
        return apply(sample(unique())).returncode == 0

    wait_for(admitted, timeout=60, interval=0.5, what="writes to succeed with the rotated certificate")
    assert webhook.server.reviews > before
    assert webhook.server.certs.loads == loads + 2
    # 3. Drop the old CA from the bundle: still fine.
    kubectl_json("apply", obj=webhook_configuration(webhook.name, webhook.server.port, new_ca.cert_pem), check=True)
    wait_for(admitted, timeout=60, interval=0.5, what="writes to succeed with only the new CA")
    webhook.ca = new_ca
