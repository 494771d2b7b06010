"""`scripts/migrate` against a real API server: the original's objects handed to a Helm release.

One story on a control plane of its own (no node: the original's Pods stay Pending; the node
suite runs the same steps with real Pods under load): a fresh cluster has nothing to migrate;
`helm install` over the original fails on ownership; the dry run shows everything and changes
nothing; what the tool cannot take over is refused, with the reason, and left as it was;
`--apply` hands over, keeping every distributed Secret, every link and the webhook's trust; a
second `--apply` changes nothing; then a plain `helm install` succeeds.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from migration_support import (
    FOREIGN_ENTRY,
    Original,
    distributed_uids,
    get,
    install_original,
    links,
    migrate,
    plan_json,
)

from harness import cluster
from migration import plan as p
from support import CHART_DIR, helm, kubectl

pytestmark = pytest.mark.compat

NS = "tcr-assistant-system"
SERVER = "tcr-migrate.tencentcloudcr.com"
OTHER_SERVER = "tcr-migrate-other.tencentcloudcr.com"
UNPULLABLE = "tcr-addon.local/never-pulled:0"  # no node here: the original's Pods stay Pending


@pytest.fixture(scope="module")
def state(plane: cluster.ControlPlane, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return {"dir": Path(tmp_path_factory.mktemp("migrate"))}


def resource_versions() -> dict[str, str]:
    """kind/namespace/name -> resourceVersion of everything the migration could touch."""
    out = {}
    for kinds, scope in (("secrets,serviceaccounts,services,configmaps,deployments,daemonsets,replicasets,roles,"
                          "rolebindings,leases", ["-A"]),
                         ("clusterroles,clusterrolebindings,validatingwebhookconfigurations,"
                          "customresourcedefinitions", [])):
        for item in json.loads(kubectl("get", kinds, *scope, "-o", "json").stdout)["items"]:
            meta = item["metadata"]
            if meta.get("namespace") in ("kube-system", "kube-node-lease"):
                continue  # the control plane's own heartbeats
            out[f"{item['kind']}/{meta.get('namespace', '')}/{meta['name']}"] = meta["resourceVersion"]
    served = kubectl("get", "imagepullsecrets", "-o", "json", check=False)
    for item in json.loads(served.stdout)["items"] if served.returncode == 0 else []:
        out[f"ImagePullSecret//{item['metadata']['name']}"] = item["metadata"]["resourceVersion"]
    return out


def values_file(state: dict[str, Any], original: Original, *, with_ips: bool = False) -> Path:
    """Values for the install: a hosts entry. ``with_ips``: the first registry brought under the
    chart's values too (as `scripts/values --from-cluster` writes it)."""
    first = original.registries[0]
    values: dict[str, Any] = {"hosts": [{"domain": first.server, "ip": "10.0.0.10"}]}
    if with_ips:
        values["imagePullSecretsCrs"] = [{"name": first.name, "namespaces": "*", "serviceAccounts": "*",
                                          "type": "docker", "dockerUsername": first.username,
                                          "dockerPassword": first.password, "dockerServer": first.server}]
    path: Path = state["dir"] / ("values-ips.yaml" if with_ips else "values.yaml")
    path.write_text(yaml.safe_dump({"global": values}))
    path.chmod(0o600)
    return path


def test_a_fresh_cluster_has_nothing_to_migrate(state: dict[str, Any]) -> None:
    before = resource_versions()
    proc = migrate("--apply")
    assert proc.returncode == 0, proc.stderr
    assert p.Phase.NOTHING.value in proc.stdout
    assert resource_versions() == before


def test_helm_install_over_the_original_fails_on_ownership(state: dict[str, Any]) -> None:
    state["original"] = install_original(image=UNPULLABLE, servers=[SERVER, OTHER_SERVER], namespaces=4,
                                         hosts=[(SERVER, "10.0.0.10")], failure_policy="Ignore")
    proc = helm("install", "tcr-addon", str(CHART_DIR), "-n", NS, check=False)
    assert proc.returncode != 0
    assert "cannot be imported into the current release" in proc.stderr or "exists" in proc.stderr, proc.stderr


def test_the_dry_run_shows_what_exists_and_what_it_will_do_and_changes_nothing(state: dict[str, Any]) -> None:
    original: Original = state["original"]
    values = values_file(state, original)
    before = resource_versions()
    proc = migrate("-f", str(values))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    state["dry_run"] = proc.stdout
    print(proc.stdout)
    assert resource_versions() == before, "a dry run writes nothing"
    assert "dry run: nothing changed" in proc.stdout
    plan = plan_json("-f", str(values))
    assert plan["phase"] == "prepare"
    done = {(a["do"], a["object"]) for a in plan["actions"]}
    assert ("hold_lease", f"Lease/tcr-assistant-leader -n {NS}") in done
    assert ("retire_deployment", f"Deployment/tcr-assistant-controller-manager -n {NS}") in done
    assert ("retire_daemonset", f"DaemonSet/hosts-updater -n {NS}") in done
    assert ("trust_certificate", f"Secret/tcr-assistant-webhook-server-cert -n {NS}") in done
    assert ("mark_distributed_secrets", None) in done
    # The failed `helm install` above already applied the CRD from crds/ (with the release's
    # metadata): either way the release owns it after --apply.
    crd_line = next(o for o in plan["objects"] if o["object"].startswith("CustomResourceDefinition/"))
    assert crd_line["action"] in (p.Do.ADOPT.value, "nothing"), crd_line
    for adopted in ("ClusterRole/tcr-assistant-manager-role", "ClusterRoleBinding/tcr-assistant-manager-rolebinding",
                    "ValidatingWebhookConfiguration/tcr-assistant-validating-webhook-configuration",
                    f"Service/tcr-assistant-webhook-service -n {NS}", f"ConfigMap/updater-config -n {NS}"):
        assert ("adopt", adopted) in done, adopted
    assert not any((o or "").startswith("ImagePullSecret/") for _, o in done), "ImagePullSecrets stay the user's"
    assert plan["actions"][0]["do"] == "hold_lease", "the Lease is held before anything else changes"
    kinds = [a["do"] for a in plan["actions"]]
    assert max(i for i, k in enumerate(kinds) if k == "adopt") < kinds.index("retire_deployment"), \
        "workloads are retired once everything else is the release's"
    notes = "\n".join(plan["notes"])
    assert f"{len(original.uids)} distributed Secret(s)" in notes
    assert original.registries[1].password not in proc.stdout + json.dumps(plan), "no password is ever printed"


def test_what_it_does_not_understand_is_refused_and_left_alone(state: dict[str, Any]) -> None:
    original: Original = state["original"]
    values = values_file(state, original)
    # ImagePullSecrets in the values before the old controller is gone: it would not understand
    # the chart's passwordSecretRef.
    before = resource_versions()
    proc = migrate("--apply", "-f", str(values_file(state, original, with_ips=True)))
    assert proc.returncode == 3, proc.stdout + proc.stderr
    assert f"ImagePullSecret {original.registries[0].name} is in the values" in proc.stdout
    assert resource_versions() == before
    # Somebody else's object under a name the chart renders (the original has no such object).
    kubectl("-n", NS, "create", "serviceaccount", "hosts-updater")
    try:
        before = resource_versions()
        proc = migrate("--apply", "-f", str(values))
        assert proc.returncode == 3, proc.stdout + proc.stderr
        assert "ServiceAccount/hosts-updater -n tcr-assistant-system exists, but the original add-on has no such " \
               "object" in proc.stdout
        assert resource_versions() == before
    finally:
        kubectl("-n", NS, "delete", "serviceaccount", "hosts-updater")
    # An object of the original's name that another Helm release owns.
    kubectl("annotate", "clusterrole", "tcr-assistant-manager-role", "meta.helm.sh/release-name=tke-addon",
            f"meta.helm.sh/release-namespace={NS}")
    try:
        before = resource_versions()
        proc = migrate("--apply", "-f", str(values))
        assert proc.returncode == 3
        assert "belongs to Helm release 'tke-addon'" in proc.stdout
        assert resource_versions() == before
    finally:
        kubectl("annotate", "clusterrole", "tcr-assistant-manager-role", "meta.helm.sh/release-name-",
                "meta.helm.sh/release-namespace-")


def test_apply_hands_the_original_to_the_release_and_keeps_secrets_links_and_trust(state: dict[str, Any]) -> None:
    original: Original = state["original"]
    values = values_file(state, original)
    links_before = links(original.secret_names)
    ca_before = get("validatingwebhookconfiguration", "tcr-assistant-validating-webhook-configuration")
    assert ca_before is not None
    bundle = ca_before["webhooks"][0]["clientConfig"]["caBundle"]
    proc = migrate("--apply", "-f", str(values))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert p.Phase.INSTALL.value in proc.stdout, proc.stdout

    for kind, name, namespace in (("crd", "imagepullsecrets.tcr.tencentcloudcr.com", None),
                                  ("clusterrole", "tcr-assistant-manager-role", None),
                                  ("service", "tcr-assistant-webhook-service", NS),
                                  ("configmap", "updater-config", NS)):
        meta = (get(kind, name, namespace) or {})["metadata"]
        assert meta["labels"]["app.kubernetes.io/managed-by"] == "Helm", name
        assert meta["annotations"]["meta.helm.sh/release-name"] == "tcr-addon", name
    crd = get("crd", "imagepullsecrets.tcr.tencentcloudcr.com") or {}
    assert crd["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    for kind, name, namespace in (("clusterrole", "tcr-assistant-manager-role", None),
                                  ("validatingwebhookconfiguration", "tcr-assistant-validating-webhook-configuration",
                                   None), ("service", "tcr-assistant-webhook-service", NS)):
        argv = ["get", kind, name, "-o", "json", "--show-managed-fields"] + (["-n", namespace] if namespace else [])
        managers = {e["manager"] for e in json.loads(kubectl(*argv).stdout)["metadata"]["managedFields"]}
        assert managers == {"helm"}, f"{kind}/{name}: a later chart must not conflict with {managers - {'helm'}}"
    for registry in original.registries:
        ips = get("imagepullsecret", registry.name) or {}
        assert "meta.helm.sh/release-name" not in (ips["metadata"].get("annotations") or {})

    webhook = get("validatingwebhookconfiguration", "tcr-assistant-validating-webhook-configuration") or {}
    assert [w["name"] for w in webhook["webhooks"]] == ["vimagepullsecret.tcr.tencentcloudcr.com"]
    assert webhook["webhooks"][0]["clientConfig"]["caBundle"] == bundle, "the API server's trust is unchanged"
    cert = get("secret", "tcr-assistant-webhook-server-cert", NS) or {}
    assert cert["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "tcr-assistant"
    assert [o["uid"] for o in cert["metadata"]["ownerReferences"]] == [webhook["metadata"]["uid"]]
    assert base64.b64decode(cert["data"]["ca.crt"]) == original.authority.cert_pem

    lease = get("lease", "tcr-assistant-leader", NS) or {}
    assert lease["spec"]["holderIdentity"] == p.LEASE_HOLDER
    assert get("deployment", "tcr-assistant-controller-manager", NS) is None
    assert get("daemonset", "hosts-updater", NS) is None
    replica_sets = json.loads(kubectl("-n", NS, "get", "replicasets", "-o", "json").stdout)["items"]
    # This control plane runs no Deployment controller (no ReplicaSets, no Pods): the node suite
    # checks the old Pods' hand-over.
    assert all(rs["metadata"]["annotations"].get(p.RETIRED) == "true" for rs in replica_sets)
    service = get("service", "tcr-assistant-webhook-service", NS) or {}
    for pod in json.loads(kubectl("-n", NS, "get", "pods", "-l", "control-plane=controller-manager",
                                  "-o", "json").stdout)["items"]:
        assert all(pod["metadata"]["labels"].get(k) == v for k, v in service["spec"]["selector"].items()), \
            "the old controller's Pods stay behind the webhook Service"

    assert distributed_uids(original.secret_names) == original.uids, "no Secret deleted or recreated"
    marked = json.loads(kubectl("get", "secrets", "-A", "-l", "app.kubernetes.io/managed-by=tcr-assistant",
                                "-o", "json").stdout)["items"]
    assert {f"{s['metadata']['namespace']}/{s['metadata']['name']}" for s in marked} >= set(original.uids), \
        "the original's Secrets are the controller's now (its policy lets it update only those)"
    assert links(original.secret_names) == links_before, "no link removed"
    first = f"{original.namespaces[0]}/default"
    assert links_before[first][0] == FOREIGN_ENTRY


def test_apply_again_changes_nothing(state: dict[str, Any]) -> None:
    values = values_file(state, state["original"])
    before = resource_versions()
    proc = migrate("--apply", "-f", str(values))
    assert proc.returncode == 0, proc.stderr
    assert p.Phase.INSTALL.value in proc.stdout and "actions" not in proc.stdout
    assert resource_versions() == before


def test_a_plain_helm_install_succeeds_afterwards(state: dict[str, Any]) -> None:
    original: Original = state["original"]
    values = values_file(state, original)
    ips_uids = {r.name: (get("imagepullsecret", r.name) or {})["metadata"]["uid"] for r in original.registries}
    bundle = (get("validatingwebhookconfiguration", "tcr-assistant-validating-webhook-configuration") or {}
              )["webhooks"][0]["clientConfig"]["caBundle"]
    helm("install", "tcr-addon", str(CHART_DIR), "-n", NS, "-f", str(values), timeout=300)
    webhook = get("validatingwebhookconfiguration", "tcr-assistant-validating-webhook-configuration") or {}
    assert [w["name"] for w in webhook["webhooks"]] == ["vimagepullsecret.tcr.tencentcloudcr.com"]
    assert webhook["webhooks"][0]["clientConfig"]["caBundle"] == bundle, "helm left the caBundle alone"
    service = get("service", "tcr-assistant-webhook-service", NS) or {}
    assert "control-plane" not in service["spec"]["selector"], "only the chart's selector"
    assert {r.name: (get("imagepullsecret", r.name) or {})["metadata"]["uid"]
            for r in original.registries} == ips_uids, "the same ImagePullSecrets, now the chart's or the user's"
    assert distributed_uids(original.secret_names) == original.uids
    # No old controller Pod exists here (no Deployment controller): the finish only lets go of the Lease.
    finish = plan_json("-f", str(values))
    assert finish["phase"] == "finish" and [a["do"] for a in finish["actions"]] == ["release_lease"]
    assert migrate("--apply", "-f", str(values)).returncode == 0
    assert not (get("lease", "tcr-assistant-leader", NS) or {})["spec"].get("holderIdentity")
    assert plan_json("-f", str(values))["phase"] == "done"
    helm("uninstall", "tcr-addon", "-n", NS, "--no-hooks", timeout=300)
    assert get("crd", "imagepullsecrets.tcr.tencentcloudcr.com") is not None, "the CRD is kept, with every object"
    assert {r.name for r in original.registries} <= {
        i["metadata"]["name"] for i in json.loads(kubectl("get", "imagepullsecrets", "-o", "json").stdout)["items"]}
