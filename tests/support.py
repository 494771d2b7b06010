"""Helpers shared by the test suites: run kubectl/helm from the tool cache, the chart's CRD, the test
tiers, wait for conditions."""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, TypeVar

import pytest
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
# The chart's CRD as `helm install` applies it (crds/; templates/crd-imagepullsecrets.yaml renders the
# same file on upgrade).
CRD_FILE = CHART_DIR / "crds" / "imagepullsecrets.tcr.tencentcloudcr.com.yaml"


def seed_sample() -> dict[str, Any]:
    """A fresh copy of the seed sample as a dict."""
    sample: dict[str, Any] = yaml.safe_load(SEED_SAMPLE_YAML)
    return sample


def load_crd() -> dict[str, Any]:
    """A fresh copy of the chart's ImagePullSecret CRD (crds/ file), as a dict."""
    crd: dict[str, Any] = yaml.safe_load(CRD_FILE.read_text())
    return crd


# helm's own state (repositories, registry logins, caches) under .local/, not in the developer's home;
# the environment can still choose other places.
HELM_HOMES = {f"HELM_{kind.upper()}_HOME": str(REPO_ROOT / ".local" / f"helm-{kind}")
              for kind in ("cache", "config", "data")}


def _run(binary: Path, name: str, args: tuple[str, ...], *, input_text: str | None, check: bool, timeout: float,
         env: Mapping[str, str]) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([str(binary), *args], input=input_text, capture_output=True, text=True,
                          timeout=timeout, env=dict(env))
    if check and proc.returncode != 0:
        raise AssertionError(f"{name} {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr}")
    return proc


def kubectl(*args: str, input_text: str | None = None, check: bool = True,
            timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """The cached kubectl against $KUBECONFIG; raises with its stderr on failure unless `check` is off."""
    return _run(tools.bin_dir() / "kubectl", "kubectl", args, input_text=input_text, check=check, timeout=timeout,
                env=os.environ)


def helm(*args: str, input_text: str | None = None, check: bool = True, timeout: float = 120,
         env: Mapping[str, str] | None = None, major: str | None = None) -> subprocess.CompletedProcess[str]:
    """The cached helm (of `major`, default the harness's) against $KUBECONFIG: the one way tests run helm.

    `env` is laid over this process's environment (and HELM_HOMES under both). Raises with helm's
    stderr on failure unless `check` is off (a test that expects a refusal reads the result).
    """
    return _run(tools.helm_path(major), "helm", args, input_text=input_text, check=check, timeout=timeout,
                env={**HELM_HOMES, **os.environ, **(env or {})})


def helm_template(*args: str, **kwargs: Any) -> list[dict[str, Any]]:
    """`helm template <args>`: every non-empty document, parsed (fails the test when helm refuses)."""
    return [doc for doc in yaml.safe_load_all(helm("template", *args, **kwargs).stdout) if doc]


# -- test tiers -------------------------------------------------------------------------------------

#: Fixtures that start a control plane, a node or a Docker engine (or are built on one): a test
#: that uses any of them, directly or through other fixtures, is in the cluster tier.
CLUSTER_FIXTURES = frozenset({
    "control_plane",  # tests/conftest.py; the webhook suite's own overrides it under the same name
    "node_cluster",
    "plane",  # the migration suite's control plane of its own
    "e2e_plane",  # the e2e suite's: the session's control plane or node, or the cluster in $KUBECONFIG
    "oci_node",  # tests/node/test_oci_install.py's node of its own
    "built",  # the images built by a Docker engine (tests/images, tests/security/test_supply_chain.py)
    "engine",  # a running Docker engine (same suites)
})
NODE_FIXTURES = frozenset({"node_cluster", "oci_node"})


def tier_markers(fixturenames: Iterable[str]) -> list[str]:
    """The tier markers a test with this fixture closure gets: `cluster`, and `node` on the node."""
    names = set(fixturenames)
    return [marker for marker, fixtures in (("cluster", CLUSTER_FIXTURES), ("node", NODE_FIXTURES))
            if names & fixtures]


def mark_tiers(items: list[pytest.Item]) -> None:
    """Mark every test by the fixtures it uses (its closure), so none can slip into the wrong tier."""
    for item in items:
        for marker in tier_markers(getattr(item, "fixturenames", ())):
            item.add_marker(marker)


Test = TypeVar("Test", bound=Callable[..., Any])
#: The hypothesis profile of `make test-long` (registered in tests/conftest.py): 10,000 examples.
LONG_PROFILE = "long"


def property_examples(examples: int) -> int:
    """`examples`, or under the long profile (`make test-long`: --hypothesis-profile=long) its count."""
    from hypothesis import settings  # imported here: only property tests need it

    current = settings.get_current_profile_name()
    return settings.get_profile(current).max_examples if current == LONG_PROFILE else examples


def property_settings(examples: int, **options: Any) -> Callable[[Test], Test]:
    """Hypothesis settings for a property that runs `property_examples(examples)` examples; the test
    is also marked `many_examples`, which `make test-long` selects."""
    from hypothesis import settings

    chosen = settings(max_examples=property_examples(examples), **options)

    def decorate(test: Test) -> Test:
        marked: Test = pytest.mark.many_examples(chosen(test))
        return marked

    return decorate


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
