"""The rules of ``spec.docker.tokenFrom`` (see ``validation``). Standard library only, no I/O."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from tcr_assistant.spec import rules
from tcr_assistant.spec.hosts import validate_server
from tcr_assistant.spec.names import dns_problem, show
from tcr_assistant.spec.rules import INSTANCE_ID_MAX, REGION_MAX, TOKEN_TYPES

_INSTANCE_ID_RE = re.compile(rules.INSTANCE_ID)
_REGION_RE = re.compile(rules.REGION)
TOKEN_FROM = "spec.docker.tokenFrom"


def token_from_problems(token_from: Any) -> list[tuple[str, str]]:
    """(field, message) of each problem with ``spec.docker.tokenFrom``."""
    if not isinstance(token_from, Mapping) or not isinstance(token_from.get("tcr"), Mapping):
        return [(f"{TOKEN_FROM}.tcr", "is required: an object with instanceId, region and "
                                                "apiKeySecretRef or webIdentity")]
    tcr, base = token_from["tcr"], f"{TOKEN_FROM}.tcr"
    errors: list[tuple[str, str]] = []
    for key, pattern, limit, example in (("instanceId", _INSTANCE_ID_RE, INSTANCE_ID_MAX, "tcr-abcd1234"),
                                         ("region", _REGION_RE, REGION_MAX, "ap-guangzhou")):
        value = tcr.get(key)
        if value is None or value == "":
            errors.append((f"{base}.{key}", f"is required, e.g. {example}"))
        elif not isinstance(value, str) or len(value) > limit or pattern.fullmatch(value) is None:
            errors.append((f"{base}.{key}", f"{show(str(value)[:limit + 1])} is not valid: "
                                                      f"write it as the console shows it, e.g. {example}"))
    token_type = tcr.get("tokenType")
    if token_type is not None and token_type not in TOKEN_TYPES:
        errors.append((f"{base}.tokenType", f"must be one of {', '.join(TOKEN_TYPES)}"))
    web_identity = tcr.get("webIdentity")
    endpoints = [(f"{base}.endpoint", tcr.get("endpoint"))]
    if isinstance(web_identity, Mapping):
        endpoints.append((f"{base}.webIdentity.stsEndpoint", web_identity.get("stsEndpoint")))
    for field, endpoint in endpoints:
        problem = None if endpoint is None else validate_server(endpoint)
        if problem is not None:
            errors.append((field, problem.replace("registry host", "API host")))
    ref = tcr.get("apiKeySecretRef")
    if (ref is None) == (web_identity is None):
        errors.append((base, "give exactly one of apiKeySecretRef (a Secret with secretId and "
                                       "secretKey in the add-on's namespace) or webIdentity (the controller's "
                                       "TKE Pod identity)"))
    elif ref is not None:
        name = ref.get("name") if isinstance(ref, Mapping) else None
        problem = (dns_problem(name, "Secret name", subdomain=True) if isinstance(name, str) and name
                   else "is required: the name of a Secret in the add-on's namespace")
        if problem is not None:
            errors.append((f"{base}.apiKeySecretRef.name", problem))
    elif not isinstance(web_identity, Mapping):
        errors.append((f"{base}.webIdentity", "must be an object ({} for the defaults)"))
    return errors
