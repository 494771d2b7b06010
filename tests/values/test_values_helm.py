"""The wizard's values through the real chart: `helm template` renders the intended ImagePullSecrets,
and what helm refuses is reported per option without showing the password."""

from __future__ import annotations

import base64
import json
import shutil
import stat
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from values_support import helm_template, run

from values_wizard import CHART, PROG, helm
from values_wizard.errors import Failure

NASTY_PASSWORD = 'p"a\'s:s\\w#o{{ .Values }}\r\n\tr d é 😀 \u2028\x85 ~ null'
BASE = ["--registry", "demo.tencentcloudcr.com", "--username", "100012345678", "--password-stdin"]


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

    def credential(name: str) -> dict[str, Any]:
        # A password given in values is kept in the chart's own Secret, one key per entry.
        if mode == "password":
            return {"passwordSecretRef": {"name": "tcr-assistant-registry-credentials", "key": name}}
        return {"passwordSecretRef": {"name": "tcr-credentials", "key": "token"}}

    rendered = {d["metadata"]["name"]: d["spec"] for d in docs if d.get("kind") == "ImagePullSecret"}
    assert rendered == {
        f"tcr-abcd1234-{kind}": {
            "namespaces": "default, team-a",
            "serviceAccounts": "*",
            "excludedNamespaces": "kube-system",
            "docker": {"server": server, "username": "100012345678", **credential(f"tcr-abcd1234-{kind}")},
        }
        for kind, server in (("public", "demo.tencentcloudcr.com"), ("vpc", "demo-vpc.tencentcloudcr.com"))
    }
    secrets = [d for d in docs
               if d.get("kind") == "Secret" and d["metadata"]["name"] == "tcr-assistant-registry-credentials"]
    if mode == "password":
        (chart_secret,) = secrets
        assert {key: base64.b64decode(value).decode() for key, value in chart_secret["data"].items()} == {
            name: NASTY_PASSWORD for name in rendered}
    else:
        assert secrets == []

    (config,) = [d for d in docs if d.get("kind") == "ConfigMap" and d["metadata"]["name"] == "updater-config"]
    assert json.loads(config["data"]["config.json"]) == {"hosts": values["global"]["hosts"]}


def test_without_helm_the_wizard_says_what_to_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "bin").mkdir()
    monkeypatch.setenv("TCR_ADDON_CACHE", str(tmp_path))
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))
    result = run(BASE, stdin=NASTY_PASSWORD)
    assert result.status == 1
    assert result.stdout == ""
    (error,) = result.errors
    assert error.startswith(f"{PROG}: error: helm is not installed") and "run `make setup`" in error
    assert NASTY_PASSWORD.splitlines()[0] not in result.stderr


def test_the_values_file_for_helm_is_private_and_removed(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[tuple[Path, int, bool]] = []
    real_run = helm._run

    def spy(helm_binary: Path, values_file: str, *extra: str) -> subprocess.CompletedProcess[str]:
        path = Path(values_file)
        (cr,) = yaml.safe_load(path.read_text())["global"]["imagePullSecretsCrs"]
        seen.append((path, stat.S_IMODE(path.stat().st_mode), cr["dockerPassword"] == NASTY_PASSWORD))
        return real_run(helm_binary, values_file, *extra)

    monkeypatch.setattr(helm, "_run", spy)
    result = run(BASE, stdin=NASTY_PASSWORD)
    assert result.status == 0, result.stderr
    assert len(seen) == 1  # the options are checked once, with the password read: no API call to wait for
    for path, mode, holds_password in seen:
        assert mode == 0o600 and holds_password
        assert not path.exists()


@pytest.fixture
def strict_chart(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A copy of the chart whose values schema refuses the password and long registry domains."""
    chart = tmp_path / "chart"
    shutil.copytree(CHART, chart)
    schema = json.loads((chart / "values.schema.json").read_text())
    item = schema["properties"]["global"]["properties"]["imagePullSecretsCrs"]["items"]
    item["properties"]["dockerPassword"]["pattern"] = "^x$"
    item["properties"]["dockerServer"]["maxLength"] = 5
    (chart / "values.schema.json").write_text(json.dumps(schema))
    monkeypatch.setattr(helm, "CHART", chart)
    return chart


def test_a_schema_failure_reported_by_helm_names_the_option(strict_chart: Path) -> None:
    """The wizard's own schema check (--schema: the repository's chart) passes; helm's copy refuses."""
    result = run([*BASE, "--namespaces", "*,team-a"], stdin=NASTY_PASSWORD)
    assert result.status == 2, result.stderr
    assert result.stdout == ""
    by_option = {line.split(": ")[2]: line for line in result.errors}
    assert set(by_option) == {"--namespaces", "--password-stdin", "--registry"}, result.stderr
    assert "stand alone" in by_option["--namespaces"]  # the webhook's rules still ran on what helm rendered
    assert by_option["--password-stdin"].endswith(
        "does not match the chart's values schema at global/imagePullSecretsCrs/0/dockerPassword (helm template)")
    assert "refuses global/imagePullSecretsCrs/0/dockerServer (helm template): " in by_option["--registry"]
    for part in NASTY_PASSWORD.split():
        if len(part) >= 4:
            assert part not in result.stderr
    assert "Traceback" not in result.stderr


def test_a_chart_failure_names_the_option() -> None:
    """The chart's own `fail` (here: a ServiceAccount name too long) stops the rendering; it is still mapped."""
    result = run([*BASE, "--service-accounts", "a" * 300], stdin=NASTY_PASSWORD)
    assert result.status == 2, result.stderr
    (error,) = result.errors
    assert error.startswith(f"{PROG}: error: --service-accounts: the chart refuses "
                            "global.imagePullSecretsCrs[0].serviceAccounts: a ServiceAccount name has at most 253")
    assert NASTY_PASSWORD.splitlines()[0] not in result.stderr


def test_helm_is_found_where_make_setup_puts_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "bin").mkdir()
    fake = tmp_path / "bin" / "helm"
    fake.write_text("#!/bin/sh\nexit 0\n")
    fake.chmod(0o755)
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.setenv("TCR_ADDON_CACHE", str(tmp_path))
    monkeypatch.setenv("PATH", str(empty))  # no other helm anywhere on PATH
    assert helm.find_helm() == fake
    fake.chmod(0o644)  # not executable: not used
    with pytest.raises(Failure, match="make setup"):
        helm.find_helm()
