"""`make e2e-kind` here, offline: a real kind cluster on our node image, the e2e journey on it, and a
host that is as it was afterwards (run by `make test-matrix` and `make e2e-kind`, not `make test`)."""

from __future__ import annotations

import os
import re
import subprocess
import tempfile
from pathlib import Path

import pytest

from harness import REPO_ROOT, VENV, e2e_kind, namespaces, tools
from harness.engine import ENGINE_PREFIX
from harness.hoststate import differences

pytestmark = [pytest.mark.cluster, pytest.mark.kind]

JOURNEY = ("test_install_from_wizard_values", "test_helm_test_passes", "test_seed_sample_distributes_and_links",
           "test_upgrade_with_changed_values", "test_bad_object_is_refused", "test_uninstall_leaves_nothing")


def engine_leftovers() -> list[str]:
    """Anything of a throw-away engine still on the machine: state, netns, cgroups, processes."""
    found = [f"directory {p}" for p in Path(tempfile.gettempdir()).glob(f"{ENGINE_PREFIX}*")]
    found += [f"netns {ns}" for ns in namespaces.netns_names() if ns.startswith(ENGINE_PREFIX)]
    found += [f"cgroup {p}" for h in namespaces.cgroup_hierarchies() for p in h.glob(f"{ENGINE_PREFIX}*")]
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and f"/{ENGINE_PREFIX}" in (entry / "cgroup").read_text():
                found.append(f"process {entry.name}: {(entry / 'cmdline').read_bytes()[:120]!r}")
        except OSError:
            continue  # gone meanwhile
    return found


def test_the_journey_passes_on_kind_and_the_host_is_as_it_was() -> None:
    assert engine_leftovers() == []
    before = e2e_kind.host_snapshot()
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT / "scripts")}
    proc = subprocess.run([str(VENV / "bin" / "python"), "-m", "harness.e2e_kind", "--engine", "offline"],
                          cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=3000)
    output = proc.stdout + proc.stderr
    print(output[-30000:])
    assert proc.returncode == 0
    # kind's own `kubectl get nodes`: the node Ready, at the pinned Kubernetes.
    assert re.search(rf"-control-plane\s+Ready\s+control-plane\s+\S+\s+{re.escape(tools.KUBERNETES_VERSION)}\s",
                     output)
    assert re.search(r"kube-system\s+coredns-\S+\s+1/1\s+Running", output), "coredns is not Ready"
    assert "answers inside the engine's network namespace only" in output
    for step in JOURNEY:
        assert f"{step}[cluster] PASSED" in output
    assert not re.search(r"\b(failed|error)\b", output.split("short test summary")[-1].split("e2e journey")[-1])
    assert differences(before, e2e_kind.host_snapshot()) == []
    assert engine_leftovers() == []
