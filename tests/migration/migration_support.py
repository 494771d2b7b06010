"""A stand-in install of the original TKE add-on on a cluster, and `scripts/migrate` as a user runs it."""

from __future__ import annotations

import json
import secrets
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import yaml

from harness import original, pki
from support import REPO_ROOT, kubectl, wait_for

MIGRATE = REPO_ROOT / "scripts" / "migrate"
FOREIGN_ENTRY = "team-registry"  # an imagePullSecrets entry somebody else wrote: it must stay


@dataclass
class Original:
    registries: list[original.Registry]
    namespaces: list[str]
    authority: pki.CertificateAuthority
    uids: dict[str, str] = field(default_factory=dict)  # "ns/name" -> uid of each distributed Secret

    @property
    def secret_names(self) -> list[str]:
        return [f"tcr.ips{r.name}" for r in self.registries]


def apply(docs: Sequence[dict[str, Any]]) -> None:
    kubectl("apply", "-f", "-", input_text=yaml.safe_dump_all(docs))


def registry_for(server: str, password: str | None = None) -> original.Registry:
    return original.Registry(f"tcr-{secrets.token_hex(3)}-vpc", server, "100012345678",
                             password or secrets.token_urlsafe(12))


def install_original(*, image: str, servers: Sequence[str] = (), namespaces: int,
                     hosts: Sequence[tuple[str, str]] = (), hosts_image: str | None = None, prefix: str = "app",
                     failure_policy: str = "Fail", registries: Sequence[original.Registry] = ()) -> Original:
    """The original's objects with `kubectl apply`, hand-made ImagePullSecrets, their Secrets and links."""
    authority = pki.CertificateAuthority("tcr-assistant-original-ca")
    registries = [*registries, *(registry_for(server) for server in servers)]
    names = [f"{prefix}-{secrets.token_hex(2)}-{i:02d}" for i in range(namespaces)]
    apply(original.manifests(authority, image, hosts, hosts_image, failure_policy))
    kubectl("wait", "--for=condition=Established", f"crd/{original.CRD_FILE.stem}", "--timeout=60s")
    if failure_policy == "Fail":  # its webhook must answer before the ImagePullSecrets can be written
        kubectl("-n", original.NAMESPACE, "rollout", "status", "deployment/tcr-assistant-controller-manager",
                "--timeout=180s", timeout=200)
    docs = yaml.safe_dump_all(original.image_pull_secrets(registries, names))
    # Idempotent: retried until the Service's endpoints reach the just-Ready webhook Pod.
    wait_for(lambda: kubectl("apply", "-f", "-", input_text=docs, check=False).returncode == 0, timeout=90,
             interval=1, what="the hand-made ImagePullSecrets accepted by the original's webhook")
    links = original.service_account_links(registries)
    for i, namespace in enumerate(names):
        def has_default(ns: str = namespace) -> bool:
            return kubectl("-n", ns, "get", "serviceaccount", "default", check=False).returncode == 0
        wait_for(has_default, timeout=60, what=f"ServiceAccount default in {namespace}")
        patch = dict(links)
        if i == 0:
            patch = {"imagePullSecrets": [{"name": FOREIGN_ENTRY}, *links["imagePullSecrets"]]}
        kubectl("-n", namespace, "patch", "serviceaccount", "default", "--type=strategic", "-p", json.dumps(patch))
    state = Original(registries, names, authority)
    state.uids = distributed_uids(state.secret_names)
    return state


def distributed_uids(secret_names: Sequence[str]) -> dict[str, str]:
    items = json.loads(kubectl("get", "secrets", "-A", "-o", "json").stdout)["items"]
    return {f"{s['metadata']['namespace']}/{s['metadata']['name']}": s["metadata"]["uid"]
            for s in items if s["metadata"]["name"] in secret_names}


def links(secret_names: Sequence[str]) -> dict[str, list[str]]:
    """"ns/sa" -> its imagePullSecrets names, for every ServiceAccount that lists one of ours."""
    items = json.loads(kubectl("get", "serviceaccounts", "-A", "-o", "json").stdout)["items"]
    out = {}
    for sa in items:
        entries = [ref.get("name") for ref in sa.get("imagePullSecrets") or []]
        if set(entries) & set(secret_names):
            out[f"{sa['metadata']['namespace']}/{sa['metadata']['name']}"] = entries
    return out


def migrate(*args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(MIGRATE), *args], capture_output=True, text=True, timeout=timeout,
                          check=False)


def plan_json(*args: str) -> dict[str, Any]:
    proc = migrate("-o", "json", *args)
    assert proc.returncode in (0, 3), proc.stderr
    result: dict[str, Any] = json.loads(proc.stdout)
    return result


def get(kind: str, name: str, namespace: str | None = None) -> dict[str, Any] | None:
    argv = ["get", kind, name, "-o", "json"] + (["-n", namespace] if namespace else [])
    proc = kubectl(*argv, check=False)
    if proc.returncode != 0:
        return None
    result: dict[str, Any] = json.loads(proc.stdout)
    return result
