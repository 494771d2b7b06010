"""Pure desired-state logic: no I/O, no clocks except where passed in.

Everything the controller decides is decided here, from observed state handed in as plain
values, so that it can be unit- and property-tested without an API server:

* which namespaces and ServiceAccounts an ImagePullSecret serves (list rule of docs/DESIGN.md:
  ``"*"`` or empty = all, otherwise exact names separated by commas, spaces around items
  trimmed; ``excludedNamespaces`` wins over ``namespaces``; the opt-out annotation
  ``tcr.tencentcloudcr.com/opt-out: "true"`` on a Namespace or ServiceAccount means "not
  served": we neither add there nor keep what we added there);
* the Secret to distribute (``kubernetes.io/dockerconfigjson``);
* the new ``imagePullSecrets`` list of a ServiceAccount (add ours, keep every other entry in
  its place, never list ours twice, remove only ours that are no longer wanted);
* the status of an ImagePullSecret (counts, bounded history lists, Ready condition).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from . import api

# ---------------------------------------------------------------------------------------------
# Observed state, reduced to the fields the controller needs (this is all the caches keep).


@dataclass(frozen=True, slots=True)
class NamespaceInfo:
    name: str
    opt_out: bool = False
    terminating: bool = False


@dataclass(frozen=True, slots=True)
class ServiceAccountInfo:
    namespace: str
    name: str
    pull_secrets: tuple[str | None, ...] = ()
    opt_out: bool = False
    resource_version: str = ""

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"


def opted_out(annotations: Mapping[str, str] | None) -> bool:
    """True when the opt-out annotation is set to "true" (case-insensitive, spaces ignored)."""
    if not annotations:
        return False
    return str(annotations.get(api.OPT_OUT_ANNOTATION, "")).strip().lower() == "true"


def namespace_info(obj: Mapping[str, Any]) -> NamespaceInfo:
    """Reduce a Namespace (JSON dict) to what the controller needs."""
    meta = obj.get("metadata") or {}
    phase = (obj.get("status") or {}).get("phase")
    return NamespaceInfo(
        name=meta.get("name", ""),
        opt_out=opted_out(meta.get("annotations")),
        terminating=bool(meta.get("deletionTimestamp")) or phase == "Terminating",
    )


def service_account_info(obj: Mapping[str, Any]) -> ServiceAccountInfo:
    """Reduce a ServiceAccount (JSON dict) to what the controller needs."""
    meta = obj.get("metadata") or {}
    entries = obj.get("imagePullSecrets") or []
    return ServiceAccountInfo(
        namespace=meta.get("namespace", ""),
        name=meta.get("name", ""),
        pull_secrets=tuple((e or {}).get("name") for e in entries),
        opt_out=opted_out(meta.get("annotations")),
        resource_version=meta.get("resourceVersion", ""),
    )


# ---------------------------------------------------------------------------------------------
# Which namespaces / ServiceAccounts an ImagePullSecret serves.


def parse_name_list_lenient(value: str | None) -> list[str] | None:
    """Parse a ``namespaces``/``serviceAccounts``/``excludedNamespaces`` value.

    Returns None for "all" (``"*"`` or empty), else the exact names in order, spaces around
    items trimmed. Lenient on purpose (empty items are skipped, ``*`` among names means all):
    malformed lists are rejected earlier by the webhook / CRD rules, and the controller
    refuses specs that ``validation.validate_spec`` flags.
    """
    text = (value or "").strip()
    if text in ("", "*"):
        return None
    items = [item.strip() for item in text.split(",")]
    if "*" in items:
        return None
    out: list[str] = []
    for item in items:
        if item and item not in out:
            out.append(item)
    return out


@dataclass(frozen=True, slots=True)
class Target:
    """Selection of one ImagePullSecret: None means all."""

    name: str
    namespaces: frozenset[str] | None = None
    service_accounts: frozenset[str] | None = None
    excluded: frozenset[str] = frozenset()

    @property
    def secret_name(self) -> str:
        return api.secret_name(self.name)


def target_from_spec(name: str, spec: Mapping[str, Any]) -> Target:
    ns = parse_name_list_lenient(spec.get("namespaces"))
    sas = parse_name_list_lenient(spec.get("serviceAccounts"))
    excluded = parse_name_list_lenient(spec.get("excludedNamespaces")) or []
    return Target(
        name=name,
        namespaces=None if ns is None else frozenset(ns),
        service_accounts=None if sas is None else frozenset(sas),
        excluded=frozenset(excluded),
    )


def namespace_served(target: Target, ns: NamespaceInfo) -> bool:
    """Does ``target`` want its Secret in namespace ``ns``?"""
    if ns.opt_out or ns.terminating or ns.name in target.excluded:
        return False
    return target.namespaces is None or ns.name in target.namespaces


def service_account_served(target: Target, ns: NamespaceInfo, sa: ServiceAccountInfo) -> bool:
    """Does ``target`` want its entry on ServiceAccount ``sa`` (which lives in ``ns``)?"""
    if not namespace_served(target, ns) or sa.opt_out:
        return False
    return target.service_accounts is None or sa.name in target.service_accounts


# ---------------------------------------------------------------------------------------------
# ServiceAccount imagePullSecrets.


def desired_pull_secrets(
    current: Sequence[str | None], wanted: Collection[str], managed: Collection[str]
) -> list[str | None]:
    """New ``imagePullSecrets`` names for a ServiceAccount.

    ``managed`` are the names this controller owns (``tcr.ips<name>`` of the ImagePullSecrets
    it serves); ``wanted`` are those of them that should be listed. Every other entry is kept
    as it is, in its place (duplicates of foreign names included); each wanted name appears
    exactly once (first occurrence kept, missing ones appended in sorted order); managed names
    that are not wanted are removed.
    """
    owned = set(managed) | set(wanted)
    want = set(wanted)
    out: list[str | None] = []
    seen: set[str] = set()
    for entry in current:
        if entry is not None and entry in owned:
            if entry in want and entry not in seen:
                out.append(entry)
                seen.add(entry)
            continue
        out.append(entry)
    out.extend(sorted(want - seen))
    return out


# ---------------------------------------------------------------------------------------------
# Credentials and the distributed Secret.


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
    spec: Mapping[str, Any], lookup_secret: Callable[[str], Mapping[str, str] | None]
) -> Credentials:
    """Credentials from ``spec.docker``; ``lookup_secret(name)`` returns a Secret's ``data``
    (base64 values) from the add-on's namespace, or None when it does not exist."""
    docker = spec.get("docker") or {}
    server = str(docker.get("server") or "").strip()
    username = str(docker.get("username") or "")
    if not server:
        raise CredentialsError("spec.docker.server is empty")
    ref = docker.get("passwordSecretRef")
    if ref:
        name = str(ref.get("name") or "")
        key = str(ref.get("key") or api.DEFAULT_PASSWORD_KEY)
        data = lookup_secret(name) if name else None
        if data is None:
            raise CredentialsError(f"passwordSecretRef: Secret {name!r} not found in the add-on's namespace")
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


def dockerconfigjson(creds: Credentials) -> str:
    auth = base64.b64encode(f"{creds.username}:{creds.password}".encode()).decode("ascii")
    doc = {"auths": {creds.server: {"username": creds.username, "password": creds.password, "auth": auth}}}
    return json.dumps(doc, sort_keys=True, separators=(",", ":"))


def secret_labels(ips_name: str) -> dict[str, str]:
    return {api.LABEL_MANAGED_BY: api.MANAGED_BY, api.LABEL_IPS: ips_name}


def desired_secret(ips_name: str, namespace: str, creds: Credentials) -> dict[str, Any]:
    """The Secret body to create in ``namespace``."""
    payload = base64.b64encode(dockerconfigjson(creds).encode()).decode("ascii")
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": api.secret_name(ips_name), "namespace": namespace, "labels": secret_labels(ips_name)},
        "type": api.SECRET_TYPE,
        "data": {api.SECRET_KEY: payload},
    }


def fingerprint(desired: Mapping[str, Any]) -> str:
    """Stable digest of what matters in a desired Secret (content hash; not secret itself)."""
    doc = {"type": desired.get("type"), "data": desired.get("data"), "labels": desired["metadata"].get("labels")}
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()


def secret_up_to_date(observed: Mapping[str, Any], desired: Mapping[str, Any]) -> bool:
    """True when ``observed`` has our type, exactly our data and our labels (others may exist)."""
    if observed.get("type") != desired.get("type"):
        return False
    if (observed.get("data") or {}) != desired.get("data"):
        return False
    labels = (observed.get("metadata") or {}).get("labels") or {}
    return all(labels.get(k) == v for k, v in desired["metadata"]["labels"].items())


def secret_for_update(observed: Mapping[str, Any], desired: Mapping[str, Any]) -> dict[str, Any]:
    """``observed`` (with its resourceVersion and foreign metadata) carrying our labels and data."""
    meta = dict(observed.get("metadata") or {})
    meta["labels"] = {**(meta.get("labels") or {}), **desired["metadata"]["labels"]}
    out = dict(observed)
    out["metadata"] = meta
    out["data"] = dict(desired["data"])
    out.pop("stringData", None)
    return out


def is_ours(secret: Mapping[str, Any], ips_name: str) -> bool:
    labels = (secret.get("metadata") or {}).get("labels") or {}
    return labels.get(api.LABEL_IPS) == ips_name and labels.get(api.LABEL_MANAGED_BY) == api.MANAGED_BY


# ---------------------------------------------------------------------------------------------
# Status.


def record_history(
    existing: Sequence[Mapping[str, Any]] | None, names: Iterable[str], when: str, limit: int = api.STATUS_LIST_MAX
) -> list[dict[str, str]]:
    """Bounded history list, newest first; each namespacedName at most once (newest kept)."""
    fresh = [{"namespacedName": n, "updatedAt": when} for n in dict.fromkeys(names)]
    fresh_names = {e["namespacedName"] for e in fresh}
    old = [
        {"namespacedName": str(e.get("namespacedName", "")), "updatedAt": str(e.get("updatedAt", ""))}
        for e in (existing or [])
        if e.get("namespacedName") not in fresh_names
    ]
    return (fresh + old)[:limit]


@dataclass(frozen=True, slots=True)
class Counts:
    secrets_desired: int = 0
    secrets_success: int = 0
    sas_desired: int = 0
    sas_success: int = 0


def ready_condition(
    counts: Counts, problem: tuple[str, str] | None, previous: Sequence[Mapping[str, Any]] | None, now: str
) -> dict[str, str]:
    """The Ready condition; ``problem`` = (reason, message) when something blocks progress.
    lastTransitionTime is kept when the status does not change."""
    if problem is not None:
        status, reason, message = "False", problem[0], problem[1]
    elif counts.secrets_success >= counts.secrets_desired and counts.sas_success >= counts.sas_desired:
        status, reason = "True", "Synced"
        message = f"{counts.secrets_success} Secrets and {counts.sas_success} ServiceAccounts up to date"
    else:
        status, reason = "False", "Progressing"
        message = (
            f"{counts.secrets_success}/{counts.secrets_desired} Secrets and "
            f"{counts.sas_success}/{counts.sas_desired} ServiceAccounts up to date"
        )
    last = now
    for cond in previous or []:
        if cond.get("type") == "Ready" and cond.get("status") == status and cond.get("lastTransitionTime"):
            last = str(cond["lastTransitionTime"])
    return {"type": "Ready", "status": status, "reason": reason, "message": message, "lastTransitionTime": last}


def compute_status(
    previous: Mapping[str, Any] | None,
    counts: Counts,
    *,
    generation: int | None,
    secrets_written: Iterable[str],
    sas_written: Iterable[str],
    problem: tuple[str, str] | None,
    now: str,
) -> dict[str, Any]:
    prev = previous or {}
    status: dict[str, Any] = {
        "secretsDesired": counts.secrets_desired,
        "secretsSuccess": counts.secrets_success,
        "sAsDesired": counts.sas_desired,
        "sAsSuccess": counts.sas_success,
        "secretUpdateSuccessful": record_history(prev.get("secretUpdateSuccessful"), secrets_written, now),
        "serviceAccountsModifySuccessful": record_history(
            prev.get("serviceAccountsModifySuccessful"), sas_written, now
        ),
        "conditions": [ready_condition(counts, problem, prev.get("conditions"), now)],
    }
    if generation is not None:
        status["observedGeneration"] = generation
    return status


def status_changed(previous: Mapping[str, Any] | None, new: Mapping[str, Any]) -> bool:
    return dict(previous or {}) != dict(new)
