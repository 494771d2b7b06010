"""The webhook's trust: its configurations, its serving certificate, the chart test's Role.

Actors: a stolen controller token (RBAC lets it patch our two webhook configurations as a whole),
whoever can create a Secret of the certificate's name in the release namespace, and a stolen
`helm test` token. The chart is installed on the real API server with helm (harness.addon: the
webhooks point at a host process on loopback); the controller runs as a host process with a
token of the chart's own ServiceAccount, and the attacks go through `kubectl --as` that
ServiceAccount or through a real token, so the chart's RBAC and admission policies are what
refuses them.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator
from typing import Any

import pytest

from harness import addon
from harness.cluster import ControlPlane
from support import kubectl, wait_for
from tcr_assistant.servingcert import certificates
from tcr_assistant.servingcert import decision as servingcert
from tcr_assistant.spec import api

# Version-dependent: the ValidatingAdmissionPolicy's CEL on webhook configurations.
pytestmark = pytest.mark.compat

NS = addon.NAMESPACE
CONTROLLER = f"--as=system:serviceaccount:{NS}:{addon.CONTROLLER_SERVICE_ACCOUNT}"
VALIDATING = "tcr-assistant-validating-webhook-configuration"
MUTATING = addon.MUTATING_CONFIGURATION
POLICY = "tcr-assistant-webhook-configurations"
ONLY_CA_BUNDLE = "may only change the caBundle of its webhook configurations"
NO_CREATE_DELETE = "may not create or delete webhook configurations"
CERT_SECRET = addon.WEBHOOK_CERT_SECRET
REGISTRY = "sec-reg"  # the chart's one ImagePullSecret: the helm test checks its Secret tcr.ipssec-reg
TEST_NAMESPACE = "default"  # tests.namespace


@pytest.fixture(scope="module")
def release(control_plane: ControlPlane, tmp_path_factory: pytest.TempPathFactory) -> Iterator[addon.Addon]:
    """The chart with one registry (so its test Role exists), installed; no controller yet."""
    running = addon.Addon(control_plane, tmp_path_factory.mktemp("addon"), tie_to_parent=True, set_values=[
        f"global.imagePullSecretsCrs[0].name={REGISTRY}",
        "global.imagePullSecretsCrs[0].dockerServer=sec.tencentcloudcr.com",
        "global.imagePullSecretsCrs[0].dockerUsername=100012345678",
        "global.imagePullSecretsCrs[0].dockerPassword=not-a-real-password",
    ])
    running.install()
    yield running
    try:
        if running.process is None:
            running.start_controller()  # the pre-delete hook needs it to remove what it created
        running.cleanup_and_uninstall()
    finally:
        running.stop_controller()
        kubectl("delete", "secret", CERT_SECRET, "-n", NS, "--ignore-not-found")


def configuration(kind: str, name: str) -> dict[str, Any]:
    found: dict[str, Any] = json.loads(kubectl("get", kind, name, "-o", "json").stdout)
    return found


def without_ca_bundles(config: dict[str, Any]) -> dict[str, Any]:
    """What the controller may not change: every field but each webhook's caBundle (and what the
    API server keeps itself)."""
    meta = {k: v for k, v in config["metadata"].items()
            if k not in ("resourceVersion", "generation", "managedFields")}
    webhooks = [{**w, "clientConfig": {k: v for k, v in w["clientConfig"].items() if k != "caBundle"}}
                for w in config["webhooks"]]
    return {"metadata": meta, "webhooks": webhooks}


def patch_as_controller(kind: str, name: str, patch: object, *extra: str) -> str:
    """The patch sent with the controller's identity; its stderr ('' when it was admitted)."""
    proc = kubectl("patch", CONTROLLER, kind, name, "--type=merge" if not isinstance(patch, list) else "--type=json",
                   "-p", json.dumps(patch), *extra, check=False)
    return "" if proc.returncode == 0 else proc.stderr


def policy_in_force() -> bool:
    """The policy refuses a (dry-run) failurePolicy change: it is loaded by the API server."""
    refused = patch_as_controller("validatingwebhookconfiguration", VALIDATING,
                                  [{"op": "replace", "path": "/webhooks/0/failurePolicy", "value": "Ignore"}],
                                  "--dry-run=server")
    return POLICY in refused


def test_a_stolen_controller_token_can_only_set_the_ca_bundle(release: addon.Addon) -> None:
    wait_for(policy_in_force, timeout=30, interval=0.5,
             what=f"ValidatingAdmissionPolicy {POLICY} refusing the controller's failurePolicy change")
    before = {kind: without_ca_bundles(configuration(kind, name))
              for kind, name in (("validatingwebhookconfiguration", VALIDATING),
                                 ("mutatingwebhookconfiguration", MUTATING))}
    webhook = before["validatingwebhookconfiguration"]["webhooks"][0]
    pod_webhook = before["mutatingwebhookconfiguration"]["webhooks"][0]
    url = webhook["clientConfig"]["url"]
    attacks: dict[str, tuple[str, str, object]] = {
        "send every request to another URL": (
            "validatingwebhookconfiguration", VALIDATING,
            [{"op": "replace", "path": "/webhooks/0/clientConfig/url", "value": "https://attacker.example:443/x"}]),
        "send Pods to another Service": (
            "mutatingwebhookconfiguration", MUTATING,
            [{"op": "remove", "path": "/webhooks/0/clientConfig/url"},
             {"op": "add", "path": "/webhooks/0/clientConfig/service",
              "value": {"name": "attacker", "namespace": "default", "path": "/steal", "port": 443}}]),
        "fail open": (
            "validatingwebhookconfiguration", VALIDATING,
            [{"op": "replace", "path": "/webhooks/0/failurePolicy", "value": "Ignore"}]),
        "widen the rules to Secrets": (
            "mutatingwebhookconfiguration", MUTATING,
            [{"op": "add", "path": "/webhooks/0/rules/-",
              "value": {"apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE", "UPDATE"],
                        "resources": ["secrets"], "scope": "*"}}]),
        "see kube-system's Pods": (
            "mutatingwebhookconfiguration", MUTATING,
            [{"op": "replace", "path": "/webhooks/0/namespaceSelector", "value": {}}]),
        "stop skipping Helm's objects": (
            "validatingwebhookconfiguration", VALIDATING,
            [{"op": "remove", "path": "/webhooks/0/objectSelector"}]),
        "add a webhook": (
            "validatingwebhookconfiguration", VALIDATING,
            [{"op": "add", "path": "/webhooks/-", "value": {**webhook, "name": "extra.attacker.example"}}]),
        "let cert-manager inject another CA": (
            "validatingwebhookconfiguration", VALIDATING,
            {"metadata": {"annotations": {"cert-manager.io/inject-ca-from": "attacker/their-certificate"}}}),
    }
    admitted = {what: kind for what, (kind, name, patch) in attacks.items()
                if ONLY_CA_BUNDLE not in (refused := patch_as_controller(kind, name, patch)) or POLICY not in refused}
    assert admitted == {}, f"let through: {admitted}"

    # What the keeper does: a strategic merge patch of each webhook's caBundle.
    bundle = base64.b64encode(b"-----BEGIN CERTIFICATE-----\nnot parsed here\n-----END CERTIFICATE-----\n").decode()
    for kind, name, webhook_name in (("validatingwebhookconfiguration", VALIDATING, webhook["name"]),
                                     ("mutatingwebhookconfiguration", MUTATING, pod_webhook["name"])):
        patched = kubectl("patch", CONTROLLER, kind, name, "--type=strategic", "-p", json.dumps(
            {"webhooks": [{"name": webhook_name, "clientConfig": {"caBundle": bundle}}]}), check=False)
        assert patched.returncode == 0, f"the caBundle patch of {name} was refused: {patched.stderr}"
        assert configuration(kind, name)["webhooks"][0]["clientConfig"]["caBundle"] == bundle

    # Deleting and creating: RBAC refuses first; with RBAC widened by mistake, the policy still does.
    delete = kubectl("delete", CONTROLLER, "validatingwebhookconfiguration", VALIDATING, check=False)
    assert delete.returncode != 0 and "cannot delete resource" in delete.stderr, delete.stderr
    widened = {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
               "metadata": {"name": "security-test-widened-webhook-rbac"},
               "rules": [{"apiGroups": ["admissionregistration.k8s.io"],
                          "resources": ["validatingwebhookconfigurations", "mutatingwebhookconfigurations"],
                          "verbs": ["create", "delete", "update", "patch"]}]}
    binding = {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
               "metadata": {"name": "security-test-widened-webhook-rbac"},
               "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                           "name": "security-test-widened-webhook-rbac"},
               "subjects": [{"kind": "ServiceAccount", "name": addon.CONTROLLER_SERVICE_ACCOUNT, "namespace": NS}]}
    kubectl("apply", "-f", "-",
            input_text=json.dumps({"apiVersion": "v1", "kind": "List", "items": [widened, binding]}))
    try:
        def delete_refused_by_policy() -> str | None:
            proc = kubectl("delete", CONTROLLER, "validatingwebhookconfiguration", VALIDATING, check=False)
            assert proc.returncode != 0, "the controller deleted its webhook configuration"
            return proc.stderr if POLICY in proc.stderr else None  # until RBAC's cache has the new binding

        refused_delete = wait_for(delete_refused_by_policy, timeout=30, interval=0.5,
                                  what="the delete reaching the policy")
        assert NO_CREATE_DELETE in refused_delete, refused_delete
        theirs = {"apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingWebhookConfiguration",
                  "metadata": {"name": "attacker-webhooks"},
                  "webhooks": [{**webhook, "name": "all.attacker.example",
                                "clientConfig": {"url": "https://attacker.example/x"}}]}
        create = kubectl("create", CONTROLLER, "-f", "-", input_text=json.dumps(theirs), check=False)
        assert create.returncode != 0 and POLICY in create.stderr and NO_CREATE_DELETE in create.stderr, create.stderr
        edited = configuration("validatingwebhookconfiguration", VALIDATING)
        edited["webhooks"][0]["failurePolicy"] = "Ignore"
        replace = kubectl("replace", CONTROLLER, "-f", "-", input_text=json.dumps(edited), check=False)
        assert replace.returncode != 0 and ONLY_CA_BUNDLE in replace.stderr, replace.stderr
    finally:
        kubectl("delete", "clusterrolebinding,clusterrole", "security-test-widened-webhook-rbac", "--ignore-not-found")

    # Nothing lost: every field but the caBundles is as the chart installed it.
    after = {kind: without_ca_bundles(configuration(kind, name))
             for kind, name in (("validatingwebhookconfiguration", VALIDATING),
                                ("mutatingwebhookconfiguration", MUTATING))}
    assert after == before
    assert after["validatingwebhookconfiguration"]["webhooks"][0]["clientConfig"]["url"] == url


def cert_secret() -> dict[str, Any] | None:
    proc = kubectl("get", "secret", CERT_SECRET, "-n", NS, "-o", "json", "--ignore-not-found")
    return json.loads(proc.stdout) if proc.stdout.strip() else None


def ca_bundles() -> list[bytes]:
    return [base64.b64decode(w["clientConfig"].get("caBundle") or "")
            for kind, name in (("validatingwebhookconfiguration", VALIDATING),
                               ("mutatingwebhookconfiguration", MUTATING))
            for w in configuration(kind, name)["webhooks"]]


def test_a_foreign_certificate_secret_is_never_trusted_unless_named_in_values(release: addon.Addon) -> None:
    """Someone who may create Secrets in the release namespace plants a certificate (with its CA
    and key) under the name the controller keeps, before the controller starts: published, it
    would make the API server trust whoever holds that key for every ImagePullSecret write and
    every Pod creation."""
    names = [*servingcert.service_names("tcr-assistant-webhook-service", NS), addon.WEBHOOK_HOST]
    theirs = certificates.issue(names, time.time(), 3600)
    body = {"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls",
            "metadata": {"name": CERT_SECRET, "namespace": NS, "labels": {"app.kubernetes.io/managed-by": "Helm"}},
            "data": {key: base64.b64encode(value).decode() for key, value in theirs.items()}}
    kubectl("delete", "secret", CERT_SECRET, "-n", NS, "--ignore-not-found")
    kubectl("create", "-f", "-", input_text=json.dumps(body))
    planted = cert_secret()
    assert planted is not None
    bundles_before = ca_bundles()

    with pytest.raises(addon.AddonError, match="not ready"):
        release.start_controller(timeout=8)
    log = (release.directory / "controller.log").read_text(errors="replace")
    expected = (f"Secret {NS}/{CERT_SECRET} was not created by tcr-assistant (no label "
                f"app.kubernetes.io/managed-by=tcr-assistant): it is not trusted, so it is neither served nor "
                f"published as the caBundle, and is left as it is. To use it, set the chart value "
                f"webhook.existingCertSecret={CERT_SECRET}")
    assert expected in log, log[-3000:]
    bundles = ca_bundles()
    assert theirs["ca.crt"] not in bundles and bundles == bundles_before, "their CA was published"
    assert cert_secret() == planted, "their Secret was changed"
    assert not (release.cert_dir / "tls.crt").exists(), "their certificate was served"
    release.stop_controller()

    # Named in values (the chart's RBAC then reads it, and never writes it), it is trusted.
    release.set_values = [*release.set_values, f"webhook.existingCertSecret={CERT_SECRET}"]
    release.extra_args = ["--webhook-cert-existing"]
    release.install()
    release.start_controller()
    assert set(ca_bundles()) == {theirs["ca.crt"]}
    assert (release.cert_dir / "tls.crt").read_bytes() == theirs["tls.crt"]
    assert cert_secret() == planted, "a Secret named in values is never written"
    log = (release.directory / "controller.log").read_text(errors="replace")
    assert "PRIVATE KEY" not in log and "BEGIN CERTIFICATE" not in log


def test_the_helm_test_token_reads_only_the_chart_s_own_secrets(release: addon.Addon) -> None:
    """A stolen `helm test` token (ServiceAccount tcr-assistant-test) tries to read another Secret
    in tests.namespace; the check `helm test` runs still works with it."""
    kubeconfig = release.service_account_kubeconfig("tcr-assistant-test", "helm-test")
    other = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "someone-elses-credentials",
                                                                "namespace": TEST_NAMESPACE},
             "stringData": {"password": "not-for-the-test"}}
    kubectl("apply", "-f", "-", input_text=json.dumps(other))
    try:
        read = kubectl("--kubeconfig", str(kubeconfig), "get", "secret", "someone-elses-credentials",
                       "-n", TEST_NAMESPACE, "-o", "json", check=False)
        assert read.returncode != 0, "the test token read another Secret"
        assert ('secrets "someone-elses-credentials" is forbidden: User "system:serviceaccount:'
                f'{NS}:tcr-assistant-test" cannot get resource "secrets"') in read.stderr, read.stderr
        assert "not-for-the-test" not in read.stdout + read.stderr
        for verb, resource in (("get", "secrets/someone-elses-credentials"), ("list", "secrets"),
                               ("get", "serviceaccounts/other")):
            can = kubectl("--kubeconfig", str(kubeconfig), "auth", "can-i", verb, resource, "-n", TEST_NAMESPACE,
                          check=False)
            assert can.stdout.strip() == "no", (verb, resource, can.stdout)
    finally:
        kubectl("delete", "secret", "someone-elses-credentials", "-n", TEST_NAMESPACE, "--ignore-not-found")
    # `helm test` still works: its check command reads the chart's own Secret and ServiceAccount.
    if release.process is None:
        release.start_controller()
    distributed = api.secret_name(REGISTRY)
    wait_for(lambda: kubectl("get", "secret", distributed, "-n", TEST_NAMESPACE, "--ignore-not-found",
                             "-o", "name").stdout.strip(), timeout=60,
             what=f"the controller writing {api.secret_name(REGISTRY)}")
    check = release.run_hook("test", timeout=120)
    assert check.returncode == 0, check.stdout + check.stderr
    assert f"lists {api.secret_name(REGISTRY)}" in check.stdout, check.stdout
