"""The controller keeps its webhook's serving certificate, on the real API server.

The chart renders neither the certificate nor the caBundle. `tcr-assistant run` (a host process
with a token of the chart's own ServiceAccount, so the chart's RBAC and admission policy are what
is exercised) creates the CA and certificate in Secret tcr-assistant-webhook-server-cert,
publishes the CA as the caBundle, and serves the certificate. The API server calls the webhook
at https://localhost:PORT (failurePolicy Fail), so every server-side dry-run create of an
ImagePullSecret below succeeds only if the API server trusts the certificate being served.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import re
import threading
import time
from pathlib import Path
from typing import Any

from controller_support import K

from harness import addon
from harness.cluster import ControlPlane
from support import wait_for
from tcr_assistant import api, certificates, servingcert
from tcr_assistant.kube import IMAGEPULLSECRETS, KubeError

SECRET = "tcr-assistant-webhook-server-cert"
CONFIGURATION = "tcr-assistant-validating-webhook-configuration"
CONFIGURATION_PATH = f"/apis/admissionregistration.k8s.io/v1/validatingwebhookconfigurations/{CONFIGURATION}"
PEM = re.compile(rb"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", re.S)


def cert_secret(k: K) -> dict[str, Any] | None:
    return k.secret(addon.NAMESPACE, SECRET)


def ca_bundle(k: K) -> bytes:
    configuration = k.kube.get(CONFIGURATION_PATH)
    assert configuration is not None
    return base64.b64decode(configuration["webhooks"][0]["clientConfig"].get("caBundle") or "")


def fingerprints(pem: bytes) -> list[str]:
    return [hashlib.sha256(block).hexdigest()[:12] for block in PEM.findall(pem)]


def data(secret: dict[str, Any] | None) -> dict[str, bytes]:
    assert secret is not None
    return {key: base64.b64decode(value) for key, value in secret["data"].items()}


def webhook_admits(k: K) -> str | None:
    """A server-side dry-run create of a valid ImagePullSecret: None when the webhook answered, else why not."""
    body = {"apiVersion": api.API_VERSION, "kind": api.KIND, "metadata": {"name": "dry-run-probe"},
            "spec": {"namespaces": "*", "serviceAccounts": "*",
                     "docker": {"server": "probe.tencentcloudcr.com", "username": "1", "password": "p"}}}
    try:
        k.kube.request("POST", IMAGEPULLSECRETS.path(), query={"dryRun": "All"}, body=body)
    except KubeError as exc:
        return str(exc)
    return None


def controller_log(running: addon.Addon) -> str:
    return (running.directory / "controller.log").read_text(errors="replace")


def test_certificate_created_published_kept_across_upgrade_and_restart_repaired_and_removed(
        k: K, control_plane: ControlPlane, tmp_path: Path) -> None:
    with addon.running(control_plane, tmp_path / "addon") as running:
        secret = cert_secret(k)
        assert secret is not None and secret["type"] == "kubernetes.io/tls"
        assert secret["metadata"]["labels"][api.LABEL_MANAGED_BY] == api.MANAGED_BY
        owner = secret["metadata"]["ownerReferences"][0]
        assert (owner["kind"], owner["name"]) == ("ValidatingWebhookConfiguration", CONFIGURATION)
        assert ca_bundle(k) == data(secret)["ca.crt"] != b""
        assert webhook_admits(k) is None

        # helm upgrade and a restart change neither the Secret nor the caBundle, and write nothing.
        version = secret["metadata"]["resourceVersion"]
        bundle = ca_bundle(k)
        running.set_values = ["webhook.timeoutSeconds=7"]
        running.install()
        running.stop_controller()
        running.start_controller()
        assert ca_bundle(k) == bundle
        assert (cert_secret(k) or {})["metadata"]["resourceVersion"] == version
        assert webhook_admits(k) is None

        # Hand edits are repaired: a caBundle emptied, then the Secret deleted.
        remove = [{"op": "remove", "path": "/webhooks/0/clientConfig/caBundle"}]
        k.kube.request("PATCH", CONFIGURATION_PATH, body=remove, content_type="application/json-patch+json")
        wait_for(lambda: ca_bundle(k) == bundle, timeout=30, what="the caBundle put back")
        k.kube.request("DELETE", f"/api/v1/namespaces/{addon.NAMESPACE}/secrets/{SECRET}")
        wait_for(lambda: (s := cert_secret(k)) is not None and ca_bundle(k) == data(s)["ca.crt"] != bundle,
                 timeout=30, what="a new certificate issued and published")
        wait_for(lambda: webhook_admits(k) is None, timeout=30, what="the webhook served with the new certificate")
        log = controller_log(running)
        assert "Forbidden" not in log and "Traceback" not in log, log[-3000:]

        running.cleanup_and_uninstall()
        # Owned by the webhook configuration, the Secret goes with it (garbage collector).
        wait_for(lambda: cert_secret(k) is None, timeout=60, what="the certificate Secret removed with the release")
        log = controller_log(running)
    assert "PRIVATE KEY" not in log and "BEGIN CERTIFICATE" not in log


def test_renewal_with_a_short_validity_never_interrupts_the_webhook(
        k: K, control_plane: ControlPlane, tmp_path: Path) -> None:
    """With a 24 s lifetime: at two thirds a second CA joins the caBundle, then the serving
    certificate is re-issued under it, then the expired CA leaves the bundle. Meanwhile the
    API server keeps calling the webhook, and every call must succeed."""
    validity = 24.0
    failures: list[str] = []
    calls = 0
    bundles: list[list[str]] = []
    served: set[str] = set()
    stop = threading.Event()

    def call_and_watch() -> None:
        nonlocal calls
        while not stop.is_set():
            why = webhook_admits(k)
            calls += 1
            if why is not None:
                failures.append(why)
            current = fingerprints(ca_bundle(k))
            if not bundles or bundles[-1] != current:
                bundles.append(current)
            secret = cert_secret(k)
            if secret is not None:
                served.add(fingerprints(data(secret)["tls.crt"])[0])
            time.sleep(0.05)

    with addon.running(control_plane, tmp_path / "addon",
                       extra_args=[f"--webhook-cert-validity={validity:g}"]) as running:
        first = fingerprints(ca_bundle(k))
        caller = threading.Thread(target=call_and_watch, daemon=True)
        caller.start()
        try:
            # Past the first CA's expiry: two renewals of the serving certificate's CA chain.
            wait_for(lambda: len(bundles) >= 3 and len(bundles[-1]) == 1 and bundles[-1] != first,
                     timeout=validity * 2.5, what="a new CA added, the serving certificate renewed, the old CA pruned")
        finally:
            stop.set()
            caller.join(10)
        log = controller_log(running)
        running.cleanup_and_uninstall()
    assert "Forbidden" not in log and "Traceback" not in log, log[-3000:]
    print(f"\n[renewal] {calls} webhook calls, {len(failures)} failed; caBundle sequence {bundles}; "
          f"{len(served)} serving certificates")
    assert failures == [], failures[:3]
    assert calls > 50
    assert bundles[0] == first and any(len(b) == 2 for b in bundles), bundles
    assert len(served) >= 2
    for step in ("add-ca", "renew-serving", "prune"):
        assert f"webhook certificate: {step}" in log, step



def test_a_secret_named_in_values_is_served_and_published_but_never_written(
        k: K, control_plane: ControlPlane, tmp_path: Path) -> None:
    """webhook.existingCertSecret: a certificate the user provides under a name of their own. Until
    it exists the controller is not ready and says what to create; then it serves the certificate
    and publishes its CA, and writes and deletes nothing (uninstall leaves it). A Secret of the
    controller's own name that it did not create is refused: tests/security."""
    corp = "corp-webhook-cert"
    running = addon.Addon(control_plane, tmp_path / "addon", tie_to_parent=True,
                          set_values=[f"webhook.existingCertSecret={corp}"],
                          extra_args=[f"--webhook-cert-secret={corp}", "--webhook-cert-existing"])
    running.install()
    role = k.kube.get(f"/apis/rbac.authorization.k8s.io/v1/namespaces/{addon.NAMESPACE}/roles/"
                      "tcr-assistant-webhook-cert-role")
    assert role is not None and role["rules"] == [
        {"apiGroups": [""], "resources": ["secrets"], "resourceNames": [corp], "verbs": ["get", "list", "watch"]}]
    names = [*servingcert.service_names("tcr-assistant-webhook-service", addon.NAMESPACE), addon.WEBHOOK_HOST]
    theirs = certificates.issue(names, time.time(), 3600)
    body = {"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls",
            "metadata": {"name": corp, "namespace": addon.NAMESPACE},
            "data": {key: base64.b64encode(value).decode() for key, value in theirs.items() if key != "ca.key"}}
    try:
        with contextlib.suppress(addon.AddonError):
            running.start_controller(timeout=3)
        assert running.process is not None and running.process.poll() is None
        wait_for(lambda: f"waiting for Secret {addon.NAMESPACE}/{corp} (webhook.existingCertSecret)"
                 in controller_log(running), timeout=30, what="the controller saying what to create")
        version = k.kube.request("POST", f"/api/v1/namespaces/{addon.NAMESPACE}/secrets", body=body)["metadata"][
            "resourceVersion"]
        running.wait_ready(timeout=30)
        assert ca_bundle(k) == theirs["ca.crt"]
        assert webhook_admits(k) is None
        assert (k.secret(addon.NAMESPACE, corp) or {})["metadata"]["resourceVersion"] == version
        assert cert_secret(k) is None, "no certificate of its own is issued"
        # Renewal is the user's: a replaced certificate is served and published (the same watch).
        renewed = certificates.issue(names, time.time(), 3600)
        version = k.kube.request("PUT", f"/api/v1/namespaces/{addon.NAMESPACE}/secrets/{corp}", body={
            **body, "data": {key: base64.b64encode(value).decode() for key, value in renewed.items()
                             if key != "ca.key"}})["metadata"]["resourceVersion"]
        wait_for(lambda: ca_bundle(k) == renewed["ca.crt"], timeout=30, what="the renewed CA published")
        wait_for(lambda: webhook_admits(k) is None, timeout=30, what="the renewed certificate served")
        running.cleanup_and_uninstall()
        secret = k.secret(addon.NAMESPACE, corp)
        assert secret is not None and secret["metadata"]["resourceVersion"] == version, "not ours: left alone"
    finally:
        running.stop_controller()
        with contextlib.suppress(KubeError):
            k.kube.request("DELETE", f"/api/v1/namespaces/{addon.NAMESPACE}/secrets/{corp}")
