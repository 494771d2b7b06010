"""An ImagePullSecret's registry credential: from its password, the Secret its passwordSecretRef
names, or the token minted for its tokenFrom. Pure."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from tcr_assistant.spec import api
from tcr_assistant.tcrtoken import decision as tokens


@dataclass(frozen=True, slots=True)
class Credentials:
    server: str
    username: str
    password: str = field(repr=False)

    def __repr__(self) -> str:  # never show the password
        return f"Credentials(server={self.server!r}, username={self.username!r}, password=<hidden>)"


class CredentialsError(ValueError):
    """The credentials of an ImagePullSecret cannot be resolved (message safe to publish)."""


def resolve_credentials(
    spec: Mapping[str, Any], lookup_secret: Callable[[str], Mapping[str, str] | None], name: str = ""
) -> Credentials:
    """Credentials from ``spec.docker`` of ImagePullSecret ``name``; ``lookup_secret(key)`` returns the
    ``data`` (base64 values) of a Secret of the add-on's namespace marked as a credential source (key:
    its name) or holding a minted token (``tcrtoken.decision.state_key``), or None when there is none."""
    docker = spec.get("docker") or {}
    server = str(docker.get("server") or "").strip()
    username = str(docker.get("username") or "")
    if not server:
        raise CredentialsError("spec.docker.server is empty")
    if docker.get("tokenFrom") is not None:
        token = tokens.held_token(lookup_secret(tokens.state_key(tokens.secret_name(name))))
        if token is None:
            raise CredentialsError("tokenFrom: waiting for the first token from the TCR API (condition TokenMinted)")
        return Credentials(server=server, username=token.username, password=token.password)
    ref = docker.get("passwordSecretRef")
    if ref:
        name = str(ref.get("name") or "")
        key = str(ref.get("key") or api.DEFAULT_PASSWORD_KEY)
        data = lookup_secret(name) if name else None
        if data is None:
            raise CredentialsError(
                f"passwordSecretRef: Secret {name!r} not found in the add-on's namespace among the Secrets "
                f"marked as credential sources: create it, or label it {api.CREDENTIAL_SOURCE_SELECTOR}"
            )
        raw = data.get(key)
        if raw is None:
            raise CredentialsError(f"passwordSecretRef: Secret {name!r} has no key {key!r}")
        try:
            password = base64.b64decode(raw, validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError) as exc:
            raise CredentialsError(f"passwordSecretRef: key {key!r} of Secret {name!r} is not UTF-8 text") from exc
    else:
        password = str(docker.get("password") or "")
    if not password:
        raise CredentialsError("no password: set spec.docker.password or spec.docker.passwordSecretRef")
    return Credentials(server=server, username=username, password=password)


def credential_secret_keys(name: str, spec: Mapping[str, Any]) -> set[str]:
    """The state keys of the add-on namespace's Secrets that ImagePullSecret ``name`` takes its
    credential from: its passwordSecretRef's, its API key's, its minted token's."""
    docker = spec.get("docker") if isinstance(spec, Mapping) else None
    docker = docker if isinstance(docker, Mapping) else {}
    keys = set()
    ref = docker.get("passwordSecretRef")
    if isinstance(ref, Mapping) and ref.get("name"):
        keys.add(str(ref["name"]))
    source = tokens.mint_source(spec)
    if source is not None:
        keys.add(tokens.state_key(tokens.secret_name(name)))
        if source.api_key_secret:
            keys.add(source.api_key_secret)
    return keys
