"""The controller's mutable state: one object, one lock.

Event handlers write only the *observed* part (what the reflectors saw) and enqueue keys;
workers write the *remembered* part (what they derived, verified or wrote). Everything a
decision needs is read from here under the lock and handed to the pure functions of
`reconcile` and `status`.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from tcr_assistant.reconciler.credcheck import CheckRecord
from tcr_assistant.reconciler.decisions import Plan
from tcr_assistant.reconciler.observed import NamespaceInfo, ServiceAccountInfo
from tcr_assistant.spec import api
from tcr_assistant.tcrtoken.decision import MintRecord

SaKey = tuple[str, str]  # (namespace, name)
SecretKey = tuple[str, str]  # (namespace, ImagePullSecret name)

REMOVALS_KEPT = 16  # enough for the relink backoff to reach its cap
RECENT_EVENTS_KEPT = 1024  # Events remembered for de-duplication (their messages name namespaces)


@dataclass
class Removals:
    """Our entries someone took out of one ServiceAccount: when (ascending), and which names are
    not yet dealt with. ``unconsumed`` counts the times not yet seen by a worker."""

    times: list[float] = field(default_factory=list)
    names: set[str] = field(default_factory=set)
    unconsumed: int = 0


@dataclass
class ControllerState:
    lock: threading.RLock = field(default_factory=threading.RLock)

    # -- observed: written by the event handlers ----------------------------------------------
    image_pull_secrets: dict[str, Mapping[str, Any]] = field(default_factory=dict)  # name -> view
    local_secrets: dict[str, dict[str, str]] = field(default_factory=dict)  # add-on namespace: name -> data
    namespaces: dict[str, NamespaceInfo] = field(default_factory=dict)
    service_accounts: dict[str, dict[str, ServiceAccountInfo]] = field(default_factory=dict)  # ns -> name -> info
    sa_first_seen: dict[SaKey, float] = field(default_factory=dict)  # for the link-latency histogram
    sa_removals: dict[SaKey, Removals] = field(default_factory=dict)

    # -- remembered: written by the workers ----------------------------------------------------
    plans: dict[str, Plan] = field(default_factory=dict)  # derived from image_pull_secrets + local_secrets
    startup_unchecked: set[str] = field(default_factory=set)  # namespaces present at start, not yet checked
    # What each of our Secrets holds, as far as we know: the fingerprint we wrote or verified, or
    # ABSENT (else unknown). Workers set it after each write; the drift check (poll) or the
    # Secret watch (watch) when a Secret changes under us.
    secret_records: dict[SecretKey, str] = field(default_factory=dict)
    secret_drift: dict[SecretKey, str] = field(default_factory=dict)  # "deleted"/"changed" outside us, not yet repaired
    fanned_out: dict[str, tuple[Any, ...]] = field(default_factory=dict)  # plan shape last fanned out
    status_deferred_since: dict[str, float] = field(default_factory=dict)
    credential_checks: dict[str, CheckRecord] = field(default_factory=dict)  # the registry's last answer
    mint_records: dict[str, MintRecord] = field(default_factory=dict)  # the last mint of a tokenFrom
    # Our recent writes per ImagePullSecret (namespacedName -> when), bounded like the status
    # lists they feed; kept after a status write, so a failed one loses nothing.
    secret_writes: dict[str, dict[str, str]] = field(default_factory=dict)
    sa_writes: dict[str, dict[str, str]] = field(default_factory=dict)
    # ImagePullSecret being deleted -> namespaces whose key has not yet run since (its clean-up)
    cleanup_pending: dict[str, set[str]] = field(default_factory=dict)

    # -- helpers (callers hold the lock) -------------------------------------------------------

    def forget_namespace_secrets(self, namespace: str) -> None:
        for key in [k for k in self.secret_records if k[0] == namespace]:
            del self.secret_records[key]

    def forget_image_pull_secret(self, name: str) -> None:
        """It is gone: drop what we derived and remember for it."""
        self.plans.pop(name, None)
        self.fanned_out.pop(name, None)
        self.status_deferred_since.pop(name, None)
        self.secret_writes.pop(name, None)
        self.sa_writes.pop(name, None)
        self.cleanup_pending.pop(name, None)
        self.credential_checks.pop(name, None)
        self.mint_records.pop(name, None)
        for key in [k for k in self.secret_records if k[1] == name]:
            del self.secret_records[key]

    def records_in(self, namespace: str, plans: Iterable[Plan]) -> dict[str, str]:
        """ImagePullSecret name -> secret record in ``namespace``, for ``plans``."""
        out: dict[str, str] = {}
        for plan in plans:
            record = self.secret_records.get((namespace, plan.name))
            if record is not None:
                out[plan.name] = record
        return out

    def namespace_cleaned(self, namespace: str, cleanups: Iterable[str]) -> list[str]:
        """``namespace`` is clean of the ImagePullSecrets ``cleanups`` (its key ran with their
        plans deleting, or it is gone): those whose clean-up that completed."""
        completed = []
        for ips in cleanups:
            pending = self.cleanup_pending.get(ips)
            if pending is not None and namespace in pending:
                pending.discard(namespace)
                if not pending:
                    completed.append(ips)
        return completed

    def namespaces_with_record(self, name: str) -> set[str]:
        return {ns for ns, ips in self.secret_records if ips == name}

    def record_removals(self, key: SaKey, names: frozenset[str], when: float) -> None:
        """An update took ``names`` (ours) out of ServiceAccount ``key``."""
        if not names:
            return
        removals = self.sa_removals.setdefault(key, Removals())
        removals.times.append(when)
        del removals.times[:-REMOVALS_KEPT]
        removals.names |= names
        removals.unconsumed = min(removals.unconsumed + 1, len(removals.times))

    def consume_removals(self, key: SaKey, drifted: set[str]) -> None:
        """A worker has dealt with the removals recorded for ``key``. Removals of entries we no
        longer want (most often our own clean-up) are not drift: they leave no backoff."""
        removals = self.sa_removals.get(key)
        if removals is None:
            return
        if not drifted:
            del removals.times[len(removals.times) - removals.unconsumed :]
        removals.names.clear()
        removals.unconsumed = 0
        if not removals.times:
            del self.sa_removals[key]

    def account(self, namespace: str, name: str) -> ServiceAccountInfo | None:
        return (self.service_accounts.get(namespace) or {}).get(name)

    def plan_by_secret_name(self, secret_name: str) -> Plan | None:
        if not secret_name.startswith(api.SECRET_PREFIX):
            return None
        return self.plans.get(secret_name[len(api.SECRET_PREFIX) :])


def remember_write(log: dict[str, dict[str, str]], ips: str, what: str, when: str) -> None:
    """Record one write in a bounded per-ImagePullSecret log (oldest dropped)."""
    entries = log.setdefault(ips, {})
    entries.pop(what, None)
    entries[what] = when
    while len(entries) > api.STATUS_LIST_MAX:
        del entries[next(iter(entries))]


def remember_event(recent: dict[tuple[str, str, str], float], key: tuple[str, str, str], now: float,
                   window: float, kept: int = RECENT_EVENTS_KEPT) -> bool:
    """Should an Event ``key`` be sent now (not sent within ``window``)? Records it if so.
    ``recent`` stays bounded: beyond ``kept`` entries the oldest go (at worst an Event is
    sent again within the window)."""
    if now - recent.get(key, now - window) < window:
        return False
    recent.pop(key, None)
    recent[key] = now  # insertion order is sending order: the oldest come first
    while len(recent) > kept:
        del recent[next(iter(recent))]
    return True
