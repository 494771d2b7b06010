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
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from controller_support import K

from harness import addon
from harness.cluster import ControlPlane
from support import wait_for
from tcr_assistant.k8s.client import Kube, KubeError, make_api_client
from tcr_assistant.reconciler.writes import IMAGEPULLSECRETS
from tcr_assistant.servingcert import certificates
from tcr_assistant.servingcert import decision as servingcert
from tcr_assistant.spec import api

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


# -- a certificate a previous chart version rendered, handed over and handed back -----------------

HANDED_OVER = servingcert.HANDED_OVER
SECRETS_PATH = f"/api/v1/namespaces/{addon.NAMESPACE}/secrets"


def previous_chart_certificate(validity: float) -> dict[str, bytes]:
    """What a chart that rendered the certificate left (0.1.0 did): ca.crt, tls.crt, tls.key, no ca.key."""
    names = [*servingcert.service_names("tcr-assistant-webhook-service", addon.NAMESPACE), addon.WEBHOOK_HOST]
    return {k: v for k, v in certificates.issue(names, time.time(), validity).items() if k != "ca.key"}


def plant_previous_release(k: K, cert: dict[str, bytes], annotations: dict[str, str] | None = None) -> str:
    """The Secret and caBundle as a previous chart version's release left them; returns the Secret's UID."""
    body = {"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls",
            "metadata": {"name": SECRET, "namespace": addon.NAMESPACE,
                         "labels": {api.LABEL_MANAGED_BY: "Helm", "app.kubernetes.io/component": "webhook"},
                         "annotations": {"meta.helm.sh/release-name": addon.RELEASE,
                                         "meta.helm.sh/release-namespace": addon.NAMESPACE, **(annotations or {})}},
            "data": {key: base64.b64encode(value).decode() for key, value in cert.items()}}
    uid = str(k.kube.request("POST", SECRETS_PATH, body=body)["metadata"]["uid"])
    set_ca_bundle(k, cert["ca.crt"])
    return uid


def set_ca_bundle(k: K, bundle: bytes) -> None:
    patch = [{"op": "add", "path": "/webhooks/0/clientConfig/caBundle", "value": base64.b64encode(bundle).decode()}]
    k.kube.request("PATCH", CONFIGURATION_PATH, body=patch, content_type="application/json-patch+json")


def ready(running: addon.Addon) -> bool:
    try:
        with urllib.request.urlopen(f"{running.health_url}/readyz", timeout=2) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def test_a_certificate_a_previous_chart_rendered_is_handed_over_by_helm_upgrade_and_renewed_in_place(
        k: K, control_plane: ControlPlane, tmp_path: Path) -> None:
    """`helm upgrade` finds the previous release's Secret (lookup) and renders it as it is, marked
    handed over and kept, and the caBundle from its live value: neither is deleted nor reset. The
    controller serves and publishes it without writing; when it comes due (a 60 s lifetime here) it
    adds a CA of its own and re-issues the serving certificate in place, labels left as Helm set
    them, while every call of the API server to the webhook succeeds."""
    validity = 60.0
    running = addon.Addon(control_plane, tmp_path / "addon", tie_to_parent=True,
                          extra_args=[f"--webhook-cert-validity={validity:g}"])
    running.install()
    failures: list[str] = []
    stop = threading.Event()
    try:
        previous = previous_chart_certificate(validity)
        uid = plant_previous_release(k, previous)
        running.install()  # helm upgrade
        secret = cert_secret(k)
        assert secret is not None and secret["metadata"]["uid"] == uid
        assert secret["metadata"]["annotations"][HANDED_OVER] == api.MANAGED_BY
        assert secret["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
        assert data(secret) == previous and ca_bundle(k) == previous["ca.crt"]
        running.start_controller()
        assert webhook_admits(k) is None
        version = (cert_secret(k) or {})["metadata"]["resourceVersion"]
        assert version == secret["metadata"]["resourceVersion"], "served as it is: nothing written"

        def call() -> None:
            while not stop.is_set():
                why = webhook_admits(k)
                if why is not None:
                    failures.append(why)
                time.sleep(0.05)

        caller = threading.Thread(target=call, daemon=True)
        caller.start()
        wait_for(lambda: "webhook certificate: renew-serving" in controller_log(running), timeout=validity * 1.5,
                 what="a CA of its own added, then the serving certificate re-issued under it")
        time.sleep(1)
        stop.set()
        caller.join(10)
        renewed = cert_secret(k)
        assert renewed is not None and renewed["metadata"]["uid"] == uid
        assert renewed["metadata"]["labels"][api.LABEL_MANAGED_BY] == "Helm", "labels left as Helm set them"
        assert renewed["metadata"]["annotations"][HANDED_OVER] == api.MANAGED_BY
        assert "ca.key" in renewed["data"] and data(renewed)["tls.crt"] != previous["tls.crt"]
        assert failures == [], failures[:3]
        # Another helm upgrade renders the renewed certificate from the live Secret: nothing changes.
        bundle, served = ca_bundle(k), data(renewed)
        running.set_values = ["webhook.timeoutSeconds=7"]
        running.install()
        assert ca_bundle(k) == bundle and data(cert_secret(k)) == served
        assert webhook_admits(k) is None
        log = controller_log(running)
        assert "Forbidden" not in log and "Traceback" not in log, log[-3000:]
        running.cleanup_and_uninstall()
        # Kept by Helm (resource policy), removed with the webhook configuration that owns it since renewal.
        wait_for(lambda: cert_secret(k) is None, timeout=60, what="the certificate Secret removed with the release")
    finally:
        stop.set()
        running.stop_controller()
        with contextlib.suppress(KubeError):
            k.kube.request("DELETE", f"{SECRETS_PATH}/{SECRET}")
    assert "PRIVATE KEY" not in controller_log(running)


def test_a_certificate_handed_back_is_served_until_the_api_server_stops_trusting_it(
        k: K, control_plane: ControlPlane, tmp_path: Path) -> None:
    """`helm rollback` to a chart that rendered the certificate applies its manifest again: the
    Secret loses the hand-over annotation. The controller Pods being replaced neither publish nor
    serve anything of it any more, but keep serving what they served, and stay Ready, while the
    caBundle is still the one they published; a caBundle someone else changes ends that."""
    running = addon.Addon(control_plane, tmp_path / "addon", tie_to_parent=True)
    running.install()
    try:
        previous = previous_chart_certificate(3600)
        plant_previous_release(k, previous, {HANDED_OVER: api.MANAGED_BY})
        running.start_controller()
        assert webhook_admits(k) is None
        served = (running.cert_dir / "tls.crt").read_bytes()
        assert served == previous["tls.crt"]
        remove = [{"op": "remove", "path": "/metadata/annotations/" + HANDED_OVER.replace("/", "~1")}]
        k.kube.request("PATCH", f"{SECRETS_PATH}/{SECRET}", body=remove, content_type="application/json-patch+json")
        wait_for(lambda: f"nor is it handed over: no annotation {HANDED_OVER}" in controller_log(running), timeout=30,
                 what="the controller no longer trusting the Secret")
        for _ in range(20):  # a few seconds: Ready all along, every call answered
            assert ready(running) and webhook_admits(k) is None
            time.sleep(0.1)
        assert (running.cert_dir / "tls.crt").read_bytes() == served
        set_ca_bundle(k, previous_chart_certificate(3600)["ca.crt"])
        wait_for(lambda: not ready(running), timeout=30, what="not Ready once the caBundle no longer trusts it")
    finally:
        running.stop_controller()
        with contextlib.suppress(addon.AddonError):
            running.cleanup_and_uninstall()
        with contextlib.suppress(KubeError):
            k.kube.request("DELETE", f"{SECRETS_PATH}/{SECRET}")


def test_the_hand_over_annotation_lets_the_controller_update_that_one_secret_and_nothing_more(
        k: K, control_plane: ControlPlane, tmp_path: Path) -> None:
    """The admission policy lets the controller's ServiceAccount update the handed-over certificate
    Secret in place, and nothing else on the strength of the annotation: not another Secret that
    carries it, not a create, not a delete, not removing the annotation."""
    running = addon.Addon(control_plane, tmp_path / "addon", tie_to_parent=True)
    running.install()
    controller = Kube(make_api_client(str(running.controller_kubeconfig())))
    annotated = {"labels": {api.LABEL_MANAGED_BY: "Helm"}, "annotations": {HANDED_OVER: api.MANAGED_BY}}
    cert = previous_chart_certificate(3600)
    encoded = {key: base64.b64encode(value).decode() for key, value in cert.items()}

    def body(name: str, kind: str = "kubernetes.io/tls", **meta: Any) -> dict[str, Any]:
        return {"apiVersion": "v1", "kind": "Secret", "type": kind, "data": encoded,
                "metadata": {"name": name, "namespace": addon.NAMESPACE, **annotated, **meta}}

    def refused(method: str, path: str, payload: dict[str, Any] | None = None, dry_run: bool = False) -> bool:
        """Refused by the admission policy (not by RBAC, which allows all of these)."""
        try:
            controller.request(method, path, body=payload, query={"dryRun": "All"} if dry_run else None)
        except KubeError as exc:
            return exc.status == 403 and "tcr-assistant-secret-writes" in str(exc)
        return False

    other = "not-the-webhook-cert"
    try:
        # A fresh policy takes the API server a moment to load.
        wait_for(lambda: refused("POST", SECRETS_PATH, body(SECRET), dry_run=True), timeout=30, interval=0.5,
                 what="no create on the strength of the annotation")
        plant_previous_release(k, cert, {HANDED_OVER: api.MANAGED_BY})
        k.kube.request("POST", SECRETS_PATH, body=body(other))
        live = (cert_secret(k) or {})["metadata"]
        assert refused("PUT", f"{SECRETS_PATH}/{other}", body(other)), "another Secret"
        assert refused("DELETE", f"{SECRETS_PATH}/{SECRET}"), "no delete"
        dropped = body(SECRET, resourceVersion=live["resourceVersion"], annotations={})
        assert refused("PUT", f"{SECRETS_PATH}/{SECRET}", dropped), "the annotation must stay"
        renewed = body(SECRET, resourceVersion=live["resourceVersion"], annotations=live["annotations"])
        controller.request("PUT", f"{SECRETS_PATH}/{SECRET}", body=renewed)  # the renewal in place: allowed
    finally:
        for name in (SECRET, other):
            with contextlib.suppress(KubeError):
                k.kube.request("DELETE", f"{SECRETS_PATH}/{name}")
        running.cleanup_and_uninstall()


def test_a_secret_of_another_release_is_not_handed_over(k: K, control_plane: ControlPlane, tmp_path: Path) -> None:
    """Someone who may create Secrets in the release namespace plants a certificate under the
    webhook Secret's name with Helm's label and release annotations naming another release: `helm
    upgrade` neither renders nor marks it, and the controller neither serves nor publishes it."""
    running = addon.Addon(control_plane, tmp_path / "addon", tie_to_parent=True)
    running.install()
    theirs = previous_chart_certificate(3600)
    body = {"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls",
            "metadata": {"name": SECRET, "namespace": addon.NAMESPACE, "labels": {api.LABEL_MANAGED_BY: "Helm"},
                         "annotations": {"meta.helm.sh/release-name": "someone-else",
                                         "meta.helm.sh/release-namespace": addon.NAMESPACE}},
            "data": {key: base64.b64encode(value).decode() for key, value in theirs.items()}}
    try:
        planted = k.kube.request("POST", SECRETS_PATH, body=body)
        running.install()  # helm upgrade: the lookup finds it, but it is not this release's
        after = cert_secret(k)
        assert after is not None and after["metadata"]["resourceVersion"] == planted["metadata"]["resourceVersion"]
        assert HANDED_OVER not in (after["metadata"].get("annotations") or {})
        assert ca_bundle(k) != theirs["ca.crt"]
        with contextlib.suppress(addon.AddonError):
            running.start_controller(timeout=8)
        assert not ready(running) and ca_bundle(k) != theirs["ca.crt"]
        assert not (running.cert_dir / "tls.crt").exists(), "their certificate was served"
    finally:
        running.stop_controller()
        with contextlib.suppress(KubeError):
            k.kube.request("DELETE", f"{SECRETS_PATH}/{SECRET}")
        running.cleanup_and_uninstall()
