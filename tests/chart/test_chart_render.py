"""Render matrix: `helm lint --strict` and `helm template` for the defaults and every chart/ci file."""

from __future__ import annotations

import base64
import functools
import json
import re
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
from chart_support import (
    CASES,
    CHART_DIR,
    KUBE_VERSIONS,
    NAMESPACE,
    RELEASE,
    Manifest,
    by_kind,
    case_values,
    is_hook,
    load_crd,
    one,
    openapi_to_jsonschema,
    pod_specs,
    render,
    run_helm,
    template_args,
)

from tcr_assistant.spec import validation

CASE_IDS = list(CASES)
# Kinds served by CRDs, not built into Kubernetes: validated elsewhere (ImagePullSecret) or by
# their own project (cert-manager, prometheus-operator).
NOT_BUILT_IN = {"ImagePullSecret", "Issuer", "Certificate", "ServiceMonitor"}
CONTROLLER_IMAGE = re.compile(r"/tcr-addon/tcr-assistant[:@]")
# kubernetes_validate reads and parses its schema files (the definitions alone are megabytes)
# again for every object; they do not change during a run, so each is read once.
kubernetes_validate.utils.schema_contents = functools.cache(kubernetes_validate.utils.schema_contents)


def case(name: str) -> tuple[Manifest, ...]:
    return render(CASES[name])


@pytest.mark.parametrize("name", CASE_IDS)
def test_helm_lint_strict(name: str) -> None:
    args = ["lint", "--strict", str(CHART_DIR), "--namespace", NAMESPACE]
    if CASES[name] is not None:
        args += ["-f", str(CASES[name])]
    proc = run_helm(*args)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "0 chart(s) failed" in proc.stdout
    assert "[WARNING]" not in proc.stdout and "[ERROR]" not in proc.stdout, proc.stdout


@pytest.mark.parametrize("kube_version", KUBE_VERSIONS)
@pytest.mark.parametrize("name", CASE_IDS)
def test_built_in_objects_pass_kubernetes_validate_strict(name: str, kube_version: str) -> None:
    """Strict: a field the oldest supported minor does not know fails here, naming the object."""
    checked = 0
    for manifest in case(name):
        if manifest["kind"] in NOT_BUILT_IN:
            continue
        try:
            kubernetes_validate.validate(manifest, kube_version, strict=True)
        except kubernetes_validate.ValidationError as error:
            raise AssertionError(f"{manifest['kind']}/{manifest['metadata']['name']}: {error.message}") from error
        checked += 1
    assert checked >= 12


@pytest.mark.parametrize("name", CASE_IDS)
def test_image_pull_secrets_match_crd_schema_and_webhook_rules(name: str) -> None:
    schema = openapi_to_jsonschema(load_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"])
    validator = jsonschema.Draft7Validator(schema, format_checker=jsonschema.Draft7Validator.FORMAT_CHECKER)
    ipss = by_kind(case(name), "ImagePullSecret")
    values = case_values(name)
    expected = [entry["name"] for entry in (values.get("global") or {}).get("imagePullSecretsCrs", [])]
    assert [m["metadata"]["name"] for m in ipss] == expected
    for manifest in ipss:
        errors = [f"{'.'.join(map(str, e.path))}: {e.message}" for e in validator.iter_errors(manifest)]
        assert errors == [], errors
        assert validation.validate_image_pull_secret(manifest) == []
        assert "namespace" not in manifest["metadata"], "ImagePullSecret is cluster-scoped"
        assert manifest["metadata"]["labels"]["app.kubernetes.io/instance"] == RELEASE


def test_minted_token_entries_become_token_from_with_no_user_or_password() -> None:
    manifests = case("minted-token-values")
    ipss = {m["metadata"]["name"]: m["spec"]["docker"] for m in by_kind(manifests, "ImagePullSecret")}
    assert ipss["tcr-abcd1234-vpc"] == {"server": "demo-vpc.tencentcloudcr.com", "tokenFrom": {"tcr": {
        "instanceId": "tcr-abcd1234", "region": "ap-guangzhou", "apiKeySecretRef": {"name": "tcr-api-key"}}}}
    assert ipss["tcr-abcd1234-public"]["tokenFrom"]["tcr"]["webIdentity"] == {}
    assert "username" not in ipss["tcr-abcd1234-public"] and "passwordSecretRef" not in ipss["tcr-abcd1234-public"]
    # The chart's password Secret holds the static entry's password only: nothing for the minted ones.
    [credentials] = [m for m in manifests if m["kind"] == "Secret"]
    assert set(credentials["data"]) == {"static"}


def test_tke_values_become_the_expected_custom_resources() -> None:
    ipss = {m["metadata"]["name"]: m["spec"] for m in by_kind(case("tke-two-registries-with-hosts-values"),
                                                             "ImagePullSecret")}
    assert ipss["tcr-abcdefgh-vpc"] == {
        "namespaces": "*",
        "serviceAccounts": "*",
        "docker": {
            "server": "example-vpc.tencentcloudcr.com",
            # An unquoted YAML number must not come out as 1.00012345678e+11.
            "username": "100012345678",
            # The inline password lives in the chart's Secret, never in the custom resource.
            "passwordSecretRef": {"name": "tcr-assistant-registry-credentials", "key": "tcr-abcdefgh-vpc"},
        },
    }
    assert ipss["tcr-abcdefgh-public"]["namespaces"] == "default, team-a,team-b"
    [credentials] = [m for m in case("tke-two-registries-with-hosts-values") if m["kind"] == "Secret"]
    assert credentials["metadata"]["name"] == "tcr-assistant-registry-credentials"
    assert credentials["metadata"]["labels"]["tcr.tencentcloudcr.com/credential-source"] == "true"
    assert base64.b64decode(credentials["data"]["tcr-abcdefgh-vpc"]).decode() == "eyJhbGciOiJSUzI1NiJ9.tcr.jwt.token"
    assert set(credentials["data"]) == set(ipss)
    existing = {m["metadata"]["name"]: m["spec"] for m in by_kind(case("existing-secret-values"), "ImagePullSecret")}
    assert existing["private"]["docker"]["passwordSecretRef"] == {"name": "tcr-credentials", "key": "token"}
    assert "password" not in existing["private"]["docker"]
    assert existing["private"]["excludedNamespaces"] == "kube-system, kube-public"
    assert existing["private-default-key"]["docker"]["passwordSecretRef"]["key"] == "password"


def _selectors(manifests: tuple[Manifest, ...]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for m in manifests:
        if m["kind"] in ("Deployment", "DaemonSet"):
            out[f"{m['kind']}/{m['metadata']['name']}"] = m["spec"]["selector"]
            labels = m["spec"]["template"]["metadata"]["labels"]
            for key, value in m["spec"]["selector"]["matchLabels"].items():
                assert labels[key] == value, f"{m['kind']} template does not carry its selector"
        if m["kind"] == "Service":
            out[f"Service/{m['metadata']['name']}"] = m["spec"]["selector"]
    return out


def test_selectors_identical_across_all_renders() -> None:
    extra = render(None, "--set", "global.hosts[0].domain=a.example.com", "--set", "global.hosts[0].ip=10.1.1.1",
                   "--set", "controller.image.tag=9.9.9", "--set", "commonLabels.x=y",
                   "--set", "controller.podLabels.app\\.kubernetes\\.io/version=other")
    seen: dict[str, Any] = {}
    for manifests in [*(case(name) for name in CASE_IDS), extra]:
        for key, selector in _selectors(manifests).items():
            seen.setdefault(key, selector)
            assert selector == seen[key], f"{key} selector changed: {selector} != {seen[key]}"
    assert set(seen) == {
        "Deployment/tcr-assistant-controller-manager",
        "DaemonSet/hosts-updater",
        "Service/tcr-assistant-webhook-service",
        "Service/tcr-assistant-metrics",
    }
    for selector in seen.values():
        labels = selector.get("matchLabels", selector)
        assert set(labels) == {"app.kubernetes.io/name", "app.kubernetes.io/instance", "app.kubernetes.io/component"}


# --- Pod Security Standard "restricted" (https://kubernetes.io/docs/concepts/security/pod-security-standards/)

ALLOWED_VOLUME_TYPES = {
    "configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim", "projected", "secret",
}
SAFE_SYSCTLS = {
    "kernel.shm_rmid_forced", "net.ipv4.ip_local_port_range", "net.ipv4.ip_unprivileged_port_start",
    "net.ipv4.tcp_syncookies", "net.ipv4.ping_group_range", "net.ipv4.ip_local_reserved_ports",
    "net.ipv4.tcp_keepalive_time", "net.ipv4.tcp_fin_timeout", "net.ipv4.tcp_keepalive_intvl",
    "net.ipv4.tcp_keepalive_probes",
}


def pss_restricted_violations(spec: dict[str, Any]) -> list[str]:
    """Every way a Pod spec breaks the PSS "restricted" profile (baseline + restricted controls)."""
    problems: list[str] = []
    pod_sc = spec.get("securityContext") or {}
    containers = [*spec.get("initContainers", []), *spec["containers"], *spec.get("ephemeralContainers", [])]
    for field in ("hostNetwork", "hostPID", "hostIPC", "hostUsers"):
        if field == "hostUsers":
            continue
        if spec.get(field):
            problems.append(f"{field} is set")
    for volume in spec.get("volumes", []):
        types = set(volume) - {"name"}
        if not types <= ALLOWED_VOLUME_TYPES:
            problems.append(f"volume {volume['name']} uses {sorted(types - ALLOWED_VOLUME_TYPES)}")
    for sysctl in pod_sc.get("sysctls", []):
        if sysctl["name"] not in SAFE_SYSCTLS:
            problems.append(f"unsafe sysctl {sysctl['name']}")
    pod_seccomp = (pod_sc.get("seccompProfile") or {}).get("type")
    if (pod_sc.get("seLinuxOptions") or {}).get("user") or (pod_sc.get("seLinuxOptions") or {}).get("role"):
        problems.append("pod seLinuxOptions user/role set")
    if pod_sc.get("runAsUser") == 0:
        problems.append("pod runAsUser is 0")
    if (pod_sc.get("appArmorProfile") or {}).get("type") == "Unconfined":
        problems.append("pod AppArmor Unconfined")
    for c in containers:
        sc = c.get("securityContext") or {}
        where = f"container {c['name']}"
        if sc.get("privileged"):
            problems.append(f"{where} is privileged")
        caps = sc.get("capabilities") or {}
        if set(caps.get("add") or []) - {"NET_BIND_SERVICE"}:
            problems.append(f"{where} adds capabilities {caps['add']}")
        if "ALL" not in (caps.get("drop") or []):
            problems.append(f"{where} does not drop ALL capabilities")
        if sc.get("allowPrivilegeEscalation") is not False:
            problems.append(f"{where} allowPrivilegeEscalation is not false")
        non_root = sc.get("runAsNonRoot", pod_sc.get("runAsNonRoot"))
        if non_root is not True:
            problems.append(f"{where} runAsNonRoot is not true")
        if sc.get("runAsUser") == 0:
            problems.append(f"{where} runAsUser is 0")
        seccomp = (sc.get("seccompProfile") or {}).get("type", pod_seccomp)
        if seccomp not in ("RuntimeDefault", "Localhost"):
            problems.append(f"{where} seccompProfile is {seccomp!r}")
        if sc.get("procMount", "Default") != "Default":
            problems.append(f"{where} procMount is not Default")
        if (sc.get("appArmorProfile") or {}).get("type") == "Unconfined":
            problems.append(f"{where} AppArmor Unconfined")
        selinux = sc.get("seLinuxOptions") or {}
        if selinux.get("user") or selinux.get("role"):
            problems.append(f"{where} seLinuxOptions user/role set")
        for port in c.get("ports", []):
            if port.get("hostPort"):
                problems.append(f"{where} uses hostPort {port['hostPort']}")
        # Ours, beyond the profile: an immutable root filesystem.
        if sc.get("readOnlyRootFilesystem") is not True:
            problems.append(f"{where} readOnlyRootFilesystem is not true")
    return problems


def test_pss_check_can_fail() -> None:
    bad = {"hostNetwork": True, "volumes": [{"name": "h", "hostPath": {"path": "/"}}],
           "containers": [{"name": "c", "securityContext": {"privileged": True}}]}
    assert len(pss_restricted_violations(bad)) >= 6


@pytest.mark.parametrize("name", CASE_IDS)
def test_every_controller_image_pod_is_pss_restricted(name: str) -> None:
    specs = [
        (what, spec) for what, spec in pod_specs(case(name))
        if any(CONTROLLER_IMAGE.search(c["image"]) for c in spec["containers"])
    ]
    kinds = {what.split("/")[0] for what, _ in specs}
    assert {"Deployment", "Job"} <= kinds
    for what, spec in specs:
        assert pss_restricted_violations(spec) == [], what


@pytest.mark.parametrize("name", ["tke-two-registries-with-hosts-values"])
def test_hosts_updater_pod_touches_only_etc_hosts(name: str) -> None:
    daemonset = one(case(name), "DaemonSet", "hosts-updater")
    spec = daemonset["spec"]["template"]["spec"]
    assert daemonset["spec"]["updateStrategy"] == {
        "type": "RollingUpdate", "rollingUpdate": {"maxSurge": 0, "maxUnavailable": 1}}
    assert spec["automountServiceAccountToken"] is False
    assert spec["serviceAccountName"] == "hosts-updater"
    assert not spec.get("hostNetwork") and not spec.get("hostPID") and not spec.get("hostIPC")
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert volumes["hosts"] == {"name": "hosts", "hostPath": {"path": "/etc/hosts", "type": "File"}}
    assert volumes["config"] == {"name": "config", "configMap": {"name": "updater-config"}}
    # The ready file (uninstall waits on it) lives in memory, never on the node.
    assert volumes["run"] == {"name": "run", "emptyDir": {"medium": "Memory", "sizeLimit": "1Mi"}}
    assert len(volumes) == 3
    (container,) = spec["containers"]
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    assert set(mounts) == {"/host/etc/hosts", "/etc/updater", "/run/hosts-updater"}
    assert all("subPath" not in m for m in mounts.values())
    assert mounts["/etc/updater"]["readOnly"] is True
    sc = container["securityContext"]
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False
    assert not sc.get("privileged")
    assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert container["args"] == ["--config=/etc/updater/config.json", "--hosts-file=/host/etc/hosts", "--interval=60",
                                 "--ready-file=/run/hosts-updater/ready"]
    assert container["readinessProbe"]["exec"]["command"] == ["test", "-e", "/run/hosts-updater/ready"]
    config = json.loads(one(case(name), "ConfigMap", "updater-config")["data"]["config.json"])
    values = case_values(name)
    assert config == {"hosts": values["global"]["hosts"]}
    sa = one(case(name), "ServiceAccount", "hosts-updater")
    assert sa["automountServiceAccountToken"] is False


def test_hosts_updater_enabled_modes() -> None:
    def has_daemonset(*args: str) -> bool:
        return bool(by_kind(render(None, *args), "DaemonSet"))

    assert not has_daemonset(), "auto with no hosts: off"
    assert has_daemonset("--set", "global.hosts[0].domain=a.example.com", "--set", "global.hosts[0].ip=10.0.0.1")
    assert has_daemonset("--set", "hostsUpdater.enabled=true")
    assert not by_kind(case("hosts-updater-off-values"), "DaemonSet")
    assert not [m for m in case("hosts-updater-off-values") if m["metadata"]["name"] == "updater-config"]


def test_validating_admission_policy_modes() -> None:
    def kinds(*args: str) -> set[str]:
        return {m["kind"] for m in render(None, *args)}

    # Plain `helm template` (no cluster, no --api-versions): rendered, so the controller's writes are
    # guarded under GitOps too; every Kubernetes the chart accepts serves the API.
    assert {"ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding"} <= kinds()
    assert {"ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding"} <= kinds(
        "--set", "validatingAdmissionPolicy.enabled=auto"), "auto, the earlier default, means true"
    assert {"ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding"} <= kinds(
        "--kube-version", "1.30.0"), "the oldest supported minor"
    assert not {"ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding"} & kinds(
        "--set", "validatingAdmissionPolicy.enabled=false")
    policy = one(render(None), "ValidatingAdmissionPolicy", "tcr-assistant-secret-writes")
    (condition,) = policy["spec"]["matchConditions"]
    assert condition["expression"] == (
        f"request.userInfo.username == \"system:serviceaccount:{NAMESPACE}:tcr-assistant-controller-manager\"")
    rules = policy["spec"]["matchConstraints"]["resourceRules"]
    assert rules == [{"apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE", "UPDATE", "DELETE"],
                      "resources": ["secrets"]}]
    binding = one(render(None), "ValidatingAdmissionPolicyBinding", "tcr-assistant-secret-writes")
    assert binding["spec"] == {"policyName": "tcr-assistant-secret-writes", "validationActions": ["Deny"]}
    # The second policy: the controller's writes to webhook configurations (caBundle only).
    policy = one(render(None), "ValidatingAdmissionPolicy", "tcr-assistant-webhook-configurations")
    assert policy["spec"]["matchConditions"] == [condition]
    assert policy["spec"]["matchConstraints"]["resourceRules"] == [
        {"apiGroups": ["admissionregistration.k8s.io"], "apiVersions": ["v1"],
         "operations": ["CREATE", "UPDATE", "DELETE"],
         "resources": ["validatingwebhookconfigurations", "mutatingwebhookconfigurations"]}]
    binding = one(render(None), "ValidatingAdmissionPolicyBinding", "tcr-assistant-webhook-configurations")
    assert binding["spec"] == {"policyName": "tcr-assistant-webhook-configurations", "validationActions": ["Deny"]}


def test_rbac_least_privilege() -> None:
    manifests = render(None)
    role = one(manifests, "ClusterRole", "tcr-assistant-manager-role")
    secret_verbs = {v for r in role["rules"] if "secrets" in r["resources"] for v in r["verbs"]}
    assert secret_verbs == {"get", "create", "update", "patch", "delete"}, "no cluster-wide list/watch on Secrets"
    for manifest in manifests:
        if manifest["kind"] == "ClusterRole":
            for rule in manifest["rules"]:
                assert "*" not in rule["verbs"] and "*" not in rule["resources"], manifest["metadata"]["name"]
                if "secrets" in rule["resources"]:
                    assert not {"list", "watch"} & set(rule["verbs"]), manifest["metadata"]["name"]
    credentials = one(manifests, "Role", "tcr-assistant-credentials-reader-role")
    assert credentials["metadata"]["namespace"] == NAMESPACE
    leases = one(manifests, "Role", "tcr-assistant-leader-election-role")
    assert [r["resources"] for r in leases["rules"]] == [["leases"]]



def containers(manifests: tuple[Manifest, ...]) -> list[dict[str, Any]]:
    deployment = one(manifests, "Deployment", "tcr-assistant-controller-manager")
    return list(deployment["spec"]["template"]["spec"]["containers"])


def test_drift_watch_mode_adds_list_and_watch_on_secrets_and_nothing_else() -> None:
    default = render(None)
    watch = render(None, "--set", "controller.driftRepair.mode=watch")
    role = one(watch, "ClusterRole", "tcr-assistant-manager-role")
    added = [r for r in role["rules"] if r not in one(default, "ClusterRole", "tcr-assistant-manager-role")["rules"]]
    assert added == [{"apiGroups": [""], "resources": ["secrets"], "verbs": ["list", "watch"]}]
    (container,) = containers(watch)
    assert "--drift-mode=watch" in container["args"]
    assert not [a for a in container["args"] if a.startswith("--drift-check-period")]
    assert [(d["kind"], d["metadata"]["name"]) for d in watch] == [(d["kind"], d["metadata"]["name"]) for d in default]
    assert not [a for a in container["args"] if a.startswith("--drift-check-on-pod")]
    period = render(None, "--set", "controller.driftRepair.pollPeriodSeconds=300",
                    "--set", "controller.driftRepair.checkOnPodSeconds=0")
    (container,) = containers(period)
    assert "--drift-check-period=300" in container["args"]
    assert "--drift-check-on-pod=0" in container["args"]
    (container,) = containers(default)
    assert "--drift-check-on-pod=10" in container["args"]


def test_every_rbac_rule_has_a_reason_comment() -> None:
    files = [p for p in (CHART_DIR / "templates").rglob("*.yaml") if "kind: ClusterRole\n" in p.read_text()
             or "kind: Role\n" in p.read_text()]
    assert len(files) >= 6
    for path in files:
        lines = path.read_text().splitlines()
        for index, line in enumerate(lines):
            if line.strip().startswith("- apiGroups:"):
                assert lines[index - 1].strip().startswith("#"), f"{path.name}:{index + 1} has no reason comment"


def test_webhook_configuration_only_matches_our_api() -> None:
    for name in CASE_IDS:
        config = one(case(name), "ValidatingWebhookConfiguration", "tcr-assistant-validating-webhook-configuration")
        (hook,) = config["webhooks"]
        assert hook["rules"] == [{"apiGroups": ["tcr.tencentcloudcr.com"], "apiVersions": ["v1"],
                                  "operations": ["CREATE", "UPDATE"], "resources": ["imagepullsecrets"],
                                  "scope": "Cluster"}]
        assert hook["sideEffects"] == "None"
        assert hook["admissionReviewVersions"] == ["v1"]
        assert hook["matchPolicy"] == "Equivalent"
        assert hook["clientConfig"]["service"] == {
            "name": "tcr-assistant-webhook-service", "namespace": NAMESPACE,
            "path": "/validate-tcr-tencentcloudcr-com-v1-imagepullsecret", "port": 443}
        values = case_values(name)
        webhook_values = values.get("webhook", {})
        assert hook["failurePolicy"] == webhook_values.get("failurePolicy", "Fail")
        assert hook["timeoutSeconds"] == webhook_values.get("timeoutSeconds", 5)
    service = one(case("defaults"), "Service", "tcr-assistant-webhook-service")
    assert service["spec"]["ports"] == [
        {"name": "https", "port": 443, "targetPort": "webhook-server", "protocol": "TCP"}]
    container = one(case("defaults"), "Deployment", "tcr-assistant-controller-manager")["spec"]["template"]["spec"][
        "containers"][0]
    assert {"name": "webhook-server", "containerPort": 9443, "protocol": "TCP"} in container["ports"]


@pytest.mark.parametrize("name", CASE_IDS)
def test_render_is_byte_identical_every_time(name: str) -> None:
    """What GitOps tools need: nothing random (no generated certificate) and no cluster lookups."""
    args = template_args(CASES[name])
    first, second = run_helm(*args), run_helm(*args)
    assert first.returncode == 0, first.stderr
    assert first.stdout == second.stdout


def test_webhook_certificate_is_kept_by_the_controller_not_rendered() -> None:
    manifests = case("defaults")
    assert not by_kind(manifests, "Secret"), "no certificate in the manifest: the controller creates it"
    config = one(manifests, "ValidatingWebhookConfiguration", "tcr-assistant-validating-webhook-configuration")
    assert "caBundle" not in config["webhooks"][0]["clientConfig"]
    container = one(manifests, "Deployment", "tcr-assistant-controller-manager")["spec"]["template"]["spec"][
        "containers"][0]
    assert "--webhook-cert-secret=tcr-assistant-webhook-server-cert" in container["args"]
    assert f"--webhook-cert-validity={365 * 86400}" in container["args"]
    # RBAC for exactly those two objects, by name.
    role = one(manifests, "Role", "tcr-assistant-webhook-cert-role")
    assert role["rules"] == [{"apiGroups": [""], "resources": ["secrets"],
                              "resourceNames": ["tcr-assistant-webhook-server-cert"],
                              "verbs": ["get", "list", "watch", "update"]}]
    cluster_role = one(manifests, "ClusterRole", "tcr-assistant-webhook-configuration-role")
    assert cluster_role["rules"][:1] == [{"apiGroups": ["admissionregistration.k8s.io"],
                                      "resources": ["validatingwebhookconfigurations"],
                                      "resourceNames": ["tcr-assistant-validating-webhook-configuration"],
                                      "verbs": ["get", "list", "watch", "patch"]}]
    for kind, name in (("RoleBinding", "tcr-assistant-webhook-cert-rolebinding"),
                       ("ClusterRoleBinding", "tcr-assistant-webhook-configuration-rolebinding")):
        assert one(manifests, kind, name)["subjects"][0]["name"] == "tcr-assistant-controller-manager"
    days = render(None, "--set", "webhook.certValidityDays=30")
    args = one(days, "Deployment", "tcr-assistant-controller-manager")["spec"]["template"]["spec"]["containers"][0][
        "args"]
    assert f"--webhook-cert-validity={30 * 86400}" in args
    for off in (render(None, "--set", "webhook.enabled=false"), case("cert-manager-values")):
        assert not by_kind(off, "Role") or not [r for r in by_kind(off, "Role")
                                                if r["metadata"]["name"] == "tcr-assistant-webhook-cert-role"]
        assert not [r for r in by_kind(off, "ClusterRole")
                    if r["metadata"]["name"] == "tcr-assistant-webhook-configuration-role"]


def test_cert_manager_mode() -> None:
    manifests = case("cert-manager-values")
    certificates = [m for m in manifests if m["kind"] == "Secret" and m["type"] == "kubernetes.io/tls"]
    assert not certificates, "cert-manager writes the Secret"
    container = one(manifests, "Deployment", "tcr-assistant-controller-manager")["spec"]["template"]["spec"][
        "containers"][0]
    assert not [a for a in container["args"] if a.startswith("--webhook-cert-secret")], "cert-manager keeps it"
    assert {"name": "webhook-cert", "mountPath": "/tmp/k8s-webhook-server/serving-certs", "readOnly": True} in (
        container["volumeMounts"])
    certificate = one(manifests, "Certificate", "tcr-assistant-serving-cert")
    assert certificate["spec"]["secretName"] == "tcr-assistant-webhook-server-cert"
    assert certificate["spec"]["issuerRef"] == {"name": "tcr-assistant-selfsigned-issuer", "kind": "Issuer",
                                                 "group": "cert-manager.io"}
    assert f"tcr-assistant-webhook-service.{NAMESPACE}.svc" in certificate["spec"]["dnsNames"]
    assert one(manifests, "Issuer", "tcr-assistant-selfsigned-issuer")["spec"] == {"selfSigned": {}}
    config = one(manifests, "ValidatingWebhookConfiguration", "tcr-assistant-validating-webhook-configuration")
    assert config["metadata"]["annotations"]["cert-manager.io/inject-ca-from"] == (
        f"{NAMESPACE}/tcr-assistant-serving-cert")
    assert "caBundle" not in config["webhooks"][0]["clientConfig"]
    own_issuer = render(None, "--set", "webhook.certManager.enabled=true",
                        "--set", "webhook.certManager.issuerRef.name=corp-ca",
                        "--set", "webhook.certManager.issuerRef.kind=ClusterIssuer")
    assert not by_kind(own_issuer, "Issuer")
    assert one(own_issuer, "Certificate", "tcr-assistant-serving-cert")["spec"]["issuerRef"] == {
        "name": "corp-ca", "kind": "ClusterIssuer"}


def test_existing_cert_secret_mode() -> None:
    """webhook.existingCertSecret: the controller serves and publishes that Secret, and may only read it."""
    manifests = render(None, "--set", "webhook.existingCertSecret=corp-webhook-cert")
    args = one(manifests, "Deployment", "tcr-assistant-controller-manager")["spec"]["template"]["spec"][
        "containers"][0]["args"]
    assert "--webhook-cert-secret=corp-webhook-cert" in args and "--webhook-cert-existing" in args
    assert "--webhook-cert-secret=tcr-assistant-webhook-server-cert" not in args
    assert one(manifests, "Role", "tcr-assistant-webhook-cert-role")["rules"] == [
        {"apiGroups": [""], "resources": ["secrets"], "resourceNames": ["corp-webhook-cert"],
         "verbs": ["get", "list", "watch"]}]
    assert "--webhook-cert-existing" not in one(render(None), "Deployment", "tcr-assistant-controller-manager")[
        "spec"]["template"]["spec"]["containers"][0]["args"]
    both = run_helm(*template_args(None, "--set", "webhook.existingCertSecret=corp-webhook-cert",
                                   "--set", "webhook.certManager.enabled=true"))
    assert both.returncode != 0
    assert "webhook.existingCertSecret" in both.stderr and "webhook.certManager" in both.stderr, both.stderr
    bad = run_helm(*template_args(None, "--set", "webhook.existingCertSecret=Not_A_Name"))
    assert bad.returncode != 0 and "existingCertSecret" in bad.stderr, bad.stderr


def test_controller_deployment_contract() -> None:
    deployment = one(case("defaults"), "Deployment", "tcr-assistant-controller-manager")
    spec = deployment["spec"]["template"]["spec"]
    (container,) = spec["containers"]
    assert container["command"] == ["tcr-assistant"]
    assert container["args"] == [
        "run", "--leader-elect", "--lease-name=tcr-assistant-leader", "--namespace=$(POD_NAMESPACE)",
        "--drift-mode=poll", "--drift-check-period=1200", "--drift-check-on-pod=10", "--registry-check",
        "--registry-check-period=600", "--health-probe-bind-address=:8081",
        "--metrics-bind-address=:8080", "--webhook-port=9443",
        "--webhook-cert-dir=/tmp/k8s-webhook-server/serving-certs", "--pod-webhook",
        "--webhook-cert-secret=tcr-assistant-webhook-server-cert", f"--webhook-cert-validity={365 * 86400}",
        "--mutating-webhook-configuration=tcr-assistant-mutating-webhook-configuration",
        "--log-level=info", "--workers=16",
    ]
    assert container["env"][0] == {
        "name": "POD_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "health"}
    assert {"name": "health", "containerPort": 8081, "protocol": "TCP"} in container["ports"]
    # The certificate is written under /tmp (an emptyDir) by the controller itself.
    assert [m["mountPath"] for m in container["volumeMounts"]] == ["/tmp"]
    assert container["image"] == "ghcr.io/tcr-addon/tcr-assistant:0.2.0"
    assert container["resources"]["requests"] == {"cpu": "100m", "memory": "30Mi"}
    assert spec["serviceAccountName"] == "tcr-assistant-controller-manager"
    assert deployment["spec"]["replicas"] == 1
    pinned = one(case("existing-secret-values"), "Deployment", "tcr-assistant-controller-manager")
    assert pinned["spec"]["template"]["spec"]["containers"][0]["image"] == (
        "ghcr.io/tcr-addon/tcr-assistant:0.2.0@sha256:" + "0123456789abcdef" * 4)
    no_webhook = render(None, "--set", "webhook.enabled=false", "--set", "controller.leaderElection.enabled=false")
    assert not by_kind(no_webhook, "ValidatingWebhookConfiguration") and not by_kind(no_webhook, "Service")
    args = one(no_webhook, "Deployment", "tcr-assistant-controller-manager")["spec"]["template"]["spec"][
        "containers"][0]["args"]
    assert "--webhook-port=0" in args and "--leader-elect" not in args
    assert not [a for a in args if "pod-webhook" in a]
    no_pod_webhook = render(None, "--set", "podWebhook.enabled=false")
    args = one(no_pod_webhook, "Deployment", "tcr-assistant-controller-manager")["spec"]["template"]["spec"][
        "containers"][0]["args"]
    assert "--no-pod-webhook" in args and "--pod-webhook" not in args  # the Pod route answers 404


def test_hooks_cleanup_and_helm_test() -> None:
    manifests = case("tke-two-registries-with-hosts-values")
    job = one(manifests, "Job", "tcr-assistant-cleanup")
    assert job["metadata"]["annotations"]["helm.sh/hook"] == "pre-delete"
    container = job["spec"]["template"]["spec"]["containers"][0]
    assert container["args"] == ["cleanup", f"--selector=app.kubernetes.io/instance={RELEASE}", "--timeout=300",
                                 f"--hosts-daemonset={NAMESPACE}/hosts-updater"]
    hooks = [m for m in manifests if is_hook(m)]
    pre_delete = {f"{m['kind']}/{m['metadata']['name']}" for m in hooks
                  if m["metadata"]["annotations"]["helm.sh/hook"] == "pre-delete"}
    assert pre_delete == {"ServiceAccount/tcr-assistant-cleanup", "ClusterRole/tcr-assistant-cleanup-role",
                          "ClusterRoleBinding/tcr-assistant-cleanup-rolebinding", "Job/tcr-assistant-cleanup",
                          "Role/tcr-assistant-cleanup-role", "RoleBinding/tcr-assistant-cleanup-rolebinding"}
    # Without hosts-updater the hook has nothing to take off the nodes, and no DaemonSet rights.
    plain = render(None)
    plain_job = one(plain, "Job", "tcr-assistant-cleanup")["spec"]["template"]["spec"]["containers"][0]
    assert not any(arg.startswith("--hosts-daemonset") for arg in plain_job["args"])
    assert not by_kind(plain, "Role") or "tcr-assistant-cleanup-role" not in [
        m["metadata"]["name"] for m in by_kind(plain, "Role")]
    pod = one(manifests, "Pod", "tcr-assistant-test")
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    assert pod["spec"]["containers"][0]["args"] == [
        "check", "--namespace=default", "--service-account=default", "--timeout=60",
        "tcr-abcdefgh-vpc", "tcr-abcdefgh-public"]
    test_hooks = {f"{m['kind']}/{m['metadata']['name']}" for m in hooks
                  if m["metadata"]["annotations"]["helm.sh/hook"] == "test"}
    # `helm test --logs` reads the log of every test hook as a Pod: the test's RBAC is a release object.
    assert test_hooks == {"Pod/tcr-assistant-test"}
    assert pod["metadata"]["annotations"]["helm.sh/hook-delete-policy"] == "before-hook-creation", (
        "kept after success so `helm test --logs` can read it")
    for kind, name in (("ServiceAccount", "tcr-assistant-test"), ("Role", "tcr-assistant-test-role"),
                       ("RoleBinding", "tcr-assistant-test-rolebinding")):
        assert "helm.sh/hook" not in (one(manifests, kind, name)["metadata"].get("annotations") or {})
    role = one(manifests, "Role", "tcr-assistant-test-role")
    assert {v for r in role["rules"] for v in r["verbs"]} == {"get"}
    # Only what the check reads, by name: no other Secret in tests.namespace.
    assert [(r["resources"], r["resourceNames"]) for r in role["rules"]] == [
        (["secrets"], ["tcr.ipstcr-abcdefgh-vpc", "tcr.ipstcr-abcdefgh-public"]), (["serviceaccounts"], ["default"])]
    for hook in hooks:
        weight = int(hook["metadata"]["annotations"]["helm.sh/hook-weight"])
        assert weight == (0 if hook["kind"] in ("Job", "Pod") else -10), "RBAC before the Pod"
    events = {e for m in hooks for e in m["metadata"]["annotations"]["helm.sh/hook"].split(",")}
    assert events == {"pre-delete", "test"}, "install and upgrade never wait on a hook"
    assert not by_kind(render(None, "--set", "cleanup.enabled=false"), "Job")
    assert not by_kind(case("defaults"), "Pod"), "no registry: nothing for helm test to check"


def test_crd_template_on_upgrade_is_the_crds_file() -> None:
    """`helm install` takes the CRD from crds/; upgrades render the same file from templates/."""
    install = render(None)
    assert len(by_kind(install, "CustomResourceDefinition")) == 1, "install: crds/ only"
    upgrade = render(None, "--is-upgrade")
    crds = by_kind(upgrade, "CustomResourceDefinition")
    assert len(crds) == 2, "upgrade: crds/ (ignored by helm upgrade) and the template"
    static = load_crd()
    templated = next(c for c in crds if "helm.sh/chart" in c["metadata"]["labels"])
    assert templated["spec"] == static["spec"]
    assert templated["metadata"]["annotations"] == {"helm.sh/resource-policy": "keep"}
    assert static["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    assert static["metadata"]["annotations"]["meta.helm.sh/release-name"] == RELEASE
    assert static["metadata"]["annotations"]["meta.helm.sh/release-namespace"] == NAMESPACE


def test_crd_shape() -> None:
    crd = load_crd()
    spec = crd["spec"]
    assert crd["metadata"]["name"] == "imagepullsecrets.tcr.tencentcloudcr.com"
    assert spec["group"] == "tcr.tencentcloudcr.com" and spec["scope"] == "Cluster"
    assert spec["names"]["kind"] == "ImagePullSecret" and spec["names"]["plural"] == "imagepullsecrets"
    assert spec["names"]["shortNames"] == ["ips", "ipss"]
    (version,) = spec["versions"]
    assert version["name"] == "v1" and version["served"] and version["storage"]
    assert version["subresources"] == {"status": {}}
    columns = [c["name"] for c in version["additionalPrinterColumns"] if not c.get("priority")]
    # the original's columns, in its order, and whether the registry accepts the credential
    assert columns == ["NAMESPACES", "SERVICE-ACCOUNTS", "SECRETS-DESIRED", "SECRETS-SUCCESS", "ACCEPTED", "AGE"]
    schema = version["schema"]["openAPIV3Schema"]
    status = schema["properties"]["status"]["properties"]
    assert set(status) == {"secretsDesired", "secretsSuccess", "sAsDesired", "sAsSuccess", "secretUpdateSuccessful",
                           "serviceAccountsModifySuccessful", "observedGeneration", "conditions", "tokenExpiresAt"}
    docker = schema["properties"]["spec"]["properties"]["docker"]["properties"]
    assert {"server", "username", "password", "passwordSecretRef", "tokenFrom"} == set(docker)
    assert "namespace" not in docker["passwordSecretRef"]["properties"], "own namespace only"

    def walk(node: dict[str, Any], path: str) -> None:
        if path not in ("", ".metadata", ".apiVersion", ".kind") or path == "":
            assert node.get("description") or path in (".metadata",), f"no description at {path or '<root>'}"
        for key, sub in node.get("properties", {}).items():
            if key != "metadata":
                walk(sub, f"{path}.{key}")
        if "items" in node:
            walk(node["items"], f"{path}[]")

    walk(schema, "")


def test_objects_of_the_original_have_their_names() -> None:
    manifests = case("tke-two-registries-with-hosts-values")
    present = {(m["kind"], m["metadata"]["name"]) for m in manifests if not is_hook(m)}
    expected = {
        ("ClusterRole", "tcr-assistant-manager-role"),
        ("ClusterRoleBinding", "tcr-assistant-manager-rolebinding"),
        ("Role", "tcr-assistant-leader-election-role"),
        ("RoleBinding", "tcr-assistant-leader-election-rolebinding"),
        ("Service", "tcr-assistant-webhook-service"),
        ("ValidatingWebhookConfiguration", "tcr-assistant-validating-webhook-configuration"),
        ("CustomResourceDefinition", "imagepullsecrets.tcr.tencentcloudcr.com"),
        ("ImagePullSecret", "tcr-abcdefgh-vpc"),
        ("ImagePullSecret", "tcr-abcdefgh-public"),
        ("Deployment", "tcr-assistant-controller-manager"),
        ("ConfigMap", "updater-config"),
        ("DaemonSet", "hosts-updater"),
        ("ServiceAccount", "tcr-assistant-controller-manager"),
        ("ServiceAccount", "hosts-updater"),
    }
    assert expected <= present, expected - present
    for manifest in manifests:
        labels = manifest["metadata"].get("labels", {})
        for key in ("app.kubernetes.io/name", "app.kubernetes.io/instance", "app.kubernetes.io/part-of",
                    "app.kubernetes.io/managed-by"):
            assert key in labels, f"{manifest['kind']}/{manifest['metadata']['name']} lacks {key}"
        if manifest["metadata"].get("namespace") not in (None, NAMESPACE):
            # Only hooks and the helm test's RBAC (a release object) live in tests.namespace.
            assert manifest["metadata"]["namespace"] == "default"
            assert is_hook(manifest) or labels.get("app.kubernetes.io/component") == "test", manifest["metadata"]


def test_common_labels_and_annotations_reach_every_object() -> None:
    for manifest in case("hosts-updater-off-values"):
        if manifest["metadata"].get("labels", {}).get("helm.sh/chart") is None:
            continue  # the static crds/ file
        assert manifest["metadata"]["labels"]["example.com/owner"] == "platform"
        assert manifest["metadata"]["annotations"]["example.com/contact"] == "platform@example.com"
    deployment = one(case("hosts-updater-off-values"), "Deployment", "tcr-assistant-controller-manager")
    template = deployment["spec"]["template"]
    assert template["metadata"]["labels"]["team"] == "platform"
    assert template["metadata"]["annotations"]["example.com/note"] == "controller"
    assert template["spec"]["priorityClassName"] == "system-cluster-critical"
    assert deployment["spec"]["replicas"] == 2



def test_hosts_updater_remove_mode_is_chosen_by_the_values_alone() -> None:
    """`hostsUpdater.enabled=remove`: the DaemonSet stays, in --remove mode, and the uninstall hook
    waits for it; no lookup, so `helm template` (GitOps) renders it too. `false` renders nothing."""
    remove = render(CASES["tke-two-registries-with-hosts-values"], "--set", "hostsUpdater.enabled=remove")
    container = one(remove, "DaemonSet", "hosts-updater")["spec"]["template"]["spec"]["containers"][0]
    assert container["args"][-1] == "--remove"
    assert json.loads(one(remove, "ConfigMap", "updater-config")["data"]["config.json"]) == {"hosts": []}
    cleanup = one(remove, "Job", "tcr-assistant-cleanup")["spec"]["template"]["spec"]["containers"][0]
    assert f"--hosts-daemonset={NAMESPACE}/hosts-updater" in cleanup["args"]
    off = render(CASES["tke-two-registries-with-hosts-values"], "--set", "hostsUpdater.enabled=false")
    assert not by_kind(off, "DaemonSet")
    cleanup = one(off, "Job", "tcr-assistant-cleanup")["spec"]["template"]["spec"]["containers"][0]
    assert not [a for a in cleanup["args"] if a.startswith("--hosts-daemonset")]


def test_pod_webhook_never_blocks_pods_and_has_a_switch() -> None:
    manifests = case("defaults")
    config = one(manifests, "MutatingWebhookConfiguration", "tcr-assistant-mutating-webhook-configuration")
    (hook,) = config["webhooks"]
    assert hook["failurePolicy"] == "Ignore" and hook["timeoutSeconds"] == 2
    assert hook["sideEffects"] == "NoneOnDryRun" and hook["reinvocationPolicy"] == "Never"
    assert hook["rules"] == [{"apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE"],
                              "resources": ["pods"], "scope": "Namespaced"}]
    assert hook["clientConfig"]["service"]["path"] == "/mutate-v1-pod"
    assert "caBundle" not in hook["clientConfig"]
    (expression,) = hook["namespaceSelector"]["matchExpressions"]
    assert expression["key"] == "kubernetes.io/metadata.name" and expression["operator"] == "NotIn"
    assert set(expression["values"]) == {"kube-system", "kube-public", "kube-node-lease", NAMESPACE}
    container = one(manifests, "Deployment", "tcr-assistant-controller-manager")["spec"]["template"]["spec"][
        "containers"][0]
    assert "--mutating-webhook-configuration=tcr-assistant-mutating-webhook-configuration" in container["args"]
    rules = one(manifests, "ClusterRole", "tcr-assistant-webhook-configuration-role")["rules"]
    assert {"apiGroups": ["admissionregistration.k8s.io"], "resources": ["mutatingwebhookconfigurations"],
            "resourceNames": ["tcr-assistant-mutating-webhook-configuration"],
            "verbs": ["get", "list", "watch", "patch"]} in rules
    more = render(None, "--set", "podWebhook.excludedNamespaces={batch,ci}", "--set", "podWebhook.timeoutSeconds=5")
    hook = one(more, "MutatingWebhookConfiguration", "tcr-assistant-mutating-webhook-configuration")["webhooks"][0]
    assert {"batch", "ci"} <= set(hook["namespaceSelector"]["matchExpressions"][0]["values"])
    assert hook["timeoutSeconds"] == 5
    for off in (render(None, "--set", "podWebhook.enabled=false"), render(None, "--set", "webhook.enabled=false")):
        assert not by_kind(off, "MutatingWebhookConfiguration")
        args = one(off, "Deployment", "tcr-assistant-controller-manager")["spec"]["template"]["spec"]["containers"][
            0]["args"]
        assert not [a for a in args if a.startswith("--mutating-webhook-configuration")]
    cert_manager = one(case("cert-manager-values"), "MutatingWebhookConfiguration",
                       "tcr-assistant-mutating-webhook-configuration")
    assert cert_manager["metadata"]["annotations"]["cert-manager.io/inject-ca-from"] == (
        f"{NAMESPACE}/tcr-assistant-serving-cert")


def test_kube_version_admits_1_30_and_refuses_older() -> None:
    assert run_helm(*template_args(None, "--kube-version", "1.30.0")).returncode == 0
    assert run_helm(*template_args(None, "--kube-version", "1.30.14")).returncode == 0
    refused = run_helm(*template_args(None, "--kube-version", "1.29.15"))
    assert refused.returncode != 0
    assert ">=1.30.0-0" in refused.stderr and "v1.29.15" in refused.stderr, refused.stderr


def test_registry_check_args_follow_the_hosts_the_nodes_get_and_the_ca_bundle() -> None:
    (container,) = containers(render(None))
    assert "--registry-check" in container["args"] and "--registry-check-period=600" in container["args"]
    assert not [a for a in container["args"] if a.startswith(("--registry-address", "--registry-ca-file"))]
    # global.hosts while hosts-updater writes them: the enabled entries only, as on the nodes
    with_hosts = render(CASES["tke-two-registries-with-hosts-values"])
    (container,) = containers(with_hosts)
    assert [a for a in container["args"] if a.startswith("--registry-address")] == [
        "--registry-address=example-vpc.tencentcloudcr.com=10.0.0.10"]
    removing = render(CASES["tke-two-registries-with-hosts-values"], "--set", "hostsUpdater.enabled=remove")
    (container,) = containers(removing)
    assert not [a for a in container["args"] if a.startswith("--registry-address")]
    # a private CA: a ConfigMap, mounted read-only, and the flag naming its file
    pem = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
    with_ca = render(None, "--set-string", f"controller.registryCheck.caBundle={pem}")
    assert one(with_ca, "ConfigMap", "tcr-assistant-registry-ca")["data"]["ca.crt"].strip() == pem.strip()
    (container,) = containers(with_ca)
    assert "--registry-ca-file=/etc/tcr-assistant/registry-ca/ca.crt" in container["args"]
    assert {"name": "registry-ca", "mountPath": "/etc/tcr-assistant/registry-ca", "readOnly": True} in container[
        "volumeMounts"]
    off = render(None, "--set", "controller.registryCheck.enabled=false")
    (container,) = containers(off)
    assert "--no-registry-check" in container["args"]
    assert not [a for a in container["args"] if a.startswith("--registry-check-period")]
    assert not by_kind(off, "ConfigMap") or all(m["metadata"]["name"] != "tcr-assistant-registry-ca"
                                                 for m in by_kind(off, "ConfigMap"))


def test_a_ca_bundle_that_is_not_pem_fails_naming_the_key() -> None:
    proc = run_helm(*template_args(None, "--set", "controller.registryCheck.caBundle=not-a-certificate"))
    assert proc.returncode != 0 and "caBundle" in proc.stderr, proc.stderr
