"""hosts-updater against the chart: the rendered DaemonSet matches this program, and the
`updater-config` ConfigMap the chart renders from TKE-shaped `global.hosts`, stored in and read
back from the local API server, drives `hosts-updater --once` on a temp hosts file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from hosts_helpers import REPO_ROOT, run_cli
from kubernetes import client

import support
from hosts_updater.cli import build_parser
from hosts_updater.core import Entry, remove, render

CHART = REPO_ROOT / "chart"
NODE_HOSTS = (
    b"# Your system has configured 'manage_etc_hosts' as True.\n"
    b"127.0.0.1 localhost\n"
    b"10.0.1.17\tVM-1-17-tencentos VM-1-17-tencentos\n"
    b"::1 ip6-localhost ip6-loopback\n"
)
TKE_HOSTS: list[dict[str, Any]] = [
    {"domain": "example-vpc.tencentcloudcr.com", "ip": "10.0.0.10", "disabled": False},
    {"domain": "example.tencentcloudcr.com", "ip": "10.0.0.11", "disabled": True},
]
TKE_VALUES: dict[str, Any] = {
    "global": {
        "cluster": {"region": "gz", "longregion": "ap-guangzhou"},
        "imagePullSecretsCrs": [
            {
                "name": "tcr-abcdefgh-vpc",
                "namespaces": "*",
                "serviceAccounts": "*",
                "type": "docker",
                "dockerUsername": "100012345678",
                "dockerPassword": "eyJhbGciOiJSUzI1NiJ9.tcr.jwt.token",
                "dockerServer": "example-vpc.tencentcloudcr.com",
            },
            {
                "name": "tcr-abcdefgh-public",
                "namespaces": "*",
                "serviceAccounts": "*",
                "type": "docker",
                "dockerUsername": "100012345678",
                "dockerPassword": "eyJhbGciOiJSUzI1NiJ9.tcr.jwt.token",
                "dockerServer": "example.tencentcloudcr.com",
            },
        ],
        "hosts": TKE_HOSTS,
    }
}


def helm_template(tmp_path: Path, namespace: str, values: dict[str, Any], *extra: str) -> list[dict[str, Any]]:
    values_file = tmp_path / "values.yaml"
    values_file.write_text(yaml.safe_dump(values))
    return support.helm_template("tcr-addon", str(CHART), "--namespace", namespace, "-f", str(values_file), *extra)


def find(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    found = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(found) == 1, f"{kind}/{name}: {len(found)} found"
    return found[0]


def test_rendered_daemonset_matches_the_program(tmp_path: Path) -> None:
    """Render-only contract check: args parse with our CLI, mounts are where the args point."""
    docs = helm_template(tmp_path, "tcr-assistant-system", TKE_VALUES)
    ds = find(docs, "DaemonSet", "hosts-updater")
    pod = ds["spec"]["template"]["spec"]
    assert pod["automountServiceAccountToken"] is False
    (container,) = pod["containers"]
    assert container.get("command", ["hosts-updater"]) == ["hosts-updater"]
    args = build_parser().parse_args(container["args"])
    assert not args.once and not args.remove
    assert container["securityContext"]["capabilities"]["drop"] == ["ALL"]
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    mounts = {m["name"]: m for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    hosts_mount = next(m for m in mounts.values() if m["mountPath"] == args.hosts_file)
    assert volumes[hosts_mount["name"]]["hostPath"] == {"path": "/etc/hosts", "type": "File"}
    config_mount = next(m for m in mounts.values() if args.config.startswith(m["mountPath"].rstrip("/") + "/"))
    assert "subPath" not in config_mount  # a directory mount, so ConfigMap updates arrive
    assert volumes[config_mount["name"]]["configMap"]["name"] == "updater-config"
    assert Path(args.config).name == "config.json"
    host_paths = [v for v in volumes.values() if "hostPath" in v]
    assert len(host_paths) == 1  # only the node's hosts file
    assert ds["spec"]["updateStrategy"]["rollingUpdate"]["maxSurge"] == 0


def apply_config_map(kube: client.ApiClient, manifest: dict[str, Any]) -> dict[str, str]:
    """Create or replace the rendered ConfigMap on the API server; return the data read back."""
    core = client.CoreV1Api(kube)
    meta = manifest["metadata"]
    namespace, name = meta["namespace"], meta["name"]
    body = client.V1ConfigMap(
        metadata=client.V1ObjectMeta(name=name, namespace=namespace, labels=meta.get("labels")),
        data=manifest["data"],
    )
    existing = core.list_namespaced_config_map(namespace, field_selector=f"metadata.name={name}").items
    if existing:
        core.replace_namespaced_config_map(name, namespace, body)
    else:
        core.create_namespaced_config_map(namespace, body)
    stored = core.read_namespaced_config_map(name, namespace)
    return dict(stored.data or {})


def test_chart_config_map_drives_hosts_updater(tmp_path: Path, kube: client.ApiClient, test_namespace: str) -> None:
    hosts = tmp_path / "hosts"
    hosts.write_bytes(NODE_HOSTS)
    config = tmp_path / "config.json"

    # 1. TKE-shaped values: one enabled, one disabled entry.
    cm = find(helm_template(tmp_path, test_namespace, TKE_VALUES), "ConfigMap", "updater-config")
    data = apply_config_map(kube, cm)
    assert set(data) == {"config.json"}
    config.write_text(data["config.json"])
    result = run_cli("--config", str(config), "--hosts-file", str(hosts), "--once")
    assert result.returncode == 0, result.stderr
    assert hosts.read_bytes() == render(NODE_HOSTS, [Entry("10.0.0.10", "example-vpc.tencentcloudcr.com")])

    # 2. helm upgrade-style change: both enabled, the second with a new IP.
    changed = [{**TKE_HOSTS[0], "ip": "10.0.0.20"}, {**TKE_HOSTS[1], "disabled": False}]
    values = {"global": {**TKE_VALUES["global"], "hosts": changed}}
    cm = find(helm_template(tmp_path, test_namespace, values), "ConfigMap", "updater-config")
    config.write_text(apply_config_map(kube, cm)["config.json"])
    assert run_cli("--config", str(config), "--hosts-file", str(hosts), "--once").returncode == 0
    assert hosts.read_bytes() == render(
        NODE_HOSTS,
        [Entry("10.0.0.20", "example-vpc.tencentcloudcr.com"), Entry("10.0.0.11", "example.tencentcloudcr.com")],
    )

    # 3. every entry disabled: our lines go, the node's own lines are byte-identical.
    values = {"global": {**TKE_VALUES["global"], "hosts": [{**h, "disabled": True} for h in changed]}}
    cm = find(helm_template(tmp_path, test_namespace, values), "ConfigMap", "updater-config")
    config.write_text(apply_config_map(kube, cm)["config.json"])
    assert run_cli("--config", str(config), "--hosts-file", str(hosts), "--once").returncode == 0
    assert hosts.read_bytes() == NODE_HOSTS

    # 4. the uninstall command removes the block whatever the config says.
    hosts.write_bytes(render(NODE_HOSTS, [Entry("10.0.0.10", "example-vpc.tencentcloudcr.com")]))
    assert run_cli("--remove", "--once", "--hosts-file", str(hosts)).returncode == 0
    assert hosts.read_bytes() == NODE_HOSTS == remove(hosts.read_bytes())
