"""Drift repair, "poll" mode: GET each distributed Secret by name, spread evenly over a period,
and check a namespace's Secrets when a Pod is admitted there (docs/DESIGN.md "Drift repair").
The "watch" mode needs no code here: a reflector on our Secrets feeds the controller's handler."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from tcr_assistant.k8s.client import Kube
from tcr_assistant.reconciler import decisions as reconcile
from tcr_assistant.reconciler.decisions import ABSENT, STALE
from tcr_assistant.reconciler.state import ControllerState

log = logging.getLogger(__name__)

IDLE_RECHECK = 10.0  # nothing distributed yet: look again this often
RESYNC_WAIT = 120.0  # start checking at the latest this long after start-up


def check_secret(kube: Kube, state: ControllerState, namespace: str, ips: str, fp: str) -> bool:
    """GET our Secret of ``ips`` in ``namespace``, believed to hold fingerprint ``fp``. When it was
    deleted or changed outside the controller, record that (its namespace key then rewrites it)
    and return True. A failed read is logged and counts as no drift."""
    with state.lock:
        plan = state.plans.get(ips)
        if plan is None or plan.creds is None or not plan.active or plan.fingerprint != fp \
                or state.secret_records.get((namespace, ips)) != fp:
            return False
    try:
        current = kube.get_secret(namespace, plan.secret_name)
    except Exception as exc:
        log.warning("drift check of %s/%s failed: %s", namespace, plan.secret_name, exc)
        return False
    desired = reconcile.desired_secret(ips, namespace, plan.creds)
    if reconcile.secret_step(current, desired) is reconcile.SecretStep.UNCHANGED:
        return False
    what = "deleted" if current is None else "changed"
    log.info("Secret %s/%s was %s outside the controller; repairing", namespace, plan.secret_name, what)
    with state.lock:
        if state.secret_records.get((namespace, ips)) != fp:
            return False  # rewritten meanwhile
        state.secret_records[(namespace, ips)] = ABSENT if current is None else STALE
        state.secret_drift[(namespace, ips)] = what
    return True


def check_namespace(kube: Kube, state: ControllerState, namespace: str) -> bool:
    """Every Secret we believe is in place in ``namespace``, checked now; whether one drifted."""
    with state.lock:
        items = [(ips, fp) for ips in state.plans
                 if (fp := state.secret_records.get((namespace, ips))) is not None and fp != ABSENT]
    return any([check_secret(kube, state, namespace, ips, fp) for ips, fp in items])


class DriftPoller:
    """Finds our Secrets deleted or changed outside the controller; ``repair(namespace)``
    queues the namespace, whose worker restores them."""

    def __init__(self, kube: Kube, state: ControllerState, period: float, stop: threading.Event,
                 repair: Callable[[str], None]) -> None:
        self.kube = kube
        self.state = state
        self.period = period
        self.stop_event = stop
        self.repair = repair

    def check_secrets_once(self) -> int:
        """One pass over every Secret believed up to date: its GETs spread evenly over the
        period, which the pass lasts. Returns the number found deleted or changed
        (their namespaces are queued for repair)."""
        state = self.state
        with state.lock:
            items = [(k, v) for k, v in state.secret_records.items() if v != ABSENT]
        found = 0
        start = time.monotonic()
        interval = self.period / max(1, len(items))
        for i, ((namespace, ips), fp) in enumerate(items):
            if self.stop_event.wait(max(0.0, start + i * interval - time.monotonic())):
                break
            if check_secret(self.kube, state, namespace, ips, fp):
                self.repair(namespace)
                found += 1
        self.stop_event.wait(max(0.0, start + self.period - time.monotonic()))
        return found

    def run(self) -> None:
        started = time.monotonic()
        while not self.stop_event.is_set():
            with self.state.lock:
                # Not before the start-up resync is done (a pass's pace is set by its count at
                # the start), unless some namespace keeps failing it.
                resyncing = bool(self.state.startup_unchecked) and time.monotonic() - started < RESYNC_WAIT
                known = not resyncing and any(v != ABSENT for v in self.state.secret_records.values())
            if not known:  # nothing to check yet (start-up, or nothing distributed)
                self.stop_event.wait(min(self.period, IDLE_RECHECK))
                continue
            try:
                self.check_secrets_once()  # takes one period: its GETs are spread over it
            except Exception:
                log.exception("drift check failed")
                self.stop_event.wait(min(self.period, IDLE_RECHECK))

