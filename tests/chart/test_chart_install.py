"""Install, upgrade, uninstall and reinstall the chart on the real local control plane.

No kubelet runs, so Pods never start and hook Jobs would hang: everything runs with --no-hooks and
without --wait (the hooks' commands are exercised as host processes by the controller's tests). The
tests in this module run in order and share one release.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import pytest
from chart_support import CHART_DIR, CI_DIR, NAMESPACE, RELEASE, REPO_ROOT, run_helm
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from harness.cluster import kubeconfig_yaml
from support import SEED_SAMPLE_YAML as SEED_SAMPLE
from support import kubectl, wait_for

pytestmark = pytest.mark.compat

CRD_NAME = "imagepullsecrets.tcr.tencentcloudcr.com"
VALUES = CI_DIR / "tke-two-registries-with-hosts-values.yaml"
GROUP, VERSION, PLURAL = "tcr.tencentcloudcr.com", "v1", "imagepullsecrets"


# (kubectl resource, name, namespaced): every object the release owns with the TKE-shaped values.
RELEASE_OBJECTS = [
    ("clusterrole", "tcr-assistant-manager-role", False),
    ("clusterrolebinding", "tcr-assistant-manager-rolebinding", False),
    ("role", "tcr-assistant-leader-election-role", True),
    ("rolebinding", "tcr-assistant-leader-election-rolebinding", True),
    ("role", "tcr-assistant-credentials-reader-role", True),
    ("rolebinding", "tcr-assistant-credentials-reader-rolebinding", True),
    ("role", "tcr-assistant-webhook-cert-role", True),
    ("rolebinding", "tcr-assistant-webhook-cert-rolebinding", True),
    ("clusterrole", "tcr-assistant-webhook-configuration-role", False),
    ("clusterrolebinding", "tcr-assistant-webhook-configuration-rolebinding", False),
    ("service", "tcr-assistant-webhook-service", True),
    ("validatingwebhookconfiguration", "tcr-assistant-validating-webhook-configuration", False),
    ("mutatingwebhookconfiguration", "tcr-assistant-mutating-webhook-configuration", False),
    ("validatingadmissionpolicy", "tcr-assistant-secret-writes", False),
    ("validatingadmissionpolicybinding", "tcr-assistant-secret-writes", False),
    ("validatingadmissionpolicy", "tcr-assistant-webhook-configurations", False),
    ("validatingadmissionpolicybinding", "tcr-assistant-webhook-configurations", False),
    ("secret", "tcr-assistant-registry-credentials", True),
    ("imagepullsecret", "tcr-abcdefgh-vpc", False),
    ("imagepullsecret", "tcr-abcdefgh-public", False),
    ("deployment", "tcr-assistant-controller-manager", True),
    ("serviceaccount", "tcr-assistant-controller-manager", True),
    ("configmap", "updater-config", True),
    ("daemonset", "hosts-updater", True),
    ("serviceaccount", "hosts-updater", True),
]


def helm_ok(*args: str) -> subprocess.CompletedProcess[str]:
    proc = run_helm(*args, timeout=180)
    assert proc.returncode == 0, f"helm {' '.join(args)}:\n{proc.stderr}"
    return proc


def exists(resource: str, name: str, namespaced: bool) -> bool:
    args = ["get", resource, name, "-o", "name", "--ignore-not-found"]
    if namespaced:
        args += ["-n", NAMESPACE]
    return bool(kubectl(*args).stdout.strip())


def install(*extra: str) -> subprocess.CompletedProcess[str]:
    return helm_ok("install", RELEASE, str(CHART_DIR), "-n", NAMESPACE, "--create-namespace", "--no-hooks",
                   "-f", str(VALUES), *extra)


def remove_crd(kube: client.ApiClient) -> None:
    api = client.ApiextensionsV1Api(kube)
    try:
        listed = cast(dict[str, Any], client.CustomObjectsApi(kube).list_cluster_custom_object(GROUP, VERSION, PLURAL))
    except ApiException as error:
        if error.status != 404:
            raise
        listed = {"items": []}
    for item in listed["items"]:
        if item["metadata"].get("finalizers"):
            client.CustomObjectsApi(kube).patch_cluster_custom_object(
                GROUP, VERSION, PLURAL, item["metadata"]["name"], {"metadata": {"finalizers": None}})
    try:
        api.delete_custom_resource_definition(CRD_NAME)
    except ApiException as error:
        if error.status != 404:
            raise

    def gone() -> bool:
        try:
            api.read_custom_resource_definition(CRD_NAME)
        except ApiException as error:
            return error.status == 404
        return False

    wait_for(gone, timeout=60, what="the CRD to be deleted")


@pytest.fixture(scope="module")
def release(control_plane: Any, kube: client.ApiClient) -> Iterator[subprocess.CompletedProcess[str]]:
    assert run_helm("status", RELEASE, "-n", NAMESPACE).returncode != 0, "a tcr-addon release already exists"
    try:
        client.ApiextensionsV1Api(kube).read_custom_resource_definition(CRD_NAME)
        remove_crd(kube)  # left by another suite: start from a cluster without the add-on
    except ApiException as error:
        if error.status != 404:
            raise
    started = time.monotonic()
    proc = install()
    print(f"helm install took {time.monotonic() - started:.1f} s")
    yield proc
    run_helm("uninstall", RELEASE, "-n", NAMESPACE, "--no-hooks")
    remove_crd(kube)
    # Gone before the next module installs into the same namespace.
    kubectl("delete", "namespace", NAMESPACE, "--ignore-not-found", "--wait=true", "--timeout=120s", timeout=150)


def test_install_creates_every_object_with_the_original_names(release: subprocess.CompletedProcess[str]) -> None:
    missing = [f"{r}/{n}" for r, n, ns in RELEASE_OBJECTS if not exists(r, n, ns)]
    assert missing == []
    assert exists("customresourcedefinition", CRD_NAME, False)
    assert exists("namespace", NAMESPACE, False)
    # NOTES.txt says what was installed and how to check it.
    assert "kubectl get ipss" in release.stdout
    assert "tcr-abcdefgh-vpc" in release.stdout
    # The chart's ImagePullSecrets went past the webhook (failurePolicy Fail, nothing serving it).
    hook = json.loads(kubectl("get", "validatingwebhookconfiguration",
                              "tcr-assistant-validating-webhook-configuration", "-o", "json").stdout)["webhooks"][0]
    assert hook["failurePolicy"] == "Fail"


def test_hand_made_objects_meet_the_webhook(release: subprocess.CompletedProcess[str]) -> None:
    """With failurePolicy Fail and no controller serving the webhook, a hand-made ImagePullSecret is refused:
    proof that the webhook is consulted for everything but the chart's own objects."""
    proc = kubectl("apply", "-f", "-", input_text=SEED_SAMPLE, check=False)
    assert proc.returncode != 0
    assert "vimagepullsecret.tcr.tencentcloudcr.com" in proc.stderr


def test_upgrade_leaves_a_set_ca_bundle_alone_and_adopts_the_crd(release: subprocess.CompletedProcess[str]) -> None:
    """The chart never renders the caBundle, so an upgrade keeps the one the controller set."""
    name = "validatingwebhookconfiguration/tcr-assistant-validating-webhook-configuration"
    bundle = base64.b64encode(b"set by the controller").decode()
    kubectl("patch", name, "--type=json", "-p",
            json.dumps([{"op": "add", "path": "/webhooks/0/clientConfig/caBundle", "value": bundle}]))
    helm_ok("upgrade", RELEASE, str(CHART_DIR), "-n", NAMESPACE, "--no-hooks", "-f", str(VALUES),
            "--set", "webhook.failurePolicy=Ignore")
    config = json.loads(kubectl("get", name, "-o", "json").stdout)
    assert config["webhooks"][0]["clientConfig"]["caBundle"] == bundle
    assert config["webhooks"][0]["failurePolicy"] == "Ignore"
    manifest = helm_ok("get", "manifest", RELEASE, "-n", NAMESPACE).stdout
    assert f"name: {CRD_NAME}" in manifest, "the upgrade did not take over the CRD"
    crd = json.loads(kubectl("get", "crd", CRD_NAME, "-o", "json").stdout)
    assert crd["metadata"]["labels"]["helm.sh/chart"].startswith("tcr-addon-")
    assert crd["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"


def test_seed_sample_applies(release: subprocess.CompletedProcess[str]) -> None:
    kubectl("apply", "-f", "-", input_text=SEED_SAMPLE)
    got = json.loads(kubectl("get", "ipss", "imagepullsecret-sample", "-o", "json").stdout)
    assert got["spec"]["docker"]["server"] == "fanjiankong-bj.tencentcloudcr.com"
    names = kubectl("get", "ipss", "-o", "name").stdout.split()
    assert sorted(names) == sorted(f"imagepullsecret.tcr.tencentcloudcr.com/{n}" for n in
                                   ("imagepullsecret-sample", "tcr-abcdefgh-vpc", "tcr-abcdefgh-public"))


CONTROLLER_USER = f"system:serviceaccount:{NAMESPACE}:tcr-assistant-controller-manager"


def can_i(verb: str, resource: str, namespace: str | None = None, user: str = CONTROLLER_USER) -> bool:
    args = ["auth", "can-i", verb, resource, f"--as={user}"]
    args += ["-n", namespace] if namespace else ["--all-namespaces"]
    return kubectl(*args, check=False).stdout.strip() == "yes"


def test_controller_rbac_is_least_privilege(release: subprocess.CompletedProcess[str]) -> None:
    for verb in ("get", "create", "update", "patch", "delete"):
        assert can_i(verb, "secrets", "default"), verb
    assert not can_i("list", "secrets", "default") and not can_i("watch", "secrets")
    assert not can_i("list", "secrets"), "no cluster-wide list of Secrets"
    assert can_i("list", "secrets", NAMESPACE) and can_i("watch", "secrets", NAMESPACE), "passwordSecretRef"
    assert can_i("update", "leases.coordination.k8s.io", NAMESPACE)
    assert not can_i("update", "leases.coordination.k8s.io", "default")
    assert can_i("watch", "namespaces") and not can_i("update", "namespaces")
    assert can_i("update", "serviceaccounts", "default") and not can_i("create", "serviceaccounts", "default")
    assert can_i("update", "imagepullsecrets.tcr.tencentcloudcr.com/status")
    assert not can_i("create", "imagepullsecrets.tcr.tencentcloudcr.com")
    assert can_i("create", "events", "default")
    assert not can_i("create", "pods", "default") and not can_i("get", "configmaps", "default")


def _secret(name: str, secret_type: str, labels: dict[str, str]) -> str:
    annotations = {"kubernetes.io/service-account.name": "default"} if secret_type.endswith("token") else {}
    return json.dumps({"apiVersion": "v1", "kind": "Secret", "type": secret_type,
                       "metadata": {"name": name, "namespace": "default", "labels": labels,
                                    "annotations": annotations},
                       "data": {".dockerconfigjson": "e30="} if secret_type.endswith("dockerconfigjson") else {}})


def test_admission_policy_pins_the_controllers_secret_writes(release: subprocess.CompletedProcess[str]) -> None:
    ours = {"app.kubernetes.io/managed-by": "tcr-assistant"}
    as_controller = f"--as={CONTROLLER_USER}"
    denied = kubectl("create", as_controller, "-f", "-", check=False,
                     input_text=_secret("tcr.ipsx-token", "kubernetes.io/service-account-token", ours))
    assert denied.returncode != 0 and "tcr-assistant-secret-writes" in denied.stderr, denied.stderr
    unlabelled = kubectl("create", as_controller, "-f", "-", check=False,
                         input_text=_secret("tcr.ipsx-unlabelled", "kubernetes.io/dockerconfigjson", {}))
    assert unlabelled.returncode != 0 and "tcr-assistant-secret-writes" in unlabelled.stderr
    kubectl("create", as_controller, "-f", "-", input_text=_secret("tcr.ipsx", "kubernetes.io/dockerconfigjson", ours))
    relabel = kubectl("label", as_controller, "secret", "tcr.ipsx", "-n", "default",
                      "app.kubernetes.io/managed-by=someone-else", "--overwrite", check=False)
    assert relabel.returncode != 0 and "tcr-assistant-secret-writes" in relabel.stderr
    # Someone else's Secret: the controller may neither take it over nor delete it.
    kubectl("create", "-f", "-", input_text=_secret("users-own", "kubernetes.io/dockerconfigjson", {}))
    take_over = kubectl("label", as_controller, "secret", "users-own", "-n", "default",
                        "app.kubernetes.io/managed-by=tcr-assistant", check=False)
    assert take_over.returncode != 0 and "tcr-assistant-secret-writes" in take_over.stderr
    delete_theirs = kubectl("delete", as_controller, "secret", "users-own", "-n", "default", check=False)
    assert delete_theirs.returncode != 0 and "tcr-assistant-secret-writes" in delete_theirs.stderr
    kubectl("delete", as_controller, "secret", "tcr.ipsx", "-n", "default")
    kubectl("delete", "secret", "users-own", "-n", "default")


def test_admission_policy_lets_the_controller_keep_only_its_minted_tokens_as_opaque_secrets(
        release: subprocess.CompletedProcess[str]) -> None:
    """An Opaque Secret only as a minted token's: named tcr.tok<name>, in the release namespace,
    labelled minted and ours. A stolen controller token cannot write any other Opaque Secret."""
    as_controller = f"--as={CONTROLLER_USER}"
    minted = {"app.kubernetes.io/managed-by": "tcr-assistant", "tcr.tencentcloudcr.com/credential-source": "minted"}

    def opaque(name: str, namespace: str, labels: dict[str, str]) -> str:
        return json.dumps({"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
                           "metadata": {"name": name, "namespace": namespace, "labels": labels},
                           "data": {"password": "dG9rZW4="}})

    for name, namespace, labels in (("tcr.tokx", "default", minted), ("not-a-token", NAMESPACE, minted),
                                    ("tcr.tokx", NAMESPACE, {"app.kubernetes.io/managed-by": "tcr-assistant"}),
                                    ("tcr.tokx", NAMESPACE, {**minted, "tcr.tencentcloudcr.com/credential-source":
                                                             "true"})):
        refused = kubectl("create", as_controller, "-f", "-", check=False, input_text=opaque(name, namespace, labels))
        assert refused.returncode != 0 and "tcr-assistant-secret-writes" in refused.stderr, (name, namespace, labels)
    kubectl("create", as_controller, "-f", "-", input_text=opaque("tcr.tokx", NAMESPACE, minted))
    kubectl("delete", as_controller, "secret", "tcr.tokx", "-n", NAMESPACE)


def _token_kubeconfig(control_plane: Any, kube: client.ApiClient, account: str, path: Path) -> Path:
    request = client.AuthenticationV1TokenRequest(spec=client.V1TokenRequestSpec(audiences=[], expiration_seconds=600))
    status = client.CoreV1Api(kube).create_namespaced_service_account_token(account, NAMESPACE, request).status
    assert status is not None
    token = status.token
    path.write_text(kubeconfig_yaml(control_plane.server, control_plane.ca_pem, token=token, user=account))
    return path


def _apply_hook_objects(*templates: str) -> None:
    args = ["template", RELEASE, str(CHART_DIR), "-n", NAMESPACE, "-f", str(VALUES)]
    for template in templates:
        args += ["--show-only", template]
    kubectl("apply", "-f", "-", input_text=helm_ok(*args).stdout)


def _tcr_assistant(*args: str, kubeconfig: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT / "controller")}
    return subprocess.run(
        [sys.executable, "-c", "import sys; from tcr_assistant.cli import main; sys.exit(main())", *args,
         "--kubeconfig", str(kubeconfig)],
        capture_output=True, text=True, env=env, timeout=120, check=False)


def test_helm_test_check_runs_with_the_test_rbac(release: subprocess.CompletedProcess[str], control_plane: Any,
                                                 kube: client.ApiClient, tmp_path: Path) -> None:
    _apply_hook_objects("templates/tests/test-serviceaccount.yaml", "templates/tests/test-role.yaml",
                        "templates/tests/test-rolebinding.yaml")
    config = _token_kubeconfig(control_plane, kube, "tcr-assistant-test", tmp_path / "test.kubeconfig")
    names = ["tcr-abcdefgh-vpc", "tcr-abcdefgh-public"]
    missing = _tcr_assistant("check", "--namespace", "default", "--timeout", "0", *names, kubeconfig=config)
    assert missing.returncode == 1, missing.stdout + missing.stderr
    assert "does not exist" in missing.stderr and "API error" not in missing.stderr, missing.stderr
    core = client.CoreV1Api(kube)
    for name in names:  # what the controller would have done
        core.create_namespaced_secret("default", client.V1Secret(
            metadata=client.V1ObjectMeta(name=f"tcr.ips{name}"), type="kubernetes.io/dockerconfigjson",
            string_data={".dockerconfigjson": "{}"}))
    before = core.read_namespaced_service_account("default", "default")
    core.patch_namespaced_service_account("default", "default",
                                          {"imagePullSecrets": [{"name": f"tcr.ips{n}"} for n in names]})
    try:
        ok = _tcr_assistant("check", "--namespace", "default", "--timeout", "5", *names, kubeconfig=config)
        assert ok.returncode == 0, ok.stdout + ok.stderr
    finally:
        core.patch_namespaced_service_account("default", "default",
                                              {"imagePullSecrets": before.image_pull_secrets or None})
        for name in names:
            core.delete_namespaced_secret(f"tcr.ips{name}", "default")
        kubectl("delete", "-n", NAMESPACE, "serviceaccount", "tcr-assistant-test")
        kubectl("delete", "-n", "default", "role,rolebinding", "-l", "app.kubernetes.io/component=test")


def test_pre_delete_cleanup_runs_with_the_hook_rbac(release: subprocess.CompletedProcess[str], control_plane: Any,
                                                    kube: client.ApiClient, tmp_path: Path) -> None:
    _apply_hook_objects("templates/cleanup-serviceaccount.yaml", "templates/cleanup-clusterrole.yaml",
                        "templates/cleanup-clusterrolebinding.yaml")
    config = _token_kubeconfig(control_plane, kube, "tcr-assistant-cleanup", tmp_path / "cleanup.kubeconfig")
    proc = _tcr_assistant("cleanup", f"--selector=app.kubernetes.io/instance={RELEASE}", "--timeout=30",
                          kubeconfig=config)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert kubectl("get", "ipss", "-o", "name").stdout.split() == [
        "imagepullsecret.tcr.tencentcloudcr.com/imagepullsecret-sample"], "only the release's objects are deleted"
    kubectl("delete", "serviceaccount", "tcr-assistant-cleanup", "-n", NAMESPACE)
    kubectl("delete", "clusterrole,clusterrolebinding", "-l", "app.kubernetes.io/component=cleanup")


def test_uninstall_leaves_only_the_kept_crd(release: subprocess.CompletedProcess[str]) -> None:
    helm_ok("uninstall", RELEASE, "-n", NAMESPACE, "--no-hooks")
    left = [f"{r}/{n}" for r, n, ns in RELEASE_OBJECTS if exists(r, n, ns)]
    assert left == []
    labelled = kubectl("get", "all,secrets,configmaps,serviceaccounts,roles,rolebindings", "-n", NAMESPACE,
                       "-l", f"app.kubernetes.io/instance={RELEASE}", "-o", "name").stdout.split()
    assert labelled == []
    cluster_labelled = kubectl("get", "clusterroles,clusterrolebindings,validatingwebhookconfigurations,"
                               "mutatingwebhookconfigurations,validatingadmissionpolicies,"
                               "validatingadmissionpolicybindings",
                               "-l", f"app.kubernetes.io/instance={RELEASE}", "-o", "name").stdout.split()
    assert cluster_labelled == []
    # Kept: the CRD, and with it the ImagePullSecret a user made by hand.
    assert exists("customresourcedefinition", CRD_NAME, False)
    assert kubectl("get", "ipss", "-o", "name").stdout.split() == [
        "imagepullsecret.tcr.tencentcloudcr.com/imagepullsecret-sample"]


def test_reinstall_after_uninstall_adopts_the_kept_crd(release: subprocess.CompletedProcess[str]) -> None:
    install("--set", "webhook.failurePolicy=Ignore")
    assert exists("imagepullsecret", "tcr-abcdefgh-vpc", False)
    for _ in range(2):  # turned off: the DaemonSet stays, in --remove mode, on every later upgrade too
        notes = helm_ok("upgrade", RELEASE, str(CHART_DIR), "-n", NAMESPACE, "--no-hooks", "-f", str(VALUES),
                        "--set", "webhook.failurePolicy=Ignore", "--set", "hostsUpdater.enabled=false").stdout
        daemonset = json.loads(kubectl("get", "daemonset", "hosts-updater", "-n", NAMESPACE, "-o", "json").stdout)
        assert daemonset["spec"]["template"]["spec"]["containers"][0]["args"][-1] == "--remove"
        config = json.loads(kubectl("get", "configmap", "updater-config", "-n", NAMESPACE, "-o", "json").stdout)
        assert json.loads(config["data"]["config.json"]) == {"hosts": []}
        assert "rollout status ds/hosts-updater" in notes
    helm_ok("upgrade", RELEASE, str(CHART_DIR), "-n", NAMESPACE, "--no-hooks", "-f", str(VALUES),
            "--set", "webhook.failurePolicy=Ignore")
    daemonset = json.loads(kubectl("get", "daemonset", "hosts-updater", "-n", NAMESPACE, "-o", "json").stdout)
    assert "--remove" not in daemonset["spec"]["template"]["spec"]["containers"][0]["args"], "enabled again"
    config = json.loads(kubectl("get", "configmap", "updater-config", "-n", NAMESPACE, "-o", "json").stdout)
    assert len(json.loads(config["data"]["config.json"])["hosts"]) == 2
    assert f"name: {CRD_NAME}" in helm_ok("get", "manifest", RELEASE, "-n", NAMESPACE).stdout
    helm_ok("uninstall", RELEASE, "-n", NAMESPACE, "--no-hooks")
    assert not exists("deployment", "tcr-assistant-controller-manager", True)


def test_install_with_the_chart_defaults_is_accepted_by_this_minor(release: subprocess.CompletedProcess[str]) -> None:
    """`helm install` with no values at all: the chart's kubeVersion admits this API server, and every
    default object (the ValidatingAdmissionPolicy and its binding included) is accepted by it."""
    version = json.loads(kubectl("version", "-o", "json").stdout)["serverVersion"]["gitVersion"]
    helm_ok("install", RELEASE, str(CHART_DIR), "-n", NAMESPACE, "--create-namespace", "--no-hooks")
    try:
        status = json.loads(helm_ok("status", RELEASE, "-n", NAMESPACE, "-o", "json").stdout)
        assert status["info"]["status"] == "deployed", status["info"]
        for resource, name in (("validatingadmissionpolicy", "tcr-assistant-secret-writes"),
                               ("validatingadmissionpolicybinding", "tcr-assistant-secret-writes"),
                               ("validatingadmissionpolicy", "tcr-assistant-webhook-configurations"),
                               ("validatingadmissionpolicybinding", "tcr-assistant-webhook-configurations"),
                               ("validatingwebhookconfiguration", "tcr-assistant-validating-webhook-configuration"),
                               ("mutatingwebhookconfiguration", "tcr-assistant-mutating-webhook-configuration"),
                               ("deployment", "tcr-assistant-controller-manager")):
            assert exists(resource, name, resource == "deployment"), f"{resource}/{name} on {version}"
    finally:
        helm_ok("uninstall", RELEASE, "-n", NAMESPACE, "--no-hooks")
