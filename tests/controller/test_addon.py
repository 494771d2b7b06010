"""The controller as the chart runs it: installed by helm, `tcr-assistant run` as a host process with a
token of the chart's own ServiceAccount (so the chart's RBAC is what is exercised), then `check`
(helm test) and `cleanup` (pre-delete hook)."""

from __future__ import annotations

import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import yaml
from controller_support import K

from harness import addon, tools
from harness.cluster import ControlPlane
from support import wait_for
from tcr_assistant.spec import api

pytestmark = pytest.mark.compat


def _exe() -> list[str]:
    exe = Path(sys.executable).parent / "tcr-assistant"
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "tcr_assistant.cli"]


def test_chart_rbac_check_and_cleanup(k: K, control_plane: ControlPlane, tmp_path: Path) -> None:
    assert (tools.helm_path()).exists(), "helm is not built: run `make setup`"
    ns1, ns2 = k.create_namespace(), k.create_namespace()
    k.wait_default_sa(ns1)
    k.create_sa(ns1, "builder", pull=["users-own"])
    name = f"chart-{uuid.uuid4().hex[:6]}"
    values = tmp_path / "values.yaml"
    values.write_text(
        yaml.safe_dump(
            {
                "global": {
                    "imagePullSecretsCrs": [
                        {
                            "name": name,
                            "namespaces": f"{ns1}, {ns2}",
                            "serviceAccounts": "*",
                            "type": "docker",
                            "dockerServer": "chart.tencentcloudcr.com",
                            "dockerUsername": "100012345678",
                            "dockerPassword": "tcr.jwt.token",
                        }
                    ]
                }
            }
        )
    )
    secret = api.secret_name(name)
    with addon.running(control_plane, tmp_path / "addon", [values]) as running:
        wait_for(lambda: secret in k.pull_secrets(ns1), timeout=60, what="linked by the chart's controller")
        wait_for(lambda: secret in k.pull_secrets(ns1, "builder"), timeout=30)
        assert k.pull_secrets(ns1, "builder") == ["users-own", secret]
        assert k.secret(ns2, secret) is not None
        # helm test's command
        ok = subprocess.run(
            [*_exe(), "check", f"--kubeconfig={control_plane.kubeconfig}", f"--namespace={ns1}", "--timeout=30", name],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert ok.returncode == 0, ok.stderr
        bad = subprocess.run(
            [*_exe(), "check", f"--kubeconfig={control_plane.kubeconfig}", f"--namespace={ns1}", "--timeout=2", "nope"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert bad.returncode == 1 and "tcr.ipsnope" in bad.stderr
        # Before the uninstall takes the release's RBAC away while this host process still runs
        # (in a Pod the controller goes with it), the controller was never refused anything.
        before_uninstall = (running.directory / "controller.log").read_text(errors="replace")
        assert "Forbidden" not in before_uninstall, before_uninstall[-3000:]
        # the pre-delete hook's command, then helm uninstall
        running.cleanup_and_uninstall()
        assert k.ips(name) is None
        assert k.secret(ns1, secret) is None and k.secret(ns2, secret) is None
        assert k.pull_secrets(ns1, "builder") == ["users-own"]
        assert secret not in k.pull_secrets(ns1)
        log = (running.directory / "controller.log").read_text(errors="replace")
    assert "Traceback" not in log, log[-3000:]
    assert "tcr.jwt.token" not in log
