"""GitOps on the real node: the chart applied as Argo CD or Flux apply it, `helm template | kubectl apply`.

No Helm release and no `lookup`: the render must be the same every time, and the controller,
running in its Pod, must create the webhook certificate and publish its caBundle itself. The
manifest is applied twice; after each apply the webhook answers the API server (a server-side
dry-run of an ImagePullSecret succeeds only if the call succeeds: failurePolicy Fail), and the
second apply changes neither the caBundle nor the certificate Secret.
"""

from __future__ import annotations

import base64
import json
import time

import pytest
import yaml

from harness import addon, node
from support import kubectl, pointed_at, wait_for

pytestmark = pytest.mark.helm_paths

NAMESPACE = addon.NAMESPACE
DEPLOYMENT = "deploy/tcr-assistant-controller-manager"
CONFIGURATION = "validatingwebhookconfiguration/tcr-assistant-validating-webhook-configuration"
SECRET = "tcr-assistant-webhook-server-cert"
PROBE = json.dumps({
    "apiVersion": "tcr.tencentcloudcr.com/v1", "kind": "ImagePullSecret", "metadata": {"name": "gitops-probe"},
    "spec": {"namespaces": "*", "serviceAccounts": "*",
             "docker": {"server": "probe.tencentcloudcr.com", "username": "1", "password": "p"}},
})


def ca_bundle() -> str:
    config = json.loads(kubectl("get", CONFIGURATION, "-o", "json").stdout)
    return str(config["webhooks"][0]["clientConfig"].get("caBundle") or "")


def cert_secret_version() -> str:
    return kubectl("-n", NAMESPACE, "get", "secret", SECRET, "-o", "jsonpath={.metadata.resourceVersion}").stdout


def webhook_answers() -> bool:
    return kubectl("create", "--dry-run=server", "-f", "-", input_text=PROBE, check=False).returncode == 0


def test_template_applied_twice_keeps_the_ca_bundle_and_the_webhook_answers(node_cluster: node.NodeCluster) -> None:
    with pointed_at(node_cluster):
        release = addon.NodeRelease(node_cluster)
        manifest = release.render()
        assert release.render() == manifest, "helm template is not deterministic"
        documents = [d for d in yaml.safe_load_all(manifest) if d]
        assert not [d for d in documents if d["kind"] == "Secret"]
        assert [w["clientConfig"].get("caBundle") for d in documents if d["kind"] == "ValidatingWebhookConfiguration"
                for w in d["webhooks"]] == [None]
        # An earlier suite's `helm uninstall` leaves the (empty) namespace; delete it only if made here.
        created = not kubectl("get", "namespace", NAMESPACE, "--ignore-not-found", "-o", "name").stdout.strip()
        if created:
            kubectl("create", "namespace", NAMESPACE)
        seen: list[tuple[str, str]] = []
        try:
            for _ in range(2):
                started = time.monotonic()
                kubectl("apply", "-f", "-", input_text=manifest)
                kubectl("-n", NAMESPACE, "rollout", "status", DEPLOYMENT, "--timeout=180s")
                # Ready means the certificate served is the one published, so the call works now.
                assert webhook_answers(), "the webhook did not answer right after the rollout"
                seen.append((ca_bundle(), cert_secret_version()))
                print(f"\n[gitops] apply to a working webhook: {time.monotonic() - started:.1f} s")
            first, second = seen
            assert first[0] != "" and base64.b64decode(first[0]).startswith(b"-----BEGIN CERTIFICATE-----")
            assert second == first, "the second apply changed the caBundle or the certificate Secret"
        finally:
            kubectl("delete", "--ignore-not-found", "-f", "-", input_text=manifest, timeout=300)
            # The Secret is owned by the webhook configuration: the garbage collector removes it.
            wait_for(lambda: not kubectl("-n", NAMESPACE, "get", "secret", SECRET, "--ignore-not-found", "-o",
                                         "name").stdout.strip(), timeout=60, what="the certificate Secret collected")
            if created:
                kubectl("delete", "namespace", NAMESPACE, "--ignore-not-found", timeout=300)
