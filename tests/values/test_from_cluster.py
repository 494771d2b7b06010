"""scripts/values --from-cluster on the real local control plane: hand-made ImagePullSecrets become
chart values with the same names, scope and credentials; what the chart cannot own is refused."""

from __future__ import annotations

import base64
import contextlib
import json
import stat
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, cast

import pytest
import yaml
from kubernetes import client
from kubernetes.client.exceptions import ApiException
from values_support import Result, helm_template, run

from harness.cluster import ControlPlane
from support import load_crd
from values_wizard import PROG

GROUP, VERSION, PLURAL = "tcr.tencentcloudcr.com", "v1", "imagepullsecrets"
CRD_NAME = f"{PLURAL}.{GROUP}"
PASSWORD = 'Pa"ss:w0rd\'#{{x}} second\\ \t&*! é'
OTHER_PASSWORD = "another-long-term-token-0123456789"
CREDENTIALS_SECRET = "tcr-assistant-registry-credentials"


@pytest.fixture(scope="session")
def crd(kube: client.ApiClient) -> None:
    """The chart's CRD on the session's control plane (other suites may have created it already)."""
    extensions = client.ApiextensionsV1Api(kube)
    try:
        extensions.read_custom_resource_definition(CRD_NAME)
    except ApiException as exc:
        if exc.status != 404:
            raise
        extensions.create_custom_resource_definition(cast(Any, load_crd()))  # the client sends a dict as is
    custom = client.CustomObjectsApi(kube)
    deadline = time.monotonic() + 60
    while True:
        try:
            custom.list_cluster_custom_object(GROUP, VERSION, PLURAL, limit=1)
            return
        except ApiException:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def _items(custom: client.CustomObjectsApi) -> list[dict[str, Any]]:
    listed = cast(dict[str, Any], custom.list_cluster_custom_object(GROUP, VERSION, PLURAL))
    return list(listed["items"])


def _delete_all(custom: client.CustomObjectsApi) -> None:
    """No controller runs in this suite: drop finalizers so the objects really go."""
    for obj in _items(custom):
        name = obj["metadata"]["name"]
        with contextlib.suppress(ApiException):
            if obj["metadata"].get("finalizers"):
                custom.patch_cluster_custom_object(GROUP, VERSION, PLURAL, name, {"metadata": {"finalizers": None}})
            custom.delete_cluster_custom_object(GROUP, VERSION, PLURAL, name)
    deadline = time.monotonic() + 30
    while _items(custom):
        assert time.monotonic() < deadline, "ImagePullSecrets are not going away"
        time.sleep(0.1)


@pytest.fixture
def ips(kube: client.ApiClient, crd: None) -> Iterator[Callable[..., str]]:
    """Create an ImagePullSecret: ips(spec, name=None, labels=None, annotations=None) -> its name.

    --from-cluster reads every ImagePullSecret of the cluster, so the suites that ran before in this
    session (one after another) must not have left any: what is there at the start is removed, and
    so is every object afterwards.
    """
    custom = client.CustomObjectsApi(kube)
    _delete_all(custom)

    def create(spec: dict[str, Any], name: str | None = None, labels: dict[str, str] | None = None,
               annotations: dict[str, str] | None = None,
               owner_references: list[dict[str, str]] | None = None) -> str:
        name = name or f"mig-{uuid.uuid4().hex[:8]}"
        metadata: dict[str, Any] = {"name": name}
        if labels:
            metadata["labels"] = labels
        if annotations:
            metadata["annotations"] = annotations
        if owner_references:
            metadata["ownerReferences"] = owner_references
        body = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "ImagePullSecret", "metadata": metadata, "spec": spec}
        custom.create_cluster_custom_object(GROUP, VERSION, PLURAL, body)
        return name

    yield create
    _delete_all(custom)


@pytest.fixture
def env(control_plane: ControlPlane) -> dict[str, str]:
    return {"KUBECONFIG": str(control_plane.kubeconfig)}


def inline(server: str = "demo.tencentcloudcr.com", password: str = PASSWORD, **scope: Any) -> dict[str, Any]:
    return {**scope, "docker": {"server": server, "username": "100012345678", "password": password}}


def by_ref(server: str, name: str, key: str | None = None, **scope: Any) -> dict[str, Any]:
    ref = {"name": name} if key is None else {"name": name, "key": key}
    return {**scope, "docker": {"server": server, "username": "100012345678", "passwordSecretRef": ref}}


def wizard(env: dict[str, str], *args: str) -> Result:
    return run(["--from-cluster", *args], env=env)


def assert_no_password(result: Result, *passwords: str) -> None:
    for password in passwords:
        assert password not in result.stdout
        assert password not in result.stderr
        assert json.dumps(password)[1:-1] not in result.stderr


def rendered_ips(values_file: Path) -> tuple[dict[str, dict[str, Any]], list[dict[str, Any]]]:
    docs = helm_template(values_file)
    return {d["metadata"]["name"]: d["spec"] for d in docs if d.get("kind") == "ImagePullSecret"}, docs


# --------------------------------------------------------------------------------------------


def test_several_objects_become_entries_the_chart_renders_the_same(
        ips: Callable[..., str], env: dict[str, str], tmp_path: Path) -> None:
    selector = {"matchLabels": {"team": "a"},
                "matchExpressions": [{"key": "env", "operator": "In", "values": ["prod", "stage"]},
                                     {"key": "legacy", "operator": "DoesNotExist"}]}
    first = ips(inline(namespaces="default, team-a", serviceAccounts="default,builder",
                       excludedNamespaces="kube-system", namespaceSelector=selector))
    second = ips(by_ref("demo-vpc.tencentcloudcr.com", "tcr-credentials", "token"))
    third = ips(by_ref("registry.example.com:5000", "other-credentials"))
    fourth = ips({"docker": {"server": "other.tencentcloudcr.com", "username": "200012345678",
                             "password": OTHER_PASSWORD}})  # no scope given: all
    out = tmp_path / "values.yaml"

    result = wizard(env, "-o", str(out))

    assert result.status == 0, result.stderr
    assert result.stdout == ""
    assert_no_password(result, PASSWORD, OTHER_PASSWORD)
    assert f"wrote {out}: 4 ImagePullSecret(s)" in result.stderr
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    values = yaml.safe_load(out.read_text())
    crs = {cr["name"]: cr for cr in values["global"]["imagePullSecretsCrs"]}
    assert crs == {
        first: {"name": first, "namespaces": "default, team-a", "serviceAccounts": "default,builder",
                "excludedNamespaces": "kube-system", "namespaceSelector": selector, "type": "docker",
                "dockerServer": "demo.tencentcloudcr.com", "dockerUsername": "100012345678",
                "dockerPassword": PASSWORD},
        second: {"name": second, "namespaces": "*", "serviceAccounts": "*", "type": "docker",
                 "dockerServer": "demo-vpc.tencentcloudcr.com", "dockerUsername": "100012345678",
                 # the CRD's default key is stored by the API server
                 "dockerPasswordSecret": {"name": "tcr-credentials", "key": "token"}},
        third: {"name": third, "namespaces": "*", "serviceAccounts": "*", "type": "docker",
                "dockerServer": "registry.example.com:5000", "dockerUsername": "100012345678",
                "dockerPasswordSecret": {"name": "other-credentials", "key": "password"}},
        fourth: {"name": fourth, "namespaces": "*", "serviceAccounts": "*", "type": "docker",
                 "dockerServer": "other.tencentcloudcr.com", "dockerUsername": "200012345678",
                 "dockerPassword": OTHER_PASSWORD},
    }
    for name in (second, third):
        assert f"ImagePullSecret {name!r} reads its password from Secret" in result.stderr

    rendered, docs = rendered_ips(out)
    custom = client.CustomObjectsApi(config_client(env))
    cluster: dict[str, dict[str, Any]] = {}
    for name in (first, second, third, fourth):
        obj = cast(dict[str, Any], custom.get_cluster_custom_object(GROUP, VERSION, PLURAL, name))
        cluster[name] = obj["spec"]
    assert sorted(rendered) == sorted(cluster)
    for name, spec in cluster.items():
        mine = rendered[name]
        for key in ("namespaces", "serviceAccounts"):
            assert mine[key] == spec.get(key, "*"), (name, key)
        assert mine.get("excludedNamespaces") == spec.get("excludedNamespaces")
        assert mine.get("namespaceSelector") == spec.get("namespaceSelector")
        assert mine["docker"]["server"] == spec["docker"]["server"]
        assert mine["docker"]["username"] == spec["docker"]["username"]
        if "passwordSecretRef" in spec["docker"]:
            assert mine["docker"]["passwordSecretRef"] == spec["docker"]["passwordSecretRef"]
        else:  # the chart keeps the inline password in its own Secret, one key per entry
            assert mine["docker"]["passwordSecretRef"] == {"name": CREDENTIALS_SECRET, "key": name}
    (chart_secret,) = [d for d in docs if d.get("kind") == "Secret" and d["metadata"]["name"] == CREDENTIALS_SECRET]
    assert {k: base64.b64decode(v).decode() for k, v in chart_secret["data"].items()} == {
        first: PASSWORD, fourth: OTHER_PASSWORD}


def config_client(env: dict[str, str]) -> client.ApiClient:
    from kubernetes import config

    return config.new_client_from_config(env["KUBECONFIG"])


def test_inline_password_to_stdout_is_the_only_place_it_appears(ips: Callable[..., str], env: dict[str, str]) -> None:
    name = ips(inline(namespaces="team-a"))
    result = wizard(env, "-o", "-")
    assert result.status == 0, result.stderr
    assert PASSWORD not in result.stderr and json.dumps(PASSWORD)[1:-1] not in result.stderr
    values = yaml.safe_load(result.stdout)
    (cr,) = values["global"]["imagePullSecretsCrs"]
    assert cr["name"] == name and cr["dockerPassword"] == PASSWORD and cr["namespaces"] == "team-a"
    assert "keep this file private (mode 0600)" in result.stdout


def test_password_secret_ref_only_still_written_0600(ips: Callable[..., str], env: dict[str, str],
                                                     tmp_path: Path) -> None:
    name = ips(by_ref("demo.tencentcloudcr.com", "tcr-credentials"))
    out = tmp_path / "values.yaml"
    result = wizard(env, "-o", str(out))
    assert result.status == 0, result.stderr
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    (cr,) = yaml.safe_load(out.read_text())["global"]["imagePullSecretsCrs"]
    assert cr["dockerPasswordSecret"] == {"name": "tcr-credentials", "key": "password"}
    assert "dockerPassword" not in cr
    rendered, _ = rendered_ips(out)
    assert rendered[name]["docker"]["passwordSecretRef"] == {"name": "tcr-credentials", "key": "password"}


def test_objects_of_this_release_are_skipped(ips: Callable[..., str], env: dict[str, str], tmp_path: Path) -> None:
    owned = ips(inline(password=OTHER_PASSWORD), labels={"app.kubernetes.io/managed-by": "Helm"},
                annotations={"meta.helm.sh/release-name": "tcr-addon",
                             "meta.helm.sh/release-namespace": "tcr-assistant-system"})
    mine = ips(inline())
    out = tmp_path / "values.yaml"
    result = wizard(env, "-o", str(out))
    assert result.status == 0, result.stderr
    assert f"ImagePullSecret {owned!r} belongs to Helm release 'tcr-addon' already" in result.stderr
    assert [cr["name"] for cr in yaml.safe_load(out.read_text())["global"]["imagePullSecretsCrs"]] == [mine]
    assert_no_password(result, PASSWORD, OTHER_PASSWORD)


def test_only_objects_of_this_release_nothing_written(ips: Callable[..., str], env: dict[str, str],
                                                      tmp_path: Path) -> None:
    ips(inline(), annotations={"meta.helm.sh/release-name": "tcr-addon",
                               "meta.helm.sh/release-namespace": "tcr-assistant-system"})
    out = tmp_path / "values.yaml"
    result = wizard(env, "-o", str(out))
    assert result.status == 1
    assert "no ImagePullSecret to take over" in result.stderr and "1 belong to release 'tcr-addon'" in result.stderr
    assert not out.exists()


def test_an_object_of_another_release_is_refused(ips: Callable[..., str], env: dict[str, str], tmp_path: Path) -> None:
    foreign = ips(inline(), annotations={"meta.helm.sh/release-name": "legacy-addon",
                                         "meta.helm.sh/release-namespace": "kube-system"})
    ips(inline())
    out = tmp_path / "values.yaml"
    result = wizard(env, "-o", str(out))
    assert result.status == 2
    (error,) = result.errors
    assert error.startswith(f"{PROG}: error: --from-cluster: ImagePullSecret {foreign!r} belongs to Helm release "
                            "'legacy-addon' (namespace 'kube-system'), not to 'tcr-addon'")
    assert not out.exists()
    # the same object, for the release it belongs to: skipped
    again = wizard(env, "--release", "legacy-addon", "--release-namespace", "kube-system", "-o", str(out))
    assert again.status == 0, again.stderr
    assert foreign not in [cr["name"] for cr in yaml.safe_load(out.read_text())["global"]["imagePullSecretsCrs"]]


def test_labels_and_annotations_are_neither_refused_nor_carried(ips: Callable[..., str], env: dict[str, str],
                                                                 tmp_path: Path) -> None:
    """They stay on the object when Helm adopts it; no value could carry them for one object."""
    labelled = ips(inline(), labels={"team": "payments"}, annotations={"example.com/owner": "ops"})
    out = tmp_path / "values.yaml"
    result = wizard(env, "-o", str(out))
    assert result.status == 0, result.stderr
    text = out.read_text()
    assert labelled in text and "payments" not in text and "example.com/owner" not in text
    assert_no_password(result, PASSWORD)


def test_an_owner_reference_is_refused(ips: Callable[..., str], env: dict[str, str], tmp_path: Path) -> None:
    plain = ips(inline())
    odd = ips(inline(), owner_references=[{"apiVersion": "v1", "kind": "ConfigMap", "name": "keeper",
                                           "uid": "00000000-0000-0000-0000-000000000001"}])
    out = tmp_path / "values.yaml"
    result = wizard(env, "-o", str(out))
    assert result.status == 2
    (error,) = result.errors
    assert error.startswith(f"{PROG}: error: --from-cluster: ImagePullSecret {odd!r}: metadata.ownerReferences: ")
    assert plain not in error
    assert not out.exists()
    assert_no_password(result, PASSWORD)


def test_kubectl_last_applied_annotation_is_not_carried_and_not_printed(
        ips: Callable[..., str], env: dict[str, str], tmp_path: Path) -> None:
    spec = inline()
    applied = json.dumps({"apiVersion": f"{GROUP}/{VERSION}", "kind": "ImagePullSecret", "spec": spec})
    ips(spec, annotations={"kubectl.kubernetes.io/last-applied-configuration": applied})
    out = tmp_path / "values.yaml"
    result = wizard(env, "-o", str(out))
    assert result.status == 0, result.stderr
    assert "last-applied" not in out.read_text()
    assert_no_password(result, PASSWORD)


def test_unexpressible_spec_fields_are_refused_by_name() -> None:
    """Our CRD prunes unknown fields; the TKE add-on's CRD may keep them: the conversion names each."""
    from values_wizard.from_cluster import take

    obj = {"metadata": {"name": "legacy", "ownerReferences": [{"kind": "Application", "name": "argo"}],
                        "finalizers": ["example.com/keep"]},
           "spec": {"namespaces": "*", "secretType": "dockercfg",
                    "docker": {"server": "demo.tencentcloudcr.com", "username": "u", "email": "x@example.com",
                               "passwordSecretRef": {"name": "s", "namespace": "kube-system"}}}}
    taken = take([obj], "tcr-addon", "tcr-assistant-system")
    assert taken.crs == []
    assert sorted(taken.problems) == sorted([
        "ImagePullSecret 'legacy': metadata.ownerReferences: owned by Application 'argo', which would delete or "
        "rewrite it; the chart cannot keep that owner",
        "ImagePullSecret 'legacy': metadata.finalizers: 'example.com/keep' is not the controller's; the chart "
        "cannot set it",
        "ImagePullSecret 'legacy': spec.secretType: no chart value expresses it",
        "ImagePullSecret 'legacy': spec.docker.email: no chart value expresses it",
        "ImagePullSecret 'legacy': spec.docker.passwordSecretRef.namespace: no chart value expresses it "
        "(dockerPasswordSecret is a Secret of the release namespace: name and key only)",
    ])


def test_hosts_from_the_updater_configmap_and_host_flags(ips: Callable[..., str], env: dict[str, str],
                                                         kube: client.ApiClient, test_namespace: str,
                                                         tmp_path: Path) -> None:
    ips(inline(server="demo-vpc.tencentcloudcr.com"))
    config = {"hosts": [{"domain": "demo-vpc.tencentcloudcr.com", "ip": "10.0.0.10", "disabled": False},
                        {"domain": "old-vpc.tencentcloudcr.com", "ip": "10.0.0.11", "disabled": True},
                        {"domain": "other-vpc.tencentcloudcr.com", "ip": "10.0.0.12"}]}
    client.CoreV1Api(kube).create_namespaced_config_map(test_namespace, client.V1ConfigMap(
        metadata=client.V1ObjectMeta(name="updater-config"), data={"config.json": json.dumps(config)}))
    out = tmp_path / "values.yaml"
    result = wizard(env, "--release-namespace", test_namespace, "--host", "other-vpc.tencentcloudcr.com=10.0.0.13",
                    "--region", "gz", "-o", str(out))
    assert result.status == 0, result.stderr
    values = yaml.safe_load(out.read_text())
    assert values["global"]["hosts"] == [
        {"domain": "demo-vpc.tencentcloudcr.com", "ip": "10.0.0.10", "disabled": False},
        {"domain": "old-vpc.tencentcloudcr.com", "ip": "10.0.0.11", "disabled": True},
        {"domain": "other-vpc.tencentcloudcr.com", "ip": "10.0.0.13", "disabled": False},
    ]
    assert values["global"]["cluster"] == {"region": "gz", "longregion": "ap-guangzhou"}
    assert "replaces the cluster's entry" in result.stderr
    (configmap,) = [d for d in helm_template(out) if d.get("kind") == "ConfigMap"
                    and d["metadata"]["name"] == "updater-config"]
    assert json.loads(configmap["data"]["config.json"]) == {"hosts": values["global"]["hosts"]}


def test_hosts_configmap_in_another_format_leaves_hosts_to_the_flags(
        ips: Callable[..., str], env: dict[str, str], kube: client.ApiClient, test_namespace: str,
        tmp_path: Path) -> None:
    ips(inline())
    client.CoreV1Api(kube).create_namespaced_config_map(test_namespace, client.V1ConfigMap(
        metadata=client.V1ObjectMeta(name="updater-config"), data={"hosts": "10.0.0.10 demo.tencentcloudcr.com"}))
    out = tmp_path / "values.yaml"
    result = wizard(env, "--release-namespace", test_namespace, "-o", str(out))
    assert result.status == 0, result.stderr
    assert "has no key config.json: hosts entries come from --host only" in result.stderr
    assert yaml.safe_load(out.read_text())["global"]["hosts"] == []


@pytest.mark.parametrize("flags", [
    ["--password-stdin"], ["--username", "u"], ["--existing-secret", "s"], ["--issue-token"],
    ["--token-type", "longterm"],
])
def test_credential_flags_are_refused(flags: list[str]) -> None:
    result = run(["--from-cluster", *flags], env={"KUBECONFIG": "/nonexistent"})
    assert result.status == 2
    (error,) = result.errors
    assert error.startswith(f"{PROG}: error: {flags[0]}: not with --from-cluster: each ImagePullSecret brings "
                            "its own credentials")


@pytest.mark.parametrize("flags", [["--registry", "demo.tencentcloudcr.com"], ["--namespaces", "a"],
                                   ["--private-ip", "10.0.0.1"]])
def test_scope_flags_are_refused(flags: list[str]) -> None:
    result = run(["--from-cluster", *flags], env={"KUBECONFIG": "/nonexistent"})
    assert result.status == 2
    (error,) = result.errors
    assert error.startswith(f"{PROG}: error: {flags[0]}: not with --from-cluster")


def test_cluster_options_need_from_cluster() -> None:
    result = run(["--context", "prod", "--registry", "demo.tencentcloudcr.com"])
    assert result.status == 2
    assert result.errors == [f"{PROG}: error: --context: only goes with --from-cluster"]


def test_context_is_chosen_as_kubectl_does(ips: Callable[..., str], env: dict[str, str], tmp_path: Path) -> None:
    ips(inline())
    kubeconfig = yaml.safe_load(Path(env["KUBECONFIG"]).read_text())
    (context,) = kubeconfig["contexts"]
    broken = {**kubeconfig, "current-context": "elsewhere",
              "contexts": [context, {"name": "elsewhere", "context": {"cluster": "nowhere", "user": "nobody"}}],
              "clusters": [*kubeconfig["clusters"], {"name": "nowhere", "cluster": {"server": "https://127.0.0.1:1"}}]}
    path = tmp_path / "kubeconfig"
    path.write_text(yaml.safe_dump(broken))
    # KUBECONFIG as a list, as kubectl merges it (a missing file is left out)
    listed = {"KUBECONFIG": f"{tmp_path / 'missing'}:{path}"}
    failed = run(["--from-cluster", "-o", str(tmp_path / "a.yaml")], env=listed)
    assert failed.status == 1 and "cannot reach the API server" in failed.stderr
    chosen = run(["--from-cluster", "--context", context["name"], "-o", str(tmp_path / "b.yaml")], env=listed)
    assert chosen.status == 0, chosen.stderr
    unknown = run(["--from-cluster", "--context", "nope", "-o", str(tmp_path / "c.yaml")], env=listed)
    assert unknown.status == 1 and "cannot use the kubeconfig" in unknown.stderr


def test_help_states_the_rules() -> None:
    result = run(["--help"])
    assert result.status == 0
    text = " ".join(result.stdout.split())
    for phrase in ("--from-cluster", "--context NAME", "docker.passwordSecretRef {name, key} becomes "
                   "dockerPasswordSecret {name, key}", "is refused, naming the object and the field",
                   "refused, naming it", "ConfigMap updater-config", "mode 0600",
                   "scripts/migrate -f <values> --apply"):
        assert phrase in text, phrase
