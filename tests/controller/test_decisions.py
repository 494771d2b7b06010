"""The controller's decisions as pure functions: plans, a namespace's Secret actions, a
ServiceAccount's entries, the relink backoff, the status counts (no API server)."""

from __future__ import annotations

import base64
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from tcr_assistant.reconciler import decisions as reconcile
from tcr_assistant.reconciler import status
from tcr_assistant.reconciler.decisions import ABSENT, EnsureSecret, RemoveSecret, SecretStep
from tcr_assistant.reconciler.observed import (
    NamespaceInfo,
    ServiceAccountInfo,
    distributed_secret_info,
    removed_pull_secrets,
    spec_or_metadata_changed,
)
from tcr_assistant.reconciler.state import ControllerState
from tcr_assistant.spec import api

GOOD = {"server": "r.example.com", "username": "u", "password": "p"}


def plan(name: str = "a", namespaces: str = "*", deleting: bool = False, **docker: Any) -> reconcile.Plan:
    meta: dict[str, Any] = {"name": name}
    if deleting:
        meta["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    return reconcile.plan_for({"metadata": meta, "spec": {"namespaces": namespaces, "docker": {**GOOD, **docker}}},
                              lambda _: None)


def test_plan_refuses_invalid_spec_and_keeps_entries() -> None:
    """A spec the webhook would reject (had it got past it) is not applied, and the entries made
    earlier are left alone (not "managed") instead of being torn down."""
    invalid = plan(namespaces="a,,b")
    assert invalid.problem is not None and invalid.problem[0] == "InvalidSpec"
    assert not invalid.active and not invalid.managed
    missing = plan(password=None, passwordSecretRef={"name": "s"})
    assert missing.problem is not None and missing.problem[0] == "CredentialsUnavailable"
    assert not missing.active and not missing.managed  # a missing credential Secret never unlinks anything
    deleting = plan(deleting=True)
    assert deleting.deleting and deleting.managed and not deleting.active
    good = plan()
    assert good.active and good.problem is None and good.fingerprint


def test_plan_reads_the_referenced_secret() -> None:
    spec = {"namespaces": "*", "docker": {"server": "r.example.com", "username": "u",
                                          "passwordSecretRef": {"name": "creds"}}}
    data = {"creds": {api.DEFAULT_PASSWORD_KEY: base64.b64encode(b"s3cret").decode()}}
    got = reconcile.plan_for({"metadata": {"name": "a"}, "spec": spec}, data.get)
    assert got.active and got.creds is not None and got.creds.password == "s3cret"
    assert reconcile.credential_secret_keys("a", spec) == {"creds"}
    assert reconcile.credential_secret_keys("a", {"docker": GOOD}) == set()
    minted = {"docker": {"server": "r.example.com", "tokenFrom": {"tcr": {
        "instanceId": "tcr-abcd1234", "region": "ap-guangzhou", "apiKeySecretRef": {"name": "api-key"}}}}}
    assert reconcile.credential_secret_keys("a", minted) == {"api-key", "minted/tcr.toka"}
    # the minted token is read only under its own key: never as the Secret's plain name
    token = {k: base64.b64encode(v.encode()).decode() for k, v in
             {"username": "u1", "password": "tok", "issuedAt": "1", "source": "x"}.items()}
    assert reconcile.plan_for({"metadata": {"name": "a"}, "spec": minted}, {"tcr.toka": token}.get).creds is None
    got = reconcile.plan_for({"metadata": {"name": "a"}, "spec": minted}, {"minted/tcr.toka": token}.get)
    assert got.creds is not None and (got.creds.username, got.creds.password) == ("u1", "tok")


def test_namespace_actions_write_only_what_is_not_known_up_to_date() -> None:
    a, b = plan("a"), plan("b", namespaces="other")
    ns = NamespaceInfo("team")
    # after start-up: create without a read; b's Secret is not known to exist here: nothing
    actions = reconcile.namespace_secret_actions(ns, [a, b], {}, resync=False)
    assert [type(x) for x in actions] == [EnsureSecret]
    ensure = actions[0]
    assert isinstance(ensure, EnsureSecret) and ensure.create_first
    assert ensure.desired["metadata"] == {"name": "tcr.ipsa", "namespace": "team",
                                          "labels": reconcile.secret_labels("a")}
    # the first check after start-up: read first, and look for b's Secret (it may be left over)
    resync = reconcile.namespace_secret_actions(ns, [a, b], {}, resync=True)
    assert [type(x) for x in resync] == [EnsureSecret, RemoveSecret]
    assert isinstance(resync[0], EnsureSecret) and not resync[0].create_first
    # known: nothing to do, not even a read
    assert reconcile.namespace_secret_actions(ns, [a, b], {"a": a.fingerprint, "b": ABSENT}, True) == []
    # b's Secret known to be there (b's scope changed): removed
    known = reconcile.namespace_secret_actions(ns, [a, b], {"a": a.fingerprint, "b": b.fingerprint}, False)
    assert [type(x) for x in known] == [RemoveSecret]
    # a changed password: a new fingerprint, so the Secret is written again (read first: it exists)
    rotated = plan("a", password="new")
    again = reconcile.namespace_secret_actions(ns, [rotated], {"a": a.fingerprint}, resync=False)
    assert len(again) == 1 and isinstance(again[0], EnsureSecret) and not again[0].create_first
    # known absent (we removed it, or the drift check saw it deleted): create without a read
    absent = reconcile.namespace_secret_actions(ns, [a], {"a": ABSENT}, resync=False)
    assert isinstance(absent[0], EnsureSecret) and absent[0].create_first
    # terminating, opted-out or unknown namespaces
    assert reconcile.namespace_secret_actions(NamespaceInfo("team", terminating=True), [a], {}, True) == []
    assert reconcile.namespace_secret_actions(None, [a], {}, True) == []
    out = reconcile.namespace_secret_actions(NamespaceInfo("team", opt_out=True), [a], {"a": a.fingerprint}, False)
    assert [type(x) for x in out] == [RemoveSecret]


def test_namespace_actions_never_remove_for_an_invalid_plan() -> None:
    invalid = plan(namespaces="a,,b")
    assert reconcile.namespace_secret_actions(NamespaceInfo("x"), [invalid], {}, resync=True) == []


def test_secret_step() -> None:
    creds = reconcile.Credentials("r.example.com", "u", "p")
    desired = reconcile.desired_secret("a", "ns", creds)
    assert reconcile.secret_step(None, desired) is SecretStep.CREATE
    assert reconcile.secret_step(desired, desired) is SecretStep.UNCHANGED
    assert reconcile.secret_step({**desired, "data": {}}, desired) is SecretStep.UPDATE
    assert reconcile.secret_step({**desired, "type": "Opaque"}, desired) is SecretStep.REPLACE


def test_wanted_entries_only_for_secrets_that_exist() -> None:
    a, b = plan("a"), plan("b", namespaces="other")
    ns = NamespaceInfo("team")
    sa = ServiceAccountInfo("team", "default")
    assert reconcile.wanted_entries([a, b], ns, sa, {}) == (set(), {"tcr.ipsa", "tcr.ipsb"})
    assert reconcile.wanted_entries([a, b], ns, sa, {"a": ABSENT}) == (set(), {"tcr.ipsa", "tcr.ipsb"})
    assert reconcile.wanted_entries([a, b], ns, sa, {"a": a.fingerprint}) == ({"tcr.ipsa"}, {"tcr.ipsa", "tcr.ipsb"})
    opted = ServiceAccountInfo("team", "default", opt_out=True)
    assert reconcile.wanted_entries([a], ns, opted, {"a": a.fingerprint})[0] == set()


def test_relink_due_doubles_for_removals_in_a_row() -> None:
    assert reconcile.relink_due([], 1.0) == 0.0
    assert reconcile.relink_due([100.0], 1.0) == 101.0
    assert reconcile.relink_due([100.0, 110.0], 1.0) == 112.0
    assert reconcile.relink_due([100.0, 110.0, 120.0], 1.0) == 124.0
    # a long quiet spell starts again from the base delay
    assert reconcile.relink_due([100.0, 110.0, 110.0 + reconcile.RELINK_RESET_SECONDS], 1.0) == 711.0


@given(st.lists(st.floats(0, 1e6), max_size=30).map(sorted), st.floats(0.01, 10))
def test_relink_due_is_bounded(removals: list[float], base: float) -> None:
    due = reconcile.relink_due(removals, base)
    if removals:
        assert removals[-1] + min(base, reconcile.RELINK_MAX_DELAY) <= due <= removals[-1] + reconcile.RELINK_MAX_DELAY


def test_removals_of_entries_we_no_longer_want_leave_no_backoff() -> None:
    state = ControllerState()
    key = ("team", "default")
    state.record_removals(key, frozenset({"tcr.ipsa"}), 100.0)
    state.consume_removals(key, drifted={"tcr.ipsa"})  # someone else removed a wanted entry
    assert state.sa_removals[key].times == [100.0] and not state.sa_removals[key].names
    state.record_removals(key, frozenset({"tcr.ipsb"}), 105.0)
    state.consume_removals(key, drifted=set())  # our own clean-up
    assert state.sa_removals[key].times == [100.0]
    state.record_removals(key, frozenset({"tcr.ipsb"}), 106.0)
    state.record_removals(key, frozenset(), 107.0)  # nothing of ours removed: not recorded
    assert state.sa_removals[key].times == [100.0, 106.0]


def test_observed_changes() -> None:
    old = ServiceAccountInfo("n", "s", ("mine", "tcr.ipsa", "tcr.ipsb"))
    new = ServiceAccountInfo("n", "s", ("mine", "tcr.ipsb"))
    assert removed_pull_secrets(old, new) == {"tcr.ipsa"}
    assert removed_pull_secrets(None, new) == frozenset()
    assert removed_pull_secrets(ServiceAccountInfo("n", "s", ("foreign",)), new) == frozenset()
    ips = {"metadata": {"name": "a", "resourceVersion": "1"}, "spec": {"namespaces": "*"}, "status": {}}
    assert not spec_or_metadata_changed(ips, {**ips, "metadata": {"name": "a", "resourceVersion": "2"},
                                              "status": {"secretsDesired": 1}})
    assert spec_or_metadata_changed(ips, {**ips, "spec": {"namespaces": "x"}})
    assert spec_or_metadata_changed(None, ips) and spec_or_metadata_changed(ips, None)


def test_status_counts_and_unchecked_namespaces() -> None:
    a = plan("a", namespaces="n1,n2,gone")
    namespaces = [NamespaceInfo("n1"), NamespaceInfo("n2"), NamespaceInfo("n3")]
    accounts = {
        "n1": {"default": ServiceAccountInfo("n1", "default", ("tcr.ipsa",)),
               "out": ServiceAccountInfo("n1", "out", opt_out=True)},
        "n2": {"default": ServiceAccountInfo("n2", "default")},
    }
    records = {("n1", "a"): a.fingerprint}
    assert status.unchecked_namespaces(a, namespaces, records)
    assert status.count(a, namespaces, accounts, records) == status.Counts(2, 1, 2, 1)
    records[("n2", "a")] = "an older fingerprint"
    assert not status.unchecked_namespaces(a, namespaces, records)
    assert status.count(a, namespaces, accounts, records) == status.Counts(2, 1, 2, 1)
    assert not status.unchecked_namespaces(plan("b", namespaces="a,,b"), namespaces, {})  # invalid: nothing to wait for
    assert status.status_wait(10.0, 20.0, settle_limit=30.0)
    assert not status.status_wait(10.0, 40.0, settle_limit=30.0)


def test_the_drift_watch_fingerprint_matches_the_plan() -> None:
    """Watch mode compares the fingerprint of a watched Secret with the plan's: an untouched
    Secret (foreign labels and annotations allowed) must match, an edited one must not."""
    good = plan("a")
    assert good.creds is not None
    secret = reconcile.desired_secret("a", "team", good.creds)
    secret["metadata"] = {**secret["metadata"], "labels": {**secret["metadata"]["labels"], "team": "x"},
                          "annotations": {"note": "y"}, "resourceVersion": "7"}
    seen = distributed_secret_info(secret)
    assert (seen.namespace, seen.name, seen.image_pull_secret) == ("team", "tcr.ipsa", "a")
    assert seen.fingerprint == good.fingerprint
    edited = {**secret, "data": {api.SECRET_KEY: base64.b64encode(b"{}").decode()}}
    assert distributed_secret_info(edited).fingerprint != good.fingerprint
