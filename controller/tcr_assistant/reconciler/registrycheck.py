"""Asks the registry whether it accepts each ImagePullSecret's credential (a `RegistryKey` per
ImagePullSecret, on the leader's workers): at once when the credential changes, at most once
per MIN_INTERVAL, again after the period or, while refused or unreachable, sooner with backoff.
The answer is kept in ``ControllerState.credential_checks``; the status shows it as the
CredentialsAccepted condition; a turn for the worse gets a Warning Event. It reports, never
blocks: nothing is withheld from the namespaces for it."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from typing import Any

from tcr_assistant.reconciler import credcheck
from tcr_assistant.reconciler.keys import RegistryKey, Requeue
from tcr_assistant.reconciler.metrics import Metrics
from tcr_assistant.reconciler.pacing import Pacing
from tcr_assistant.reconciler.registryprobe import RegistryProbe
from tcr_assistant.reconciler.state import ControllerState

log = logging.getLogger(__name__)


class RegistryChecker:
    def __init__(self, probe: RegistryProbe, state: ControllerState, metrics: Metrics, period: float,
                 queue_after: Callable[[RegistryKey, float], None], status_changed: Callable[[str], None],
                 warn: Callable[[Any, str, str], None], monotonic: Callable[[], float]) -> None:
        self.probe = probe
        self.state = state
        self.metrics = metrics
        self.period = period
        self.queue_after = queue_after
        self.status_changed = status_changed
        self.warn = warn
        self.monotonic = monotonic
        self.pacing = Pacing(credcheck.MIN_INTERVAL)

    def plan_seen(self, name: str) -> None:
        """The plan of ``name`` was (re)computed: check now if its credential is new to us."""
        with self.state.lock:
            plan = self.state.plans.get(name)
            if plan is None or not plan.active or not credcheck.due(self.state.credential_checks.get(name),
                                                                    plan.fingerprint):
                return
        self.queue_after(RegistryKey(name), self.pacing.delay(name, self.monotonic()))

    def sync(self, name: str) -> Requeue | None:
        with self.state.lock:
            plan, obj = self.state.plans.get(name), self.state.image_pull_secrets.get(name)
            if plan is None or obj is None or not plan.active or plan.creds is None:
                self.state.credential_checks.pop(name, None)
                return None
            creds, fingerprint = plan.creds, plan.fingerprint
        self.pacing.started(name, self.monotonic())
        result = self.probe.check(creds.server, creds.username, creds.password)
        self.metrics.registry_checks.labels(result.reason).inc()
        with self.state.lock:
            previous = self.state.credential_checks.get(name)
            record = credcheck.record_answer(previous, fingerprint, result)
            self.state.credential_checks[name] = record
        self.metrics.credentials_accepted.labels(name).set(1 if result.accepted else 0)
        known = previous.result.reason if previous is not None else (
            credcheck.published((obj.get("status") or {}).get("conditions")) or {}).get("reason")
        if known != result.reason:  # a change: not every check, nor every restart
            level = logging.INFO if result.accepted else logging.WARNING
            log.log(level, "ImagePullSecret %s: registry %s: %s", name, result.reason, result.message)
            if not result.accepted:
                self.warn(obj, f"Registry{result.reason}", result.message)
        self.status_changed(name)
        return Requeue(credcheck.next_check_after(record, self.period))

    def forget(self, name: str) -> None:
        """``name`` is gone (its record went with the state's): so does its gauge."""
        with contextlib.suppress(KeyError):
            self.metrics.credentials_accepted.remove(name)
