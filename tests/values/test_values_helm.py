"""The wizard's values through the real chart: `helm template` renders the intended ImagePullSecrets."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import yaml
from values_support import run

from harness import tools
from harness import values as wizard

REPO = Path(__file__).resolve().parents[2]
HELM = tools.bin_dir() / "helm"
NASTY_PASSWORD = 'p"a\'s:s\\w#o{{ .Values }}\r\n\tr d é 😀 \u2028\x85 ~ null'


def helm_template(values_file: Path) -> list[dict]:
    assert HELM.exists(), f"helm is not built ({HELM}): run `make setup`"
    proc = subprocess.run([str(HELM), "template", "tcr-addon", str(REPO / "chart"), "-n", "tcr-system",
                           "-f", str(values_file)], capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    return [doc for doc in yaml.safe_load_all(proc.stdout) if doc]


@pytest.mark.parametrize("mode", ["password", "existing-secret"])
def test_helm_template_renders_what_the_wizard_meant(tmp_path: Path, mode: str) -> None:
    out = tmp_path / "values.yaml"
    args = ["--registry", "demo.tencentcloudcr.com", "--registry", "demo-vpc.tencentcloudcr.com",
            "--instance-id", "tcr-abcd1234", "--region", "ap-guangzhou", "--username", "100012345678",
            "--namespaces", "default, team-a", "--exclude-namespaces", "kube-system",
            "--host", "demo-vpc.tencentcloudcr.com=10.0.0.10", "-o", str(out)]
    if mode == "password":
        result = run([*args, "--password-stdin"], stdin=NASTY_PASSWORD + "\n")
    else:
        result = run([*args, "--existing-secret", "tcr-credentials:token"])
    assert result.status == 0, result.stderr
    values = yaml.safe_load(out.read_text())
    docs = helm_template(out)

    rendered = {d["metadata"]["name"]: d["spec"] for d in docs if d.get("kind") == "ImagePullSecret"}
    assert rendered == {cr["name"]: wizard.cr_spec(cr) for cr in values["global"]["imagePullSecretsCrs"]}
    if mode == "password":
        assert {spec["docker"]["password"] for spec in rendered.values()} == {NASTY_PASSWORD}

    (config,) = [d for d in docs if d.get("kind") == "ConfigMap" and d["metadata"]["name"] == "updater-config"]
    assert json.loads(config["data"]["config.json"]) == {"hosts": values["global"]["hosts"]}
