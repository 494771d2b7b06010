"""The tool builder: staging replacements read from go.mod, version ldflags, cached binaries."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from harness import tools

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
    path = tools.bin_dir() / tool.name
    assert path.exists(), f"{tool.name} missing: run 'make setup'"
    assert tool.reports_version(str(path)), subprocess.run(
        [str(path), *tool.version_args], capture_output=True, text=True, check=False)


def test_helm_targets_the_pinned_kubernetes_version(tmp_path: Path) -> None:
    # Without the chartutil ldflags `helm template` assumes Kubernetes 1.20.
    chart = tmp_path / "probe"
    (chart / "templates").mkdir(parents=True)
    (chart / "Chart.yaml").write_text("apiVersion: v2\nname: probe\nversion: 0.1.0\n")
    (chart / "templates" / "cm.yaml").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: probe\n"
        "data:\n  kube: {{ .Capabilities.KubeVersion.Version | quote }}\n")
    rendered = subprocess.run([str(tools.bin_dir() / "helm"), "template", "probe", str(chart)],
                              capture_output=True, text=True, check=True).stdout
    minor = tools.KUBERNETES_VERSION.split(".")[1]
    assert f'kube: "v1.{minor}.0"' in rendered, rendered
