"""No Pod misses its pull secret, on the real node: applications synced as a GitOps tool does,
each a Namespace and its Deployment in one `kubectl apply`, while the add-on runs in its Pods.

The ReplicaSet's first Pods are admitted as soon as the namespace's `default` ServiceAccount
exists, which can be before the controller links it; the Pod webhook (served by the controller's
Pods behind the webhook Service) gives those Pods the entry. Then the webhook is taken away (the
controller scaled to zero) and Pods are still created: `failurePolicy: Ignore`.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from harness import addon, node, oci
from support import kubectl, pointed_at, wait_for
from tcr_assistant.admission.podreview import ANNOTATION_ADDED
from tcr_assistant.spec import api

NAMESPACE = addon.NAMESPACE
IPS_NAME = "race"
SECRET = api.secret_name(IPS_NAME)
ROUNDS = 20
REPLICAS = 2


def app(namespace: str) -> str:
    return yaml.safe_dump_all([
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}},
        {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "app", "namespace": namespace},
         "spec": {"replicas": REPLICAS, "selector": {"matchLabels": {"app": "race"}},
                  "template": {"metadata": {"labels": {"app": "race"}},
                               "spec": {"terminationGracePeriodSeconds": 0,
                                        "containers": [{"name": "c", "image": oci.PAUSE_REF,
                                                        "imagePullPolicy": "Never"}]}}}},
    ])


def pods_in(namespaces: list[str]) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = json.loads(kubectl("get", "pods", "-A", "-l", "app=race", "-o", "json").stdout)[
        "items"]
    return [p for p in items if p["metadata"]["namespace"] in namespaces]


def entries(pod: dict[str, Any]) -> list[str]:
    return [str(e.get("name")) for e in pod["spec"].get("imagePullSecrets") or []]


@pytest.fixture(scope="module")
def release(node_cluster: node.NodeCluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[addon.NodeRelease]:
    values = Path(tmp_path_factory.mktemp("race")) / "values.yaml"
    values.write_text(yaml.safe_dump({"global": {"imagePullSecretsCrs": [{
        "name": IPS_NAME, "namespaces": "*", "serviceAccounts": "*", "type": "docker",
        "dockerServer": "race.tencentcloudcr.com", "dockerUsername": "100012345678", "dockerPassword": "pw"}]}}))
    with pointed_at(node_cluster):
        deployed = addon.NodeRelease(node_cluster, values_files=[values])
        deployed.install()
        try:
            yield deployed
        finally:
            deployed.uninstall()


def test_every_pod_of_namespaces_applied_with_their_deployment_gets_the_entry(release: addon.NodeRelease) -> None:
    tag = secrets.token_hex(3)
    namespaces = [f"race-{tag}-{i:02d}" for i in range(ROUNDS)]
    started = time.monotonic()
    for namespace in namespaces:
        kubectl("apply", "-f", "-", input_text=app(namespace))
    try:
        wait_for(lambda: len(pods_in(namespaces)) == ROUNDS * REPLICAS, timeout=180,
                 what=f"{ROUNDS * REPLICAS} Pods admitted")
        pods = pods_in(namespaces)
        without = [f"{p['metadata']['namespace']}/{p['metadata']['name']}" for p in pods if SECRET not in entries(p)]
        by_webhook = [p for p in pods if ANNOTATION_ADDED in (p["metadata"].get("annotations") or {})]
        print(f"\n[node] {len(pods)} Pods in {ROUNDS} namespaces applied with their Deployment in "
              f"{time.monotonic() - started:.1f} s: {len(without)} without {SECRET}, "
              f"{len(by_webhook)} given it by the Pod webhook")
        assert without == []
    finally:
        kubectl("delete", "namespace", *namespaces, "--wait=false")


def test_pods_are_created_while_the_webhook_is_down(release: addon.NodeRelease) -> None:
    deployment = "deploy/tcr-assistant-controller-manager"
    kubectl("-n", NAMESPACE, "scale", deployment, "--replicas=0")
    namespace = f"down-{secrets.token_hex(3)}"
    try:
        wait_for(lambda: not json.loads(kubectl("-n", NAMESPACE, "get", "pods", "-l",
                                                "app.kubernetes.io/component=controller", "-o", "json").stdout)[
            "items"], timeout=60, what="no controller Pod left")
        kubectl("create", "namespace", namespace)
        wait_for(lambda: kubectl("-n", namespace, "get", "serviceaccount", "default", check=False).returncode == 0,
                 timeout=60, what="ServiceAccount default")
        started = time.monotonic()
        kubectl("-n", namespace, "run", "while-down", f"--image={oci.PAUSE_REF}", "--image-pull-policy=Never",
                "--restart=Never")
        took = time.monotonic() - started
        print(f"\n[node] Pod created with no webhook Pod behind the Service in {took:.2f} s")
        assert kubectl("-n", namespace, "get", "pod", "while-down", "-o", "name").stdout.strip() == "pod/while-down"
    finally:
        kubectl("delete", "namespace", namespace, "--ignore-not-found", "--wait=false")
        kubectl("-n", NAMESPACE, "scale", deployment, "--replicas=1")
        kubectl("-n", NAMESPACE, "rollout", "status", deployment, "--timeout=180s")
