"""Decisions: what to write, as pure functions of observed state (no I/O, clocks passed in).

* which namespaces and ServiceAccounts an ImagePullSecret serves (the list rule of
  docs/DESIGN.md "API", and the opt-out annotation);
* what each ImagePullSecret wants (`Plan`), the Secret to distribute and when to write, replace
  or remove it (`namespace_secret_actions`, `secret_step`);
* the new ``imagePullSecrets`` of a ServiceAccount (ours added once, every other entry kept in
  its place) and when to put back an entry someone removed (`relink_due`).

The status is decided in `status`; the controller executes what these functions return.
"""

from __future__ import annotations

import base64
import enum
import json
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

# Re-exported: the controller and the tests know them from here.
from tcr_assistant.reconciler.credentials import Credentials as Credentials
from tcr_assistant.reconciler.credentials import CredentialsError as CredentialsError
from tcr_assistant.reconciler.credentials import credential_secret_keys as credential_secret_keys
from tcr_assistant.reconciler.credentials import resolve_credentials as resolve_credentials
from tcr_assistant.reconciler.observed import NamespaceInfo, ServiceAccountInfo, content_fingerprint
from tcr_assistant.spec import api, selectors, validation
from tcr_assistant.spec.selectors import Selector

# -- Which namespaces / ServiceAccounts an ImagePullSecret serves -------------------------------


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
    selector: Selector | None = None  # spec.namespaceSelector; None = every namespace

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
        selector=selectors.from_object(spec.get("namespaceSelector")),
    )


def namespace_served(target: Target, ns: NamespaceInfo) -> bool:
    """Does ``target`` want its Secret in namespace ``ns``?"""
    if ns.opt_out or ns.terminating or ns.name in target.excluded:
        return False
    if target.namespaces is not None and ns.name not in target.namespaces:
        return False
    return target.selector is None or target.selector.matches(dict(ns.labels))


def service_account_served(target: Target, ns: NamespaceInfo, sa: ServiceAccountInfo) -> bool:
    """Does ``target`` want its entry on ServiceAccount ``sa`` (which lives in ``ns``)?"""
    if not namespace_served(target, ns) or sa.opt_out:
        return False
    return target.service_accounts is None or sa.name in target.service_accounts


# -- ServiceAccount imagePullSecrets ------------------------------------------------------------


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


# -- Credentials and the distributed Secret -----------------------------------------------------


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
    """Stable digest of what matters in a desired Secret (see `observed.content_fingerprint`)."""
    return content_fingerprint(desired.get("type"), desired.get("data"), desired["metadata"].get("labels") or {})


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




class SecretStep(enum.Enum):
    """What to do with a distributed Secret, given a fresh read of it."""

    CREATE = "create"  # it does not exist
    UNCHANGED = "unchanged"
    UPDATE = "update"  # PUT our labels and data onto it (foreign metadata kept)
    REPLACE = "replace"  # another type: the type is immutable, and the name is reserved for us


def secret_step(observed: Mapping[str, Any] | None, desired: Mapping[str, Any]) -> SecretStep:
    if observed is None:
        return SecretStep.CREATE
    if secret_up_to_date(observed, desired):
        return SecretStep.UNCHANGED
    if observed.get("type") != desired.get("type"):
        return SecretStep.REPLACE
    return SecretStep.UPDATE


# -- What one ImagePullSecret wants -------------------------------------------------------------


@dataclass(frozen=True)
class Plan:
    """What one ImagePullSecret wants, derived from its spec and the Secret it references."""

    name: str
    obj: Mapping[str, Any]
    target: Target
    creds: Credentials | None
    problem: tuple[str, str] | None  # (reason, message) that blocks distribution
    deleting: bool
    fingerprint: str = ""

    @property
    def secret_name(self) -> str:
        return api.secret_name(self.name)

    @property
    def active(self) -> bool:
        """Distributes: valid, credentials resolved, not being deleted."""
        return self.creds is not None and self.problem is None and not self.deleting

    @property
    def managed(self) -> bool:
        """Its entries may be removed: a valid spec, or being deleted. An invalid spec keeps
        what it had (a typo must not cause an outage)."""
        return self.deleting or self.problem is None

    @property
    def shape(self) -> tuple[Any, ...]:
        """What decides the namespaces' Secrets and links: a change needs a fan-out."""
        return (self.target, self.fingerprint, self.active, self.managed)


PROBLEM_MESSAGE_MAX = 900


def plan_for(obj: Mapping[str, Any], lookup_secret: Callable[[str], Mapping[str, str] | None]) -> Plan:
    """The plan of ImagePullSecret ``obj``; ``lookup_secret`` as for `resolve_credentials`."""
    meta = obj.get("metadata") or {}
    name = str(meta.get("name"))
    spec = obj.get("spec") or {}
    target = target_from_spec(name, spec)
    problem: tuple[str, str] | None = None
    creds = None
    errors = validation.validate_spec(spec)
    if errors:
        problem = ("InvalidSpec", "; ".join(f"{e.field}: {e.message}" for e in errors)[:PROBLEM_MESSAGE_MAX])
    else:
        try:
            creds = resolve_credentials(spec, lookup_secret, name)
        except CredentialsError as exc:
            problem = ("CredentialsUnavailable", str(exc))
    fp = fingerprint(desired_secret(name, "-", creds)) if creds else ""
    return Plan(name, obj, target, creds, problem, bool(meta.get("deletionTimestamp")), fp)


# -- One namespace's Secrets --------------------------------------------------------------------

# Secret records (what we know of one of our Secrets): a fingerprint of what is there, or
ABSENT = "absent"  # known not to exist
STALE = "stale"  # exists, but not as we wrote it (read it before writing)


@dataclass(frozen=True, slots=True)
class EnsureSecret:
    plan: Plan
    desired: Mapping[str, Any]
    create_first: bool  # the namespace is new: create, and read only on AlreadyExists


@dataclass(frozen=True, slots=True)
class RemoveSecret:
    plan: Plan
    namespace: str


SecretAction = EnsureSecret | RemoveSecret


def namespace_secret_actions(
    ns: NamespaceInfo | None, plans: Iterable[Plan], records: Mapping[str, str], resync: bool
) -> list[SecretAction]:
    """What to do in namespace ``ns``. ``records``: ImagePullSecret name -> what we know of its
    Secret there (a fingerprint, ABSENT, or missing = unknown). Secrets known to be up to date
    or absent cost nothing.

    ``resync``: the first check of the namespace after start-up, when an unknown Secret most
    likely exists: read it first (a restart writes nothing) and look for ours where no longer
    wanted. Otherwise an unknown Secret most likely does not exist: create it without a read
    (a read follows only on AlreadyExists), and remove only Secrets known to exist."""
    if ns is None or ns.terminating:
        return []
    actions: list[SecretAction] = []
    for plan in plans:
        record = records.get(plan.name)
        unknown_or_absent = record in (None, ABSENT)
        if plan.active and plan.creds is not None and namespace_served(plan.target, ns):
            if record != plan.fingerprint:
                desired = desired_secret(plan.name, ns.name, plan.creds)
                actions.append(EnsureSecret(plan, desired, create_first=not resync and unknown_or_absent))
        elif plan.managed and (not unknown_or_absent or (resync and record is None)):
            actions.append(RemoveSecret(plan, ns.name))
    return actions


# -- One ServiceAccount's entries ---------------------------------------------------------------


def wanted_entries(
    plans: Iterable[Plan], ns: NamespaceInfo | None, sa: ServiceAccountInfo, records: Mapping[str, str]
) -> tuple[set[str], set[str]]:
    """(wanted, managed) Secret names for ``sa``: wanted are listed (only Secrets that exist:
    ``records`` as for `namespace_secret_actions`), managed that are not wanted are removed."""
    wanted: set[str] = set()
    managed: set[str] = set()
    for plan in plans:
        if plan.managed:
            managed.add(plan.secret_name)
        exists = records.get(plan.name) not in (None, ABSENT)
        if exists and plan.active and ns is not None and service_account_served(plan.target, ns, sa):
            wanted.add(plan.secret_name)
    return wanted, managed


RELINK_RESET_SECONDS = 600.0  # a removal this long after the previous one starts the backoff anew
RELINK_MAX_DELAY = 300.0


def relink_due(removals: Sequence[float], base_delay: float) -> float:
    """When to put back an entry someone removed from a ServiceAccount: ``removals`` are the
    times (ascending) our entries were removed. Each removal soon after the previous one doubles
    the wait, so we do not fight another tool at full speed."""
    if not removals:
        return 0.0
    count = 1
    for earlier, later in zip(reversed(removals[:-1]), reversed(removals[1:]), strict=True):
        if later - earlier >= RELINK_RESET_SECONDS:
            break
        count += 1
    return removals[-1] + min(RELINK_MAX_DELAY, base_delay * (2 ** (count - 1)))
