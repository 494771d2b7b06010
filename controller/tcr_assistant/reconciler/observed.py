"""Observed state: API objects reduced to the fields the controller keeps.

The reflectors store only these views (memory: see "Caches" in docs/DESIGN.md); every decision
in `reconcile` and `status` reads them.
"""

from __future__ import annotations

import hashlib
import json
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from tcr_assistant.spec import api


@dataclass(frozen=True, slots=True)
class NamespaceInfo:
    name: str
    opt_out: bool = False
    terminating: bool = False
    # (key, value) pairs, sorted: what spec.namespaceSelector matches. A change of labels is a
    # change of the view, so the reflector reports it.
    labels: tuple[tuple[str, str], ...] = ()


# A ServiceAccount's imagePullSecrets are kept whole only while short: a tenant can put
# thousands of long entries on its accounts, and the controller's memory must not grow with them.
ENTRIES_KEPT = 32  # entries
ENTRY_CHARS_KEPT = 4096  # characters of names, all entries together
OURS_KEPT = 32  # entries named like ours, when the list is too long to keep whole


@dataclass(frozen=True, slots=True)
class ServiceAccountInfo:
    """What decisions need of a ServiceAccount.

    ``pull_secrets`` is the whole ``imagePullSecrets`` list (names; None for an entry without
    one) when it is short (``all_kept``). A longer list is reduced to the entries named like
    ours (``tcr.ips…``, in order, repeats included; at most OURS_KEPT, ``ours_kept`` False when
    there were more) and a digest of every name (``entries_digest``): enough to decide whether
    it needs our write, and whether a Pod's entries were copied from it. A write to such an
    account reads it whole first."""

    namespace: str
    name: str
    pull_secrets: tuple[str | None, ...] = ()
    opt_out: bool = False
    resource_version: str = ""
    all_kept: bool = True
    ours_kept: bool = True
    entries_digest: str = ""  # only when not all_kept

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    @property
    def ours(self) -> tuple[str, ...]:
        """The entries named like ours, in order (all of them when ``ours_kept``)."""
        return tuple(n for n in self.pull_secrets if n is not None and n.startswith(api.SECRET_PREFIX))


def entries_digest(names: Sequence[str | None]) -> str:
    """A digest of a list of imagePullSecrets names (not secret: names only)."""
    return hashlib.blake2b(json.dumps(list(names)).encode(), digest_size=16).hexdigest()


def reduced_pull_secrets(names: Sequence[str | None]) -> tuple[tuple[str | None, ...], bool, bool, str]:
    """(kept names, all kept, ours all kept, digest or "") for a ServiceAccount's entry names."""
    if len(names) <= ENTRIES_KEPT and sum(len(n or "") for n in names) <= ENTRY_CHARS_KEPT:
        return tuple(names), True, True, ""
    ours = [n for n in names if n is not None and n.startswith(api.SECRET_PREFIX)]
    return tuple(ours[:OURS_KEPT]), False, len(ours) <= OURS_KEPT, entries_digest(names)


def opted_out(annotations: Mapping[str, str] | None) -> bool:
    """True when the opt-out annotation is set to "true" (case-insensitive, spaces ignored)."""
    if not annotations:
        return False
    return str(annotations.get(api.OPT_OUT_ANNOTATION, "")).strip().lower() == "true"


def namespace_info(obj: Mapping[str, Any]) -> NamespaceInfo:
    meta = obj.get("metadata") or {}
    phase = (obj.get("status") or {}).get("phase")
    name = meta.get("name", "")
    labels = meta.get("labels") or {}
    return NamespaceInfo(
        name=name,
        opt_out=opted_out(meta.get("annotations")),
        terminating=bool(meta.get("deletionTimestamp")) or phase == "Terminating",
        # Keys repeat across namespaces (interned, stored once); the label every namespace
        # carries, kubernetes.io/metadata.name, shares the name's string.
        labels=tuple(sorted((sys.intern(str(k)), name if v == name else str(v)) for k, v in labels.items())),
    )


def pull_secret_names(obj: Mapping[str, Any]) -> list[str | None]:
    """The names of a ServiceAccount's (or a Pod spec's) ``imagePullSecrets``, None for an entry without one."""
    return [e.get("name") if isinstance(e, Mapping) else None for e in obj.get("imagePullSecrets") or []]


def service_account_info(obj: Mapping[str, Any]) -> ServiceAccountInfo:
    meta = obj.get("metadata") or {}
    kept, all_kept, ours_kept, digest = reduced_pull_secrets(pull_secret_names(obj))
    return ServiceAccountInfo(
        namespace=meta.get("namespace", ""),
        name=meta.get("name", ""),
        pull_secrets=kept,
        opt_out=opted_out(meta.get("annotations")),
        resource_version=meta.get("resourceVersion", ""),
        all_kept=all_kept,
        ours_kept=ours_kept,
        entries_digest=digest,
    )


def image_pull_secret_view(obj: Mapping[str, Any]) -> dict[str, Any]:
    """An ImagePullSecret without managedFields, annotations and the like."""
    meta = obj.get("metadata") or {}
    keep = {
        k: meta.get(k)
        for k in ("name", "uid", "resourceVersion", "generation", "deletionTimestamp", "finalizers", "labels")
        if meta.get(k) is not None
    }
    return {
        "apiVersion": obj.get("apiVersion"),
        "kind": obj.get("kind"),
        "metadata": keep,
        "spec": obj.get("spec") or {},
        "status": obj.get("status") or {},
    }


def local_secret_view(obj: Mapping[str, Any]) -> dict[str, Any]:
    """A Secret of the add-on's namespace: its name, data (base64 values) and which kind of
    credential source it is (label value "true", or "minted": a token minted for a tokenFrom)."""
    meta = obj.get("metadata") or {}
    return {"name": meta.get("name"), "data": dict(obj.get("data") or {}),
            "source": (meta.get("labels") or {}).get(api.LABEL_CREDENTIAL_SOURCE)}


def spec_or_metadata_changed(old: Mapping[str, Any] | None, new: Mapping[str, Any] | None) -> bool:
    """False only for an update that touched nothing but the status (our own status writes)."""
    if old is None or new is None:
        return True

    def significant(obj: Mapping[str, Any]) -> Any:
        meta = {k: v for k, v in (obj.get("metadata") or {}).items() if k != "resourceVersion"}
        return (meta, obj.get("spec"))

    return significant(old) != significant(new)


def removed_pull_secrets(old: ServiceAccountInfo | None, new: ServiceAccountInfo) -> frozenset[str]:
    """Names of ours (``tcr.ips…``) that an update took out of ``imagePullSecrets``."""
    if old is None:
        return frozenset()
    kept = set(new.pull_secrets)
    return frozenset(
        n for n in old.pull_secrets if n is not None and n.startswith(api.SECRET_PREFIX) and n not in kept
    )


def content_fingerprint(secret_type: Any, data: Any, labels: Mapping[str, str]) -> str:
    """Digest of what we write into a distributed Secret: type, data and our labels (a content
    hash; not secret itself)."""
    doc = {"type": secret_type, "data": data, "labels": dict(labels)}
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class DistributedSecretInfo:
    """One of our Secrets as the drift watch sees it: where, for which ImagePullSecret, and the
    fingerprint of its content (never the content)."""

    namespace: str
    name: str
    image_pull_secret: str
    fingerprint: str


def distributed_secret_info(obj: Mapping[str, Any]) -> DistributedSecretInfo:
    meta = obj.get("metadata") or {}
    labels = meta.get("labels") or {}
    ours = {k: labels[k] for k in (api.LABEL_MANAGED_BY, api.LABEL_IPS) if k in labels}
    return DistributedSecretInfo(
        namespace=meta.get("namespace", ""),
        name=meta.get("name", ""),
        image_pull_secret=str(labels.get(api.LABEL_IPS, "")),
        fingerprint=content_fingerprint(obj.get("type"), obj.get("data") or {}, ours),
    )
