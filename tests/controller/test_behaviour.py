"""Integration tests on the real local API server: the controller's behaviours (controller in-process, admin)."""

from __future__ import annotations

import base64
import copy
import json
import logging
import uuid
from collections.abc import Callable
from functools import partial
from typing import Any

import pytest
from controller_support import ADDON_NS, SAMPLE, K, RunningController
from recording_kube import recorded

from support import wait_for
from tcr_assistant.k8s.client import SECRETS
from tcr_assistant.reconciler import writes
from tcr_assistant.reconciler.keys import ImagePullSecretKey, NamespaceKey, StatusKey
from tcr_assistant.reconciler.observed import service_account_info
from tcr_assistant.spec import api


def uid() -> str:
    return uuid.uuid4().hex[:8]


def auths(secret: dict[str, Any]) -> dict[str, Any]:
    return json.loads(base64.b64decode(secret["data"][".dockerconfigjson"]))["auths"]


def spec(namespaces: str, service_accounts: str = "*", password: str = "pw-1", **extra: Any) -> dict[str, Any]:
    return {
        "namespaces": namespaces,
        "serviceAccounts": service_accounts,
        "docker": {"server": "demo.tencentcloudcr.com", "username": "u1", "password": password},
        **extra,
    }


def linked(k: K, ns: str, sa: str, secret: str) -> bool:
    return k.pull_secrets(ns, sa).count(secret) == 1


# -- 1. the sample ------------------------------------------------------------------------------


@pytest.mark.compat
def test_sample_applied_unchanged_distributes_and_links(k: K, controller: RunningController) -> None:
    ns1, ns2 = k.create_namespace(), k.create_namespace()
    k.wait_default_sa(ns1)
    k.wait_default_sa(ns2)
    k.create_sa(ns2, "builder", pull=["my-own-registry", "another"])
    k.create_ips(SAMPLE["metadata"]["name"], copy.deepcopy(SAMPLE["spec"]))
    name = "tcr.ipsimagepullsecret-sample"
    try:
        for ns in (ns1, ns2, "default"):
            secret = wait_for(partial(k.secret, ns, name), what=f"Secret in {ns}")
            assert secret["type"] == "kubernetes.io/dockerconfigjson"
            entry = auths(secret)["fanjiankong-bj.tencentcloudcr.com"]
            assert entry["username"] == "100012345678"
            assert entry["password"] == "tcr.jwt.token"
            assert base64.b64decode(entry["auth"]).decode() == "100012345678:tcr.jwt.token"
            assert secret["metadata"]["labels"][api.LABEL_MANAGED_BY] == "tcr-assistant"
            wait_for(partial(linked, k, ns, "default", name), what=f"{ns}/default linked")
        wait_for(lambda: linked(k, ns2, "builder", name))
        assert k.pull_secrets(ns2, "builder") == ["my-own-registry", "another", name]  # kept, appended once
        controller.settle_after_service_accounts(k, ns2)
        assert k.pull_secrets(ns2, "builder").count(name) == 1
    finally:
        k.delete_ips(SAMPLE["metadata"]["name"])
    # deleting it removes everything it created (finalizer), and only that
    for ns in (ns1, ns2):
        assert k.secret(ns, name) is None
        assert name not in k.pull_secrets(ns)
    assert k.pull_secrets(ns2, "builder") == ["my-own-registry", "another"]


# -- 2. list rule, excluded namespaces, opt-out ------------------------------------------------------


def test_list_rule_excluded_and_opt_out(k: K, controller: RunningController, ips_cleanup: list[str]) -> None:
    ns1, ns2, ns3 = k.create_namespace(), k.create_namespace(), k.create_namespace()
    ns4 = k.create_namespace(annotations={api.OPT_OUT_ANNOTATION: "true"})
    ns5 = k.create_namespace()  # not listed
    for ns in (ns1, ns2, ns3, ns4, ns5):
        k.wait_default_sa(ns)
    k.create_sa(ns1, "builder")
    k.create_sa(ns1, "other")
    k.create_sa(ns2, "builder", annotations={api.OPT_OUT_ANNOTATION: "true"})
    name = f"lr-{uid()}"
    ips_cleanup.append(name)
    # spaces around items are trimmed; exact names only
    k.create_ips(name, spec(f" {ns1} , {ns2},{ns3},{ns4}", " default , builder", excludedNamespaces=ns3))
    secret = api.secret_name(name)
    wait_for(lambda: linked(k, ns1, "default", secret) and linked(k, ns1, "builder", secret))
    wait_for(lambda: linked(k, ns2, "default", secret))
    controller.settle()
    assert k.secret(ns1, secret) and k.secret(ns2, secret)
    for ns in (ns3, ns4, ns5):
        assert k.secret(ns, secret) is None, ns
        assert secret not in k.pull_secrets(ns), ns
    assert secret not in k.pull_secrets(ns1, "other")
    assert secret not in k.pull_secrets(ns2, "builder")  # opted out


# -- 3. new namespace / new ServiceAccount -------------------------------------------------------------


@pytest.mark.compat
def test_new_namespace_and_new_service_account(k: K, controller: RunningController, ips_cleanup: list[str]) -> None:
    future = f"late-{uid()}"
    name = f"nn-{uid()}"
    ips_cleanup.append(name)
    k.create_ips(name, spec(f"{future}"))
    secret = api.secret_name(name)
    controller.settle()
    k.create_namespace(future)
    wait_for(lambda: k.secret(future, secret), what="Secret in new namespace")
    wait_for(lambda: linked(k, future, "default", secret), what="default SA linked")
    k.create_sa(future, "late-sa", pull=["mine"])
    wait_for(lambda: linked(k, future, "late-sa", secret), what="new SA linked")
    assert k.pull_secrets(future, "late-sa") == ["mine", secret]
    k.delete_namespace(future)


# -- 4. credential changes ------------------------------------------------------------------------------


def test_credentials_edit_updates_every_secret(k: K, controller: RunningController, ips_cleanup: list[str]) -> None:
    nss = [k.create_namespace() for _ in range(3)]
    name = f"cr-{uid()}"
    ips_cleanup.append(name)
    k.create_ips(name, spec(",".join(nss), password="old-pw"))
    secret = api.secret_name(name)
    for ns in nss:
        wait_for(partial(k.secret, ns, secret))
    k.patch_ips(name, {"spec": {"docker": {"username": "u2", "password": "new-pw"}}})

    def all_new() -> bool:
        for ns in nss:
            s = k.secret(ns, secret)
            entry = auths(s)["demo.tencentcloudcr.com"] if s else {}
            if entry.get("password") != "new-pw" or entry.get("username") != "u2":
                return False
            if base64.b64decode(entry["auth"]).decode() != "u2:new-pw":
                return False
        return True

    wait_for(all_new, what="all Secrets updated")


def test_password_secret_ref_follows_the_referenced_secret(
    k: K, controller: RunningController, ips_cleanup: list[str]
) -> None:
    ns = k.create_namespace()
    ref = f"cred-{uid()}"
    k.create_credential_secret(ref, {"token": "ref-pw-1"})
    name = f"rf-{uid()}"
    ips_cleanup.append(name)
    k.create_ips(
        name,
        {
            "namespaces": ns,
            "docker": {
                "server": "demo.tencentcloudcr.com",
                "username": "u",
                "passwordSecretRef": {"name": ref, "key": "token"},
            },
        },
    )
    secret = api.secret_name(name)
    wait_for(lambda: (s := k.secret(ns, secret)) and auths(s)["demo.tencentcloudcr.com"]["password"] == "ref-pw-1")
    k.kube.request(
        "PATCH",
        SECRETS.path(ADDON_NS, ref),
        body={"stringData": {"token": "ref-pw-2"}},
        content_type="application/merge-patch+json",
    )
    wait_for(
        lambda: (
            auths(k.secret(ns, secret) or {"data": {".dockerconfigjson": "e30="}})
            .get("demo.tencentcloudcr.com", {})
            .get("password")
            == "ref-pw-2"
        ),
        what="Secret follows reference",
    )


# -- 5. narrowing and deletion ----------------------------------------------------------------------------


def test_narrowing_removes_only_ours(k: K, controller: RunningController, ips_cleanup: list[str]) -> None:
    ns1, ns2 = k.create_namespace(), k.create_namespace()
    k.wait_default_sa(ns1)
    k.wait_default_sa(ns2)
    k.create_sa(ns1, "builder", pull=["foreign"])
    # a foreign Secret with another name in ns2 must never be touched
    k.kube.request(
        "POST", SECRETS.path(ns2), body={"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "users-own"}}
    )
    name = f"nw-{uid()}"
    ips_cleanup.append(name)
    k.create_ips(name, spec(f"{ns1},{ns2}"))
    secret = api.secret_name(name)
    wait_for(lambda: linked(k, ns2, "default", secret) and linked(k, ns1, "builder", secret))
    k.patch_sa(ns2, "default", {"imagePullSecrets": [{"name": "foreign-a"}, {"name": secret}, {"name": "foreign-b"}]})
    # narrow namespaces: ns2 loses our Secret and entry; foreign entries stay in place
    k.patch_ips(name, {"spec": {"namespaces": ns1}})
    wait_for(lambda: k.secret(ns2, secret) is None, what="Secret removed from ns2")
    wait_for(lambda: k.pull_secrets(ns2) == ["foreign-a", "foreign-b"], what="entry removed from ns2/default")
    assert k.secret(ns2, "users-own") is not None
    # narrow serviceAccounts: builder loses our entry, keeps its own
    k.patch_ips(name, {"spec": {"serviceAccounts": "default"}})
    wait_for(lambda: k.pull_secrets(ns1, "builder") == ["foreign"], what="entry removed from builder")
    assert linked(k, ns1, "default", secret)
    assert k.secret(ns1, secret) is not None
    # delete: everything it created goes, then the object itself (finalizer)
    k.delete_ips(name)
    assert k.secret(ns1, secret) is None
    assert k.pull_secrets(ns1) == []
    assert k.pull_secrets(ns1, "builder") == ["foreign"]


# -- 6. drift ------------------------------------------------------------------------------------------------


@pytest.mark.compat
def test_drift_secret_and_service_account_repaired(k: K, controller: RunningController, ips_cleanup: list[str]) -> None:
    ns = k.create_namespace()
    k.wait_default_sa(ns)
    k.create_sa(ns, "keep-out")
    name = f"dr-{uid()}"
    ips_cleanup.append(name)
    k.create_ips(name, spec(ns))
    secret = api.secret_name(name)
    wait_for(lambda: linked(k, ns, "default", secret) and linked(k, ns, "keep-out", secret))
    # Secret deleted by hand comes back
    k.kube.delete(SECRETS.path(ns, secret))
    wait_for(lambda: k.secret(ns, secret), timeout=20, what="deleted Secret restored")
    # Secret edited by hand comes back
    k.kube.request(
        "PATCH",
        SECRETS.path(ns, secret),
        body={"data": {".dockerconfigjson": base64.b64encode(b'{"auths":{}}').decode()}},
        content_type="application/merge-patch+json",
    )
    wait_for(
        lambda: "demo.tencentcloudcr.com" in auths(k.secret(ns, secret) or {"data": {".dockerconfigjson": "e30="}}),
        timeout=20,
        what="edited Secret restored",
    )
    # our entry removed from a ServiceAccount by hand comes back, with an Event
    k.patch_sa(ns, "default", {"imagePullSecrets": [{"name": "mine"}]})
    wait_for(lambda: k.pull_secrets(ns) == ["mine", secret], what="entry re-added")
    wait_for(lambda: any(e["reason"] == "ServiceAccountRelinked" for e in k.events_for(name)), what="event")
    wait_for(lambda: any(e["reason"] == "SecretRepaired" for e in k.events_for(name)), what="event")
    # opt-out annotation: we take our entry away and do not put it back
    k.patch_sa(ns, "keep-out", {"metadata": {"annotations": {api.OPT_OUT_ANNOTATION: "true"}}})
    wait_for(lambda: secret not in k.pull_secrets(ns, "keep-out"), what="opted-out SA unlinked")
    k.patch_sa(ns, "keep-out", {"imagePullSecrets": [{"name": "x"}]})
    controller.settle_after_service_accounts(k, ns)
    assert k.pull_secrets(ns, "keep-out") == ["x"]


# -- 7. several ImagePullSecrets --------------------------------------------------------------------------------


def test_several_image_pull_secrets_coexist(k: K, controller: RunningController, ips_cleanup: list[str]) -> None:
    ns = k.create_namespace()
    k.wait_default_sa(ns)
    names = [f"vpc-{uid()}", f"public-{uid()}", f"third-{uid()}"]
    ips_cleanup.extend(names)
    for i, n in enumerate(names):
        k.create_ips(
            n, {**spec(ns), "docker": {"server": f"r{i}.tencentcloudcr.com", "username": "u", "password": "p"}}
        )
    secrets = [api.secret_name(n) for n in names]
    wait_for(lambda: all(linked(k, ns, "default", s) for s in secrets), what="all three linked")
    for i, s in enumerate(secrets):
        assert list(auths(k.secret(ns, s) or {})) == [f"r{i}.tencentcloudcr.com"]
    k.delete_ips(names[1])
    assert k.secret(ns, secrets[1]) is None
    assert sorted(k.pull_secrets(ns)) == sorted([secrets[0], secrets[2]])
    assert k.secret(ns, secrets[0]) and k.secret(ns, secrets[2])


# -- 8. status, printer columns, events, no secret values ------------------------------------------------------


def test_status_columns_events_and_no_secret_values(
    k: K, controller: RunningController, ips_cleanup: list[str], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    ns1, ns2 = k.create_namespace(), k.create_namespace()
    k.wait_default_sa(ns1)
    k.wait_default_sa(ns2)
    k.create_sa(ns1, "builder")
    name = f"st-{uid()}"
    ips_cleanup.append(name)
    password = f"very-secret-{uid()}"
    k.create_ips(name, spec(f"{ns1},{ns2}", password=password))

    def synced() -> dict[str, Any] | None:
        st = (k.ips(name) or {}).get("status") or {}
        conds = st.get("conditions") or []
        return st if conds and conds[0]["status"] == "True" and st.get("sAsSuccess") == 3 else None

    st = wait_for(synced, what="status Ready")
    assert (st["secretsDesired"], st["secretsSuccess"], st["sAsDesired"], st["sAsSuccess"]) == (2, 2, 3, 3)
    assert st["observedGeneration"] == (k.ips(name) or {})["metadata"]["generation"]
    assert st["conditions"][0]["reason"] == "Synced"
    written = {e["namespacedName"] for e in st["secretUpdateSuccessful"]}
    assert written == {f"{ns1}/{api.secret_name(name)}", f"{ns2}/{api.secret_name(name)}"}
    modified = {e["namespacedName"] for e in st["serviceAccountsModifySuccessful"]}
    assert modified == {f"{ns1}/default", f"{ns1}/builder", f"{ns2}/default"}
    assert all(e["updatedAt"].endswith("Z") for e in st["secretUpdateSuccessful"])
    # kubectl get ipss columns (the server-side Table kubectl prints)
    doc = k.kube.request(
        "GET",
        f"/apis/{api.GROUP}/{api.VERSION}/{api.PLURAL}/{name}",
        accept="application/json;as=Table;v=v1;g=meta.k8s.io",
    )
    cols = [c["name"] for c in doc["columnDefinitions"]]
    row = dict(zip(cols, doc["rows"][0]["cells"], strict=False))
    assert {"SECRETS-DESIRED", "SECRETS-SUCCESS"} <= set(cols)
    assert (row["SECRETS-DESIRED"], row["SECRETS-SUCCESS"]) == (2, 2)
    # a failure shows in the condition and as a Warning Event
    k.patch_ips(name, {"spec": {"docker": {"password": None, "passwordSecretRef": {"name": "does-not-exist"}}}})

    def failing() -> bool:
        conds = ((k.ips(name) or {}).get("status") or {}).get("conditions") or []
        return bool(conds) and conds[0]["reason"] == "CredentialsUnavailable"

    wait_for(failing, what="Ready=False CredentialsUnavailable")
    wait_for(
        lambda: any(e["type"] == "Warning" and e["reason"] == "CredentialsUnavailable" for e in k.events_for(name)),
        what="Warning event",
    )
    # the entries and Secrets stay while credentials are unavailable (no outage by accident)
    assert linked(k, ns1, "default", api.secret_name(name))
    # never a secret value in status, events or logs
    blob = json.dumps(k.ips(name)) + json.dumps(k.events_for(name))
    assert password not in blob
    assert base64.b64encode(password.encode()).decode() not in blob
    assert password not in caplog.text


# -- 9. concurrency: conflicts, AlreadyExists, terminating namespaces, zero writes ---------------------------------


def test_zero_writes_when_nothing_changed(k: K, controller: RunningController, ips_cleanup: list[str]) -> None:
    nss = [k.create_namespace() for _ in range(3)]
    for ns in nss:
        k.wait_default_sa(ns)
    name = f"zw-{uid()}"
    ips_cleanup.append(name)
    k.create_ips(name, spec(",".join(nss)))
    secret = api.secret_name(name)
    wait_for(lambda: all(linked(k, ns, "default", secret) for ns in nss))
    wait_for(lambda: (((k.ips(name) or {}).get("status") or {}).get("conditions") or [{}])[0].get("status") == "True")
    controller.settle()
    c = controller.controller
    before = dict(recorded(c.kube).writes)
    # a second full reconcile of everything
    with c.state.lock:
        c.state.fanned_out.clear()
    c.queue.add(ImagePullSecretKey(name))
    for ns in nss:
        c.queue.add(NamespaceKey(ns))
    c.queue.add(StatusKey(name))
    controller.settle()
    assert dict(recorded(c.kube).writes) == before


def test_restart_writes_nothing_and_keeps_a_complete_status(
    k: K, start_controller: Callable[..., RunningController]
) -> None:
    """A new leader (restart, failover) re-checks everything: no write, and no half-counted status."""
    first = start_controller()
    nss = [k.create_namespace() for _ in range(3)]
    for ns in nss:
        k.wait_default_sa(ns)
    name = f"rs-{uid()}"
    k.create_ips(name, spec(",".join(nss)))

    def complete() -> dict[str, Any] | None:
        status = (k.ips(name) or {}).get("status") or {}
        done = status.get("secretsSuccess") == 3 and status.get("sAsSuccess") == 3
        return status if done and status["conditions"][0]["status"] == "True" else None

    try:
        stored = wait_for(complete, what="status complete")
        first.settle()
        first.stop()
        # Many workers and no status delay: a status update races the re-check of each namespace.
        second = start_controller(workers=16, status_delay=0.0)
        c = second.controller
        second.settle(60)  # every namespace re-checked, and the status keys they queued done
        ours = {kind: n for kind, n in recorded(c.kube).writes.items()
                if kind.split()[-1] in ("secrets", "serviceaccounts", f"{api.PLURAL}/status")}
        assert ours == {}, f"a restart with nothing changed wrote {ours}"
        assert complete() == stored
    finally:
        k.delete_ips(name, wait=True, timeout=60)


def test_conflict_already_exists_and_terminating(k: K, controller: RunningController, ips_cleanup: list[str]) -> None:
    kube = controller.controller.kube
    ns = k.create_namespace()
    k.wait_default_sa(ns)
    # 409 Conflict: the cached resourceVersion is stale -> re-read and retry
    stale = service_account_info(k.sa(ns) or {})
    k.patch_sa(ns, "default", {"imagePullSecrets": [{"name": "someone-else"}]})
    written, latest = writes.update_pull_secrets(kube, stale, lambda cur: [*cur, "tcr.ipsx"])
    assert written and latest is not None
    assert k.pull_secrets(ns) == ["someone-else", "tcr.ipsx"]
    # AlreadyExists: a Secret of ours that exists with stale content is updated
    from tcr_assistant.reconciler import decisions as reconcile

    desired = reconcile.desired_secret("x", ns, reconcile.Credentials("r.example.com", "u", "p"))
    stale_secret = copy.deepcopy(desired)
    stale_secret["data"] = {".dockerconfigjson": base64.b64encode(b'{"auths":{}}').decode()}
    k.kube.request("POST", SECRETS.path(ns), body=stale_secret)
    assert writes.ensure_secret(kube, desired, observed=None) == "updated"
    assert writes.ensure_secret(kube, desired) == "unchanged"
    # creating via a stale "absent" view hits AlreadyExists and still converges
    assert writes.ensure_secret(kube, desired, observed=None) == "unchanged"
    # a new namespace: create without reading first; a wrong guess falls back to read-and-update
    k.kube.request("PUT", SECRETS.path(ns, desired["metadata"]["name"]),
                   body={**stale_secret, "metadata": (k.secret(ns, desired["metadata"]["name"]) or {})["metadata"]})
    assert writes.ensure_secret(kube, desired, create_first=True) == "updated"
    fresh = reconcile.desired_secret("y", ns, reconcile.Credentials("r.example.com", "u", "p"))
    posts = recorded(kube).writes["POST secrets"]
    assert writes.ensure_secret(kube, fresh, create_first=True) == "created"
    assert recorded(kube).writes["POST secrets"] == posts + 1
    # Forbidden in a terminating namespace: skipped, not an error
    term = k.create_namespace()
    k.kube.request(
        "POST",
        f"/api/v1/namespaces/{term}/configmaps",
        body={"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "hold", "finalizers": ["test.tcr/hold"]}},
    )
    k.delete_namespace(term)
    wait_for(lambda: (k.kube.get(f"/api/v1/namespaces/{term}") or {}).get("status", {}).get("phase") == "Terminating")
    other = reconcile.desired_secret("x", term, reconcile.Credentials("r.example.com", "u", "p"))
    assert writes.ensure_secret(kube, other) == "skipped"
    k.kube.request(
        "PATCH",
        f"/api/v1/namespaces/{term}/configmaps/hold",
        body={"metadata": {"finalizers": None}},
        content_type="application/merge-patch+json",
    )
    # NotFound: namespace does not exist at all
    gone = reconcile.desired_secret("x", f"nope-{uid()}", reconcile.Credentials("r.example.com", "u", "p"))
    assert writes.ensure_secret(kube, gone) == "skipped"
