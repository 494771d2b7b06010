"""A stand-in for the original TKE add-on, installed the way its manifests are: `kubectl apply`.

It has the original's object names (the published object list), the shapes a kubebuilder operator
of that name has (selector `control-plane: controller-manager`, webhook entry
`vimagepullsecret.kb.io`, a certificate Secret without `ca.key`, a ConfigMap of its own format),
and hand-made ImagePullSecrets whose `tcr.ips*` Secrets and ServiceAccount links already exist.
Nothing in it is owned by Helm. With `run_pods`, its controller Deployment runs a small stand-in
controller (`original_controller.py`, standard library only, in our controller image): it serves
the validating webhook with that certificate (allows every review) and, every second, creates a
missing `tcr.ips*` Secret in every namespace and links it to every ServiceAccount, as the original
does. Its hosts-updater DaemonSet only sleeps: the test writes the original's hosts line itself.

Used by the migration tests (`scripts/migrate`), and by hand to rehearse a migration:
`python -m harness.original --help`.
"""

from __future__ import annotations

import argparse
import base64
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from . import REPO_ROOT, pki

NAMESPACE = "tcr-assistant-system"
SERVICE_ACCOUNT = "tcr-assistant-controller-manager"
SELECTOR = {"control-plane": "controller-manager"}
WEBHOOK_ENTRY = "vimagepullsecret.kb.io"
WEBHOOK_PATH = "/validate-tcr-tencentcloudcr-com-v1-imagepullsecret"
CRD_FILE = REPO_ROOT / "chart" / "crds" / "imagepullsecrets.tcr.tencentcloudcr.com.yaml"
CONTROLLER_SCRIPT = Path(__file__).with_name("original_controller.py")


@dataclass
class Registry:
    """One hand-made ImagePullSecret: its registry and the namespaces that already hold its Secret."""

    name: str
    server: str
    username: str
    password: str = field(repr=False)


def dockerconfigjson(registry: Registry) -> str:
    auth = base64.b64encode(f"{registry.username}:{registry.password}".encode()).decode()
    doc = {"auths": {registry.server: {"username": registry.username, "password": registry.password, "auth": auth}}}
    return base64.b64encode(json.dumps(doc).encode()).decode()


def crd() -> dict[str, Any]:
    """Our CRD without Helm's metadata: the same API the original serves."""
    doc: dict[str, Any] = yaml.safe_load(CRD_FILE.read_text())
    doc["metadata"] = {"name": doc["metadata"]["name"]}
    return doc


def certificate_secret(authority: pki.CertificateAuthority) -> dict[str, Any]:
    """tls.crt/tls.key for the webhook Service, and ca.crt; no ca.key (the original keeps none)."""
    service = "tcr-assistant-webhook-service"
    pair = authority.issue(f"{service}.{NAMESPACE}.svc", server=True,
                           dns_names=(f"{service}.{NAMESPACE}.svc", f"{service}.{NAMESPACE}.svc.cluster.local"))
    b64 = lambda data: base64.b64encode(data).decode()  # noqa: E731
    return {"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls",
            "metadata": {"name": "tcr-assistant-webhook-server-cert", "namespace": NAMESPACE},
            "data": {"ca.crt": b64(authority.cert_pem), "tls.crt": b64(pair.cert_pem), "tls.key": b64(pair.key_pem)}}


def manifests(authority: pki.CertificateAuthority, image: str, hosts: Sequence[tuple[str, str]],
              hosts_image: str | None = None, failure_policy: str = "Fail") -> list[dict[str, Any]]:
    """The original's own objects (not the ImagePullSecrets), in apply order. ``failure_policy``
    Ignore is for a control plane without a node, where no Pod can serve the webhook."""
    ns = {"namespace": NAMESPACE}
    rules = [
        {"apiGroups": [""], "resources": ["secrets", "serviceaccounts"],
         "verbs": ["get", "list", "watch", "create", "update", "patch"]},
        {"apiGroups": [""], "resources": ["namespaces"], "verbs": ["get", "list", "watch"]},
        {"apiGroups": ["tcr.tencentcloudcr.com"], "resources": ["imagepullsecrets", "imagepullsecrets/status"],
         "verbs": ["get", "list", "watch", "update", "patch"]},
    ]
    template_spec: dict[str, Any] = {
        "serviceAccountName": SERVICE_ACCOUNT, "terminationGracePeriodSeconds": 2,
        "containers": [{
            "name": "manager", "image": image, "imagePullPolicy": "Never",
            "command": ["python", "/stand-in/original_controller.py"],
            "ports": [{"name": "webhook-server", "containerPort": 9443, "protocol": "TCP"}],
            "readinessProbe": {"tcpSocket": {"port": 9443}, "periodSeconds": 1},
            "volumeMounts": [{"name": "cert", "mountPath": "/tmp/k8s-webhook-server/serving-certs", "readOnly": True},
                             {"name": "stand-in", "mountPath": "/stand-in", "readOnly": True}]}],
        "volumes": [{"name": "cert", "secret": {"secretName": "tcr-assistant-webhook-server-cert"}},
                    {"name": "stand-in", "configMap": {"name": "tcr-assistant-original-controller"}}],
    }
    daemon_spec: dict[str, Any] = {
        "terminationGracePeriodSeconds": 1, "automountServiceAccountToken": False,
        "containers": [{"name": "updater", "image": hosts_image or image, "imagePullPolicy": "Never",
                        "command": ["python", "-c", "import time; time.sleep(10**9)"]}]}
    return [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}},
        crd(),
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": SERVICE_ACCOUNT, **ns}},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
         "metadata": {"name": "tcr-assistant-manager-role"}, "rules": rules},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
         "metadata": {"name": "tcr-assistant-manager-rolebinding"},
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                     "name": "tcr-assistant-manager-role"},
         "subjects": [{"kind": "ServiceAccount", "name": SERVICE_ACCOUNT, **ns}]},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
         "metadata": {"name": "tcr-assistant-leader-election-role", **ns},
         "rules": [{"apiGroups": ["coordination.k8s.io"], "resources": ["leases"],
                    "verbs": ["get", "list", "watch", "create", "update", "patch", "delete"]}]},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
         "metadata": {"name": "tcr-assistant-leader-election-rolebinding", **ns},
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                     "name": "tcr-assistant-leader-election-role"},
         "subjects": [{"kind": "ServiceAccount", "name": SERVICE_ACCOUNT, **ns}]},
        certificate_secret(authority),
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "tcr-assistant-webhook-service", **ns},
         "spec": {"selector": dict(SELECTOR),
                  "ports": [{"port": 443, "targetPort": "webhook-server", "protocol": "TCP"}]}},
        {"apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingWebhookConfiguration",
         "metadata": {"name": "tcr-assistant-validating-webhook-configuration"},
         "webhooks": [{
             "name": WEBHOOK_ENTRY, "admissionReviewVersions": ["v1"], "sideEffects": "None",
             "failurePolicy": failure_policy, "timeoutSeconds": 10,
             "clientConfig": {"service": {"name": "tcr-assistant-webhook-service", "path": WEBHOOK_PATH, "port": 443,
                                          **ns},
                              "caBundle": base64.b64encode(authority.cert_pem).decode()},
             "rules": [{"apiGroups": ["tcr.tencentcloudcr.com"], "apiVersions": ["v1"],
                        "operations": ["CREATE", "UPDATE"], "resources": ["imagepullsecrets"]}]}]},
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "tcr-assistant-original-controller", **ns},
         "data": {"original_controller.py": CONTROLLER_SCRIPT.read_text()}},
        {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "tcr-assistant-controller-manager", **ns},
         "spec": {"replicas": 1, "selector": {"matchLabels": dict(SELECTOR)},
                  "template": {"metadata": {"labels": dict(SELECTOR)}, "spec": template_spec}}},
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "updater-config", **ns},
         "data": {"hosts": "\n".join(f"{ip} {domain}" for domain, ip in hosts) + "\n"}},
        {"apiVersion": "apps/v1", "kind": "DaemonSet", "metadata": {"name": "hosts-updater", **ns},
         "spec": {"selector": {"matchLabels": {"app": "hosts-updater"}},
                  "template": {"metadata": {"labels": {"app": "hosts-updater"}}, "spec": daemon_spec}}},
    ]


def image_pull_secrets(registries: Sequence[Registry], namespaces: Sequence[str]) -> list[dict[str, Any]]:
    """Hand-made ImagePullSecrets (inline passwords), the namespaces, and the Secrets in them."""
    docs: list[dict[str, Any]] = []
    for registry in registries:
        docs.append({"apiVersion": "tcr.tencentcloudcr.com/v1", "kind": "ImagePullSecret",
                     "metadata": {"name": registry.name},
                     "spec": {"namespaces": "*", "serviceAccounts": "*",
                              "docker": {"server": registry.server, "username": registry.username,
                                         "password": registry.password}}})
    for namespace in namespaces:
        docs.append({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}})
        for registry in registries:
            docs.append({"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/dockerconfigjson",
                         "metadata": {"name": f"tcr.ips{registry.name}", "namespace": namespace},
                         "data": {".dockerconfigjson": dockerconfigjson(registry)}})
    return docs


def service_account_links(registries: Sequence[Registry]) -> dict[str, Any]:
    """The patch that links every registry's Secret to a ServiceAccount (what the original writes)."""
    return {"imagePullSecrets": [{"name": f"tcr.ips{r.name}"} for r in registries]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m harness.original",
        description="Print the manifests of a stand-in for the original TKE add-on (pipe them to `kubectl apply "
                    "-f -`), to rehearse `scripts/migrate` on a local cluster.")
    parser.add_argument("--image", required=True, help="an image with python3 (e.g. our controller image)")
    parser.add_argument("--host", action="append", default=[], metavar="DOMAIN=IP", help="a hosts entry")
    args = parser.parse_args(argv)
    hosts = [tuple(item.split("=", 1)) for item in args.host]
    docs = manifests(pki.CertificateAuthority("tcr-assistant-original-ca"), args.image,
                     [(d, i) for d, i in hosts])
    print(yaml.safe_dump_all(docs, sort_keys=False), end="")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
