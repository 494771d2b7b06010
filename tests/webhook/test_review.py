"""Unit tests of the pure decision function tcr_assistant.admission.review.handle."""

from __future__ import annotations

import json
from typing import Any

import pytest
from webhook_support import sample

from tcr_assistant.admission.review import MAX_BODY_BYTES, handle

UID = "705ab4f5-6393-11e8-b7cc-42010a800002"
RESOURCE = {"group": "tcr.tencentcloudcr.com", "version": "v1", "resource": "imagepullsecrets"}


def admission(operation: str = "CREATE", obj: Any = None, old: Any = None, uid: str = UID, **extra: Any) -> bytes:
    request: dict[str, Any] = {
        "uid": uid,
        "kind": {"group": "tcr.tencentcloudcr.com", "version": "v1", "kind": "ImagePullSecret"},
        "resource": RESOURCE,
        "requestKind": {"group": "tcr.tencentcloudcr.com", "version": "v1", "kind": "ImagePullSecret"},
        "requestResource": RESOURCE,
        "name": "imagepullsecret-sample",
        "operation": operation,
        "userInfo": {"username": "admin", "groups": ["system:masters"]},
        "object": obj,
        "oldObject": old,
        "dryRun": False,
        "options": None,
    }
    request.update(extra)
    return json.dumps({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": request}).encode()


def response_of(body: bytes) -> dict[str, Any]:
    status, doc = handle(body)
    assert status == 200
    assert doc["apiVersion"] == "admission.k8s.io/v1"
    assert doc["kind"] == "AdmissionReview"
    json.dumps(doc)  # serialisable
    return doc["response"]


def test_valid_create_is_allowed() -> None:
    response = response_of(admission("CREATE", sample()))
    assert response == {"uid": UID, "allowed": True}


def test_invalid_create_is_denied_with_fields_and_message() -> None:
    obj = sample(docker__server="https://example.com/x", namespaces="a,,b", docker__password="hunter2-secret")
    response = response_of(admission("CREATE", obj))
    assert response["uid"] == UID
    assert response["allowed"] is False
    status = response["status"]
    assert status["code"] == 422
    assert status["reason"] == "Invalid"
    assert status["message"].startswith('ImagePullSecret "imagepullsecret-sample" is invalid: ')
    assert "spec.docker.server: must be a bare host name without a scheme" in status["message"]
    assert "spec.namespaces: item 2 is empty" in status["message"]
    assert {c["field"] for c in status["details"]["causes"]} == {"spec.docker.server", "spec.namespaces"}
    assert "hunter2-secret" not in json.dumps(response)


def test_update_that_breaks_a_valid_object_is_denied() -> None:
    response = response_of(admission("UPDATE", sample(docker__username=""), old=sample()))
    assert response["allowed"] is False
    assert "spec.docker.username: must not be empty" in response["status"]["message"]


def test_update_to_a_valid_object_is_allowed() -> None:
    response = response_of(admission("UPDATE", sample(namespaces="a,b"), old=sample(docker__username="")))
    assert response["allowed"] is True


def test_update_with_unchanged_invalid_spec_is_allowed_with_a_warning() -> None:
    # An object stored before a rule existed: metadata-only changes (labels, finalizers) must not be blocked.
    old = sample(namespaces="A")
    new = sample(namespaces="A")
    new["metadata"]["finalizers"] = ["tcr.tencentcloudcr.com/cleanup"]
    response = response_of(admission("UPDATE", new, old=old))
    assert response["allowed"] is True
    assert any("spec.namespaces" in w for w in response["warnings"])


def test_update_of_an_object_being_deleted_is_allowed() -> None:
    obj = sample(namespaces="A,")
    obj["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    old = sample(namespaces="x")
    assert response_of(admission("UPDATE", obj, old=old))["allowed"] is True


@pytest.mark.parametrize("operation", ["DELETE", "CONNECT"])
def test_delete_and_connect_are_allowed(operation: str) -> None:
    assert response_of(admission(operation, None, old=sample(docker__server="")))["allowed"] is True


def test_status_subresource_is_allowed() -> None:
    assert response_of(admission("UPDATE", sample(docker__server=""), old=sample(), subResource="status"))["allowed"]


def test_other_resources_are_never_blocked() -> None:
    body = admission("CREATE", {"metadata": {"name": "x"}}, resource={"group": "", "version": "v1", "resource": "pods"})
    response = response_of(body)
    assert response["allowed"] is True


@pytest.mark.parametrize(
    ("changes", "fragment"),
    [
        ({"operation": "PATCH"}, "request.operation must be"),
        ({"object": "x"}, "request.object must be"),
        ({"object": None}, "request.object must be"),
    ],
)
def test_malformed_requests_with_uid_are_denied(changes: dict[str, Any], fragment: str) -> None:
    body = json.loads(admission("CREATE", sample()))
    body["request"].update(changes)
    response = response_of(json.dumps(body).encode())
    assert response["uid"] == UID
    assert response["allowed"] is False
    assert fragment in response["status"]["message"]


def test_wrong_api_version_is_denied_with_uid() -> None:
    body = json.loads(admission("CREATE", sample()))
    body["apiVersion"] = "admission.k8s.io/v1beta1"
    response = response_of(json.dumps(body).encode())
    assert response == {
        "uid": UID,
        "allowed": False,
        "status": {
            "code": 400,
            "reason": "BadRequest",
            "message": "expected an AdmissionReview of apiVersion admission.k8s.io/v1",
        },
    }


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"not json",
        b"\xff\xfe\x00",
        b"[]",
        b"{}",
        b'{"request": []}',
        b'{"request": {}}',
        b'{"request": {"uid": 5}}',
        b'{"request": {"uid": ""}}',
        b"[" * 100_000 + b"]" * 100_000,
        b'{"request": {"uid": 1' + b"0" * 5000 + b"}}",
    ],
)
def test_unreadable_bodies_get_400(body: bytes) -> None:
    status, doc = handle(body)
    assert status == 400
    assert doc["response"]["uid"] == ""
    assert doc["response"]["allowed"] is False
    assert handle(body) == (status, doc)  # the same answer every time


def test_oversized_body_gets_413() -> None:
    status, doc = handle(b" " * (MAX_BODY_BYTES + 1))
    assert status == 413
    assert doc["response"]["allowed"] is False


def test_deeply_nested_object_with_uid_is_answered() -> None:
    text = json.dumps(
        {
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "request": {"uid": UID, "operation": "CREATE", "object": {"spec": 1}},
        }
    )
    # Deep nesting makes the JSON parser give up: no uid can be read, so 400.
    deep = text[:-2] + ', "x": ' + "[" * 50_000 + "]" * 50_000 + "}}"
    status, doc = handle(deep.encode())
    assert status in (200, 400)
    if status == 200:
        assert doc["response"]["uid"] == UID
    status, doc = handle(text.encode())
    assert (status, doc["response"]["uid"], doc["response"]["allowed"]) == (200, UID, False)
