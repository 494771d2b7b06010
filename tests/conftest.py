"""Session-wide fixtures: one real local control plane per test session, isolation by namespace."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from harness import cluster, node
from support import pointed_at


def pytest_configure(config: pytest.Config) -> None:
    # Registered here, not in pyproject.toml: the matrix selects it only on the node cells of a
    # minor the previous release installs on (harness.matrix, harness.previous.MIN_KUBERNETES_MINOR).
    config.addinivalue_line("markers", "upgrade: upgrade from the previous release (releases/) and rollback, on the "
                            "node; the previous chart needs Kubernetes >= 1.34")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every test that needs the local node is marked `node`, so a run on a minor whose node is not
    built (make test-matrix) can leave it out with `-m "not node"`."""
    for item in items:
        if "node_cluster" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.node)


@pytest.fixture(scope="session")
def control_plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[cluster.ControlPlane]:
    """etcd + kube-apiserver + kube-controller-manager on loopback; KUBECONFIG points at it (admin).

    The processes are tied to this pytest process: they are stopped at session end, on Ctrl-C,
    and killed by the kernel if pytest itself dies.
    """
    directory = Path(tmp_path_factory.mktemp("control-plane"))
    with cluster.running(directory) as plane, pointed_at(plane):
        yield plane


@pytest.fixture(scope="session")
def kube(control_plane: cluster.ControlPlane) -> client.ApiClient:
    """An API client acting as cluster admin (system:masters)."""
    return config.new_client_from_config(str(control_plane.kubeconfig))


@pytest.fixture
def test_namespace(kube: client.ApiClient) -> Iterator[str]:
    """A fresh namespace for one test, deleted afterwards."""
    name = f"t-{uuid.uuid4().hex[:10]}"
    core = client.CoreV1Api(kube)
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    yield name
    try:
        core.delete_namespace(name)
    except ApiException as error:
        if error.status != 404:
            raise


@pytest.fixture(scope="session")
def node_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[node.NodeCluster]:
    """A second control plane with one real node (kubelet, containerd, kube-proxy) where Pods run.

    Started on first use; its namespaces, mounts, cgroups and containers are removed at session
    end. Callers point KUBECONFIG at it themselves (`support.pointed_at`): the default
    `control_plane` stays the session's default.
    """
    with cluster.running(Path(tmp_path_factory.mktemp("node-cluster")), node.NodeCluster) as plane:
        assert isinstance(plane, node.NodeCluster)
        yield plane
