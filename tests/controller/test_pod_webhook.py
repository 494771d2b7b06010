"""The Pod webhook on the real API server (no node: Pods are admitted and stay Pending, which is
all admission needs). The chart is installed by helm; `tcr-assistant run` serves both webhooks
as a host process with the chart's ServiceAccount token, reached at https://localhost:PORT."""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml
from controller_support import K, admission_checks

from harness import addon
from harness.cluster import ControlPlane
from support import kubectl, pointed_at, wait_for
from tcr_assistant.admission.podreview import ANNOTATION_ADDED
from tcr_assistant.k8s.client import SECRETS, KubeError
from tcr_assistant.reconciler import drift
from tcr_assistant.spec import api

pytestmark = pytest.mark.compat

NAME = "podhook"
SECRET = api.secret_name(NAME)


def values(directory: Path, excluded: str) -> Path:
    path = directory / "values.yaml"
    path.write_text(yaml.safe_dump({"global": {"imagePullSecretsCrs": [{
        "name": NAME, "namespaces": "*", "serviceAccounts": "*", "excludedNamespaces": excluded, "type": "docker",
        "dockerServer": "pods.tencentcloudcr.com", "dockerUsername": "100012345678", "dockerPassword": "pw"}]}}))
    return path


def bare_pod(name: str, pull: list[str] | None = None, annotations: dict[str, str] | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {"containers": [{"name": "c", "image": "pods.tencentcloudcr.com/app:1"}]}
    if pull:
        spec["imagePullSecrets"] = [{"name": n} for n in pull]
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "annotations": annotations or {}},
            "spec": spec}


def create_pod(k: K, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
    return k.kube.request("POST", f"/api/v1/namespaces/{namespace}/pods", body=body)


def create_pod_when_allowed(k: K, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
    """Retry while admission refuses the Pod because its ServiceAccount does not exist yet."""
    deadline = time.monotonic() + 30
    while True:
        try:
            return create_pod(k, namespace, body)
        except KubeError as exc:
            if exc.status != 403 or "serviceaccount" not in exc.message.lower() or time.monotonic() > deadline:
                raise


def entries(pod: dict[str, Any]) -> list[str]:
    return [str(e.get("name")) for e in pod["spec"].get("imagePullSecrets") or []]


def test_pods_admitted_before_the_link_get_the_entry_and_nothing_else_is_touched(
        k: K, control_plane: ControlPlane, tmp_path: Path) -> None:
    excluded = k.create_namespace()
    with addon.running(control_plane, tmp_path / "addon", [values(tmp_path, excluded)]) as running, \
            pointed_at(control_plane):
        # The race at its sharpest: each namespace's Pods created the instant its `default`
        # ServiceAccount exists (admission refuses them until then), as a ReplicaSet does.
        tag = uuid.uuid4().hex[:5]
        pods: list[dict[str, Any]] = []
        for i in range(20):
            namespace = k.create_namespace(f"race-{tag}-{i:02d}")
            pods.append(create_pod_when_allowed(k, namespace, bare_pod("first")))
            pods.append(create_pod(k, namespace, bare_pod("second")))
        without = [p["metadata"]["namespace"] for p in pods if SECRET not in entries(p)]
        by_webhook = [p for p in pods if ANNOTATION_ADDED in (p["metadata"].get("annotations") or {})]
        print(f"\n[pod webhook] {len(pods)} Pods created as soon as their namespace's `default` existed: "
              f"{len(without)} without {SECRET}, {len(by_webhook)} given it by the webhook")
        assert without == []
        ns = pods[0]["metadata"]["namespace"]

        # Deterministic: our entry taken off `default` by hand (the controller waits a second
        # before putting it back), a Pod created at once: the webhook adds it, says so, and records why.
        k.patch_sa(ns, "default", {"imagePullSecrets": None})
        pod = create_pod(k, ns, bare_pod("late"))
        assert entries(pod) == [SECRET]
        assert pod["metadata"]["annotations"][ANNOTATION_ADDED] == SECRET
        wait_for(lambda: any(e["reason"] == "PullSecretAddedToPod" and e["involvedObject"]["name"] == "default"
                             for e in json.loads(kubectl("-n", ns, "get", "events", "-o", "json").stdout)["items"]),
                 timeout=30, what="an Event on the ServiceAccount saying why")

        # Never surprising: a Pod with its own entries, an opted-out Pod, a Pod in an excluded namespace.
        k.patch_sa(ns, "default", {"imagePullSecrets": None})
        assert entries(create_pod(k, ns, bare_pod("own", pull=["users-own"]))) == ["users-own"]
        opted = create_pod(k, ns, bare_pod("opted", annotations={f"{api.GROUP}/opt-out": "true"}))
        assert entries(opted) == [] and ANNOTATION_ADDED not in opted["metadata"]["annotations"]
        k.wait_default_sa(excluded)
        assert entries(create_pod(k, excluded, bare_pod("elsewhere"))) == []

        # The webhook down (the controller stopped): Pods are still admitted, unchanged.
        running.stop_controller()
        started = time.monotonic()
        down = create_pod(k, ns, bare_pod("while-down"))
        print(f"[pod webhook] Pod created with the webhook down in {time.monotonic() - started:.3f} s")
        assert down["metadata"]["name"] == "while-down"
        running.start_controller()
        log = (running.directory / "controller.log").read_text(errors="replace")
        running.cleanup_and_uninstall()  # the validating webhook (failurePolicy Fail) goes with it
    assert "Traceback" not in log, log[-3000:]


def test_a_secret_deleted_by_hand_is_back_when_the_next_pod_is_admitted(
        k: K, control_plane: ControlPlane, tmp_path: Path) -> None:
    with addon.running(control_plane, tmp_path / "addon", [values(tmp_path, "")]) as running, \
            pointed_at(control_plane):
        # The periodic check (default drift mode "poll", every 1200 s) starts its pass once it
        # has something to check, at most 10 s after start-up, with the Secrets known then. A
        # namespace created after that is not read by it for 1200 s: only a Pod can bring its
        # Secret back sooner.
        time.sleep(drift.IDLE_RECHECK + 2)
        ns = k.create_namespace()
        wait_for(lambda: SECRET in k.pull_secrets(ns), timeout=30, what=f"default in {ns} linked")
        k.kube.delete(SECRETS.path(ns, SECRET))
        time.sleep(3)
        assert k.secret(ns, SECRET) is None, "the control: nothing else puts it back in this window"
        before = admission_checks(running.metrics_url)

        started = time.monotonic()
        create_pod(k, ns, bare_pod("after-delete"))
        wait_for(lambda: k.secret(ns, SECRET) is not None, timeout=10, interval=0.05,
                 what="the Secret back after a Pod was admitted")
        print(f"\n[pod webhook] deleted Secret back {time.monotonic() - started:.3f} s after a Pod's create")

        assert admission_checks(running.metrics_url) == {**before, "repaired": before.get("repaired", 0) + 1}

        # Switched off: a Pod brings nothing back.
        running.stop_controller()
        running.extra_args = ["--drift-check-on-pod=0"]
        running.start_controller()
        time.sleep(drift.IDLE_RECHECK + 2)
        other = k.create_namespace()
        wait_for(lambda: SECRET in k.pull_secrets(other), timeout=30, what=f"default in {other} linked")
        k.kube.delete(SECRETS.path(other, SECRET))
        create_pod(k, other, bare_pod("switched-off"))
        time.sleep(3)
        assert k.secret(other, SECRET) is None
        assert admission_checks(running.metrics_url) == {}
        log = (running.directory / "controller.log").read_text(errors="replace")
        running.cleanup_and_uninstall()
    assert "Traceback" not in log, log[-3000:]
