"""The e2e suite runs against any cluster.

- Default (CI, no Docker): the session's local control plane; the chart is installed with helm
  and the controller and webhook run as a host process with the chart's ServiceAccount token
  (`harness.addon`); hooks (`helm test`, the pre-delete cleanup) run their exact commands on
  the host with their own ServiceAccount tokens.
- `TCR_E2E_MODE=cluster` (used by `make e2e-kind`): the cluster in `$KUBECONFIG`, where Pods
  run: `helm upgrade --install --wait`, `helm test`, `helm uninstall` with hooks. Extra helm
  arguments (image overrides) come from `$TCR_E2E_HELM_ARGS`.

pytest-helm-charts' fixtures are not used: they wrap pykube and assume Pods run (`--wait`
style readiness helpers); this suite needs the `kubernetes` client and the host-process path.
"""

from __future__ import annotations

import os
import shlex
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

import pytest
from kubernetes import client, config

from harness import addon, tools
from harness.cluster import ControlPlane

NAMESPACE = "tcr-assistant-system"
RELEASE = "tcr-addon"


class Release(Protocol):
    def install(self, values: Path) -> None: ...
    def upgrade(self, values: Path) -> None: ...
    def helm_test(self) -> None: ...
    def uninstall(self) -> None: ...
    def close(self) -> None: ...


class LocalRelease:
    def __init__(self, plane: ControlPlane, directory: Path) -> None:
        self.addon = addon.Addon(plane, directory, tie_to_parent=True)

    def install(self, values: Path) -> None:
        self.addon.values_files = [values]
        self.addon.install()
        self.addon.start_controller()

    def upgrade(self, values: Path) -> None:
        self.addon.values_files = [values]
        self.addon.install()

    def helm_test(self) -> None:
        result = self.addon.run_hook("test")
        assert result.returncode == 0, f"helm test's check failed:\n{result.stdout}\n{result.stderr}"

    def uninstall(self) -> None:
        self.addon.cleanup_and_uninstall()
        self.addon.stop_controller()

    def close(self) -> None:
        self.addon.stop_controller()


class ClusterRelease:
    def __init__(self) -> None:
        self.extra = shlex.split(os.environ.get("TCR_E2E_HELM_ARGS", ""))
        self.installed = False

    def _helm(self, *args: str) -> None:
        subprocess.run([str(tools.bin_dir() / "helm"), *args], check=True, timeout=600)

    def install(self, values: Path) -> None:
        self.upgrade(values)

    def upgrade(self, values: Path) -> None:
        self._helm("upgrade", "--install", RELEASE, str(addon.CHART_DIR), "-n", NAMESPACE, "--create-namespace",
                   "--wait", "--timeout", "5m", "-f", str(values), *self.extra)
        self.installed = True

    def helm_test(self) -> None:
        self._helm("test", RELEASE, "-n", NAMESPACE, "--logs")

    def uninstall(self) -> None:
        self._helm("uninstall", RELEASE, "-n", NAMESPACE, "--wait", "--timeout", "5m")
        self.installed = False

    def close(self) -> None:
        if self.installed:
            subprocess.run([str(tools.bin_dir() / "helm"), "uninstall", RELEASE, "-n", NAMESPACE], check=False)


@pytest.fixture(scope="module")
def e2e_kube(request: pytest.FixtureRequest) -> client.ApiClient:
    if os.environ.get("TCR_E2E_MODE") == "cluster":
        return config.new_client_from_config(os.environ["KUBECONFIG"])
    plane: ControlPlane = request.getfixturevalue("control_plane")
    return config.new_client_from_config(str(plane.kubeconfig))


@pytest.fixture(scope="module")
def release(request: pytest.FixtureRequest, e2e_kube: client.ApiClient,
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[Release]:
    chosen: Release
    if os.environ.get("TCR_E2E_MODE") == "cluster":
        chosen = ClusterRelease()
    else:
        chosen = LocalRelease(request.getfixturevalue("control_plane"), tmp_path_factory.mktemp("e2e-addon"))
    yield chosen
    chosen.close()
