"""When to mint a registry token for ``spec.docker.tokenFrom.tcr``, and how it is kept. Pure.

A minted token lives in a Secret of the add-on's namespace, ``tcr.tok<ImagePullSecret name>``,
owned by its ImagePullSecret (garbage-collected with it) and labelled
``tcr.tencentcloudcr.com/credential-source=minted``: the controller distributes it like a
password, but no ``passwordSecretRef`` can name it (references read only Secrets labelled
``true``). Its data: ``username`` and ``password`` (the token, as CreateInstanceToken returned
them), ``issuedAt`` and ``expiresAt`` (epoch seconds; no ``expiresAt`` for a longterm token), and
``source``, a digest of the tokenFrom it was minted for: a changed source mints again.

Renewal: a temp token is replaced when ``RENEW_FRACTION`` of its lifetime has passed, so the
new one has the other half to reach every namespace (seconds) and the kubelets. A failed mint
keeps the current token, and is retried after ``RETRY_FIRST``, doubling up to ``RETRY_MAX``.
A longterm token is minted once and kept.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from tcr_assistant.spec import api

RENEW_FRACTION = 0.5
RETRY_FIRST = 5.0
RETRY_MAX = 300.0
DEFAULT_ENDPOINT = "tcr.tencentcloudapi.com"
#: The state's key of a minted-token Secret (``/`` is never part of a Secret's name, so no
#: passwordSecretRef can reach it).
MINTED_KEY_PREFIX = "minted/"
SOURCE_MINTED = "minted"


def secret_name(ips_name: str) -> str:
    """The add-on namespace's Secret that holds the token minted for ImagePullSecret ``ips_name``."""
    return api.MINTED_SECRET_PREFIX + ips_name


def state_key(secret: str) -> str:
    return MINTED_KEY_PREFIX + secret


@dataclass(frozen=True)
class MintSource:
    """``spec.docker.tokenFrom.tcr`` with its defaults filled in."""

    instance_id: str
    region: str
    token_type: str
    endpoint: str
    api_key_secret: str | None  # apiKeySecretRef.name; None: webIdentity
    sts_endpoint: str | None

    @property
    def longterm(self) -> bool:
        return self.token_type == "longterm"

    def digest(self) -> str:
        text = json.dumps([self.instance_id, self.region, self.token_type, self.endpoint, self.api_key_secret,
                           self.sts_endpoint])
        return hashlib.sha256(text.encode()).hexdigest()[:32]


def mint_source(spec: Mapping[str, Any]) -> MintSource | None:
    """The tokenFrom.tcr of a (valid) spec, or None when the credential is not minted."""
    docker = spec.get("docker") if isinstance(spec, Mapping) else None
    token_from = docker.get("tokenFrom") if isinstance(docker, Mapping) else None
    tcr = token_from.get("tcr") if isinstance(token_from, Mapping) else None
    if not isinstance(tcr, Mapping):
        return None
    ref = tcr.get("apiKeySecretRef")
    web = tcr.get("webIdentity")
    return MintSource(
        instance_id=str(tcr.get("instanceId") or ""),
        region=str(tcr.get("region") or ""),
        token_type=str(tcr.get("tokenType") or "temp"),
        endpoint=str(tcr.get("endpoint") or DEFAULT_ENDPOINT),
        api_key_secret=str(ref.get("name")) if isinstance(ref, Mapping) and ref.get("name") else None,
        sts_endpoint=str(web.get("stsEndpoint")) if isinstance(web, Mapping) and web.get("stsEndpoint") else None,
    )


@dataclass(frozen=True)
class HeldToken:
    """The token in our Secret."""

    username: str
    password: str = field(repr=False)
    issued_at: float
    expires_at: float | None  # None: longterm
    source: str

    def renew_at(self) -> float | None:
        if self.expires_at is None:
            return None
        return self.issued_at + RENEW_FRACTION * max(0.0, self.expires_at - self.issued_at)


def secret_text(data: Mapping[str, str] | None, key: str) -> str | None:
    """The UTF-8 text of a Secret's ``data[key]`` (base64), or None when absent or not text."""
    raw = (data or {}).get(key)
    if raw is None:
        return None
    try:
        return base64.b64decode(raw, validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError, TypeError):
        return None


def held_token(data: Mapping[str, str] | None) -> HeldToken | None:
    """The token a minted-token Secret's ``data`` holds, or None (absent, or not ours in shape)."""
    if not data:
        return None
    username, password, issued, expires = (secret_text(data, key)
                                           for key in ("username", "password", "issuedAt", "expiresAt"))
    if not username or not password or issued is None:
        return None
    try:
        return HeldToken(username, password, float(issued), float(expires) if expires else None,
                         secret_text(data, "source") or "")
    except ValueError:
        return None


def seconds_until_mint(source: MintSource, held: HeldToken | None, now: float) -> float | None:
    """0: mint now (none yet, or minted for another source); None: never again (longterm); else
    the seconds until the held temp token is due for renewal."""
    if held is None or held.source != source.digest():
        return 0.0
    renew_at = held.renew_at()
    if renew_at is None:
        return None if source.longterm else 0.0
    return max(0.0, renew_at - now)


def retry_after(failures: int) -> float:
    """Seconds before the next try after ``failures`` failed mints in a row."""
    return min(RETRY_MAX, RETRY_FIRST * 2 ** max(0, failures - 1))


@dataclass(frozen=True)
class MintedToken:
    """What the helper returned."""

    username: str
    token: str = field(repr=False)
    expires_at: float | None


def secret_data(token: MintedToken, source: MintSource, now: float) -> dict[str, str]:
    values = {"username": token.username, "password": token.token, "issuedAt": f"{now:.3f}",
              "source": source.digest()}
    if token.expires_at is not None:
        values["expiresAt"] = f"{token.expires_at:.3f}"
    return {key: base64.b64encode(value.encode()).decode("ascii") for key, value in values.items()}


def secret_body(ips: Mapping[str, Any], namespace: str, data: Mapping[str, str],
                resource_version: str | None = None) -> dict[str, Any]:
    """The minted-token Secret of ImagePullSecret ``ips`` (owned by it)."""
    meta = ips.get("metadata") or {}
    name = str(meta.get("name"))
    metadata: dict[str, Any] = {
        "name": secret_name(name),
        "namespace": namespace,
        "labels": {api.LABEL_MANAGED_BY: api.MANAGED_BY, api.LABEL_IPS: name,
                   api.LABEL_CREDENTIAL_SOURCE: SOURCE_MINTED},
        "ownerReferences": [{"apiVersion": api.API_VERSION, "kind": api.KIND, "name": name,
                             "uid": str(meta.get("uid") or ""), "blockOwnerDeletion": False}],
    }
    if resource_version:
        metadata["resourceVersion"] = resource_version
    return {"apiVersion": "v1", "kind": "Secret", "metadata": metadata, "type": "Opaque", "data": dict(data)}


# -- what the status says ------------------------------------------------------------------------


@dataclass(frozen=True)
class MintRecord:
    """The last mint of one ImagePullSecret: ``reason`` "Minted", or why it failed."""

    reason: str
    message: str
    failures: int = 0

    @property
    def ok(self) -> bool:
        return self.failures == 0


def failed(previous: MintRecord | None, reason: str, message: str) -> MintRecord:
    return MintRecord(reason, message, (previous.failures if previous is not None else 0) + 1)


def condition_of(record: MintRecord | None, held: HeldToken | None) -> tuple[str, str, str]:
    """(status, reason, message) of the TokenMinted condition."""
    if record is None:
        if held is not None:
            return "True", "Minted", f"the token for user {held.username} was minted by the TCR API"
        return "Unknown", "Pending", "the first token is being minted"
    if record.ok:
        return "True", record.reason, record.message
    keep = "; the current token stays until it expires" if held is not None else ""
    return "False", record.reason, f"{record.message} (failed {record.failures} times in a row{keep})"
