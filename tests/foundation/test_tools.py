"""The tool builder: staging replacements read from go.mod, version ldflags, cached binaries."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from harness import tools
from support import helm

GOMOD_EXCERPT = """
module k8s.io/kubernetes

go 1.26.0

godebug default=go1.26

replace (
\tk8s.io/api => ./staging/src/k8s.io/api
\tk8s.io/client-go => ./staging/src/k8s.io/client-go
\tgithub.com/other/thing => github.com/fork/thing v1.0.0
)
"""


def test_staging_replacements_map_each_local_path_to_its_published_version() -> None:
    assert tools.staging_replacements(GOMOD_EXCERPT, "v0.37.2") == [
        "\tk8s.io/api => k8s.io/api v0.37.2",
        "\tk8s.io/client-go => k8s.io/client-go v0.37.2",
    ]


def test_staging_replacements_take_a_minors_override() -> None:
    assert tools.staging_replacements(GOMOD_EXCERPT, "v0.32.13", {"k8s.io/client-go": "v0.32.12"}) == [
        "\tk8s.io/api => k8s.io/api v0.32.13",
        "\tk8s.io/client-go => k8s.io/client-go v0.32.12",
    ]


def test_staging_replacements_refuse_a_go_mod_without_staging() -> None:
    with pytest.raises(tools.ToolError, match="no staging replacements"):
        tools.staging_replacements("module x\n", "v0.37.2")


def test_k8s_ldflags_set_version_in_both_packages() -> None:
    flags = tools.k8s_ldflags("v1.37.2")
    for package in ("k8s.io/component-base/version", "k8s.io/client-go/pkg/version"):
        assert f"-X {package}.gitVersion=v1.37.2" in flags
        assert f"-X {package}.gitMajor=1" in flags
        assert f"-X {package}.gitMinor=37" in flags


@pytest.mark.parametrize("tool", tools.TOOLS, ids=lambda tool: tool.name)
def test_installed_tool_reports_its_pinned_version(tool: tools.Tool) -> None:
    path = tools.bin_dir() / tool.name if tool.link else tool.cached
    assert path.exists(), f"{tool.name} missing: run 'make setup'"
    assert tool.reports_version(str(path)), subprocess.run(
        [str(path), *tool.version_args], capture_output=True, text=True, check=False)


@pytest.mark.parametrize("major", sorted(tools.HELM_RELEASES))
def test_helm_targets_the_kubernetes_of_its_own_client(tmp_path: Path, major: str) -> None:
    # Without the chartutil ldflags Helm 3's `helm template` assumes Kubernetes 1.20, below the
    # chart's kubeVersion; Helm 4 reads its client-go version from its build information.
    chart = tmp_path / "probe"
    (chart / "templates").mkdir(parents=True)
    (chart / "Chart.yaml").write_text("apiVersion: v2\nname: probe\nversion: 0.1.0\n")
    (chart / "templates" / "cm.yaml").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: probe\n"
        "data:\n  kube: {{ .Capabilities.KubeVersion.Version | quote }}\n")
    rendered = helm("template", "probe", str(chart), major=major).stdout
    _, minor = tools.helm_client_go_minor(major)
    assert f'kube: "v1.{minor}.0"' in rendered, rendered
    assert int(minor) >= int(tools.KUBERNETES_OLDEST.split(".")[1])


def test_default_helm_and_path_follow_the_chosen_major(monkeypatch: pytest.MonkeyPatch) -> None:
    assert (tools.bin_dir() / "helm").resolve() == tools.helm_path(tools.HELM_DEFAULT_MAJOR).resolve()
    for major, version in tools.HELM_RELEASES.items():
        monkeypatch.setenv("TCR_ADDON_HELM", major)
        assert tools.path_dirs()[0] == tools.helm_path(major).parent
        assert tools.helm_tool(major).reports_version(str(tools.helm_path()))
        assert version in tools.helm_path().parent.name
    monkeypatch.setenv("TCR_ADDON_HELM", "5")
    with pytest.raises(tools.ToolError, match="TCR_ADDON_HELM='5': choose one of 3, 4"):
        tools.helm_major()


def test_kubernetes_minor_is_chosen_by_environment_and_refuses_an_unpinned_one(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TCR_ADDON_KUBERNETES", raising=False)
    assert tools.kubernetes_minor() == tools.KUBERNETES_NEWEST
    monkeypatch.setenv("TCR_ADDON_KUBERNETES", "1.30")
    assert tools.kubernetes_binary("kube-apiserver") == tools.cache_root() / "kubernetes-v1.30.14" / "kube-apiserver"
    assert tools.kubernetes_binary("kubectl").parent.name == f"kubernetes-{tools.KUBERNETES_VERSION}", "one client"
    monkeypatch.setenv("TCR_ADDON_KUBERNETES", "1.31")
    with pytest.raises(tools.ToolError, match=r"Kubernetes 1\.31 is not pinned: choose one of 1\.30, 1\.32"):
        tools.kubernetes_minor()


def test_versions_lists_every_minor_and_both_helm_majors() -> None:
    out = subprocess.run([sys.executable, str(Path(tools.__file__).parents[1] / "tools"), "versions"],
                         capture_output=True, text=True, check=True).stdout
    for minor, release in tools.KUBERNETES_RELEASES.items():
        assert f"kubernetes-{minor} {release} (" in out
    for major, release in tools.HELM_RELEASES.items():
        assert f"helm{major} {release}" in out
