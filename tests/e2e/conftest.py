"""The e2e suite runs against any cluster. By default (`make test`) it runs twice:

- `host-process`: the session's local control plane; the chart is installed with helm and the
  controller and webhook run as a host process with the chart's ServiceAccount token
  (`harness.addon`); hooks (`helm test`, the pre-delete cleanup) run their exact commands on
  the host with their own ServiceAccount tokens.
- `node`: the session's local node (`node_cluster`), in cluster mode: the images built by our
  Dockerfiles, `helm upgrade --install --wait`, the controller in its Pod with in-cluster config
  and leader election, the webhook reached through its Service, `helm test --logs` as a real
  Pod, `helm uninstall` with the pre-delete Job as a real Job.

`TCR_E2E_MODE=cluster` (used by `make e2e-kind`) runs it once, on the cluster in `$KUBECONFIG`,
in cluster mode. Extra helm arguments (image overrides) come from `$TCR_E2E_HELM_ARGS`.

pytest-helm-charts' fixtures are not used: they wrap pykube and assume Pods run (`--wait`
style readiness helpers); this suite needs the `kubernetes` client and the host-process path.
"""

from __future__ import annotations

import os
import shlex
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

import pytest
from kubernetes import client, config

from harness import addon, node
from harness.cluster import ControlPlane
from support import helm, pointed_at

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
    def __init__(self, extra: list[str] | None = None, kubeconfig: Path | None = None) -> None:
        self.extra = shlex.split(os.environ.get("TCR_E2E_HELM_ARGS", "")) if extra is None else extra
        self.env = {"KUBECONFIG": str(kubeconfig)} if kubeconfig else {}
        self.installed = False

    def _helm(self, *args: str) -> str:
        proc = helm(*args, timeout=600, env=self.env, check=False)
        print(proc.stdout, proc.stderr, sep="\n")
        assert proc.returncode == 0, f"helm {' '.join(args[:2])} failed ({proc.returncode}):\n{proc.stderr}"
        return proc.stdout

    def install(self, values: Path) -> None:
        self.upgrade(values)

    def upgrade(self, values: Path) -> None:
        self._helm("upgrade", "--install", RELEASE, str(addon.CHART_DIR), "-n", NAMESPACE, "--create-namespace",
                   "--wait", "--timeout", "5m", "-f", str(values), *self.extra)
        self.installed = True

    def helm_test(self) -> None:
        output = self._helm("test", RELEASE, "-n", NAMESPACE, "--logs")
        # --logs brought the test Pod's own log back (both Helm majors print it after the summary).
        assert "ok: ServiceAccount default/default lists" in output, output

    def uninstall(self) -> None:
        self._helm("uninstall", RELEASE, "-n", NAMESPACE, "--wait", "--timeout", "5m")
        self.installed = False

    def close(self) -> None:
        if self.installed:
            helm("uninstall", RELEASE, "-n", NAMESPACE, env=self.env, check=False)


def node_release(cluster: node.NodeCluster) -> ClusterRelease:
    """Cluster mode on the local node, with the images our Dockerfiles build (loaded, never pulled)."""
    built = addon.images.build_images()
    cluster.import_images(built)
    extra = [arg for value in addon.NodeRelease.image_values(built) for arg in ("--set", value)]
    return ClusterRelease(extra, cluster.kubeconfig)


MODES = (["cluster"] if os.environ.get("TCR_E2E_MODE") == "cluster"
         else ["host-process", pytest.param("node", marks=pytest.mark.node)])


@pytest.fixture(scope="module", params=MODES)
def e2e_plane(request: pytest.FixtureRequest) -> Iterator[ControlPlane | None]:
    """The cluster the journey runs on (None: `$KUBECONFIG`); KUBECONFIG points at it meanwhile."""
    if request.param == "cluster":
        yield None
        return
    plane: ControlPlane = request.getfixturevalue("node_cluster" if request.param == "node" else "control_plane")
    with pointed_at(plane):
        yield plane


@pytest.fixture(scope="module")
def e2e_kube(e2e_plane: ControlPlane | None) -> client.ApiClient:
    return config.new_client_from_config(str(e2e_plane.kubeconfig) if e2e_plane else os.environ["KUBECONFIG"])


@pytest.fixture(scope="module")
def release(e2e_plane: ControlPlane | None, e2e_kube: client.ApiClient,
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[Release]:
    chosen: Release
    if e2e_plane is None:
        chosen = ClusterRelease()
    elif isinstance(e2e_plane, node.NodeCluster):
        chosen = node_release(e2e_plane)
    else:
        chosen = LocalRelease(e2e_plane, tmp_path_factory.mktemp("e2e-addon"))
    yield chosen
    chosen.close()
