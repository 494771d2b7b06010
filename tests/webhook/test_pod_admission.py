"""The Pod webhook's pure decision: which Pods get our entries, and the patch that adds them."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tcr_assistant.admission.podreview import (
    ANNOTATION_ADDED,
    ANNOTATIONS_LIMIT_BYTES,
    PodFacts,
    entries_to_add,
    patch_for,
    pod_facts,
    review_response,
    too_large_warning,
)
from tcr_assistant.reconciler.observed import ServiceAccountInfo, service_account_info

OURS = "tcr.ipsreg"


def request(pod: dict[str, Any], operation: str = "CREATE", dry_run: bool = False,
            user: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"uid": "u1", "kind": {"group": "", "version": "v1", "kind": "Pod"}, "operation": operation,
            "namespace": "team-a", "object": pod, "dryRun": dry_run,
            "userInfo": user or {"username": "system:serviceaccount:kube-system:replicaset-controller",
                                 "groups": ["system:serviceaccounts", "system:authenticated"]}}


def account(entries: list[str] | None) -> ServiceAccountInfo | None:
    """The account as the controller caches it (None: not cached)."""
    if entries is None:
        return None
    return service_account_info({"metadata": {"namespace": "team-a", "name": "default"},
                                 "imagePullSecrets": [{"name": n} for n in entries]})


def pod(pull: list[str] | None = None, annotations: dict[str, str] | None = None,
        service_account: str | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {"containers": [{"name": "c", "image": "x"}]}
    if pull is not None:
        spec["imagePullSecrets"] = [{"name": n} for n in pull]
    if service_account:
        spec["serviceAccountName"] = service_account
    meta: dict[str, Any] = {"generateName": "web-5d8f-", "namespace": "team-a",
                            "ownerReferences": [{"kind": "ReplicaSet", "name": "web-5d8f"}]}
    if annotations:
        meta["annotations"] = annotations
    return {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": spec}


def apply_patch(doc: dict[str, Any], ops: list[dict[str, Any]]) -> dict[str, Any]:
    """A JSON patch of "add" operations, as the API server applies it."""
    doc = json.loads(json.dumps(doc))
    for op in ops:
        assert op["op"] == "add"
        *parents, last = [p.replace("~1", "/").replace("~0", "~") for p in op["path"].split("/")[1:]]
        target: Any = doc
        for part in parents:
            target = target[part]
        if last == "-":
            target.append(op["value"])
        else:
            target[last] = op["value"]
    return doc


def test_facts_of_a_pod_create() -> None:
    facts = pod_facts(request(pod(["a"], service_account="builder")))
    assert facts == PodFacts(namespace="team-a", service_account="builder", pull_secrets=("a",), opted_out=False,
                             has_annotations=False, owner="ReplicaSet web-5d8f", dry_run=False, mirror=False,
                             by_node=False, other_annotation_bytes=0)
    assert pod_facts(request(pod())).service_account == "default"  # type: ignore[union-attr]
    assert pod_facts(request(pod(), operation="UPDATE")) is None
    assert pod_facts({**request(pod()), "kind": {"kind": "Deployment"}}) is None


@pytest.mark.parametrize(("pull", "entries", "annotations", "expected"), [
    ([], [], None, [OURS]),  # admitted before the link: gets it
    ([], None, None, [OURS]),  # account not in the cache yet: the Pod names none, so it gets it
    (["theirs"], ["theirs"], None, [OURS]),  # copied from the account, which lacked ours
    (["theirs", OURS], ["theirs", OURS], None, []),  # already there
    (["own"], ["theirs"], None, []),  # names its own: never touched
    (["own"], None, None, []),  # account unknown: a non-empty list is taken as the Pod's own
    ([], [], {"tcr.tencentcloudcr.com/opt-out": "true"}, []),  # opted out
])
def test_who_gets_the_entry(pull: list[str], entries: list[str] | None, annotations: dict[str, str] | None,
                            expected: list[str]) -> None:
    facts = pod_facts(request(pod(pull, annotations)))
    assert facts is not None
    assert entries_to_add(facts, [OURS], account(entries)) == expected
    assert entries_to_add(facts, [], account(entries)) == []  # the account is not served: nothing


def test_the_patch_appends_and_records_what_it_added() -> None:
    for pull, extra in (([], None), (["theirs"], {"example.com/x": "y"})):
        original = pod(pull, extra)
        facts = pod_facts(request(original))
        assert facts is not None
        patched = apply_patch(original, patch_for(facts, [OURS, "tcr.ipsother"]))
        assert [e["name"] for e in patched["spec"]["imagePullSecrets"]] == [*pull, OURS, "tcr.ipsother"]
        assert patched["metadata"]["annotations"][ANNOTATION_ADDED] == f"{OURS},tcr.ipsother"
        assert {k: v for k, v in patched["metadata"]["annotations"].items() if k != ANNOTATION_ADDED} == (
            extra or {})


def test_review_response_is_an_allowed_json_patch() -> None:
    ops = [{"op": "add", "path": "/spec/imagePullSecrets", "value": [{"name": OURS}]}]
    response = review_response("u1", ops)["response"]
    assert response["allowed"] is True and response["patchType"] == "JSONPatch"
    assert json.loads(base64.b64decode(response["patch"])) == ops
    assert review_response("u2")["response"] == {"uid": "u2", "allowed": True}


names = st.sampled_from(["a", "b", OURS, "tcr.ipsx"])


@given(pull=st.lists(names, max_size=3, unique=True), entries=st.one_of(st.none(), st.lists(names, max_size=4)),
       wanted=st.lists(st.sampled_from([OURS, "tcr.ipsx"]), max_size=2, unique=True), opted=st.booleans())
def test_never_surprises(pull: list[str], entries: list[str] | None, wanted: list[str], opted: bool) -> None:
    facts = pod_facts(request(pod(pull, {"tcr.tencentcloudcr.com/opt-out": "true"} if opted else None)))
    assert facts is not None
    add = entries_to_add(facts, wanted, account(entries))
    assert set(add) <= set(wanted) and not set(add) & set(pull)  # only ours, only missing ones
    if opted or (pull and (entries is None or not set(pull) <= set(entries))):
        assert add == []  # opted out, or names its own
    elif wanted:
        assert set(pull) | set(add) >= set(wanted)  # otherwise it ends up with every wanted entry


@pytest.mark.parametrize(("annotations", "user"), [
    ({"kubernetes.io/config.mirror": "0f3c"}, None),  # a static Pod's mirror
    (None, {"username": "system:node:node-1", "groups": ["system:nodes", "system:authenticated"]}),
    (None, {"username": "someone", "groups": ["system:nodes"]}),
])
def test_mirror_pods_and_nodes_requests_are_never_changed(annotations: dict[str, str] | None,
                                                         user: dict[str, Any] | None) -> None:
    facts = pod_facts(request(pod([], annotations), user=user))
    assert facts is not None
    assert entries_to_add(facts, [OURS], account([])) == []


def test_a_long_account_list_is_compared_by_digest() -> None:
    long = [f"team-registry-{i:04d}-{'x' * 200}" for i in range(100)]
    cached = account(long)
    assert cached is not None and not cached.all_kept and cached.pull_secrets == ()  # nothing of theirs kept
    copied = pod_facts(request(pod(long)))
    assert copied is not None
    assert entries_to_add(copied, [OURS], cached) == [OURS]  # copied whole from the account
    own = pod_facts(request(pod(long[:3])))
    assert own is not None
    assert entries_to_add(own, [OURS], cached) == []  # not the account's list: the Pod's own


def test_annotations_near_the_limit_are_left_alone_with_a_warning() -> None:
    room = ANNOTATIONS_LIMIT_BYTES - len("big") - len(ANNOTATION_ADDED) - len(OURS)
    fits = pod_facts(request(pod([], {"big": "x" * room})))
    assert fits is not None and too_large_warning(fits, [OURS]) is None
    over = pod_facts(request(pod([], {"big": "x" * (room + 1)})))
    assert over is not None
    warning = too_large_warning(over, [OURS])
    assert warning is not None and f"limit of {ANNOTATIONS_LIMIT_BYTES}" in warning and OURS in warning
    # multi-byte characters count as bytes, as the API server counts them
    wide = pod_facts(request(pod([], {"big": "é" * (room // 2 + 1)})))
    assert wide is not None and too_large_warning(wide, [OURS]) is not None
