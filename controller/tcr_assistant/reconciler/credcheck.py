"""The CredentialsAccepted condition, pure: when to ask the registry again, and what its last
answer makes of the condition (docs/DESIGN.md "Does the registry accept it?")."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from tcr_assistant.reconciler.status import condition

# What a registry said of a credential (registryprobe.RegistryProbe.check)
ACCEPTED = "Accepted"
REFUSED = "Refused"  # 401/403
UNREACHABLE = "Unreachable"
TLS_ERROR = "TLSError"
ADDRESS_REFUSED = "AddressRefused"  # an address the credential is never sent to
UNEXPECTED = "UnexpectedAnswer"

CONDITION = "CredentialsAccepted"
CHECKING = "Checking"
MIN_INTERVAL = 3.0  # seconds between two checks of one ImagePullSecret, however often its credential changes
RETRY_FIRST = 30.0  # after an answer other than Accepted; doubles up to the period


@dataclass(frozen=True, slots=True)
class ProbeResult:
    reason: str  # one of the constants above
    message: str  # safe to publish: no credential, no answer body

    @property
    def accepted(self) -> bool:
        return self.reason == ACCEPTED


@dataclass(frozen=True, slots=True)
class CheckRecord:
    """The registry's last answer for one ImagePullSecret's credential (by fingerprint)."""

    fingerprint: str
    result: ProbeResult
    failures: int = 0  # answers other than Accepted in a row, for this fingerprint


def record_answer(previous: CheckRecord | None, fingerprint: str, result: ProbeResult) -> CheckRecord:
    if result.accepted:
        return CheckRecord(fingerprint, result)
    before = previous.failures if previous is not None and previous.fingerprint == fingerprint else 0
    return CheckRecord(fingerprint, result, before + 1)


def next_check_after(record: CheckRecord, period: float) -> float:
    """Accepted: again after ``period`` (a token revoked, a password changed in the registry).
    Otherwise sooner, backing off: 30 s, 60 s, … up to ``period``."""
    if record.result.accepted:
        return period
    return min(period, RETRY_FIRST * 2 ** max(0, record.failures - 1))


def due(record: CheckRecord | None, fingerprint: str) -> bool:
    """A check is owed now: never asked, or the credential changed since."""
    return record is None or record.fingerprint != fingerprint


def published(conditions: Sequence[Mapping[str, Any]] | None) -> dict[str, str] | None:
    """The CredentialsAccepted condition as the status holds it, if any."""
    for cond in conditions or []:
        if cond.get("type") == CONDITION:
            return {str(key): str(value) for key, value in cond.items()}
    return None


def accepted_condition(record: CheckRecord | None, fingerprint: str,
                       previous: Sequence[Mapping[str, Any]] | None, now: str) -> dict[str, str]:
    """The condition for the credential of ``fingerprint``: Unknown until the registry answered
    for it; lastTransitionTime kept while the status stays. Before this process has asked at all
    (a restart), the published answer stands: a restart rewrites no status, and the ask it
    queues at once replaces the answer within seconds if it changed."""
    kept = published(previous)
    if record is None and kept is not None:
        return kept
    if record is None or record.fingerprint != fingerprint:
        return condition(CONDITION, "Unknown", CHECKING, "the registry has not been asked about this credential yet",
                         previous, now)
    return condition(CONDITION, "True" if record.result.accepted else "False", record.result.reason,
                     record.result.message, previous, now)
