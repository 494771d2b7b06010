"""`scripts/cluster --node` and `scripts/addon` as a user runs them, and what they leave on the host.

A node that outlives the command: `up` (options after the subcommand), `kubectl` from the host,
the chart installed with `helm install --wait` as real Pods, `kubectl logs` and `kubectl exec`,
`helm uninstall`, `down`. The host's network, routes, hosts file, resolv.conf, sysctls,
iptables and nftables rules are the same while the node runs and after; after `down` no process,
mount, network namespace or cgroup of the node is left.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from harness import node, tools
from harness.cluster import ClusterError
from harness.hoststate import differences, host_state
from node_support import node_leftovers, node_processes
from support import REPO_ROOT, wait_for

NAMESPACE = "tcr-assistant-system"
# Inside the node's namespaces, but seen from the host, these may change while it runs; nothing
# else may. After `down` every key must be back.
NODE_OWNED = ("netns", "mounts", "cgroups")


def script(name: str, *args: str, timeout: float = 600, **kwargs: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(REPO_ROOT / "scripts" / name), *args], capture_output=True, text=True,
                          timeout=timeout, check=False, **kwargs)  # type: ignore[call-overload]


def kubectl(kubeconfig: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(tools.bin_dir() / "kubectl"), f"--kubeconfig={kubeconfig}", *args],
        capture_output=True, text=True, timeout=120, check=False)


@pytest.mark.cluster  # `scripts/cluster --node up` starts the node in a process of its own
@pytest.mark.node
def test_node_up_addon_logs_exec_uninstall_down_leaves_the_host_as_it_was(
        tmp_path_factory: pytest.TempPathFactory) -> None:
    # Short: the kubelet's Unix sockets live under it (tmp_path holds this test's long name).
    directory = tmp_path_factory.mktemp("cli") / "cluster"
    before = host_state()
    up = script("cluster", "up", "--dir", str(directory), "--node")
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        state = json.loads((directory / "state.json").read_text())
        name = state["node"]
        assert name.startswith(node.NAME_PREFIX)
        assert {"kubelet", "containerd", "kube-proxy", "kube-scheduler", "kube-apiserver"} <= set(state["pids"])

        during = host_state()
        assert differences({k: v for k, v in before.items() if k not in NODE_OWNED},
                           {k: v for k, v in during.items() if k not in NODE_OWNED}) == []
        assert name in during["netns"], "the node lives in a network namespace of its own"

        env = script("cluster", "env", "--dir", str(directory))
        assert env.returncode == 0, env.stderr
        kubeconfig = directory.resolve() / "kubeconfig"
        assert f"export KUBECONFIG={kubeconfig}" in env.stdout
        nodes = json.loads(kubectl(kubeconfig, "get", "nodes", "-o", "json").stdout)["items"]
        assert [n["metadata"]["name"] for n in nodes] == [node.NODE_NAME]

        addon = script("addon", "--cluster-dir", str(directory), "up")
        assert addon.returncode == 0, addon.stdout + addon.stderr
        deployment = "deploy/tcr-assistant-controller-manager"
        ready = kubectl(kubeconfig, "-n", NAMESPACE, "get", deployment, "-o", "jsonpath={.status.readyReplicas}")
        assert ready.stdout == "1", ready.stderr
        wait_for(lambda: "acquired the lease" in kubectl(kubeconfig, "-n", NAMESPACE, "logs", deployment).stdout,
                 timeout=60, what="the controller's log, read from the host with kubectl logs")
        executed = kubectl(kubeconfig, "-n", NAMESPACE, "exec", deployment, "--",
                           "python", "-c", "import os; print('uid', os.getuid())")
        assert executed.stdout.strip() == "uid 65532", executed.stderr

        down_addon = script("addon", "--cluster-dir", str(directory), "down", "--uninstall")
        assert down_addon.returncode == 0, down_addon.stdout + down_addon.stderr
        pods = kubectl(kubeconfig, "-n", NAMESPACE, "get", "deploy,ds,jobs", "-o", "name")
        assert pods.stdout.strip() == "", pods.stdout
    finally:
        down = script("cluster", "down", "--dir", str(directory))
    assert down.returncode == 0, down.stdout + down.stderr
    assert not (directory / "state.json").exists()
    assert [p for p in node_leftovers() if name in p] == []
    wait_for(lambda: not [p for p in node_processes() if str(directory) in p or name in p], timeout=10,
             what="every process of the node to be gone")
    assert differences(before, host_state()) == []


@pytest.mark.parametrize(("prefix", "expected"), [
    (["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"], "needs root"),
    (["setpriv", "--bounding-set=-net_admin"], "CAP_NET_ADMIN"),
])
def test_node_without_root_or_a_capability_says_what_is_needed(
        tmp_path: Path, prefix: list[str], expected: str) -> None:
    os.chmod(tmp_path, 0o777)
    result = subprocess.run([*prefix, sys.executable, str(REPO_ROOT / "scripts" / "cluster"), "--node", "up", "--dir",
                             str(tmp_path / "c")], capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 1
    assert expected in result.stderr and "Traceback" not in result.stderr, result.stderr
    assert not (tmp_path / "c" / "state.json").exists()


def test_a_node_directory_too_deep_for_the_kubelets_sockets_is_refused_up_front(tmp_path: Path) -> None:
    node.check_socket_room(tmp_path / "n")  # the usual depth fits
    deep = Path("/tmp") / ("d" * 80) / "node"
    with pytest.raises(ClusterError, match=r"too deep: the kubelet's sockets under it would be 1\d\d bytes long"):
        node.check_socket_room(deep)
