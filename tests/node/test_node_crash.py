"""A node whose owner is killed (a crashed or SIGKILLed test run) is removed by the next `up`'s sweep.

The components die with their owner (PR_SET_PDEATHSIG), but a Pod's shim and container do not,
and the namespaces, pins and cgroups stay: `sweep_stale` must find them all and remove them.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from harness import node, tools
from harness.processes import pid_alive
from node_support import node_leftovers
from support import REPO_ROOT, wait_for

OWNER = """
import sys, time
from pathlib import Path
sys.path.insert(0, {scripts!r})
from harness import node
cluster = node.NodeCluster(Path({directory!r}), tie_to_parent=True)
cluster.up()
print("NODE", cluster.namespaces.name if cluster.namespaces else "", flush=True)
time.sleep(600)
"""

POD = """
apiVersion: v1
kind: Pod
metadata: {name: survivor}
spec:
  terminationGracePeriodSeconds: 0
  containers: [{name: pause, image: tcr-addon.local/pause:1.0, imagePullPolicy: Never}]
"""


def in_mount_namespace(inode: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if os.stat(entry / "ns" / "mnt").st_ino == inode:
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


@pytest.mark.cluster  # the owner process starts the node
@pytest.mark.node
def test_a_killed_owner_leaves_nothing_after_the_next_sweep(tmp_path_factory: pytest.TempPathFactory) -> None:
    # Short: the kubelet's Unix sockets live under it (tmp_path holds this test's long name).
    directory = tmp_path_factory.mktemp("crash") / "cluster"
    owner = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(OWNER).format(scripts=str(REPO_ROOT / "scripts"),
                                                             directory=str(directory))],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        assert owner.stdout is not None
        name = next((line.split()[1] for line in owner.stdout if line.startswith("NODE ")), "")
        assert name.startswith(node.NAME_PREFIX), "the node came up"
        namespaces = node.NodeNamespaces(name)
        inode = os.stat(namespaces.mount_file).st_ino
        kubectl = [str(tools.bin_dir() / "kubectl"), f"--kubeconfig={directory / 'kubeconfig'}"]
        subprocess.run([*kubectl, "apply", "-f", "-"], input=POD, text=True, check=True, capture_output=True)
        wait_for(lambda: subprocess.run([*kubectl, "get", "pod", "survivor", "-o", "jsonpath={.status.phase}"],
                                        capture_output=True, text=True).stdout == "Running",
                 timeout=60, what="a Pod running on the node")
    finally:
        owner.kill()
        owner.wait()

    # The owner is gone, but the Pod's shim and container and the node's namespaces are not.
    components = namespaces.read_record()["pids"]
    wait_for(lambda: not any(pid_alive(pid) for pid in components), timeout=30,
             what="the node's components to die with their owner")
    assert [p for p in node_leftovers() if name in p], "something was left to sweep"
    assert namespaces.processes(), "the Pod's container outlived the owner"

    assert name in node.sweep_stale()
    assert [p for p in node_leftovers() if name in p] == []
    assert in_mount_namespace(inode) == []
