"""`make demo`: see the add-on work on a machine without any cluster.

Starts a local control plane, writes values with the values wizard, installs the chart, runs the
controller and webhook as host processes, creates a few namespaces and ServiceAccounts, waits
until every desired Secret is distributed, and prints `kubectl get ipss` and one linked
ServiceAccount. Everything keeps running afterwards so you can poke at it.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from harness import REPO_ROOT, tools
from harness.addon import DEFAULT_DIR as ADDON_DIR
from harness.addon import Addon, AddonError
from harness.cluster import DEFAULT_DIR as CLUSTER_DIR
from harness.cluster import ClusterError, ControlPlane
from harness.polling import wait_for

DEMO_NAMESPACES = ("team-a", "team-b", "team-c")
DEMO_PASSWORD = "demo-token-not-a-real-secret"


def kubectl(plane: ControlPlane, *args: str, input_text: str | None = None) -> str:
    proc = subprocess.run([str(tools.bin_dir() / "kubectl"), f"--kubeconfig={plane.kubeconfig}", *args],
                          input=input_text, capture_output=True, text=True, timeout=60)
    if proc.returncode != 0:
        raise AddonError(f"kubectl {' '.join(args)}: {proc.stderr.strip()}")
    return proc.stdout


def write_values(path: Path) -> None:
    """Values in the TKE add-on's shape, written by the wizard (password through stdin)."""
    proc = subprocess.run(
        [sys.executable, str(REPO_ROOT / "scripts" / "values"),
         "--registry", "demo-instance.tencentcloudcr.com", "--name", "imagepullsecret-sample",
         "--username", "100012345678", "--password-stdin", "-o", str(path)],
        input=DEMO_PASSWORD, capture_output=True, text=True, timeout=60,
    )
    if proc.returncode != 0:
        raise AddonError(f"scripts/values failed: {proc.stderr.strip()}")


def wait_synced(plane: ControlPlane, addon: Addon, timeout: float = 60) -> dict[str, object]:
    """Until every ImagePullSecret reports all its Secrets and ServiceAccounts done (the first one's
    status); fails at once when the controller that does the work exits."""
    statuses: list[dict[str, object]] = []

    def synced() -> dict[str, object] | None:
        items = json.loads(kubectl(plane, "get", "ipss", "-o", "json"))["items"]
        statuses[:] = [item.get("status") or {} for item in items]
        if items and all(s.get("secretsDesired") and s.get("secretsDesired") == s.get("secretsSuccess")
                         and s.get("sAsDesired") == s.get("sAsSuccess") for s in statuses):
            return statuses[0]
        return None

    return wait_for(synced, timeout, 0.2, what="the ImagePullSecrets synced", process=addon.process,
                    name="tcr-assistant", log=addon.controller_log, error=AddonError,
                    timeout_message=lambda: f"ImagePullSecrets not synced within {timeout:.0f} s: {statuses}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="make demo", description=__doc__.splitlines()[0] if __doc__ else None)
    parser.parse_args(argv)
    started = time.monotonic()
    try:
        if (CLUSTER_DIR / "state.json").exists():
            raise AddonError("a demo (or 'scripts/cluster up') is already running: 'make demo-down' first")
        print("[demo] starting a local control plane (etcd, kube-apiserver, kube-controller-manager) …", flush=True)
        plane = ControlPlane(CLUSTER_DIR)
        plane.up()
        ADDON_DIR.mkdir(parents=True, exist_ok=True)
        values = ADDON_DIR / "demo-values.yaml"
        print("[demo] writing values with scripts/values …", flush=True)
        write_values(values)
        print("[demo] helm install tcr-addon ./chart, then tcr-assistant as a host process …", flush=True)
        addon = Addon(plane, ADDON_DIR, [values])
        addon.install()
        addon.start_controller()
        print(f"[demo] creating namespaces {', '.join(DEMO_NAMESPACES)} and ServiceAccount 'builder' in each …",
              flush=True)
        for namespace in DEMO_NAMESPACES:
            kubectl(plane, "create", "namespace", namespace)
            kubectl(plane, "-n", namespace, "create", "serviceaccount", "builder")
        wait_synced(plane, addon)
        print(f"[demo] ready in {time.monotonic() - started:.1f} s\n")
        print("$ kubectl get ipss")
        print(kubectl(plane, "get", "ipss"))
        print("$ kubectl -n team-a get serviceaccount default -o yaml")
        print(kubectl(plane, "-n", "team-a", "get", "serviceaccount", "default", "-o", "yaml"))
        print(f"""Poke at it:
  eval "$(scripts/cluster env)"
  kubectl describe ipss imagepullsecret-sample
  kubectl create namespace team-d && kubectl -n team-d get serviceaccount default -o yaml
  kubectl apply -f - <<<'{{"apiVersion": "tcr.tencentcloudcr.com/v1", "kind": "ImagePullSecret",
    "metadata": {{"name": "bad"}}, "spec": {{"docker": {{"server": "https://x", "username": "u", "password": "p"}}}}}}'
    (refused by the webhook)
  controller log: {ADDON_DIR / 'controller.log'}
Stop it: make demo-down""")
    except (AddonError, ClusterError) as error:
        print(f"make demo: error: {error}", file=sys.stderr)
        return 1
    return 0


def down() -> int:
    """`make demo-down`: uninstall (cleanup hook command + helm uninstall), stop the controller and the plane."""
    try:
        plane = ControlPlane.attach(CLUSTER_DIR)
        addon = Addon(plane, ADDON_DIR)
        if (ADDON_DIR / "state.json").exists():
            addon.cleanup_and_uninstall()
            addon.stop_controller()
    except (AddonError, ClusterError) as error:
        print(f"make demo-down: {error}", file=sys.stderr)
    ControlPlane(CLUSTER_DIR).down()
    print("demo stopped")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(down() if sys.argv[1:] == ["down"] else main(sys.argv[1:]))
