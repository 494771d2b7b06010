"""Names and addresses no node's hosts file may get, refused at every door.

Two actors (docs/DESIGN.md, threat model):

- the *values author* (whoever runs `helm install`/`upgrade`): a `global.hosts` entry that points
  `localhost`, a Service name, a cloud metadata name or a short name somewhere, or any name at a
  loopback, link-local (the metadata service 169.254.0.23), multicast, broadcast or unspecified
  address, is refused by the chart's values schema, naming the field and what to do (real helm);
- whoever can write ConfigMap `updater-config` (or hands a stolen hosts-updater a config of its
  own): on the real node, the DaemonSet's updater leaves every refused entry out, says so in its
  log, withholds readiness, writes the valid entries, and leaves every other line of the node's
  hosts file byte for byte.

The chart's schema, the updater and the values wizard apply one rule
(``hosts_updater.config.refuse_domain`` / ``refuse_ip``); a parity check holds them together.
"""

from __future__ import annotations

import json
import subprocess
import uuid
from collections.abc import Iterator
from typing import Any

import jsonschema
import pytest

from harness import addon, node
from harness.cluster import ControlPlane
from hosts_updater.config import ConfigError, parse_config
from hosts_updater.core import Entry, remove, render
from support import REPO_ROOT, helm, kubectl, pointed_at, wait_for

CHART = REPO_ROOT / "chart"
SCHEMA = json.loads((CHART / "values.schema.json").read_text())
HOSTS_ITEM = SCHEMA["properties"]["global"]["properties"]["hosts"]["items"]
VALID = {"domain": "sec-vpc.tencentcloudcr.com", "ip": "10.0.0.10"}

# (field, value, words of the refusal) for the values author's attacks
CHART_ATTACKS = [
    ("domain", "localhost", "localhost and *.localhost are loopback names"),
    ("domain", "kubernetes.default.svc", "cluster-internal Service name"),
    ("domain", "kubernetes.default.svc.cluster.local", "cluster.local"),
    ("domain", "metadata.tencentyun.com", "cloud metadata service name"),
    ("domain", "metadata.google.internal", "cloud metadata service name"),
    ("domain", "registry", "single-label name"),
    ("domain", "kubernetes.default", "Service short name in namespace default"),
    ("domain", "registry.kube-system", "top-level label must be letters"),
    ("ip", "127.0.0.1", "127.0.0.0/8 is loopback"),
    ("ip", "169.254.0.23", "169.254.0.0/16 is link-local"),
    ("ip", "169.254.169.254", "169.254.0.0/16 is link-local"),
    ("ip", "224.0.0.1", "224.0.0.0/4 is multicast"),
    ("ip", "255.255.255.255", "255.255.255.255 is the broadcast address"),
    ("ip", "0.0.0.0", "0.0.0.0 the unspecified address"),
    ("ip", "240.0.0.1", "240.0.0.0/4 is reserved"),
]


def helm_template(*set_values: str) -> subprocess.CompletedProcess[str]:
    return helm("template", "tcr-addon", str(CHART), "-n", "tcr-system",
                *[arg for value in set_values for arg in ("--set-string", value)], check=False)


@pytest.mark.parametrize(("field", "value", "words"), CHART_ATTACKS, ids=[f"{a[0]}={a[1]}" for a in CHART_ATTACKS])
def test_helm_template_refuses_a_dangerous_hosts_entry(field: str, value: str, words: str) -> None:
    entry = {**VALID, field: value}
    result = helm_template(f"global.hosts[0].domain={entry['domain']}", f"global.hosts[0].ip={entry['ip']}")
    assert result.returncode != 0, f"helm rendered {entry}:\n{result.stdout[:400]}"
    assert f"at '/global/hosts/0/{field}'" in result.stderr, result.stderr
    assert f"'{value}' does not match pattern '^$ refused: " in result.stderr, result.stderr
    assert words in result.stderr, result.stderr
    assert "or remove the entry" in result.stderr
    assert "updater-config" not in result.stdout


def test_a_disabled_dangerous_entry_is_refused_too() -> None:
    disabled = helm("template", "tcr-addon", str(CHART), "--set-string", "global.hosts[0].domain=localhost",
                    "--set-string", "global.hosts[0].ip=10.0.0.10", "--set", "global.hosts[0].disabled=true",
                    check=False)
    assert disabled.returncode != 0
    assert "at '/global/hosts/0/domain'" in disabled.stderr and "loopback names" in disabled.stderr


def test_helm_install_with_a_metadata_redirect_creates_nothing(control_plane: ControlPlane) -> None:
    namespace = f"hosts-{uuid.uuid4().hex[:6]}"
    result = helm("install", "evil", str(CHART), "-n", namespace, "--create-namespace",
                  "--set-string", "global.hosts[0].domain=metadata.tencentyun.com",
                  "--set-string", "global.hosts[0].ip=10.0.0.66", check=False)
    assert result.returncode != 0
    assert "at '/global/hosts/0/domain'" in result.stderr and "cloud metadata service name" in result.stderr
    assert kubectl("get", "namespace", namespace, check=False).returncode != 0, "nothing was created"
    assert "evil" not in kubectl("get", "secrets", "-A", "-l", "owner=helm", "-o", "name").stdout


# -------------------------------------------------------------------------------- one rule, three doors

PARITY_CASES = [
    *[{**VALID, field: value} for field, value, _ in CHART_ATTACKS],
    VALID,
    {"domain": "demo.tencentcloudcr.com", "ip": "172.16.0.5"},
    {"domain": "svc.example.com", "ip": "192.168.1.1"},
    {"domain": "ccr.ccs.tencentyun.com", "ip": "10.1.2.3"},
    {"domain": "registry.xn--fiqs8s", "ip": "10.1.2.3"},
    {"domain": "x.metadata.tencentyun.com", "ip": "10.1.2.3"},
    {"domain": "instance-data.ec2.internal", "ip": "10.1.2.3"},
    {"domain": "metadata.goog", "ip": "10.1.2.3"},
    {"domain": "a.localhost", "ip": "10.1.2.3"},
    {"domain": "node.local", "ip": "10.1.2.3"},
    {"domain": "api.ns.svc.k8s.example.com", "ip": "10.1.2.3"},
    {"domain": "a.b", "ip": "0.1.2.3"},
    {"domain": "a.b", "ip": "127.255.255.254"},
    {"domain": "a.b", "ip": "239.255.255.250"},
    {"domain": "a.b", "ip": "223.255.255.255"},
    {"domain": "a.b", "ip": "1.1.1.1"},
]


def updater_writes(entry: dict[str, str]) -> bool:
    try:
        config = parse_config(json.dumps({"hosts": [entry]}).encode())
    except ConfigError:
        return False
    return bool(config.entries) and not config.refused


@pytest.mark.parametrize("entry", PARITY_CASES, ids=[f"{e['domain']}={e['ip']}" for e in PARITY_CASES])
def test_the_schema_and_the_updater_draw_the_same_line(entry: dict[str, str]) -> None:
    schema_accepts = not list(jsonschema.Draft7Validator(HOSTS_ITEM).iter_errors(entry))
    assert schema_accepts == updater_writes(entry), f"{entry}: schema {schema_accepts}, updater {not schema_accepts}"


# -------------------------------------------------------------------------------- the real node

REFUSED_ON_NODE = [
    ({"domain": "localhost", "ip": "10.0.0.66"}, "hosts[1].domain: 'localhost' is a loopback name"),
    ({"domain": "kubernetes.default.svc", "ip": "10.0.0.66"},
     "hosts[2].domain: 'kubernetes.default.svc' is a cluster-internal Service name"),
    ({"domain": "metadata.tencentyun.com", "ip": "10.0.0.66"},
     "hosts[3].domain: 'metadata.tencentyun.com' is a cloud metadata service name"),
    ({"domain": "registry", "ip": "10.0.0.66"}, "hosts[4].domain: 'registry' is a single-label name"),
    ({"domain": "evil-a.tencentcloudcr.com", "ip": "127.0.0.1"}, "hosts[5].ip: '127.0.0.1' is a loopback address"),
    ({"domain": "evil-b.tencentcloudcr.com", "ip": "169.254.0.23"},
     "hosts[6].ip: '169.254.0.23' is a link-local address"),
    ({"domain": "evil-c.tencentcloudcr.com", "ip": "224.0.0.1"}, "hosts[7].ip: '224.0.0.1' is a multicast address"),
    ({"domain": "evil-d.tencentcloudcr.com", "ip": "255.255.255.255"},
     "hosts[8].ip: '255.255.255.255' is the broadcast address"),
    ({"domain": "evil-e.tencentcloudcr.com", "ip": "0.0.0.0"}, "hosts[9].ip: '0.0.0.0' is the unspecified address"),
]
SECOND = {"domain": "sec-public.tencentcloudcr.com", "ip": "10.0.0.11"}


def hosts_updater_pods() -> list[dict[str, Any]]:
    items = json.loads(kubectl("-n", addon.NAMESPACE, "get", "pods", "-l", "app.kubernetes.io/component=hosts-updater",
                               "-o", "json").stdout)["items"]
    return [pod for pod in items if not pod["metadata"].get("deletionTimestamp")]


def hosts_updater_pod() -> dict[str, Any]:
    live = hosts_updater_pods()
    assert len(live) == 1, [pod["metadata"]["name"] for pod in live]
    return dict(live[0])


def is_ready(pod: dict[str, Any]) -> bool:
    return any(c["type"] == "Ready" and c["status"] == "True" for c in pod["status"].get("conditions", []))


@pytest.fixture(scope="module")
def hosts_release(node_cluster: node.NodeCluster) -> Iterator[tuple[node.NodeCluster, bytes]]:
    """The chart on the real node with one valid hosts entry; (the node, its hosts file before)."""
    before = node_cluster.hosts_file.read_bytes()
    with pointed_at(node_cluster):
        release = addon.NodeRelease(node_cluster, set_values=[
            f"global.hosts[0].domain={VALID['domain']}", f"global.hosts[0].ip={VALID['ip']}",
            "hostsUpdater.interval=2"])
        release.install()
        try:
            yield node_cluster, before
        finally:
            release.uninstall()
    assert node_cluster.hosts_file.read_bytes() == before, "uninstall left the node's hosts file as it was"


def test_an_edited_config_map_gets_only_its_valid_entries_onto_the_node(
        hosts_release: tuple[node.NodeCluster, bytes]) -> None:
    cluster, before = hosts_release
    installed = render(before, [Entry(VALID["ip"], VALID["domain"])])
    wait_for(lambda: cluster.hosts_file.read_bytes() == installed, timeout=60, what="the installed entry on the node")

    # The attack: ConfigMap updater-config rewritten by someone who may edit it (helm's schema is
    # not consulted): dangerous entries between two valid ones.
    hosts = [VALID, *[entry for entry, _ in REFUSED_ON_NODE], SECOND]
    config_map = {"apiVersion": "v1", "kind": "ConfigMap",
                  "metadata": {"name": "updater-config", "namespace": addon.NAMESPACE},
                  "data": {"config.json": json.dumps({"hosts": hosts}, indent=2)}}
    kubectl("replace", "-f", "-", input_text=json.dumps(config_map))
    # A new Pod mounts the edited ConfigMap at once (the running one would see it within the
    # kubelet's sync period).
    old = hosts_updater_pod()["metadata"]["name"]
    kubectl("-n", addon.NAMESPACE, "delete", "pod", old, "--wait=false")
    wait_for(lambda: [pod for pod in hosts_updater_pods() if pod["metadata"]["name"] != old], timeout=60,
             what="the DaemonSet's new Pod")

    wanted = render(before, [Entry(VALID["ip"], VALID["domain"]), Entry(SECOND["ip"], SECOND["domain"])])
    wait_for(lambda: cluster.hosts_file.read_bytes() == wanted, timeout=120,
             what="the valid entries of the edited config on the node")
    content = cluster.hosts_file.read_bytes()
    assert remove(content) == before, "every line outside our block is the node's own, byte for byte"
    for entry, _ in REFUSED_ON_NODE:
        assert f"{entry['ip']} {entry['domain']}".encode() not in content

    name = hosts_updater_pod()["metadata"]["name"]

    def refusals_logged() -> str | None:
        out = kubectl("-n", addon.NAMESPACE, "logs", name, check=False).stdout
        return out if REFUSED_ON_NODE[-1][1] in out else None

    log = wait_for(refusals_logged, timeout=60, what="the refusals in the Pod's log")
    for _, message in REFUSED_ON_NODE:
        assert f"refused, not written: {message}" in log, log
    print("\n[node] hosts-updater log:\n" + "\n".join(line for line in log.splitlines() if "refused" in line))
    # Readiness is withheld while entries are refused: `kubectl get ds` shows it, `helm --wait` fails.
    wait_for(lambda: not is_ready(hosts_updater_pod()), timeout=30, what="the Pod reported not ready")
    assert not is_ready(hosts_updater_pod())


