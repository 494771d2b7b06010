"""`helm uninstall` takes hosts-updater's lines off the nodes.

On the local control plane: the chart installed with TKE-shaped hosts, the controller running as
a host process; the chart's pre-delete hook command runs with its own ServiceAccount token; it
must switch the DaemonSet to `--remove` and wait. The node side is the exact container arguments
of the DaemonSet before and after, run on a temp hosts file. No kubelet or DaemonSet controller
runs here, so the test reports the rollout in the DaemonSet's status as they would.
"""

from __future__ import annotations

import json
import subprocess
import threading
from pathlib import Path
from typing import Any

from hosts_helpers import REPO_ROOT
from test_hosts_integration import NODE_HOSTS

from harness import addon
from harness.cluster import ControlPlane
from support import helm, kubectl, wait_for

VALUES = REPO_ROOT / "chart" / "ci" / "tke-two-registries-with-hosts-values.yaml"
NAMESPACE = addon.NAMESPACE


def daemonset() -> dict[str, Any]:
    found: dict[str, Any] = json.loads(kubectl("-n", NAMESPACE, "get", "daemonset", "hosts-updater", "-o",
                                               "json").stdout)
    return found


def node_run(args: list[str], node: Path) -> subprocess.CompletedProcess[str]:
    """hosts-updater with the DaemonSet's arguments, its mounts mapped to files under `node`, one pass."""
    mounts = {"/host/etc/hosts": node / "hosts", "/etc/updater/config.json": node / "config.json",
              "/run/hosts-updater/ready": node / "ready"}
    mapped = [arg.split("=", 1)[0] + "=" + str(mounts[arg.split("=", 1)[1]])
              if "=" in arg and arg.split("=", 1)[1] in mounts else arg for arg in args]
    return subprocess.run([str(REPO_ROOT / ".venv" / "bin" / "hosts-updater"), *mapped, "--once"],
                          capture_output=True, text=True, timeout=30, check=False)


def container_args(ds: dict[str, Any]) -> list[str]:
    containers = ds["spec"]["template"]["spec"]["containers"]
    return [str(arg) for arg in next(c for c in containers if c["name"] == "hosts-updater")["args"]]


def switched_to_remove() -> dict[str, Any] | None:
    current = daemonset()
    return current if "--remove" in container_args(current) else None


def test_uninstall_removes_hosts_lines_from_every_node(control_plane: ControlPlane, tmp_path: Path) -> None:
    node = tmp_path / "node"
    node.mkdir()
    (node / "hosts").write_bytes(NODE_HOSTS)
    config_map = json.loads(kubectl("-n", NAMESPACE, "get", "configmap", "updater-config", "-o", "json",
                                    check=False).stdout or "{}")
    assert config_map == {}, "another test left the add-on installed"

    with addon.running(control_plane, tmp_path / "addon", [VALUES]) as running:
        config = json.loads(kubectl("-n", NAMESPACE, "get", "configmap", "updater-config", "-o", "json").stdout)
        (node / "config.json").write_text(config["data"]["config.json"])
        before = daemonset()
        applied = node_run(container_args(before), node)
        assert applied.returncode == 0, applied.stderr
        assert b"10.0.0.10 example-vpc.tencentcloudcr.com" in (node / "hosts").read_bytes()

        outcome: dict[str, subprocess.CompletedProcess[str]] = {}
        hook = threading.Thread(target=lambda: outcome.setdefault("cleanup", running.run_hook("pre-delete")))
        hook.start()
        try:
            switched = wait_for(switched_to_remove, timeout=60,
                                what="the pre-delete hook to switch hosts-updater to --remove")
            assert switched["spec"]["updateStrategy"]["rollingUpdate"]["maxUnavailable"] == "100%"
            assert switched["spec"]["updateStrategy"]["rollingUpdate"]["maxSurge"] == 0
            assert container_args(switched)[:-1] == container_args(before), "other arguments are kept"
            assert hook.is_alive(), "the hook must wait until the nodes report clean"

            (node / "ready").unlink()
            removed = node_run(container_args(switched), node)
            assert removed.returncode == 0, removed.stderr
            assert (node / "hosts").read_bytes() == NODE_HOSTS, "every other byte of the node file is kept"
            assert (node / "ready").exists(), "remove mode reports ready once the node is clean"

            generation = switched["metadata"]["generation"]
            status = {"observedGeneration": generation, "desiredNumberScheduled": 1, "currentNumberScheduled": 1,
                      "updatedNumberScheduled": 1, "numberReady": 1, "numberAvailable": 1, "numberMisscheduled": 0}
            kubectl("-n", NAMESPACE, "patch", "daemonset", "hosts-updater", "--subresource=status",
                    "--type=merge", "-p", json.dumps({"status": status}))
        finally:
            hook.join(timeout=120)
        result = outcome["cleanup"]
        assert result.returncode == 0, result.stderr
        assert "hosts lines removed: 1/1 nodes clean" in result.stdout
        assert "cleaned up 2 ImagePullSecret(s)" in result.stdout
    helm("uninstall", addon.RELEASE, "-n", NAMESPACE, "--no-hooks")
