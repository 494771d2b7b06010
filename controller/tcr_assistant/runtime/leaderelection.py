"""Leader election on a coordination.k8s.io/v1 Lease, as client-go does it."""

from __future__ import annotations

import logging
import random
import socket
import threading
import time
import uuid
from datetime import UTC, datetime
from typing import Any

from ..kube import LEASES, Kube, KubeError

log = logging.getLogger(__name__)


def _micro_time(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


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
    ) -> None:
        self.kube = kube
        self.namespace = namespace
        self.name = name
        self.identity = identity or f"{socket.gethostname()}_{uuid.uuid4().hex[:8]}"
        self.lease_duration = lease_duration
        self.renew_deadline = renew_deadline
        self.retry_period = retry_period
        self._observed: tuple[Any, ...] | None = None
        self._observed_at = 0.0
        self.leading = threading.Event()
        self.attempts = 0  # tries to acquire or renew (tests wait on it)

    def _path(self) -> str:
        return LEASES.path(self.namespace, self.name)

    def try_acquire_or_renew(self) -> bool:
        now = time.time()
        lease = self.kube.get(self._path())
        spec_new = {
            "holderIdentity": self.identity,
            "leaseDurationSeconds": int(self.lease_duration),
            "renewTime": _micro_time(now),
        }
        if lease is None:
            body = {
                "apiVersion": "coordination.k8s.io/v1",
                "kind": "Lease",
                "metadata": {"name": self.name, "namespace": self.namespace},
                "spec": {**spec_new, "acquireTime": _micro_time(now), "leaseTransitions": 0},
            }
            try:
                self.kube.request("POST", LEASES.path(self.namespace), body=body)
            except KubeError as exc:
                if exc.status == 409:
                    return False
                raise
            self._observed, self._observed_at = None, time.monotonic()
            return True
        spec = lease.get("spec") or {}
        holder = spec.get("holderIdentity") or ""
        record = (holder, spec.get("renewTime"), spec.get("leaseDurationSeconds"))
        if record != self._observed:
            self._observed, self._observed_at = record, time.monotonic()
        duration = float(spec.get("leaseDurationSeconds") or self.lease_duration)
        if holder and holder != self.identity and time.monotonic() < self._observed_at + duration:
            return False
        new_spec = dict(spec)
        new_spec.update(spec_new)
        if holder != self.identity:
            new_spec["acquireTime"] = _micro_time(now)
            new_spec["leaseTransitions"] = int(spec.get("leaseTransitions") or 0) + 1
        lease["spec"] = new_spec
        try:
            self.kube.request("PUT", self._path(), body=lease)
        except KubeError as exc:
            if exc.status == 409:
                return False
            raise
        return True

    def _attempt(self) -> bool:
        self.attempts += 1
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
            stop.wait(self.retry_period * random.uniform(1.0, 1.2))
        return False

    def keep_renewing(self, stop: threading.Event) -> bool:
        """Renew until stop (returns True) or until renewing fails for renew_deadline (False)."""
        last_ok = time.monotonic()
        while not stop.wait(self.retry_period):
            if self._attempt():
                last_ok = time.monotonic()
            elif time.monotonic() - last_ok >= self.renew_deadline:
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
            spec["renewTime"] = _micro_time(time.time())
            self.kube.request("PUT", self._path(), body=lease)
            log.info("leader election: released the lease")
        except Exception as exc:
            log.warning("leader election: could not release the lease: %s", exc)
