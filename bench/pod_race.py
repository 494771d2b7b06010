"""The Pod admission race, measured on the local node: ``PYTHONPATH=scripts .venv/bin/python -m bench.pod_race``.

A Pod copies its ServiceAccount's ``imagePullSecrets`` once, when it is admitted. GitOps tools
apply a Namespace and its Deployment together; the ReplicaSet's first Pods are admitted as soon
as the namespace's `default` ServiceAccount exists, which can be before the controller has
linked it. Such a Pod never gets the Secret.

Starts a local node (kubelet, containerd), installs the chart with real helm (one registry for
every namespace), then for each round applies one manifest, a Namespace and a Deployment of
``--replicas`` Pods, with one ``kubectl apply`` (rounds follow each other without waiting, as a
sync of many applications does). Once every Deployment's Pods exist, it counts the Pods admitted
without our entry. Writes ``bench/results/pod-race-<UTC time>.json`` and prints the rate.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from harness import REPO_ROOT, addon, cluster, node, oci, tools
from harness.polling import wait_for
from tcr_assistant.spec import api

RESULTS_DIR = REPO_ROOT / "bench" / "results"
IPS_NAME = "race"
SECRET = api.secret_name(IPS_NAME)
APP = "race-app"


def values(directory: Path) -> Path:
    path = directory / "values.yaml"
    path.write_text(yaml.safe_dump({"global": {"imagePullSecretsCrs": [{
        "name": IPS_NAME, "namespaces": "*", "serviceAccounts": "*", "type": "docker",
        "dockerServer": "race.tencentcloudcr.com", "dockerUsername": "100012345678", "dockerPassword": "pw"}]}}))
    return path


def manifest(namespace: str, replicas: int) -> str:
    """What an application's sync applies at once: its Namespace and its Deployment."""
    return yaml.safe_dump_all([
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}},
        {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": APP, "namespace": namespace},
         "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": APP}},
                  "template": {"metadata": {"labels": {"app": APP}},
                               "spec": {"terminationGracePeriodSeconds": 0,
                                        "containers": [{"name": "app", "image": oci.PAUSE_REF,
                                                        "imagePullPolicy": "Never"}]}}}},
    ])


def kubectl(kubeconfig: Path, *args: str, input_text: str | None = None) -> str:
    proc = subprocess.run([str(tools.bin_dir() / "kubectl"), f"--kubeconfig={kubeconfig}", *args],
                          input=input_text, capture_output=True, text=True, timeout=300, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"kubectl {' '.join(args[:3])}: {proc.stderr.strip()}")
    return proc.stdout


def race_pods(kubeconfig: Path) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = json.loads(kubectl(kubeconfig, "get", "pods", "-A", "-l", f"app={APP}",
                                                     "-o", "json"))["items"]
    return items


def measure(plane: node.NodeCluster, rounds: int, replicas: int, prefix: str) -> dict[str, Any]:
    kubeconfig = plane.kubeconfig
    namespaces = [f"{prefix}-{i:03d}" for i in range(rounds)]
    started = time.monotonic()
    for namespace in namespaces:
        kubectl(kubeconfig, "apply", "-f", "-", input_text=manifest(namespace, replicas))
    applied = time.monotonic() - started
    wait_for(lambda: len(race_pods(kubeconfig)) >= rounds * replicas, 300,
             what=f"{rounds * replicas} Pods admitted", interval=0.5)
    pods = race_pods(kubeconfig)
    missing = [f"{p['metadata']['namespace']}/{p['metadata']['name']}" for p in pods
               if SECRET not in [(e or {}).get("name") for e in p["spec"].get("imagePullSecrets") or []]]
    kubectl(kubeconfig, "delete", "namespace", *namespaces, "--wait=false")
    return {"rounds": rounds, "replicas": replicas, "pods": len(pods), "pods_without_entry": len(missing),
            "rate": round(len(missing) / len(pods), 4) if pods else None,
            "namespaces_with_a_miss": len({m.split("/")[0] for m in missing}),
            "apply_s": round(applied, 1), "missing": missing[:20]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.pod_race", description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=60, help="Namespace + Deployment manifests applied (default: 60)")
    parser.add_argument("--replicas", type=int, default=2, help="Pods per Deployment (default: 2)")
    parser.add_argument("--set", action="append", default=[], dest="set_values", metavar="KEY=VALUE",
                        help="a helm --set value for the add-on (repeatable)")
    parser.add_argument("--out", type=Path, help="results JSON (default: bench/results/pod-race-<UTC time>.json)")
    args = parser.parse_args(argv)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    out = args.out or RESULTS_DIR / f"pod-race-{stamp}.json"
    with tempfile.TemporaryDirectory(prefix="race-") as tmp, \
            cluster.running(Path(tmp) / "c", node.NodeCluster) as plane:
        assert isinstance(plane, node.NodeCluster)
        release = addon.NodeRelease(plane, values_files=[values(Path(tmp))], set_values=args.set_values)
        release.install()
        result = {"when": stamp, "set": args.set_values,
                  **measure(plane, args.rounds, args.replicas, f"race-{stamp[-7:-1].lower()}")}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"{result['pods_without_entry']} of {result['pods']} Pods ({result['rounds']} namespaces) admitted "
          f"without {SECRET}: rate {result['rate']}; {result['namespaces_with_a_miss']} namespaces with a miss")
    print(f"results: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
