"""The user's journey, in order: install from wizard values, helm test, the seed sample, a new
namespace, a new ServiceAccount, a password change, an upgrade with changed values, a refused
bad object, and an uninstall that leaves nothing behind."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from support import REPO_ROOT, kubectl, wait_for
from support import SEED_SAMPLE_YAML as SEED_SAMPLE

pytestmark = pytest.mark.compat

PUBLIC, VPC, SAMPLE = "e2e-public", "e2e-vpc", "imagepullsecret-sample"
SUFFIX = uuid.uuid4().hex[:6]
TEAM, OTHER = f"e2e-team-{SUFFIX}", f"e2e-other-{SUFFIX}"
OURS = {f"tcr.ips{name}" for name in (PUBLIC, VPC, SAMPLE)}


def wizard(path: Path, *registries: tuple[str, str], namespaces: str = "*") -> Path:
    """Values written by `scripts/values`, as a user would, password through stdin."""
    argv = [sys.executable, str(REPO_ROOT / "scripts" / "values"), "--username", "100012345678",
            "--password-stdin", "--namespaces", namespaces, "-o", str(path)]
    for domain, name in registries:
        argv += ["--registry", domain, "--name", name]
    proc = subprocess.run(argv, input="e2e-token-not-a-secret\n", capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "e2e-token-not-a-secret" not in proc.stdout + proc.stderr
    return path


def pull_secrets(core: client.CoreV1Api, namespace: str, account: str = "default") -> list[str]:
    try:
        sa = core.read_namespaced_service_account(account, namespace)
    except ApiException as error:
        if error.status == 404:
            return []
        raise
    return [str(ref.name) for ref in sa.image_pull_secrets or []]


def docker_auth(core: client.CoreV1Api, namespace: str, name: str) -> dict[str, Any] | None:
    try:
        secret = core.read_namespaced_secret(name, namespace)
    except ApiException as error:
        if error.status == 404:
            return None
        raise
    assert secret.type == "kubernetes.io/dockerconfigjson" and secret.data is not None
    return dict(json.loads(base64.b64decode(secret.data[".dockerconfigjson"]))["auths"])


def password_in(core: client.CoreV1Api, namespace: str) -> str | None:
    auths = docker_auth(core, namespace, f"tcr.ips{SAMPLE}") or {}
    return auths.get("fanjiankong-bj.tencentcloudcr.com", {}).get("password")


def all_of(kind: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = json.loads(kubectl("get", kind, "-A", "-o", "json").stdout)["items"]
    return items


def synced(name: str) -> bool:
    status = json.loads(kubectl("get", "ipss", name, "-o", "json").stdout).get("status") or {}
    desired = status.get("secretsDesired")
    return bool(desired) and desired == status.get("secretsSuccess") and status.get("sAsDesired") == status.get(
        "sAsSuccess")


@pytest.fixture(scope="module")
def core(e2e_kube: client.ApiClient) -> client.CoreV1Api:
    return client.CoreV1Api(e2e_kube)


@pytest.fixture(scope="module")
def values_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("e2e-values")


class TestJourney:
    def test_install_from_wizard_values(self, release: Any, core: client.CoreV1Api, values_dir: Path) -> None:
        release.install(wizard(values_dir / "install.yaml", ("e2e.tencentcloudcr.com", PUBLIC)))
        wait_for(lambda: f"tcr.ips{PUBLIC}" in pull_secrets(core, "default"), timeout=60,
                 what="ServiceAccount default in namespace default to list the release's Secret")
        wait_for(lambda: synced(PUBLIC), timeout=60, what=f"{PUBLIC} synced")

    def test_helm_test_passes(self, release: Any) -> None:
        release.helm_test()

    def test_seed_sample_distributes_and_links(self, core: client.CoreV1Api) -> None:
        kubectl("apply", "-f", "-", input_text=SEED_SAMPLE)
        wait_for(lambda: f"tcr.ips{SAMPLE}" in pull_secrets(core, "default"), timeout=60,
                 what="the seed sample's Secret on ServiceAccount default")
        auths = docker_auth(core, "default", f"tcr.ips{SAMPLE}")
        assert auths is not None
        entry = auths["fanjiankong-bj.tencentcloudcr.com"]
        assert entry["username"] == "100012345678" and entry["password"] == "tcr.jwt.token"
        assert base64.b64decode(entry["auth"]).decode() == "100012345678:tcr.jwt.token"
        listed = pull_secrets(core, "default")
        assert len(listed) == len(set(listed)), listed

    def test_new_namespace_is_served(self, core: client.CoreV1Api) -> None:
        for namespace in (TEAM, OTHER):
            core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=namespace)))
        both = {f"tcr.ips{PUBLIC}", f"tcr.ips{SAMPLE}"}
        for namespace in (TEAM, OTHER):
            wait_for(lambda: both <= set(pull_secrets(core, namespace)),  # noqa: B023 (waited on at once)
                     timeout=60, what=f"default in new namespace {namespace} linked to both ImagePullSecrets")

    def test_new_service_account_is_linked(self, core: client.CoreV1Api) -> None:
        core.create_namespaced_service_account(TEAM, client.V1ServiceAccount(
            metadata=client.V1ObjectMeta(name="builder"), image_pull_secrets=[client.V1LocalObjectReference(
                name="users-own")]))
        wait_for(lambda: f"tcr.ips{SAMPLE}" in pull_secrets(core, TEAM, "builder"), timeout=30,
                 what="new ServiceAccount builder linked")
        assert pull_secrets(core, TEAM, "builder")[0] == "users-own", "entries we did not add stay, first"

    def test_password_change_reaches_every_secret(self, core: client.CoreV1Api) -> None:
        kubectl("patch", "ipss", SAMPLE, "--type=merge", "-p", '{"spec": {"docker": {"password": "rotated.token"}}}')
        for namespace in ("default", TEAM, OTHER):
            wait_for(lambda: password_in(core, namespace) == "rotated.token",  # noqa: B023 (waited on at once)
                     timeout=60, what=f"the new password in {namespace}")

    def test_upgrade_with_changed_values(self, release: Any, core: client.CoreV1Api, values_dir: Path) -> None:
        values = wizard(values_dir / "upgrade.yaml", ("e2e.tencentcloudcr.com", PUBLIC),
                        ("e2e-vpc.tencentcloudcr.com", VPC), namespaces=f"default,{TEAM}")
        release.upgrade(values)
        for namespace in ("default", TEAM):
            wait_for(lambda: f"tcr.ips{VPC}" in pull_secrets(core, namespace),  # noqa: B023 (waited on at once)
                     timeout=60, what=f"the new registry's Secret linked in {namespace}")
        # Narrowed: the namespace no longer listed loses the release's Secret and entry, keeps the sample's.
        wait_for(lambda: docker_auth(core, OTHER, f"tcr.ips{PUBLIC}") is None, timeout=60,
                 what=f"tcr.ips{PUBLIC} removed from {OTHER}")
        wait_for(lambda: f"tcr.ips{PUBLIC}" not in pull_secrets(core, OTHER), timeout=60,
                 what=f"the entry removed from default in {OTHER}")
        assert f"tcr.ips{SAMPLE}" in pull_secrets(core, OTHER)

    @pytest.mark.usefixtures("e2e_plane")  # kubectl against the journey's cluster, in each mode
    def test_bad_object_is_refused(self) -> None:
        bad = SEED_SAMPLE.replace("name: imagepullsecret-sample", "name: e2e-bad").replace(
            "server: fanjiankong-bj", "server: https://fanjiankong-bj")
        result = kubectl("apply", "-f", "-", input_text=bad, check=False)
        assert result.returncode != 0
        assert "spec.docker.server" in result.stderr, result.stderr
        assert "tcr.jwt.token" not in result.stderr

    def test_uninstall_leaves_nothing(self, release: Any, core: client.CoreV1Api,
                                      e2e_kube: client.ApiClient) -> None:
        # Hand-made ImagePullSecrets are the user's: uninstall leaves them, so the user deletes them.
        kubectl("delete", "ipss", SAMPLE, "--wait=true", "--timeout=60s")
        release.uninstall()
        leftovers = [f"{s['metadata']['namespace']}/{s['metadata']['name']}" for s in all_of("secrets")
                     if s["metadata"]["name"] in OURS]
        assert leftovers == []
        linked = [f"{sa['metadata']['namespace']}/{sa['metadata']['name']}" for sa in all_of("serviceaccounts")
                  if OURS & {ref["name"] for ref in sa.get("imagePullSecrets") or []}]
        assert linked == []
        assert pull_secrets(core, TEAM, "builder") == ["users-own"]
        remaining = json.loads(kubectl("get", "ipss", "-o", "json").stdout)["items"]
        assert not [item["metadata"]["name"] for item in remaining if item["metadata"]["name"] in (PUBLIC, VPC)]
        assert [d for d in all_of("deployments") if d["metadata"]["namespace"] == "tcr-assistant-system"] == []
        hooks = [h["metadata"]["name"] for h in all_of("validatingwebhookconfigurations")]
        assert "tcr-assistant-validating-webhook-configuration" not in hooks
        for namespace in (TEAM, OTHER):
            core.delete_namespace(namespace)
