"""Session-wide fixtures: one real local control plane per test session, isolation by namespace.

Also the test tiers: every test that uses a cluster fixture (support.CLUSTER_FIXTURES) is marked
`cluster` here, and a test that is not marked so fails if it starts a control plane or a Docker
engine anyway; and the hypothesis profiles (`long`: 10,000 examples, `make test-long`).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import settings
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from harness import cluster, engine, node
from support import LONG_PROFILE, mark_tiers, pointed_at

# The properties written with support.property_settings run their own count of examples by default
# and this profile's under `--hypothesis-profile=long` (make test-long).
settings.register_profile(LONG_PROFILE, max_examples=10_000)


def pytest_configure(config: pytest.Config) -> None:
    # Registered here, not in pyproject.toml: the matrix selects it only on the node cells of a
    # minor the previous release installs on (harness.matrix, harness.previous.MIN_KUBERNETES_MINOR).
    config.addinivalue_line("markers", "upgrade: upgrade from the previous release (releases/) and rollback, on the "
                            "node; the previous chart needs Kubernetes >= 1.34")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every test that uses a cluster fixture is marked `cluster` (`make test-unit` leaves it out), one
    on the local node also `node`, so a run on a minor whose node is not built (make test-matrix) can
    leave it out with `-m "not node"`."""
    mark_tiers(items)


_running: list[pytest.Item] = []  # the test being run, for the guard below


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item) -> Iterator[None]:
    _running.append(item)
    try:
        return (yield)
    finally:
        _running.pop()


def _cluster_tier_only(start: Callable[..., Any], what: str) -> Callable[..., Any]:
    def guarded(*args: Any, **kwargs: Any) -> Any:
        if _running and _running[-1].get_closest_marker("cluster") is None:
            raise AssertionError(
                f"{_running[-1].nodeid} is in the unit tier but starts {what}: use one of the cluster fixtures "
                f"(support.CLUSTER_FIXTURES) or mark it `cluster`")
        return start(*args, **kwargs)
    return guarded


# Whatever fixture name or test body starts them, in this process.
cluster.ControlPlane.up = _cluster_tier_only(cluster.ControlPlane.up, "a control plane")  # type: ignore[method-assign]
engine.DockerEngine.start = _cluster_tier_only(engine.DockerEngine.start, "a Docker engine")  # type: ignore[method-assign]


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
