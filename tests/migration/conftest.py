"""The migration suite runs on a control plane of its own: the original's objects share every name
with the chart's, so they must never meet the chart installs of the other suites."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from harness import cluster
from support import pointed_at


@pytest.fixture(scope="module")
def plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[cluster.ControlPlane]:
    with cluster.running(Path(tmp_path_factory.mktemp("migration-plane"))) as running, pointed_at(running):
        yield running
