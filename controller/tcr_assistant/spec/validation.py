"""Pure validation of an ImagePullSecret (``tcr.tencentcloudcr.com/v1``).

This module is the single definition of what a valid ImagePullSecret is. The validating
webhook (``webhook.py``), the values wizard (``scripts/values``) and the tests use it; where
the CRD's CEL rules overlap with it they must mean the same (``tests/webhook`` feeds the same
cases to both). The limits (the same as the CRD's maxLength: the API server refuses longer
values first) and the expressions come from ``rules.py``, from which the chart's values schema
and CRD rules are generated. Standard library only, no I/O, never raises on any input shape
(except ``parse_name_list_strict``, whose contract is to raise ``ValueError`` on bad syntax).

Rules (and the decisions behind them):

``metadata.name``
    ``tcr.ips<name>`` names the Secret distributed to every namespace, so it must be a
    DNS-1123 subdomain as Kubernetes defines object names (``[a-z0-9]([-a-z0-9]*[a-z0-9])?``
    parts joined by ``.``, at most 253 characters, no per-part limit): the name itself may
    have at most 246 characters (``MAX_NAME_LENGTH``). When only ``metadata.generateName`` is given (the API server
    fills the name in later), the prefix plus the 5 random characters must fit.

``spec.docker.server``
    A bare registry host name, lower case, that is a DNS-1123 subdomain (labels of
    ``a-z0-9-``, not starting or ending with ``-``, at most 63 characters each, 253 in all;
    an IPv4 address passes this rule too), optionally followed by ``:port`` with a port from
    1 to 65535 (decision: allowed, since self-hosted registries often listen on a non-default
    port; leading zeros are refused). Refused, each with its own message: empty, any
    whitespace anywhere (decision: never trimmed, a server with spaces is refused, not
    silently fixed), a scheme (``https://``), a path (``/…``), a user part (``user@host``),
    a query or fragment, upper case (the kubelet matches registry hosts case-sensitively,
    and image references use lower case), wildcards, IPv6 literals, a trailing dot.

``spec.docker.username``
    Required, not empty or only whitespace, no ``:`` (Docker's ``auth`` is
    ``base64(username:password)`` and registries split it at the first colon), no control
    characters, line breaks or spaces other than ' ' (Unicode categories C and Z, as
    ``str.isprintable``), at most 1024 characters. The value is never echoed.

``spec.docker.password`` / ``spec.docker.passwordSecretRef``
    Exactly one of them: a non-empty inline password, or a reference to a Secret in the
    add-on's own namespace: ``name`` (required, DNS-1123 subdomain) and ``key`` (optional,
    default ``password``; a Secret data key: ``[-._a-zA-Z0-9]+``, at most 253 characters).
    An empty inline password (``""``) counts as absent; at most 16384 characters. No message
    ever contains the password.

``spec.docker.tokenFrom.tcr``
    The third credential source (exactly one of password, passwordSecretRef, tokenFrom): the
    controller mints the token with the TCR API's ``CreateInstanceToken``. ``instanceId``
    (``tcr-`` and lower-case letters and digits) and ``region`` are required; ``tokenType`` is
    ``temp`` (default) or ``longterm``; ``endpoint`` and ``webIdentity.stsEndpoint`` are a host
    with an optional port, the rules of ``spec.docker.server`` (HTTPS is implied). The API
    credentials come from exactly one of ``apiKeySecretRef`` (a Secret in the add-on's namespace,
    keys ``secretId`` and ``secretKey``) or ``webIdentity`` (the controller's TKE Pod identity).
    ``username`` is left out: the TCR API names the user with each token.

``spec.namespaces`` / ``spec.serviceAccounts`` / ``spec.excludedNamespaces``
    Comma lists (see ``parse_name_list_strict``): ``*`` or empty means all (for
    ``excludedNamespaces``, empty means none and ``*`` is refused); spaces (U+0020 only)
    around items are trimmed; empty items and ``*`` mixed with names are refused; namespace
    items must be DNS-1123 labels (at most 63 characters), ServiceAccount items DNS-1123
    subdomains (Kubernetes' rule for ServiceAccount names). Missing fields mean the default
    (all / none). Each list has at most 16384 characters.

``spec.namespaceSelector``
    A standard label selector (``matchLabels``, ``matchExpressions`` with ``In``, ``NotIn``,
    ``Exists``, ``DoesNotExist``); the rules and their messages live in ``selectors.py``: keys
    are qualified names, values label values, ``In``/``NotIn`` need values and the others take
    none. Absent or null means every namespace.

Unknown fields
    Decision: ignored here. The CRD has a structural schema, so the API server prunes
    unknown fields before admission and the webhook never sees them; rejecting them here
    would only make the webhook disagree with ``kubectl apply`` of objects written by newer
    clients. Wrong *types* of known fields are reported (the webhook must never crash on
    them, even though the CRD schema refuses them first).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from tcr_assistant.spec import rules, selectors
from tcr_assistant.spec.api import DEFAULT_PASSWORD_KEY, SECRET_PREFIX
from tcr_assistant.spec.hosts import validate_server
from tcr_assistant.spec.names import (
    ListKind,
    dns_problem,
    is_dns1123_label,
    is_dns1123_subdomain,
    parse_name_list_strict,
    show,
)
from tcr_assistant.spec.rules import (
    DNS1123_LABEL_MAX,
    DNS1123_SUBDOMAIN_MAX,
    LIST_MAX,
    MAX_NAME_LENGTH,
    PASSWORD_MAX,
    RESERVED_SECRET_KEYS,
    SECRET_KEY_MAX,
    USERNAME_MAX,
)
from tcr_assistant.spec.tokenfrom import token_from_problems

__all__ = [
    "DNS1123_LABEL_MAX",
    "DNS1123_SUBDOMAIN_MAX",
    "MAX_NAME_LENGTH",
    "SECRET_NAME_PREFIX",
    "FieldError",
    "is_dns1123_label",
    "is_dns1123_subdomain",
    "parse_name_list_strict",
    "validate_image_pull_secret",
    "validate_name",
    "validate_server",
    "validate_spec",
]

SECRET_NAME_PREFIX = SECRET_PREFIX  # one home: api.py
#: Characters the API server appends to ``metadata.generateName``.
GENERATED_SUFFIX_LENGTH = 5

SECRET_KEY_RE = re.compile(rules.SECRET_KEY)

@dataclass(frozen=True)
class FieldError:
    """One problem: ``field`` is a path like ``spec.docker.server``; ``message`` says what is expected."""

    field: str
    message: str

    def __str__(self) -> str:
        return f"{self.field}: {self.message}"


def validate_name(name: Any, *, generated: bool = False) -> list[FieldError]:
    """Check that ``tcr.ips<name>`` is a valid Secret name (``generated``: name is a generateName prefix)."""
    field = "metadata.generateName" if generated else "metadata.name"
    if not isinstance(name, str):
        return [FieldError(field, f"must be a string, not {type(name).__name__}")]
    if name == "":
        return [FieldError(field, "must not be empty")]
    limit = MAX_NAME_LENGTH - (GENERATED_SUFFIX_LENGTH if generated else 0)
    if len(name) > limit:
        return [
            FieldError(
                field,
                f"is {len(name)} characters long; at most {limit} are allowed so that the distributed Secret "
                f'name "{SECRET_NAME_PREFIX}<name>" stays within {DNS1123_SUBDOMAIN_MAX} characters',
            )
        ]
    # The object's own name must be a DNS-1123 subdomain (the API server's rule for every custom
    # resource); then "tcr.ips<name>" is one too, as long as it fits 253 characters.
    own = name + ("a" * GENERATED_SUFFIX_LENGTH if generated else "")
    own_problem = dns_problem(own, "name", subdomain=True)
    if own_problem is not None:
        return [FieldError(field, f"{own_problem} (the distributed Secret is named \"{SECRET_NAME_PREFIX}<name>\")")]
    candidate = SECRET_NAME_PREFIX + own
    if not is_dns1123_subdomain(candidate):
        problem = dns_problem(candidate, "Secret name", subdomain=True) or "is not a valid DNS-1123 subdomain"
        return [
            FieldError(
                field,
                f"{show(name)} gives a distributed Secret name that is not valid: {problem}",
            )
        ]
    return []


def _validate_list(spec: Mapping[str, Any], key: str, kind: ListKind, allow_all: bool) -> list[FieldError]:
    if key not in spec or spec[key] is None:
        return []
    value = spec[key]
    if not isinstance(value, str):
        return [FieldError(f"spec.{key}", f"must be a string (a comma-separated list), not {type(value).__name__}")]
    if len(value) > LIST_MAX:
        return [FieldError(f"spec.{key}", f"is {len(value)} characters long; at most {LIST_MAX} are allowed")]
    try:
        parse_name_list_strict(value, kind, allow_all=allow_all)
    except ValueError as exc:
        return [FieldError(f"spec.{key}", str(exc))]
    return []


def _validate_username(docker: Mapping[str, Any]) -> list[FieldError]:
    field = "spec.docker.username"
    if docker.get("tokenFrom") is not None:
        if docker.get("username") is not None:
            return [FieldError(field, "must be left out with tokenFrom: the TCR API names the user with each token")]
        return []
    if "username" not in docker or docker["username"] is None:
        return [FieldError(field, "is required: give the registry user name (it needs pull access)")]
    username = docker["username"]
    if not isinstance(username, str):
        return [FieldError(field, f"must be a string, not {type(username).__name__}")]
    if username.strip() == "":
        return [FieldError(field, "must not be empty: give the registry user name (it needs pull access)")]
    if ":" in username:
        return [FieldError(field, "must not contain ':' (Docker credentials are 'username:password')")]
    if len(username) > USERNAME_MAX:
        return [FieldError(field, f"is {len(username)} characters long; at most {USERNAME_MAX} are allowed")]
    if not username.isprintable():
        # isprintable() is false exactly for Unicode categories C* and Z* other than ' ' (the CRD's
        # CEL rule: !matches('[\\p{C}]') && !matches('[^\\P{Z} ]')).
        return [FieldError(field, "must not contain control characters, line breaks or spaces other than ' '")]
    return []


def _validate_password(docker: Mapping[str, Any]) -> list[FieldError]:
    errors: list[FieldError] = []
    password = docker.get("password")
    ref = docker.get("passwordSecretRef")
    if password is not None and not isinstance(password, str):
        errors.append(FieldError("spec.docker.password", f"must be a string, not {type(password).__name__}"))
        return errors
    if isinstance(password, str) and len(password) > PASSWORD_MAX:
        return [FieldError("spec.docker.password", f"is longer than {PASSWORD_MAX} characters")]
    has_password = isinstance(password, str) and password != ""
    has_ref = ref is not None
    token_from = docker.get("tokenFrom")
    if has_password + has_ref + (token_from is not None) > 1:
        return [FieldError("spec.docker", "give exactly one of password, passwordSecretRef or tokenFrom")]
    if token_from is not None:
        return [FieldError(field, message) for field, message in token_from_problems(token_from)]
    if not has_password and not has_ref:
        if isinstance(password, str):
            return [
                FieldError(
                    "spec.docker.password",
                    "must not be empty: give the password or token, or use passwordSecretRef instead",
                )
            ]
        return [
            FieldError(
                "spec.docker",
                "needs a password: give password (the password or token), passwordSecretRef "
                "(a Secret in the add-on's namespace) or tokenFrom (minted from the TCR API)",
            )
        ]
    if has_ref:
        errors.extend(_validate_secret_ref(ref))
    return errors


def validate_secret_name(base: str, ref: Mapping[str, Any]) -> list[FieldError]:
    name = ref.get("name")
    if name is None or name == "":
        return [FieldError(f"{base}.name", "is required: the name of a Secret in the add-on's namespace")]
    if not isinstance(name, str):
        return [FieldError(f"{base}.name", f"must be a string, not {type(name).__name__}")]
    problem = dns_problem(name, "Secret name", subdomain=True)
    return [] if problem is None else [FieldError(f"{base}.name", problem)]


def _validate_secret_ref(ref: Any) -> list[FieldError]:
    base = "spec.docker.passwordSecretRef"
    if not isinstance(ref, Mapping):
        return [FieldError(base, f"must be an object with name and key, not {type(ref).__name__}")]
    errors = validate_secret_name(base, ref)
    if "key" in ref and ref["key"] is not None:
        key = ref["key"]
        if not isinstance(key, str):
            errors.append(FieldError(f"{base}.key", f"must be a string, not {type(key).__name__}"))
        elif key == "":
            errors.append(
                FieldError(f"{base}.key", f'must not be empty (leave it out for the default "{DEFAULT_PASSWORD_KEY}")')
            )
        elif len(key) > SECRET_KEY_MAX or SECRET_KEY_RE.fullmatch(key) is None or key in RESERVED_SECRET_KEYS:
            errors.append(
                FieldError(
                    f"{base}.key",
                    f"{show(key)} is not a valid Secret data key: use letters, digits, '-', '_' and '.' "
                    f"(at most {SECRET_KEY_MAX} characters, not '.' or '..')",
                )
            )
    return errors


def validate_spec(spec: Mapping[str, Any]) -> list[FieldError]:
    """All problems with an ImagePullSecret ``spec`` (empty list = valid)."""
    if not isinstance(spec, Mapping):
        return [FieldError("spec", f"must be an object, not {type(spec).__name__}")]
    errors: list[FieldError] = []
    errors += _validate_list(spec, "namespaces", "namespace", True)
    errors += _validate_list(spec, "serviceAccounts", "serviceaccount", True)
    errors += _validate_list(spec, "excludedNamespaces", "namespace", False)
    if spec.get("namespaceSelector") is not None:
        errors += [FieldError(f"spec.namespaceSelector{path}", message)
                   for path, message in selectors.problems(spec["namespaceSelector"])]
    docker = spec.get("docker")
    if docker is None:
        errors.append(FieldError("spec.docker", "is required: give server, username and password"))
        return errors
    if not isinstance(docker, Mapping):
        errors.append(FieldError("spec.docker", f"must be an object, not {type(docker).__name__}"))
        return errors
    if "server" not in docker or docker["server"] is None:
        errors.append(FieldError("spec.docker.server", "is required: give the registry host name"))
    else:
        problem = validate_server(docker["server"])
        if problem is not None:
            errors.append(FieldError("spec.docker.server", problem))
    errors += _validate_username(docker)
    errors += _validate_password(docker)
    return errors


def validate_image_pull_secret(obj: Mapping[str, Any]) -> list[FieldError]:
    """All problems with a whole ImagePullSecret object: its name and its spec."""
    if not isinstance(obj, Mapping):
        return [FieldError("", f"must be an object, not {type(obj).__name__}")]
    errors: list[FieldError] = []
    metadata = obj.get("metadata")
    if not isinstance(metadata, Mapping):
        metadata = {}
    name = metadata.get("name")
    if name:
        errors += validate_name(name)
    elif metadata.get("generateName"):
        errors += validate_name(metadata.get("generateName"), generated=True)
    else:
        errors.append(FieldError("metadata.name", "is required"))
    if "spec" not in obj or obj["spec"] is None:
        errors.append(FieldError("spec", "is required: give docker.server, docker.username and docker.password"))
    else:
        errors += validate_spec(obj["spec"])
    return errors
