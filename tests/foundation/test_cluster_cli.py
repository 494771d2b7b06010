"""`scripts/cluster up|env|down` as a user runs it: a plane that outlives the command, then nothing left."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from support import REPO_ROOT, kubectl, wait_for


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split()[2]
    except OSError:
        return False
    return state != "Z"


def _cluster(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(REPO_ROOT / "scripts" / "cluster"), *args], capture_output=True, text=True,
                          timeout=180, check=False)


@pytest.mark.cluster  # `scripts/cluster up` starts a control plane in a process of its own
def test_cluster_up_env_down_leaves_no_process(tmp_path: Path) -> None:
    directory = tmp_path / "plane"
    up = _cluster("--dir", str(directory), "up")
    try:
        assert up.returncode == 0, up.stderr
        pids = json.loads((directory / "state.json").read_text())["pids"]
        assert set(pids) == {"etcd", "kube-apiserver", "kube-controller-manager"}
        assert all(_alive(pid) for pid in pids.values())

        env = _cluster("--dir", str(directory), "env")
        assert f"export KUBECONFIG={directory.resolve() / 'kubeconfig'}" in env.stdout

        saved = os.environ.get("KUBECONFIG")
        os.environ["KUBECONFIG"] = str(directory / "kubeconfig")
        try:
            kubectl("create", "namespace", "x")
            wait_for(lambda: kubectl("get", "serviceaccount", "default", "-n", "x", check=False).returncode == 0,
                     timeout=30, what="ServiceAccount default in namespace x")
        finally:
            if saved is None:
                os.environ.pop("KUBECONFIG")
            else:
                os.environ["KUBECONFIG"] = saved
        second = _cluster("--dir", str(directory), "up")
        assert second.returncode == 1 and "already runs" in second.stderr
    finally:
        down = _cluster("--dir", str(directory), "down")
    assert down.returncode == 0, down.stderr
    wait_for(lambda: not any(_alive(pid) for pid in pids.values()), timeout=15, what="every process to exit")
    assert not (directory / "state.json").exists()
    assert (directory / "kube-apiserver.log").exists(), "component logs stay for debugging"
    env_after = _cluster("--dir", str(directory), "env")
    assert env_after.returncode == 1 and "no control plane runs" in env_after.stderr


@pytest.mark.cluster
def test_cluster_up_runs_the_chosen_minor(tmp_path: Path) -> None:
    from harness import tools

    directory = tmp_path / "oldest"
    up = _cluster("--dir", str(directory), "up", "--kubernetes", tools.KUBERNETES_OLDEST)
    try:
        assert up.returncode == 0, up.stderr
        release = tools.kubernetes_release(tools.KUBERNETES_OLDEST)
        assert f"Kubernetes {release}: control plane ready" in up.stdout
        assert json.loads((directory / "state.json").read_text())["kubernetes"] == tools.KUBERNETES_OLDEST
        server = kubectl("--kubeconfig", str(directory / "kubeconfig"), "version", "-o", "json").stdout
        assert json.loads(server)["serverVersion"]["gitVersion"] == release
        env = _cluster("--dir", str(directory), "env")
        assert str(tools.helm_path(tools.HELM_DEFAULT_MAJOR).parent) in env.stdout, "PATH starts with the chosen helm"
    finally:
        down = _cluster("--dir", str(directory), "down")
    assert down.returncode == 0, down.stderr


def test_cluster_up_refuses_a_minor_that_is_not_pinned(tmp_path: Path) -> None:
    up = _cluster("--dir", str(tmp_path / "x"), "up", "--kubernetes", "1.31")
    assert up.returncode == 2
    assert "--kubernetes: invalid choice: '1.31'" in up.stderr and "'1.30', '1.32'" in up.stderr, up.stderr
    assert not (tmp_path / "x" / "state.json").exists()
