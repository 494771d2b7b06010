"""The webhook's credential-source rule covers both references: a passwordSecretRef and
tokenFrom's apiKeySecretRef may name only a Secret marked as a credential source (refused when it
exists unmarked, warned about when it is missing or cannot be checked). Pure: the lookup is given."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tcr_assistant.admission import review
from tcr_assistant.admission.review import CredentialSource, CredentialSources

MINTED = {"server": "demo.tencentcloudcr.com", "tokenFrom": {"tcr": {
    "instanceId": "tcr-abcd1234", "region": "ap-guangzhou", "apiKeySecretRef": {"name": "tcr-api-key"}}}}
KEY_FIELD = "spec.docker.tokenFrom.tcr.apiKeySecretRef.name"


def answer(docker: dict[str, Any], found: CredentialSource) -> dict[str, Any]:
    body = {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {
        "uid": "u-1", "operation": "CREATE", "kind": {"group": "tcr.tencentcloudcr.com", "version": "v1",
                                                      "kind": "ImagePullSecret"},
        "object": {"apiVersion": "tcr.tencentcloudcr.com/v1", "kind": "ImagePullSecret",
                   "metadata": {"name": "minted"}, "spec": {"docker": docker}}}}
    asked: list[str] = []

    def state(name: str) -> CredentialSource:
        asked.append(name)
        return found

    status, doc = review.handle(json.dumps(body).encode(), sources=CredentialSources("tcr-assistant-system", state))
    assert status == 200
    response: dict[str, Any] = doc["response"]
    response["asked"] = asked
    return response


def test_an_unmarked_api_key_secret_is_refused_naming_the_field_and_the_label() -> None:
    refused = answer(MINTED, CredentialSource.UNMARKED)
    assert refused["allowed"] is False and refused["asked"] == ["tcr-api-key"]
    message = refused["status"]["message"]
    assert KEY_FIELD in message and "may not be read as an API key" in message
    assert "kubectl label secret tcr-api-key -n tcr-assistant-system tcr.tencentcloudcr.com/credential-source=true" \
        in message


@pytest.mark.parametrize("found", [CredentialSource.MISSING, CredentialSource.UNKNOWN])
def test_a_missing_or_unchecked_api_key_secret_is_allowed_with_a_warning(found: CredentialSource) -> None:
    allowed = answer(MINTED, found)
    assert allowed["allowed"] is True
    assert any(w.startswith(KEY_FIELD) for w in allowed.get("warnings") or []), allowed


def test_a_marked_api_key_secret_and_the_web_identity_are_allowed_silently() -> None:
    marked = answer(MINTED, CredentialSource.MARKED)
    assert marked["allowed"] is True and not marked.get("warnings")
    web = {**MINTED, "tokenFrom": {"tcr": {"instanceId": "tcr-abcd1234", "region": "ap-guangzhou",
                                            "webIdentity": {}}}}
    silent = answer(web, CredentialSource.UNMARKED)
    assert silent["allowed"] is True and silent["asked"] == []
