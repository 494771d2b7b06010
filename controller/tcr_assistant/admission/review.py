"""The admission decision for ImagePullSecrets: AdmissionReview v1 in, AdmissionReview v1 out.

Pure: no I/O, no sockets (``webhook.py`` serves it over HTTPS). ``handle(body)`` never raises:

- When the body holds a readable ``request.uid`` the answer is a well-formed AdmissionReview
  response with that uid (HTTP 200; a denial if the request is malformed); otherwise HTTP 400
  (413 above ``max_body_bytes``) with an AdmissionReview whose uid is empty.
- CREATE and UPDATE of ``imagepullsecrets`` are validated with
  ``validation.validate_image_pull_secret``; DELETE and CONNECT are allowed; subresources
  (``status``) are allowed; an UPDATE of an object being deleted (``deletionTimestamp`` set)
  is allowed; an UPDATE that changes neither name nor spec is allowed with warnings if the
  stored spec is invalid (ratcheting, like the API server's CRD validation ratcheting).
- A ``spec.docker.passwordSecretRef`` must name a Secret marked as a credential source (label
  ``tcr.tencentcloudcr.com/credential-source=true``): one that exists without the mark is denied,
  saying how to mark it; one that does not exist yet is allowed with a warning (the controller
  reads it once it exists with the mark). The caller supplies the lookup (``CredentialSources``).
- Denials carry code 422 (reason ``Invalid``), a message naming each field and what it
  expects, and ``details`` (kind, name, ``causes``), so kubectl prints them like the API
  server's own validation errors. Denials are logged with field paths only; passwords never
  appear in any message or log line.
"""

from __future__ import annotations

import enum
import json
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

from tcr_assistant.spec.api import GROUP, LABEL_CREDENTIAL_SOURCE, PLURAL
from tcr_assistant.spec.validation import FieldError, validate_image_pull_secret

__all__ = [
    "ADMISSION_API_VERSION",
    "MAX_BODY_BYTES",
    "CredentialSource",
    "CredentialSources",
    "JSONDict",
    "handle",
    "review_response",
]

log = logging.getLogger(__name__)

API_GROUP, RESOURCE = GROUP, PLURAL  # one home: api.py
ADMISSION_API_VERSION = "admission.k8s.io/v1"
MAX_BODY_BYTES = 1 << 20
_SHOWN_NAME_MAX = 64

JSONDict = dict[str, Any]


class CredentialSource(enum.Enum):
    """What a passwordSecretRef names, as far as the caller can tell."""

    MARKED = "marked"  # exists with the credential-source label
    UNMARKED = "unmarked"  # exists without it
    MISSING = "missing"  # does not exist (yet)
    UNKNOWN = "unknown"  # could not be read


@dataclass(frozen=True)
class CredentialSources:
    """The add-on's namespace and how marked each of its Secrets is (filled in by the I/O layer)."""

    namespace: str
    state: Callable[[str], CredentialSource]


def credential_source_findings(
    spec: Any, sources: CredentialSources
) -> tuple[list[FieldError], list[str]]:
    """(errors, warnings) about the Secrets that ``spec``'s passwordSecretRef and tokenFrom's
    apiKeySecretRef name: both only Secrets marked as credential sources."""
    docker = spec.get("docker") if isinstance(spec, Mapping) else None
    docker = docker if isinstance(docker, Mapping) else {}
    token_from = docker.get("tokenFrom")
    tcr = token_from.get("tcr") if isinstance(token_from, Mapping) else None
    errors: list[FieldError] = []
    warnings: list[str] = []
    for field, ref, what in (("spec.docker.passwordSecretRef.name", docker.get("passwordSecretRef"), "a password"),
                             ("spec.docker.tokenFrom.tcr.apiKeySecretRef.name",
                              tcr.get("apiKeySecretRef") if isinstance(tcr, Mapping) else None, "an API key")):
        name = ref.get("name") if isinstance(ref, Mapping) else None
        if isinstance(name, str) and name:
            found_errors, found_warnings = _source_findings(field, name, what, sources)
            errors += found_errors
            warnings += found_warnings
    return errors, warnings


def _source_findings(field: str, name: str, what: str,
                     sources: CredentialSources) -> tuple[list[FieldError], list[str]]:
    namespace, mark = sources.namespace, f"{LABEL_CREDENTIAL_SOURCE}=true"
    found = sources.state(name)
    if found is CredentialSource.UNMARKED:
        return [FieldError(field, (
            f"Secret {json.dumps(name)} in namespace {json.dumps(namespace)} is not marked as a credential "
            f"source, so it may not be read as {what}; if it holds only registry credentials, mark it: "
            f"kubectl label secret {name} -n {namespace} {mark}"
        ))], []
    if found is CredentialSource.MISSING:
        return [], [f"{field}: Secret {json.dumps(name)} does not exist in namespace {json.dumps(namespace)} yet; "
                    f"the controller reads it once it exists with the label {mark}"]
    if found is CredentialSource.UNKNOWN:
        return [], [f"{field}: could not check Secret {json.dumps(name)}; the controller reads it only if it "
                    f"carries the label {mark}"]
    return [], []


def review_response(
    uid: str,
    allowed: bool,
    *,
    code: int = 0,
    reason: str = "",
    message: str = "",
    causes: list[FieldError] | None = None,
    details_name: str = "",
    warnings: list[str] | None = None,
) -> JSONDict:
    """An AdmissionReview v1 response; a denial carries ``status`` (default code 403)."""
    response: JSONDict = {"uid": uid, "allowed": allowed}
    if not allowed:
        status: JSONDict = {"code": code or HTTPStatus.FORBIDDEN, "message": message}
        if reason:
            status["reason"] = reason
        if causes:
            # Like the API server's own validation errors: kubectl prints
            # 'The ImagePullSecret "NAME" is invalid: FIELD: MESSAGE' from these details.
            status["details"] = {
                "name": details_name,
                "group": API_GROUP,
                "kind": "ImagePullSecret",
                "causes": [{"field": e.field, "message": e.message, "reason": "FieldValueInvalid"} for e in causes],
            }
        response["status"] = status
    if warnings:
        response["warnings"] = warnings
    return {"apiVersion": ADMISSION_API_VERSION, "kind": "AdmissionReview", "response": response}


def _bad_request(message: str) -> tuple[int, JSONDict]:
    return HTTPStatus.BAD_REQUEST, review_response(
        "", False, code=HTTPStatus.BAD_REQUEST, reason="BadRequest", message=message
    )


def _show_name(obj: Mapping[str, Any]) -> str:
    metadata = obj.get("metadata")
    name: Any = None
    if isinstance(metadata, Mapping):
        name = metadata.get("name") or metadata.get("generateName")
    if not isinstance(name, str) or name == "":
        return "ImagePullSecret"
    if len(name) > _SHOWN_NAME_MAX:
        name = name[: _SHOWN_NAME_MAX - 1] + "…"
    return f"ImagePullSecret {json.dumps(name)}"


def _format_errors(errors: list[FieldError]) -> str:
    return "; ".join(str(e) if e.field else e.message for e in errors)


def _decide(
    uid: str, doc: Mapping[str, Any], request: Mapping[str, Any], sources: CredentialSources | None
) -> JSONDict:
    if doc.get("apiVersion") != ADMISSION_API_VERSION or doc.get("kind") != "AdmissionReview":
        return review_response(
            uid,
            False,
            code=HTTPStatus.BAD_REQUEST,
            reason="BadRequest",
            message=f"expected an AdmissionReview of apiVersion {ADMISSION_API_VERSION}",
        )
    operation = request.get("operation")
    if operation in ("DELETE", "CONNECT"):
        return review_response(uid, True)
    if operation not in ("CREATE", "UPDATE"):
        return review_response(
            uid,
            False,
            code=HTTPStatus.BAD_REQUEST,
            reason="BadRequest",
            message="request.operation must be CREATE, UPDATE, DELETE or CONNECT",
        )
    resource = request.get("resource")
    if isinstance(resource, Mapping) and (resource.get("group"), resource.get("resource")) != (API_GROUP, RESOURCE):
        # Only our resource is routed here by the webhook configuration; never block anything else.
        return review_response(uid, True, warnings=["tcr-assistant webhook: not an ImagePullSecret, not checked"])
    sub_resource = request.get("subResource")
    if sub_resource not in (None, ""):
        return review_response(uid, True)
    obj = request.get("object")
    if not isinstance(obj, Mapping):
        return review_response(
            uid,
            False,
            code=HTTPStatus.BAD_REQUEST,
            reason="BadRequest",
            message="request.object must be an ImagePullSecret object",
        )
    errors = validate_image_pull_secret(obj)
    warnings: list[str] = []
    if not errors and sources is not None:
        errors, warnings = credential_source_findings(obj.get("spec"), sources)
    if not errors:
        return review_response(uid, True, warnings=warnings)
    if operation == "UPDATE":
        metadata = obj.get("metadata")
        if isinstance(metadata, Mapping) and metadata.get("deletionTimestamp"):
            return review_response(uid, True)
        old = request.get("oldObject")
        if isinstance(old, Mapping) and old.get("spec") == obj.get("spec") and _name_of(old) == _name_of(obj):
            return review_response(
                uid,
                True,
                warnings=[f"{_show_name(obj)} is invalid (unchanged spec, allowed): {_format_errors(errors)}"[:1000]],
            )
    return review_response(
        uid,
        False,
        code=HTTPStatus.UNPROCESSABLE_ENTITY,
        reason="Invalid",
        message=f"{_show_name(obj)} is invalid: {_format_errors(errors)}",
        causes=errors,
        details_name=_name_of(obj) if isinstance(_name_of(obj), str) else "",
    )


def _name_of(obj: Mapping[str, Any]) -> Any:
    metadata = obj.get("metadata")
    return metadata.get("name") if isinstance(metadata, Mapping) else None


class BadReview(Exception):
    """A request body that is not an AdmissionReview: answer ``status`` with ``doc``."""

    def __init__(self, status: int, doc: JSONDict) -> None:
        super().__init__(status)
        self.status = status
        self.doc = doc


def parse_review(body: bytes, max_body_bytes: int = MAX_BODY_BYTES) -> tuple[str, dict[str, Any]]:
    """(uid, whole AdmissionReview) of a body whose ``request`` is an object with a uid; raises
    BadReview saying what is wrong."""
    try:
        if len(body) > max_body_bytes:
            raise BadReview(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, review_response(
                "",
                False,
                code=HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                reason="RequestEntityTooLarge",
                message=f"request body larger than {max_body_bytes} bytes",
            ))
        try:
            doc = json.loads(body)
        except (ValueError, RecursionError):
            raise BadReview(*_bad_request("request body is not a JSON AdmissionReview")) from None
        if not isinstance(doc, dict):
            raise BadReview(*_bad_request("request body is not a JSON object"))
        request = doc.get("request")
        if not isinstance(request, dict):
            raise BadReview(*_bad_request("AdmissionReview has no request object"))
        uid = request.get("uid")
        if not isinstance(uid, str) or uid == "":
            raise BadReview(*_bad_request("AdmissionReview request has no uid"))
    except BadReview:
        raise
    except Exception:  # never crash on input (e.g. MemoryError-free oddities of json)
        log.exception("webhook: unreadable request")
        raise BadReview(*_bad_request("unreadable request")) from None
    return uid, doc


def handle(
    body: bytes, max_body_bytes: int = MAX_BODY_BYTES, sources: CredentialSources | None = None
) -> tuple[int, JSONDict]:
    """Decide one AdmissionReview request body: (HTTP status, AdmissionReview response). Never raises.

    ``sources``: how to check a passwordSecretRef's Secret; None checks the object alone."""
    try:
        uid, doc = parse_review(body, max_body_bytes)
    except BadReview as bad:
        return bad.status, bad.doc
    request = doc["request"]
    try:
        result = _decide(uid, doc, request, sources)
    except Exception:
        log.exception("webhook: error deciding request %s", uid)
        return HTTPStatus.OK, review_response(
            uid,
            False,
            code=HTTPStatus.INTERNAL_SERVER_ERROR,
            reason="InternalError",
            message="internal error in the webhook",
        )
    response = result["response"]
    if response["allowed"]:
        log.debug("webhook: uid=%s operation=%s allowed", uid, request.get("operation"))
    else:
        # Field paths only: values (and so passwords) are never logged.
        causes = response["status"].get("details", {}).get("causes", [])
        log.info(
            "webhook: uid=%s operation=%s denied: %s",
            uid,
            request.get("operation"),
            ", ".join(c["field"] for c in causes) or response["status"].get("reason", ""),
        )
    return HTTPStatus.OK, result
