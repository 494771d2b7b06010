"""A Pod admitted in a served namespace asks for a read of our Secrets there: when the Pod
webhook asks (pure, from a hand-built cache), and how often a namespace may be read."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from tcr_assistant.admission.pods import PodWebhook
from tcr_assistant.reconciler.observed import NamespaceInfo, service_account_info
from tcr_assistant.reconciler.pacing import Pacing
from tcr_assistant.reconciler.state import ControllerState
from tcr_assistant.spec import api

OURS = api.secret_name("reg")


def cache() -> ControllerState:
    """"reg" serves team-a only; team-b is known and not served. Both `default` accounts are linked
    already, so no Pod gets an entry (and no Event is recorded)."""
    ips = {"metadata": {"name": "reg"}, "spec": {"namespaces": "team-a", "serviceAccounts": "*", "docker": {
        "server": "r.example.com", "username": "u", "password": "p"}}}
    return ControllerState(
        image_pull_secrets={"reg": ips},
        namespaces={ns: NamespaceInfo(ns) for ns in ("team-a", "team-b")},
        service_accounts={ns: {"default": service_account_info({
            "metadata": {"namespace": ns, "name": "default"}, "imagePullSecrets": [{"name": OURS}]})}
            for ns in ("team-a", "team-b")})


def review(namespace: str, dry_run: bool = False) -> bytes:
    pod = {"metadata": {"namespace": namespace}, "spec": {"containers": [{"name": "c", "image": "x"}],
                                                          "imagePullSecrets": [{"name": OURS}]}}
    return json.dumps({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {
        "uid": "u1", "kind": {"group": "", "version": "v1", "kind": "Pod"}, "operation": "CREATE",
        "namespace": namespace, "object": pod, "dryRun": dry_run,
        "userInfo": {"username": "system:serviceaccount:kube-system:replicaset-controller"}}}).encode()


@pytest.fixture
def asked() -> list[str]:
    return []


@pytest.fixture
def webhook(asked: list[str]) -> Iterator[PodWebhook]:
    hook = PodWebhook(cache(), kube=None, on_served=asked.append)  # type: ignore[arg-type]  # nothing is read
    yield hook
    hook.stop()


def test_a_pod_in_a_served_namespace_asks_even_when_it_gets_nothing(webhook: PodWebhook, asked: list[str]) -> None:
    status, answer = webhook.handle(review("team-a"), 1 << 20)
    assert status == 200 and answer["response"]["allowed"] and "patch" not in answer["response"]
    assert asked == ["team-a"]


@pytest.mark.parametrize(("namespace", "dry_run"), [("team-b", False), ("team-a", True)],
                         ids=["namespace not served", "dry run"])
def test_no_read_is_asked_for(webhook: PodWebhook, asked: list[str], namespace: str, dry_run: bool) -> None:
    status, _ = webhook.handle(review(namespace, dry_run), 1 << 20)
    assert status == 200 and asked == []


def test_a_failing_ask_leaves_the_answer_as_it_was(asked: list[str]) -> None:
    def fail(namespace: str) -> None:
        raise RuntimeError("queue gone")

    quiet = PodWebhook(cache(), kube=None)  # type: ignore[arg-type]
    failing = PodWebhook(cache(), kube=None, on_served=fail)  # type: ignore[arg-type]
    try:
        assert failing.handle(review("team-a"), 1 << 20) == quiet.handle(review("team-a"), 1 << 20)
    finally:
        quiet.stop()
        failing.stop()


def test_one_read_per_namespace_per_interval_and_an_ask_within_it_waits_for_its_end() -> None:
    checks = Pacing(interval=10.0)
    assert checks.delay("a", now=100.0) == 0.0  # never read: now
    checks.started("a", now=100.0)
    assert checks.delay("a", now=100.0) == 10.0
    assert checks.delay("a", now=104.5) == 5.5
    assert checks.delay("a", now=110.0) == 0.0
    assert checks.delay("b", now=104.5) == 0.0  # each namespace on its own


def test_namespaces_read_long_ago_are_forgotten_past_the_bound() -> None:
    checks = Pacing(interval=10.0)
    for i in range(Pacing.PRUNE_ABOVE):
        checks.started(f"old-{i}", now=0.0)
    checks.started("recent", now=50.0)  # one over the bound: those read over an interval ago go
    checks.started("new", now=55.0)
    assert len(checks._started_at) == 2
    assert checks.delay("recent", now=55.0) == 5.0
    assert checks.delay("old-1", now=55.0) == 0.0
