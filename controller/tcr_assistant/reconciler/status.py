"""The status of an ImagePullSecret, derived from observed state (pure: no I/O, no clock).

Counts come from the caches (namespaces, ServiceAccounts) and the controller's record of the
Secrets it verified; the two history lists from the bounded record of its recent writes.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from tcr_assistant.reconciler.decisions import Plan, namespace_served, service_account_served
from tcr_assistant.reconciler.observed import NamespaceInfo, ServiceAccountInfo
from tcr_assistant.spec import api


def record_history(
    existing: Sequence[Mapping[str, Any]] | None, written: Mapping[str, str], limit: int = api.STATUS_LIST_MAX
) -> list[dict[str, str]]:
    """A bounded history list, newest first, each namespacedName once with its latest time.

    ``written``: namespacedName -> when we wrote it. Applying the same writes twice gives the
    same list, so a status write that failed loses nothing when it is retried."""
    latest: dict[str, str] = {}
    for entry in existing or []:
        name, when = str(entry.get("namespacedName", "")), str(entry.get("updatedAt", ""))
        if when > latest.get(name, ""):
            latest[name] = when
    for name, when in written.items():
        if when > latest.get(name, ""):
            latest[name] = when
    ordered = sorted(sorted(latest.items()), key=lambda item: item[1], reverse=True)  # stable: ties by name
    return [{"namespacedName": name, "updatedAt": when} for name, when in ordered[:limit]]


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
    return condition("Ready", status, reason, message, previous, now)


def condition(kind: str, status: str, reason: str, message: str, previous: Sequence[Mapping[str, Any]] | None,
              now: str) -> dict[str, str]:
    """A condition of type ``kind``; its lastTransitionTime is kept from ``previous`` while its
    status stays the same."""
    last = now
    for cond in previous or []:
        if cond.get("type") == kind and cond.get("status") == status and cond.get("lastTransitionTime"):
            last = str(cond["lastTransitionTime"])
    return {"type": kind, "status": status, "reason": reason, "message": message, "lastTransitionTime": last}


def compute_status(
    previous: Mapping[str, Any] | None,
    counts: Counts,
    *,
    generation: int | None,
    secrets_written: Mapping[str, str],
    sas_written: Mapping[str, str],
    problem: tuple[str, str] | None,
    now: str,
    more_conditions: Sequence[dict[str, str]] = (),
    token_expires_at: str | None = None,
) -> dict[str, Any]:
    prev = previous or {}
    status: dict[str, Any] = {
        "secretsDesired": counts.secrets_desired,
        "secretsSuccess": counts.secrets_success,
        "sAsDesired": counts.sas_desired,
        "sAsSuccess": counts.sas_success,
        "secretUpdateSuccessful": record_history(prev.get("secretUpdateSuccessful"), secrets_written),
        "serviceAccountsModifySuccessful": record_history(prev.get("serviceAccountsModifySuccessful"), sas_written),
        "conditions": [ready_condition(counts, problem, prev.get("conditions"), now), *more_conditions],
    }
    if generation is not None:
        status["observedGeneration"] = generation
    if token_expires_at is not None or "tokenExpiresAt" in prev:
        status["tokenExpiresAt"] = token_expires_at  # None: the merge patch takes it out
    return status


def status_changed(previous: Mapping[str, Any] | None, new: Mapping[str, Any]) -> bool:
    return dict(previous or {}) != dict(new)


def count(
    plan: Plan,
    namespaces: Iterable[NamespaceInfo],
    service_accounts: Mapping[str, Mapping[str, ServiceAccountInfo]],
    records: Mapping[tuple[str, str], str],
) -> Counts:
    """Desired and up-to-date Secrets and ServiceAccounts of ``plan``. ``records``:
    (namespace, ImagePullSecret name) -> fingerprint of the Secret we verified there."""
    secrets_desired = secrets_success = sas_desired = sas_success = 0
    for ns in namespaces:
        if not namespace_served(plan.target, ns):
            continue
        secrets_desired += 1
        if plan.active and records.get((ns.name, plan.name)) == plan.fingerprint:
            secrets_success += 1
        for sa in (service_accounts.get(ns.name) or {}).values():
            if service_account_served(plan.target, ns, sa):
                sas_desired += 1
                if plan.secret_name in sa.pull_secrets:
                    sas_success += 1
    return Counts(secrets_desired, secrets_success, sas_desired, sas_success)


def unchecked_namespaces(
    plan: Plan, namespaces: Iterable[NamespaceInfo], records: Mapping[tuple[str, str], str]
) -> bool:
    """Some served namespace has not been checked yet (start-up, or a fan-out in progress):
    counts written now would be wrong, and be written again a moment later."""
    if not plan.active:
        return False
    return any(namespace_served(plan.target, ns) and (ns.name, plan.name) not in records for ns in namespaces)


def status_wait(deferred_since: float | None, now: float, settle_limit: float) -> bool:
    """Keep waiting for unchecked namespaces? Not forever: one that keeps failing must show."""
    return deferred_since is None or now - deferred_since < settle_limit
