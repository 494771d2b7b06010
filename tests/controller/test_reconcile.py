"""Unit and property tests of the pure desired-state logic (tcr_assistant.reconciler.decisions)."""

from __future__ import annotations

import base64
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tcr_assistant.reconciler import decisions as reconcile
from tcr_assistant.reconciler import observed, status
from tcr_assistant.reconciler.observed import NamespaceInfo, ServiceAccountInfo
from tcr_assistant.spec import api

SAMPLE_SPEC = {
    "namespaces": "*",
    "serviceAccounts": "*",
    "docker": {"username": "100012345678", "password": "tcr.jwt.token", "server": "fanjiankong-bj.tencentcloudcr.com"},
}


# -- list rule ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("*", None),
        ("", None),
        (None, None),
        ("  *  ", None),
        ("a", ["a"]),
        ("a,b", ["a", "b"]),
        ("a, b", ["a", "b"]),
        (" a ,b ", ["a", "b"]),
        ("a,a", ["a"]),
    ],
)
def test_parse_name_list(value: str | None, expected: list[str] | None) -> None:
    assert reconcile.parse_name_list_lenient(value) == expected


def test_target_exact_names_only() -> None:
    t = reconcile.target_from_spec("x", {"namespaces": "team-a, team-b", "serviceAccounts": "default"})
    assert reconcile.namespace_served(t, NamespaceInfo("team-a"))
    assert reconcile.namespace_served(t, NamespaceInfo("team-b"))
    assert not reconcile.namespace_served(t, NamespaceInfo("team-ab"))  # no prefix/glob matching
    assert not reconcile.namespace_served(t, NamespaceInfo("team"))
    ns = NamespaceInfo("team-a")
    assert reconcile.service_account_served(t, ns, ServiceAccountInfo("team-a", "default"))
    assert not reconcile.service_account_served(t, ns, ServiceAccountInfo("team-a", "builder"))


def test_excluded_and_opt_out_win() -> None:
    t = reconcile.target_from_spec("x", {"namespaces": "*", "excludedNamespaces": "kube-system, secret-ns"})
    assert not reconcile.namespace_served(t, NamespaceInfo("kube-system"))
    assert not reconcile.namespace_served(t, NamespaceInfo("secret-ns"))
    assert reconcile.namespace_served(t, NamespaceInfo("other"))
    assert not reconcile.namespace_served(t, NamespaceInfo("other", opt_out=True))
    assert not reconcile.namespace_served(t, NamespaceInfo("other", terminating=True))
    ns = NamespaceInfo("other")
    assert not reconcile.service_account_served(t, ns, ServiceAccountInfo("other", "default", opt_out=True))
    t2 = reconcile.target_from_spec("x", {"namespaces": "a", "excludedNamespaces": "a"})
    assert not reconcile.namespace_served(t2, NamespaceInfo("a"))


def test_opt_out_annotation_parsing() -> None:
    assert observed.opted_out({api.OPT_OUT_ANNOTATION: "true"})
    assert observed.opted_out({api.OPT_OUT_ANNOTATION: " True "})
    assert not observed.opted_out({api.OPT_OUT_ANNOTATION: "false"})
    assert not observed.opted_out({})
    assert not observed.opted_out(None)


def test_reduce_objects() -> None:
    ns = observed.namespace_info(
        {"metadata": {"name": "a", "annotations": {api.OPT_OUT_ANNOTATION: "true"}}, "status": {"phase": "Active"}}
    )
    assert ns == NamespaceInfo("a", opt_out=True, terminating=False)
    assert observed.namespace_info({"metadata": {"name": "b"}, "status": {"phase": "Terminating"}}).terminating
    sa = observed.service_account_info(
        {
            "metadata": {"name": "default", "namespace": "a", "resourceVersion": "7"},
            "imagePullSecrets": [{"name": "x"}, {}],
        }
    )
    assert sa == ServiceAccountInfo("a", "default", ("x", None), False, "7")


# -- ServiceAccount list --------------------------------------------------------------------------


def test_desired_pull_secrets_examples() -> None:
    ours = {"tcr.ipsa", "tcr.ipsb"}
    assert reconcile.desired_pull_secrets([], {"tcr.ipsa"}, ours) == ["tcr.ipsa"]
    assert reconcile.desired_pull_secrets(["mine"], {"tcr.ipsa"}, ours) == ["mine", "tcr.ipsa"]
    assert reconcile.desired_pull_secrets(["tcr.ipsa", "mine"], {"tcr.ipsa"}, ours) == ["tcr.ipsa", "mine"]
    assert reconcile.desired_pull_secrets(["tcr.ipsa", "tcr.ipsa"], {"tcr.ipsa"}, ours) == ["tcr.ipsa"]
    assert reconcile.desired_pull_secrets(["mine", "tcr.ipsb"], {"tcr.ipsa"}, ours) == ["mine", "tcr.ipsa"]
    # entries named like ours but of an ImagePullSecret we do not serve are not touched
    assert reconcile.desired_pull_secrets(["tcr.ipsz"], set(), ours) == ["tcr.ipsz"]
    assert reconcile.desired_pull_secrets(["mine", "mine", None], set(), ours) == ["mine", "mine", None]


names = st.sampled_from(["a", "b", "c", "mine", "other", "tcr.ipsa", "tcr.ipsb", "tcr.ipsc", "tcr.ipsz"])
managed_names = st.sets(st.sampled_from(["tcr.ipsa", "tcr.ipsb", "tcr.ipsc"]))


@given(current=st.lists(st.one_of(names, st.none()), max_size=8), managed=managed_names, data=st.data())
def test_desired_pull_secrets_properties(current: list[str | None], managed: set[str], data: st.DataObject) -> None:
    wanted = data.draw(st.sets(st.sampled_from(sorted(managed)))) if managed else set()
    new = reconcile.desired_pull_secrets(current, wanted, managed)
    # foreign entries are never dropped nor reordered
    assert [e for e in new if e not in managed] == [e for e in current if e not in managed]
    # every wanted entry exactly once; managed but unwanted entries gone
    for name in managed:
        assert new.count(name) == (1 if name in wanted else 0)
    # idempotent
    assert reconcile.desired_pull_secrets(new, wanted, managed) == new
    # nothing changes when the list is already right
    if all(current.count(n) == (1 if n in wanted else 0) for n in managed):
        assert new == current


# -- Secret ---------------------------------------------------------------------------------------


def test_desired_secret_sample() -> None:
    creds = reconcile.resolve_credentials(SAMPLE_SPEC, lambda _name: None)
    secret = reconcile.desired_secret("imagepullsecret-sample", "ns1", creds)
    assert secret["metadata"]["name"] == "tcr.ipsimagepullsecret-sample"
    assert secret["metadata"]["namespace"] == "ns1"
    assert secret["type"] == "kubernetes.io/dockerconfigjson"
    assert secret["metadata"]["labels"] == {
        "app.kubernetes.io/managed-by": "tcr-assistant",
        "tcr.tencentcloudcr.com/imagepullsecret": "imagepullsecret-sample",
    }
    doc = json.loads(base64.b64decode(secret["data"][".dockerconfigjson"]))
    entry = doc["auths"]["fanjiankong-bj.tencentcloudcr.com"]
    assert entry["username"] == "100012345678"
    assert entry["password"] == "tcr.jwt.token"
    assert base64.b64decode(entry["auth"]).decode() == "100012345678:tcr.jwt.token"


def test_credentials_repr_hides_password() -> None:
    creds = reconcile.resolve_credentials(SAMPLE_SPEC, lambda _name: None)
    assert "tcr.jwt.token" not in repr(creds)
    assert "tcr.jwt.token" not in str(creds)


def test_password_secret_ref() -> None:
    spec = {"docker": {"server": "r.example.com", "username": "u", "passwordSecretRef": {"name": "cred"}}}
    data = {"password": base64.b64encode(b"s3cret").decode()}
    creds = reconcile.resolve_credentials(spec, lambda name: data if name == "cred" else None)
    assert creds.password == "s3cret"
    spec_key = {"docker": {"server": "r", "username": "u", "passwordSecretRef": {"name": "cred", "key": "token"}}}
    with pytest.raises(reconcile.CredentialsError, match="no key 'token'"):
        reconcile.resolve_credentials(spec_key, lambda name: data)
    with pytest.raises(reconcile.CredentialsError, match="not found"):
        reconcile.resolve_credentials(spec, lambda name: None)
    with pytest.raises(reconcile.CredentialsError, match="no password"):
        reconcile.resolve_credentials({"docker": {"server": "r", "username": "u"}}, lambda name: None)


def test_secret_up_to_date_and_update() -> None:
    creds = reconcile.Credentials("r.example.com", "u", "p")
    desired = reconcile.desired_secret("x", "ns", creds)
    observed = json.loads(json.dumps(desired))
    observed["metadata"]["resourceVersion"] = "5"
    observed["metadata"]["labels"]["extra"] = "kept"
    assert reconcile.secret_up_to_date(observed, desired)
    observed["data"][".dockerconfigjson"] = "e30="
    assert not reconcile.secret_up_to_date(observed, desired)
    fixed = reconcile.secret_for_update(observed, desired)
    assert fixed["metadata"]["resourceVersion"] == "5"
    assert fixed["metadata"]["labels"]["extra"] == "kept"
    assert reconcile.secret_up_to_date(fixed, desired)
    other = reconcile.desired_secret("x", "ns", reconcile.Credentials("r.example.com", "u", "p2"))
    assert reconcile.fingerprint(other) != reconcile.fingerprint(desired)
    assert reconcile.fingerprint(reconcile.desired_secret("x", "ns2", creds)) == reconcile.fingerprint(desired)


# -- status ---------------------------------------------------------------------------------------


def test_record_history_bounded_newest_first() -> None:
    hist: list[dict[str, str]] = []
    for i in range(120):
        hist = status.record_history(hist, {f"ns{i:03}/tcr.ipsx": f"t{i:03}"})
    assert len(hist) == api.STATUS_LIST_MAX
    assert hist[0] == {"namespacedName": "ns119/tcr.ipsx", "updatedAt": "t119"}
    hist = status.record_history(hist, {"ns100/tcr.ipsx": "t200"})
    assert hist[0] == {"namespacedName": "ns100/tcr.ipsx", "updatedAt": "t200"}
    assert [e["namespacedName"] for e in hist].count("ns100/tcr.ipsx") == 1
    # an older write never replaces a newer entry
    assert status.record_history(hist, {"ns100/tcr.ipsx": "t001"}) == hist


times = st.text(alphabet="0123456789", min_size=2, max_size=2)
names = st.sampled_from([f"ns{i}/tcr.ipsx" for i in range(8)])


@given(
    st.lists(st.fixed_dictionaries({"namespacedName": names, "updatedAt": times}), max_size=8),
    st.dictionaries(names, times, max_size=8),
    st.integers(1, 6),
)
def test_record_history_applying_the_same_writes_again_changes_nothing(
    previous: list[dict[str, str]], written: dict[str, str], limit: int
) -> None:
    """A status write that failed is retried with the same writes: the result must be the same."""
    once = status.record_history(previous, written, limit)
    assert status.record_history(once, written, limit) == once
    assert len(once) <= limit
    assert len({e["namespacedName"] for e in once}) == len(once)
    stamps = [e["updatedAt"] for e in once]
    assert stamps == sorted(stamps, reverse=True)


def test_compute_status_and_condition() -> None:
    counts = status.Counts(2, 2, 3, 3)
    st1 = status.compute_status(
        None, counts, generation=4, secrets_written={"a/tcr.ipsx": "T1"}, sas_written={}, problem=None, now="T1"
    )
    assert st1["secretsDesired"] == 2 and st1["sAsSuccess"] == 3 and st1["observedGeneration"] == 4
    assert st1["conditions"][0]["status"] == "True" and st1["conditions"][0]["reason"] == "Synced"
    # nothing new: identical status, no write needed (lastTransitionTime kept)
    st2 = status.compute_status(
        st1, counts, generation=4, secrets_written={}, sas_written={}, problem=None, now="T2"
    )
    assert not status.status_changed(st1, st2)
    st3 = status.compute_status(
        st2, counts, generation=5, secrets_written={}, sas_written={}, problem=("InvalidSpec", "bad"), now="T3"
    )
    assert st3["conditions"][0] == {
        "type": "Ready",
        "status": "False",
        "reason": "InvalidSpec",
        "message": "bad",
        "lastTransitionTime": "T3",
    }
    partial = status.compute_status(
        None, status.Counts(2, 1, 0, 0), generation=1, secrets_written={}, sas_written={}, problem=None, now="T"
    )
    assert partial["conditions"][0]["reason"] == "Progressing"
