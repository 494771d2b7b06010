"""Property tests (hypothesis): random and adversarial AdmissionReview bodies.

Properties: ``handle``/``review`` never raise; the answer is always a well-formed, serialisable
AdmissionReview v1; when the body holds a readable ``request.uid`` the answer is HTTP 200 with
that uid, else HTTP 400 (413 when too big); every example finishes within the hypothesis
deadline (100 examples, 2 s each). ``make test-long`` runs the first two with 10,000 examples (the
hypothesis profile ``long``).
"""

from __future__ import annotations

import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from webhook_support import sample

from support import property_settings
from tcr_assistant.admission.review import handle
from tcr_assistant.spec.validation import parse_name_list_strict, validate_image_pull_secret, validate_server

# A generous bound per example (ms) that still catches pathological (e.g. regex) blow-ups.
OPTIONS: dict[str, Any] = {"deadline": 2000,
                           "suppress_health_check": [HealthCheck.too_slow, HealthCheck.data_too_large]}
DEFAULT = settings(max_examples=100, **OPTIONS)

# ---- strategies ------------------------------------------------------------------------------

json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=False),
    st.text(max_size=40),
)
json_values = st.recursive(
    json_scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=5), st.dictionaries(st.text(max_size=12), children, max_size=5)
    ),
    max_leaves=30,
)

# Strings that poke at the validation rules: near-valid names, separators, unicode, long runs.
tricky_text = st.one_of(
    st.text(max_size=80),
    st.text(alphabet="abcAZ09-._*,: /@[]?#\t\n\u00e4\u0661", max_size=80),
    st.builds(lambda c, n: c * n, st.sampled_from(["a", "a-", "a.", "-", ",", " ", "*"]), st.integers(0, 600)),
    st.sampled_from(["", "*", " * ", "a,,b", "https://x", "x:65536", "example.com:443", "default", "a" * 253]),
)


def _field_value() -> st.SearchStrategy[Any]:
    return st.one_of(tricky_text, json_values)


@st.composite
def ips_objects(draw: st.DrawFn) -> Any:
    """Near-valid ImagePullSecrets with some fields replaced by adversarial values."""
    obj = sample()
    docker = obj["spec"]["docker"]
    for key in draw(st.sets(st.sampled_from(["server", "username", "password", "passwordSecretRef"]))):
        docker[key] = draw(st.one_of(_field_value(), st.dictionaries(st.sampled_from(["name", "key"]), _field_value())))
    for key in draw(st.sets(st.sampled_from(["namespaces", "serviceAccounts", "excludedNamespaces", "docker"]))):
        obj["spec"][key] = draw(_field_value()) if key != "docker" or draw(st.booleans()) else None
    if draw(st.booleans()):
        obj["metadata"] = draw(
            st.one_of(
                json_values,
                st.fixed_dictionaries({"name": _field_value()}),
                st.fixed_dictionaries({"generateName": _field_value()}),
            )
        )
    if draw(st.integers(0, 9)) == 0:
        obj["spec"] = draw(json_values)
    if draw(st.integers(0, 19)) == 0:
        return draw(json_values)
    return obj


uids = st.one_of(st.uuids().map(str), st.text(min_size=1, max_size=60))


@st.composite
def review_documents(draw: st.DrawFn) -> Any:
    """AdmissionReview-shaped documents, with any part possibly broken."""
    request: dict[str, Any] = {
        "operation": draw(st.one_of(st.sampled_from(["CREATE", "UPDATE", "DELETE", "CONNECT"]), json_values)),
        "object": draw(ips_objects()),
        "oldObject": draw(st.one_of(st.none(), ips_objects())),
    }
    if draw(st.integers(0, 9)) != 0:
        request["uid"] = draw(st.one_of(uids, json_values) if draw(st.integers(0, 4)) == 0 else uids)
    if draw(st.booleans()):
        request["resource"] = draw(
            st.one_of(
                st.just({"group": "tcr.tencentcloudcr.com", "version": "v1", "resource": "imagepullsecrets"}),
                json_values,
            )
        )
    if draw(st.integers(0, 4)) == 0:
        request["subResource"] = draw(st.one_of(st.just("status"), json_values))
    doc: dict[str, Any] = {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": request}
    if draw(st.integers(0, 9)) == 0:
        doc["apiVersion"] = draw(json_values)
    if draw(st.integers(0, 9)) == 0:
        doc["request"] = draw(json_values)
    extra = draw(st.dictionaries(st.text(max_size=8), json_values, max_size=3))
    doc.update({k: v for k, v in extra.items() if k not in doc})
    return doc


def encode(doc: Any, mangle: int) -> bytes:
    text = json.dumps(doc)
    if mangle == 1:
        return text.encode("utf-16")
    if mangle == 2:
        return text.encode()[: max(0, len(text) // 2)]  # truncated
    if mangle == 3:
        return text.encode() + b"\x00garbage"
    return text.encode()


bodies = st.one_of(
    st.builds(encode, review_documents(), st.integers(0, 12)),
    st.binary(max_size=500),
    st.builds(encode, json_values, st.just(0)),
)


def expected_uid(body: bytes) -> str | None:
    """The uid a correct server must echo, or None when no uid is readable."""
    try:
        doc = json.loads(body)
    except (ValueError, RecursionError):
        return None
    if not isinstance(doc, dict) or not isinstance(doc.get("request"), dict):
        return None
    uid = doc["request"].get("uid")
    return uid if isinstance(uid, str) and uid else None


# ---- properties ------------------------------------------------------------------------------


def check_body(body: bytes) -> None:
    status, doc = handle(body)
    json.dumps(doc)
    assert doc["apiVersion"] == "admission.k8s.io/v1"
    assert doc["kind"] == "AdmissionReview"
    response = doc["response"]
    assert isinstance(response["allowed"], bool)
    if not response["allowed"]:
        assert isinstance(response["status"]["message"], str) and response["status"]["message"]
    uid = expected_uid(body)
    if uid is None:
        assert status == 400
        assert response["uid"] == ""
        assert response["allowed"] is False
    else:
        assert status == 200
        assert response["uid"] == uid
    if "warnings" in response:
        assert all(isinstance(w, str) for w in response["warnings"])


@property_settings(100, **OPTIONS)
@given(bodies)
def test_any_body_is_answered(body: bytes) -> None:
    check_body(body)


PASSWORD_MARK = "\u00a7pw\u00a7"  # never produced by the other fields' strategies below


@st.composite
def objects_with_password(draw: st.DrawFn) -> tuple[Any, str]:
    password = PASSWORD_MARK + draw(st.text(max_size=30))
    no_mark = st.one_of(tricky_text, json_values).filter(lambda v: PASSWORD_MARK not in json.dumps(v))
    obj = sample()
    obj["spec"]["docker"]["password"] = password
    for key in draw(st.sets(st.sampled_from(["server", "username", "passwordSecretRef"]))):
        obj["spec"]["docker"][key] = draw(no_mark)
    for key in draw(st.sets(st.sampled_from(["namespaces", "serviceAccounts", "excludedNamespaces"]))):
        obj["spec"][key] = draw(no_mark)
    return obj, password


def check_password_hidden(case: tuple[Any, str]) -> None:
    obj, _password = case
    for error in validate_image_pull_secret(obj):
        assert PASSWORD_MARK not in str(error)
    status, doc = handle(
        json.dumps(
            {
                "apiVersion": "admission.k8s.io/v1",
                "kind": "AdmissionReview",
                "request": {"uid": "u", "operation": "CREATE", "object": obj},
            }
        ).encode()
    )
    assert status == 200
    assert PASSWORD_MARK not in json.dumps(doc, ensure_ascii=False)


@property_settings(100, **OPTIONS)
@given(objects_with_password())
def test_password_never_in_answers(case: tuple[Any, str]) -> None:
    check_password_hidden(case)


label = st.from_regex(r"[a-z0-9]([-a-z0-9]{0,20}[a-z0-9])?", fullmatch=True)


@DEFAULT
@given(st.lists(label, min_size=1, max_size=8), st.lists(st.integers(0, 3), min_size=16, max_size=16))
def test_name_lists_round_trip_with_spaces(names: list[str], pads: list[int]) -> None:
    text = ",".join(" " * pads[i % 16] + n + " " * pads[(i + 1) % 16] for i, n in enumerate(names))
    assert parse_name_list_strict(text, "namespace") == names
    assert parse_name_list_strict(text, "serviceaccount") == names


@DEFAULT
@given(tricky_text, st.sampled_from(["namespace", "serviceaccount"]), st.booleans())
def test_parse_name_list_raises_only_value_error(text: str, kind: Any, allow_all: bool) -> None:
    try:
        result = parse_name_list_strict(text, kind, allow_all=allow_all)
    except ValueError as error:
        assert str(error)
    else:
        assert result is None or all(item and "," not in item and item.strip(" ") == item for item in result)


@DEFAULT
@given(tricky_text)
def test_validate_server_never_raises(text: str) -> None:
    message = validate_server(text)
    assert message is None or isinstance(message, str)
    if message is None:
        assert " " not in text and "/" not in text and "@" not in text and text == text.lower()
