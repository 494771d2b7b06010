"""The controller suite's fixtures, shared with the security suite: an admin client, the chart's CRD,
a raw JSON helper that removes what a test created, and controllers run in this process.

Both suites' conftest modules import them, which is how pytest registers a fixture in a directory.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from controller_support import ADDON_NS, K, Proxy, RunningController, apply_crd, fast_options
from recording_kube import RecordingKube

from harness.cluster import ControlPlane
from tcr_assistant.k8s.client import NAMESPACES, Kube, make_api_client
from tcr_assistant.reconciler.controller import Controller


@pytest.fixture(scope="session")
def admin_kube(control_plane: ControlPlane) -> Kube:
    return RecordingKube(make_api_client(str(control_plane.kubeconfig), pool_size=32))


@pytest.fixture(scope="session")
def crd(admin_kube: Kube) -> None:
    apply_crd(admin_kube)
    if admin_kube.get(NAMESPACES.path(name=ADDON_NS)) is None:
        K(admin_kube).create_namespace(ADDON_NS)


@pytest.fixture
def k(admin_kube: Kube, crd: None) -> Iterator[K]:
    helper = K(admin_kube)
    yield helper
    for name in helper.created:  # not awaited: the namespace controller finishes in the background
        with contextlib.suppress(Exception):
            helper.delete_namespace(name)


@pytest.fixture
def start_controller(control_plane: ControlPlane, crd: None) -> Iterator[Callable[..., RunningController]]:
    running: list[RunningController] = []

    def start(
        kubeconfig: str | None = None, wait_leading: bool = True, request_timeout: float = 30.0, **over: Any
    ) -> RunningController:
        kube = RecordingKube(make_api_client(kubeconfig or str(control_plane.kubeconfig), pool_size=16),
                             timeout=request_timeout)
        rc = RunningController(Controller(kube, fast_options(**over)))
        running.append(rc)
        return rc.start(wait_leading=wait_leading)

    yield start
    for rc in running:
        rc.stop()


@pytest.fixture
def controller(start_controller: Callable[..., RunningController]) -> RunningController:
    return start_controller()


@pytest.fixture
def ips_cleanup(k: K, start_controller: Callable[..., RunningController]) -> Iterator[list[str]]:
    """Names appended here are deleted (and their cleanup awaited) while the controller still runs."""
    names: list[str] = []
    yield names
    for name in names:
        with contextlib.suppress(Exception):
            k.delete_ips(name, wait=True, timeout=60)


@pytest.fixture(autouse=True)
def _quiet_urllib3() -> None:
    logging.getLogger("urllib3").setLevel(logging.WARNING)


@pytest.fixture
def proxy_kubeconfig(control_plane: ControlPlane, tmp_path: Path) -> Iterator[tuple[Proxy, str]]:
    port = int(control_plane.server.rsplit(":", 1)[1])
    proxy = Proxy(("127.0.0.1", port))
    cfg = yaml.safe_load(control_plane.kubeconfig.read_text())
    for cluster in cfg["clusters"]:
        cluster["cluster"]["server"] = f"https://127.0.0.1:{proxy.port}"
    path = tmp_path / "proxy.kubeconfig"
    path.write_text(yaml.safe_dump(cfg))
    yield proxy, str(path)
    proxy.close()
