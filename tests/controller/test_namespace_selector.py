"""spec.namespaceSelector on the real API server: which namespaces are served, and how a label
added, changed or removed moves one namespace in or out, at a constant cost and without a re-list."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from controller_support import K, RunningController
from recording_kube import recorded
from test_requests import counted

from support import wait_for
from tcr_assistant.spec import api

pytestmark = pytest.mark.compat

DOCKER = {"server": "labels.tencentcloudcr.com", "username": "u", "password": "p"}


def served(k: K, namespaces: list[str], secret: str) -> set[str]:
    """Namespaces holding our Secret and with it on their `default` ServiceAccount."""
    return {ns for ns in namespaces if k.secret(ns, secret) is not None and secret in k.pull_secrets(ns)}


def status(k: K, name: str) -> dict[str, Any]:
    return dict((k.ips(name) or {}).get("status") or {})


def test_match_labels_and_every_operator_combined_with_names_and_exclusions(
    k: K, start_controller: Callable[..., RunningController], ips_cleanup: list[str]
) -> None:
    rc = start_controller(drift_period=3600.0)
    tag = uuid.uuid4().hex[:5]
    labels = {
        "a": {"team": "pay", "env": "prod"},
        "b": {"team": "pay", "env": "dev"},
        "c": {"team": "web", "env": "prod"},
        "d": {"team": "pay", "example.com/legacy": "yes"},
        "e": {},
    }
    names = {short: k.create_namespace(f"sel-{tag}-{short}", labels=lab) for short, lab in labels.items()}
    every = sorted(names.values())
    for ns in every:
        k.wait_default_sa(ns)
    listed = ",".join(every)  # also limits the NotIn/DoesNotExist cases to these namespaces
    cases = {
        "labels-and-in": ({"namespaces": listed, "namespaceSelector": {
            "matchLabels": {"team": "pay"},
            "matchExpressions": [{"key": "env", "operator": "In", "values": ["prod", "stage"]}]}}, {"a"}),
        "notin": ({"namespaces": listed, "namespaceSelector": {
            "matchExpressions": [{"key": "env", "operator": "NotIn", "values": ["dev"]}]}}, {"a", "c", "d", "e"}),
        "exists": ({"namespaces": listed, "namespaceSelector": {
            "matchExpressions": [{"key": "example.com/legacy", "operator": "Exists"}]}}, {"d"}),
        "doesnotexist-excluded": ({"namespaces": listed, "excludedNamespaces": names["e"], "namespaceSelector": {
            "matchExpressions": [{"key": "env", "operator": "DoesNotExist"}]}}, {"d"}),
        "names-and-labels": ({"namespaces": f"{names['a']},{names['b']}", "namespaceSelector": {
            "matchLabels": {"team": "pay"}}}, {"a", "b"}),
        "empty-selector": ({"namespaces": listed, "namespaceSelector": {}}, set(labels)),
    }
    for case, (spec, _) in cases.items():
        name = f"{case}-{tag}"
        ips_cleanup.append(name)
        k.create_ips(name, {"serviceAccounts": "*", "docker": DOCKER, **spec})
    for case, (_, expected) in cases.items():
        name = f"{case}-{tag}"
        want = {names[short] for short in expected}
        wait_for(lambda n=name, w=want: served(k, every, api.secret_name(n)) == w,  # type: ignore[misc]
                 timeout=30, what=f"{case}: exactly {sorted(expected)} served")
    rc.settle()
    for case, (_, expected) in cases.items():
        name = f"{case}-{tag}"
        assert served(k, every, api.secret_name(name)) == {names[short] for short in expected}, case
        wait_for(lambda n=name, e=expected: status(k, n).get("secretsDesired") == len(e),  # type: ignore[misc]
                 timeout=30, what=f"{case}: status counts {len(expected)} namespaces")


def test_a_label_added_changed_and_removed_moves_one_namespace_at_a_constant_cost(
    k: K, start_controller: Callable[..., RunningController], ips_cleanup: list[str]
) -> None:
    """Only our Secret and our entries come and go; a foreign entry and a foreign Secret stay.
    Each change costs a fixed handful of requests on that namespace and no LIST."""
    rc = start_controller(drift_period=3600.0)
    ns = k.create_namespace(labels={"unrelated": "x"})
    k.wait_default_sa(ns)
    k.create_sa(ns, "builder", pull=["users-own"])
    k.kube.request("POST", f"/api/v1/namespaces/{ns}/secrets", body={
        "apiVersion": "v1", "kind": "Secret", "metadata": {"name": "users-own"}, "type": "Opaque"})
    name = f"move-{uuid.uuid4().hex[:6]}"
    ips_cleanup.append(name)
    secret = api.secret_name(name)
    k.create_ips(name, {"namespaces": ns, "serviceAccounts": "*", "docker": DOCKER,
                        "namespaceSelector": {"matchLabels": {"team": "pay"}}})
    wait_for(lambda: name in rc.controller.state.plans, what="the plan")
    rc.settle()
    assert served(k, [ns], secret) == set()

    def change(labels: dict[str, str | None], in_scope: bool) -> dict[str, int]:
        with counted(rc.controller.kube) as delta:
            started = time.monotonic()
            k.label_namespace(ns, labels)
            wait_for(lambda: served(k, [ns], secret) == ({ns} if in_scope else set()), timeout=30, interval=0.01,
                     what=f"labels {labels}: served={in_scope}")
            took = time.monotonic() - started
            rc.settle()
        print(f"\nlabels {labels}: {'served' if in_scope else 'not served'} after {took:.3f} s, requests {dict(delta)}")
        assert k.pull_secrets(ns, "builder") == (["users-own", secret] if in_scope else ["users-own"])
        assert k.secret(ns, "users-own") is not None
        wait_for(lambda: status(k, name).get("secretsDesired") == (1 if in_scope else 0), timeout=30,
                 what="status counts follow")
        return dict(delta)

    added = change({"team": "pay"}, True)
    assert added == {"POST secrets": 1, "PATCH serviceaccounts": 2}
    changed = change({"team": "web"}, False)
    assert changed == {"GET secrets": 1, "DELETE secrets": 1, "PATCH serviceaccounts": 2}
    assert change({"team": "pay"}, True) == added
    assert change({"team": None}, False) == changed
    # A label no selector looks at costs nothing.
    with counted(rc.controller.kube) as delta:
        k.label_namespace(ns, {"unrelated": "y"})
        rc.settle()
    assert dict(delta) == {}
    lists = {key: n for key, n in recorded(rc.controller.kube).requests.items() if key.startswith("LIST")}
    assert all(n == 1 for n in lists.values()), f"a re-list happened: {lists}"
