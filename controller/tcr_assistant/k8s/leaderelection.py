"""Leader election on a coordination.k8s.io/v1 Lease, as client-go does it.

The timing decisions are pure functions (``check_durations``, ``held_by_another``,
``renew_deadline_passed``, ``claimed_spec``); ``LeaderElector`` is the I/O around them.
"""

from __future__ import annotations

import logging
import random
import socket
import threading
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, NamedTuple

from tcr_assistant.k8s.client import LEASES, Kube, KubeError
from tcr_assistant.k8s.clock import REAL_CLOCK, Clock

log = logging.getLogger(__name__)

JITTER_FACTOR = 1.2  # client-go's leaderelection.JitterFactor: retries wait retry_period * [1, 1.2)


def micro_time(ts: float) -> str:
    """A Lease's MicroTime for the wall time ``ts``."""
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def check_durations(lease_duration: float, renew_deadline: float, retry_period: float) -> None:
    """Raise ValueError unless the durations are usable together."""
    # client-go NewLeaderElector: LeaseDuration > RenewDeadline > JitterFactor*RetryPeriod, each > 0.
    values = f"lease duration {lease_duration:g}s, renew deadline {renew_deadline:g}s, retry period {retry_period:g}s"
    if min(lease_duration, renew_deadline, retry_period) <= 0:
        raise ValueError(f"leader election: every duration must be greater than zero ({values})")
    if lease_duration <= renew_deadline:
        raise ValueError(f"leader election: the lease duration must be greater than the renew deadline ({values})")
    if renew_deadline <= JITTER_FACTOR * retry_period:
        raise ValueError(
            f"leader election: the renew deadline must be greater than {JITTER_FACTOR:g} x the retry period "
            f"= {JITTER_FACTOR * retry_period:g}s ({values})"
        )


class LeaseRecord(NamedTuple):
    """What identifies one renewal of a Lease: any change means its holder is alive."""

    holder: str
    renew_time: str | None
    duration_seconds: int | None

    @classmethod
    def of(cls, spec: Mapping[str, Any]) -> LeaseRecord:
        return cls(spec.get("holderIdentity") or "", spec.get("renewTime"), spec.get("leaseDurationSeconds"))


def held_by_another(
    record: LeaseRecord, identity: str, observed_at: float, now: float, default_duration: float
) -> bool:
    """Whether another holder keeps the Lease: it names one and the record changed less than its
    lease duration ago. Both times are on our own monotonic clock (``observed_at``: when we first
    saw this record), never the Lease's timestamps, so clock skew between replicas does not matter."""
    if not record.holder or record.holder == identity:
        return False
    duration = float(record.duration_seconds or default_duration)
    return now < observed_at + duration


def renew_deadline_passed(last_renewed: float, now: float, renew_deadline: float) -> bool:
    """Whether the leader has failed to renew for so long that it must stop acting."""
    return now - last_renewed >= renew_deadline


def claimed_spec(spec: Mapping[str, Any] | None, identity: str, lease_duration: float, now: float) -> dict[str, Any]:
    """The Lease spec that has ``identity`` holding the Lease as of the wall time ``now``: renewed,
    or taken over (a new acquireTime, one more transition), or created (``spec`` None)."""
    claim: dict[str, Any] = {
        "holderIdentity": identity,
        "leaseDurationSeconds": int(lease_duration),
        "renewTime": micro_time(now),
    }
    if spec is None:
        return {**claim, "acquireTime": micro_time(now), "leaseTransitions": 0}
    new_spec = {**spec, **claim}
    if (spec.get("holderIdentity") or "") != identity:
        new_spec["acquireTime"] = micro_time(now)
        new_spec["leaseTransitions"] = int(spec.get("leaseTransitions") or 0) + 1
    return new_spec


class LeaderElector:
    """Lease-based leader election as client-go does it: the holder renews every ``retry``
    seconds; it gives up if it cannot renew within ``renew_deadline``; others take over once
    the lease has not changed for ``lease_duration`` (measured on their own clock). On a clean
    shutdown the lease is released (holder emptied) so a standby takes over at once."""

    def __init__(
        self,
        kube: Kube,
        namespace: str,
        name: str,
        identity: str | None = None,
        lease_duration: float = 15.0,
        renew_deadline: float = 10.0,
        retry_period: float = 2.0,
        *,
        clock: Clock = REAL_CLOCK,
    ) -> None:
        check_durations(lease_duration, renew_deadline, retry_period)
        self.kube = kube
        self.namespace = namespace
        self.name = name
        self.identity = identity or f"{socket.gethostname()}_{uuid.uuid4().hex[:8]}"
        self.lease_duration = lease_duration
        self.renew_deadline = renew_deadline
        self.retry_period = retry_period
        self.clock = clock
        self._observed: LeaseRecord | None = None
        self._observed_at = 0.0
        self.leading = threading.Event()

    def _path(self) -> str:
        return LEASES.path(self.namespace, self.name)

    def try_acquire_or_renew(self) -> bool:
        now = self.clock.now()
        lease = self.kube.get(self._path())
        if lease is None:
            body = {
                "apiVersion": "coordination.k8s.io/v1",
                "kind": "Lease",
                "metadata": {"name": self.name, "namespace": self.namespace},
                "spec": claimed_spec(None, self.identity, self.lease_duration, now),
            }
            try:
                self.kube.request("POST", LEASES.path(self.namespace), body=body)
            except KubeError as exc:
                if exc.status == 409:
                    return False
                raise
            self._observed, self._observed_at = None, self.clock.monotonic()
            return True
        spec = lease.get("spec") or {}
        record = LeaseRecord.of(spec)
        if record != self._observed:
            self._observed, self._observed_at = record, self.clock.monotonic()
        if held_by_another(record, self.identity, self._observed_at, self.clock.monotonic(), self.lease_duration):
            return False
        lease["spec"] = claimed_spec(spec, self.identity, self.lease_duration, now)
        try:
            self.kube.request("PUT", self._path(), body=lease)
        except KubeError as exc:
            if exc.status == 409:
                return False
            raise
        return True

    def _attempt(self) -> bool:
        try:
            return self.try_acquire_or_renew()
        except Exception as exc:
            log.warning("leader election: %s", exc)
            return False

    def acquire(self, stop: threading.Event) -> bool:
        log.info("leader election: %s waiting for lease %s/%s", self.identity, self.namespace, self.name)
        while not stop.is_set():
            if self._attempt():
                self.leading.set()
                log.info("leader election: %s acquired the lease", self.identity)
                return True
            self.clock.wait_event(stop, self.retry_period * random.uniform(1.0, JITTER_FACTOR))
        return False

    def keep_renewing(self, stop: threading.Event) -> bool:
        """Renew until stop (returns True) or until renewing fails for renew_deadline (False)."""
        last_ok = self.clock.monotonic()
        while not self.clock.wait_event(stop, self.retry_period):
            if self._attempt():
                last_ok = self.clock.monotonic()
            elif renew_deadline_passed(last_ok, self.clock.monotonic(), self.renew_deadline):
                self.leading.clear()
                log.error("leader election: could not renew the lease for %.0fs; lost leadership", self.renew_deadline)
                return False
        return True

    def release(self) -> None:
        if not self.leading.is_set():
            return
        self.leading.clear()
        try:
            lease = self.kube.get(self._path())
            if lease is None or (lease.get("spec") or {}).get("holderIdentity") != self.identity:
                return
            spec = lease["spec"]
            spec["holderIdentity"] = None
            spec["leaseDurationSeconds"] = 1
            spec["renewTime"] = micro_time(self.clock.now())
            self.kube.request("PUT", self._path(), body=lease)
            log.info("leader election: released the lease")
        except Exception as exc:
            log.warning("leader election: could not release the lease: %s", exc)
