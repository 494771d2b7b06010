"""Through the real API server with only the webhook deciding: the chart's CRD with its value
constraints removed (types kept), so every bad object reaches the webhook and ``kubectl apply``
shows the webhook's own message. Skipped when someone else's CRD is installed in the cluster.

Also checks, end to end: unknown fields are refused by the API server (kubectl's default strict
field validation) or pruned before admission (``--validate=false``), so the webhook ignores
them; and the ratchet: an invalid object stored before the webhook existed can still get
metadata-only updates (with a warning) and be fixed, while a spec change that leaves it
invalid is refused; removing a finalizer from an object being deleted is never blocked.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from webhook_support import (
    BAD_CASES,
    Webhook,
    installed_crd,
    kubectl_json,
    labelled,
    permissive_crd,
    running_webhook,
    sample,
)

from support import kubectl

pytestmark = pytest.mark.compat

# Cases the (type-only) schema refuses before admission: wrong JSON types.
SCHEMA_TYPE_CASES = {"server-not-string", "ns-not-string", "docker-not-object", "ref-not-object"}
WEBHOOK_CASES = [c for c in BAD_CASES if c[0] not in SCHEMA_TYPE_CASES]
LEGACY = f"legacy-{uuid.uuid4().hex[:6]}"


@pytest.fixture(scope="module")
def permissive(control_plane: Any) -> Iterator[None]:
    with installed_crd(permissive_crd(), reuse_foreign=False):
        # Stored before any webhook exists: invalid by today's rules.
        kubectl_json("create", obj=labelled(sample(LEGACY, namespaces="Team_A")), check=True)
        yield


@pytest.fixture(scope="module")
def webhook(permissive: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Webhook]:
    with running_webhook(tmp_path_factory.mktemp("webhook-only-certs")) as hook:
        yield hook


def apply(obj: dict[str, Any]) -> Any:
    return kubectl_json("apply", obj=labelled(obj))


@pytest.mark.parametrize(
    ("changes", "field", "fragment"), [c[1:] for c in WEBHOOK_CASES], ids=[c[0] for c in WEBHOOK_CASES]
)
def test_webhook_refuses_with_its_message(webhook: Webhook, changes: dict[str, Any], field: str, fragment: str) -> None:
    name = f"wh-{uuid.uuid4().hex[:8]}"
    before = webhook.server.reviews
    proc = apply(sample(name, **changes))
    assert proc.returncode != 0
    assert webhook.server.reviews > before  # only the webhook can refuse with this permissive CRD
    # The webhook's status details make kubectl print it like the API server's own validation errors.
    assert f'The ImagePullSecret "{name}" is invalid: ' in proc.stderr, proc.stderr
    assert f"{field}: " in proc.stderr, proc.stderr
    assert fragment in proc.stderr, proc.stderr
    assert "tcr.jwt.token" not in proc.stderr


def test_name_too_long_for_the_secret_is_refused_by_the_webhook(webhook: Webhook) -> None:
    before = webhook.server.reviews
    proc = apply(sample("a" * 247))
    assert proc.returncode != 0
    assert webhook.server.reviews > before
    assert "metadata.name: is 247 characters long; at most 246" in proc.stderr


def test_seed_sample_admitted_and_unknown_fields_pruned(webhook: Webhook) -> None:
    name = f"wh-{uuid.uuid4().hex[:8]}"
    obj = sample(name, docker__email="someone@example.com", surprise="x")
    # kubectl's default (strict server-side field validation): the API server refuses unknown fields.
    proc = apply(obj)
    assert proc.returncode != 0 and 'unknown field "spec.docker.email"' in proc.stderr, proc.stderr
    # Without it, the structural schema prunes them before admission; the webhook never sees them.
    proc = kubectl_json("apply", "--validate=false", obj=labelled(obj))
    assert proc.returncode == 0, proc.stderr
    stored = json.loads(kubectl("get", "ips", name, "-o", "json").stdout)
    assert "email" not in stored["spec"]["docker"]
    assert "surprise" not in stored["spec"]


def test_ratchet_on_objects_stored_before_the_rules(webhook: Webhook) -> None:
    # Metadata-only change: admitted, with the webhook's warning shown by kubectl.
    proc = kubectl("label", "ips", LEGACY, "touched=yes", check=False)
    assert proc.returncode == 0, proc.stderr
    assert "spec.namespaces" in proc.stderr and "Warning" in proc.stderr
    # A spec change that leaves it invalid: refused.
    proc = kubectl(
        "patch", "ips", LEGACY, "--type=merge", "-p", json.dumps({"spec": {"serviceAccounts": "x"}}), check=False
    )
    assert proc.returncode != 0 and "spec.namespaces" in proc.stderr, proc.stderr
    # Fixing it: admitted.
    proc = kubectl(
        "patch", "ips", LEGACY, "--type=merge", "-p", json.dumps({"spec": {"namespaces": "team-a"}}), check=False
    )
    assert proc.returncode == 0, proc.stderr


def test_deletion_is_never_blocked(webhook: Webhook) -> None:
    name = f"wh-{uuid.uuid4().hex[:8]}"
    assert apply(sample(name)).returncode == 0
    kubectl(
        "patch",
        "ips",
        name,
        "--type=merge",
        "-p",
        json.dumps({"metadata": {"finalizers": ["tcr.tencentcloudcr.com/cleanup"]}}),
    )
    kubectl("delete", "ips", name, "--wait=false")
    # Removing the finalizer of an object being deleted is an UPDATE: always admitted.
    proc = kubectl(
        "patch", "ips", name, "--type=merge", "-p", json.dumps({"metadata": {"finalizers": None}}), check=False
    )
    assert proc.returncode == 0, proc.stderr
