"""The chart's CRD on the real API server: the seed sample, CEL rules with their messages, printer columns,
status subresource and `kubectl explain`. (tests/webhook/test_cel_parity.py compares every rule with
validation.py in depth; these are the chart's own acceptance checks.)"""

from __future__ import annotations

import copy
import json
import uuid
from collections.abc import Iterator
from typing import Any, cast

import pytest
import yaml
from chart_support import load_crd
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from support import SEED_SAMPLE_YAML as SEED_SAMPLE
from support import kubectl, wait_for

GROUP, VERSION, PLURAL = "tcr.tencentcloudcr.com", "v1", "imagepullsecrets"
CRD_NAME = "imagepullsecrets.tcr.tencentcloudcr.com"
OWNER_LABEL = "tcr-addon.test/owner"



@pytest.fixture(scope="module")
def crd(control_plane: Any, kube: client.ApiClient) -> Iterator[None]:
    """The chart's CRD (crds/ file) on the API server; removed afterwards if this module created it."""
    api = client.ApiextensionsV1Api(kube)
    body = load_crd()
    body["metadata"] = {"name": CRD_NAME, "labels": {OWNER_LABEL: "chart-tests"}}
    created = False
    try:
        api.create_custom_resource_definition(body)  # type: ignore[arg-type]
        created = True
    except ApiException as error:
        if error.status != 409:
            raise

    def established() -> bool:
        status = api.read_custom_resource_definition(CRD_NAME).status
        conditions = (status.conditions if status else None) or []
        return any(c.type == "Established" and c.status == "True" for c in conditions)

    wait_for(established, timeout=30, what="the CRD to be established")
    # kubectl finds the new kind through discovery, which follows Established a moment later
    wait_for(lambda: kubectl("get", "ipss", check=False).returncode == 0, timeout=30, interval=0.1,
             what="kubectl to discover the ImagePullSecret kind")
    yield
    if created:
        api.delete_custom_resource_definition(CRD_NAME)


def _ips(name: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": "ImagePullSecret", "metadata": {"name": name}, "spec": spec}


def _base() -> dict[str, Any]:
    return {"namespaces": "*", "serviceAccounts": "*",
            "docker": {"server": "example.tencentcloudcr.com", "username": "100012345678", "password": "p"}}


def _dry_run(kube: client.ApiClient, body: dict[str, Any]) -> str | None:
    """None when the API server accepts the object (server-side dry run), else its message."""
    try:
        client.CustomObjectsApi(kube).create_cluster_custom_object(GROUP, VERSION, PLURAL, body, dry_run="All")
    except ApiException as error:
        assert error.status == 422, error.body
        return str(json.loads(error.body or "{}")["message"])
    return None


def test_seed_sample_validates_unchanged(crd: None, kube: client.ApiClient) -> None:
    assert _dry_run(kube, yaml.safe_load(SEED_SAMPLE)) is None


def _with(path: str, value: Any) -> dict[str, Any]:
    spec = copy.deepcopy(_base())
    node = spec
    parts = path.split(".")
    for part in parts[:-1]:
        node = node[part]
    if value is None:
        node.pop(parts[-1])
    else:
        node[parts[-1]] = value
    return spec


GOOD = [
    ("namespaces", ""), ("namespaces", " * "), ("namespaces", "a,b"), ("namespaces", " a , b "),
    ("namespaces", "x" * 63), ("serviceAccounts", "default,builder.ci"), ("excludedNamespaces", "kube-system, a"),
    ("excludedNamespaces", ""), ("docker.server", "registry.example.com:5000"), ("docker.server", "10.0.0.1"),
    ("docker.server", "a.com:65535"),
]
# (path, value, part of the message the API server must give)
BAD = [
    ("namespaces", "a,,b", "comma-separated list of namespace names"),
    ("namespaces", "*,a", '"*" not mixed with names'),
    ("namespaces", "a.b", "DNS-1123 labels"),
    ("namespaces", "x" * 64, "at most 63"),
    ("namespaces", "A", "spec.namespaces"),
    ("serviceAccounts", "a..b", "spec.serviceAccounts"),
    ("serviceAccounts", ("a" * 60 + ".") * 4 + "a" * 20, "at most 253"),
    ("excludedNamespaces", "*", '"*" is not allowed here'),
    ("docker.server", "https://example.tencentcloudcr.com", "without a scheme"),
    ("docker.server", "example.tencentcloudcr.com/ns", "without a path"),
    ("docker.server", "Example.com", "lower-case DNS host name"),
    ("docker.server", "a.com:65536", "port must be from 1 to 65535"),
    ("docker.server", "a.com:080", "spec.docker.server"),
    ("docker.server", "", "spec.docker.server"),
    ("docker.username", "", "spec.docker.username"),
    ("docker.username", "a:b", "must not contain ':'"),
    ("docker.password", "", "exactly one of password"),
    ("docker.password", None, "exactly one of password"),
]


@pytest.mark.parametrize(("path", "value"), GOOD)
def test_valid_variants_are_accepted(crd: None, kube: client.ApiClient, path: str, value: str) -> None:
    assert _dry_run(kube, _ips("good", _with(path, value))) is None


@pytest.mark.parametrize(("path", "value", "message"), BAD, ids=[f"{b[0]}={b[1]!r:.20}" for b in BAD])
def test_invalid_variants_are_refused_with_a_message(crd: None, kube: client.ApiClient, path: str, value: Any,
                                                     message: str) -> None:
    refused = _dry_run(kube, _ips("bad", _with(path, value)))
    assert refused is not None, "accepted"
    assert message in refused, refused


def test_password_secret_ref(crd: None, kube: client.ApiClient) -> None:
    spec = _with("docker.password", None)
    spec["docker"]["passwordSecretRef"] = {"name": "tcr-credentials"}
    assert _dry_run(kube, _ips("ref", spec)) is None
    both = copy.deepcopy(spec)
    both["docker"]["password"] = "p"
    assert "exactly one of password" in (_dry_run(kube, _ips("both", both)) or "")
    bad_key = copy.deepcopy(spec)
    bad_key["docker"]["passwordSecretRef"]["key"] = "a/b"
    assert "passwordSecretRef.key" in (_dry_run(kube, _ips("key", bad_key)) or "")
    other_ns = copy.deepcopy(spec)
    other_ns["docker"]["passwordSecretRef"]["namespace"] = "kube-system"
    # Unknown fields are pruned: the reference can never point at another namespace.
    created = cast(dict[str, Any], client.CustomObjectsApi(kube).create_cluster_custom_object(
        GROUP, VERSION, PLURAL, _ips("prune", other_ns), dry_run="All"))
    assert created["spec"]["docker"]["passwordSecretRef"] == {"name": "tcr-credentials", "key": "password"}


def test_name_length_leaves_room_for_the_secret_prefix(crd: None, kube: client.ApiClient) -> None:
    assert _dry_run(kube, _ips("a" * 246, _base())) is None
    assert "at most 246" in (_dry_run(kube, _ips("a" * 247, _base())) or "")


def test_printer_columns_status_and_explain(crd: None, kube: client.ApiClient) -> None:
    name = f"columns-{uuid.uuid4().hex[:6]}"
    api = client.CustomObjectsApi(kube)
    api.create_cluster_custom_object(GROUP, VERSION, PLURAL, _ips(name, _base()))
    try:
        status = {"secretsDesired": 10, "secretsSuccess": 9, "sAsDesired": 20, "sAsSuccess": 20,
                  "secretUpdateSuccessful": [{"namespacedName": f"default/tcr.ips{name}",
                                              "updatedAt": "2026-01-01T00:00:00Z"}],
                  "observedGeneration": 1,
                  "conditions": [{"type": "Ready", "status": "False", "reason": "Syncing", "message": "9/10",
                                  "lastTransitionTime": "2026-01-01T00:00:00Z"},
                                 {"type": "CredentialsAccepted", "status": "False", "reason": "Refused",
                                  "message": "401", "lastTransitionTime": "2026-01-01T00:00:00Z"}]}
        api.patch_cluster_custom_object_status(GROUP, VERSION, PLURAL, name, {"status": status})
        # The status subresource: a spec write cannot change status.
        api.patch_cluster_custom_object(GROUP, VERSION, PLURAL, name, {"status": {"secretsDesired": 99}})
        out = kubectl("get", "ipss", name).stdout.splitlines()
        assert out[0].split() == ["NAME", "NAMESPACES", "SERVICE-ACCOUNTS", "SECRETS-DESIRED", "SECRETS-SUCCESS",
                                  "ACCEPTED", "AGE"]
        assert out[1].split()[:6] == [name, "*", "*", "10", "9", "False"]
        wide = kubectl("get", "ips", name, "-o", "wide").stdout.splitlines()[0].split()
        assert "READY" in wide and "SERVER" in wide
    finally:
        api.delete_cluster_custom_object(GROUP, VERSION, PLURAL, name)
    explain = kubectl("explain", "imagepullsecret.spec.docker").stdout
    assert "Credentials of a Docker registry" in explain
    for field in ("server", "username", "password", "passwordSecretRef"):
        assert field in explain
    assert "bare host" not in kubectl("explain", "ipss.status").stdout
    assert "Name of the Secret, in the add-on's namespace" in kubectl(
        "explain", "ipss.spec.docker.passwordSecretRef.name").stdout
    selector = kubectl("explain", "ipss.spec.namespaceSelector").stdout
    assert "matches both \"namespaces\"" in " ".join(selector.split())
    for field in ("matchLabels", "matchExpressions"):
        assert field in selector
    assert "NotIn (absent, or none of the values)" in " ".join(
        kubectl("explain", "ipss.spec.namespaceSelector.matchExpressions.operator").stdout.split())
