"""Helpers shared by the test suites: run kubectl/helm from the tool cache, wait for conditions."""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from harness import cluster, tools
from harness.polling import wait_for as wait_for  # the one polling helper, for every suite

REPO_ROOT = Path(__file__).resolve().parents[1]
# The original add-on's allinone/imagepullsecret-sample.yaml, byte for byte.
SEED_SAMPLE_YAML = """\
apiVersion: tcr.tencentcloudcr.com/v1
kind: ImagePullSecret
metadata:
  name: imagepullsecret-sample
spec:
  namespaces: "*"
  serviceAccounts: "*"
  docker:
    username: "100012345678"
    password: tcr.jwt.token
    server: fanjiankong-bj.tencentcloudcr.com
"""
CHART_DIR = REPO_ROOT / "chart"


def seed_sample() -> dict[str, Any]:
    """A fresh copy of the seed sample as a dict."""
    sample: dict[str, Any] = yaml.safe_load(SEED_SAMPLE_YAML)
    return sample


def run_tool(name: str, *args: str, input_text: str | None = None, check: bool = True,
             timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run a cached tool binary (kubectl, helm, …) against $KUBECONFIG; raise with its stderr on failure."""
    binary = tools.helm_path() if name == "helm" else tools.bin_dir() / name
    proc = subprocess.run([str(binary), *args], input=input_text, capture_output=True, text=True,
                          timeout=timeout, env=os.environ.copy())
    if check and proc.returncode != 0:
        raise AssertionError(f"{name} {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr}")
    return proc


def kubectl(*args: str, **kwargs: object) -> subprocess.CompletedProcess[str]:
    return run_tool("kubectl", *args, **kwargs)  # type: ignore[arg-type]


def helm(*args: str, **kwargs: object) -> subprocess.CompletedProcess[str]:
    return run_tool("helm", *args, **kwargs)  # type: ignore[arg-type]


@contextlib.contextmanager
def pointed_at(plane: cluster.ControlPlane) -> Iterator[cluster.ControlPlane]:
    """Point KUBECONFIG (kubectl, helm, pytest-helm-charts) and PATH (the cached tools) at `plane`."""
    saved = {key: os.environ.get(key) for key in ("KUBECONFIG", "PATH")}
    os.environ["KUBECONFIG"] = str(plane.kubeconfig)
    os.environ["PATH"] = os.pathsep.join([*map(str, tools.path_dirs()), saved["PATH"] or ""])
    try:
        yield plane
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
