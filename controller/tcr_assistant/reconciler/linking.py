"""What a namespace's key writes: our Secrets there, then each ServiceAccount's entries, and what
the controller remembers of each write (records, metrics, Events, status updates due).

The decisions are `reconcile`'s; the read-decide-write loops are `writes`'; this keeps the books.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from tcr_assistant.k8s.client import SECRETS, Kube, now_rfc3339
from tcr_assistant.reconciler import decisions as reconcile
from tcr_assistant.reconciler import writes
from tcr_assistant.reconciler.decisions import ABSENT, EnsureSecret, RemoveSecret
from tcr_assistant.reconciler.keys import Requeue
from tcr_assistant.reconciler.metrics import Metrics
from tcr_assistant.reconciler.observed import ServiceAccountInfo
from tcr_assistant.reconciler.state import ControllerState, remember_write
from tcr_assistant.reconciler.writes import Events
from tcr_assistant.spec import api

log = logging.getLogger(__name__)


class NamespaceWriter:
    def __init__(self, kube: Kube, state: ControllerState, metrics: Metrics, events: Events,
                 status_due: Callable[[str], None], sa_drift_delay: float) -> None:
        self.kube = kube
        self.state = state
        self.metrics = metrics
        self.events = events
        self.status_due = status_due  # an ImagePullSecret's status is to be recomputed (debounced)
        self.sa_drift_delay = sa_drift_delay

    def ensure_namespace_secrets(self, namespace: str) -> None:
        """Write our Secrets where wanted, delete ours where not (by name, no list)."""
        state = self.state
        with state.lock:
            plans = list(state.plans.values())
            records = state.records_in(namespace, plans)
            resync = namespace in state.startup_unchecked
            actions = reconcile.namespace_secret_actions(state.namespaces.get(namespace), plans, records, resync)
        for action in actions:
            if isinstance(action, EnsureSecret):
                self.ensure_secret(action)
            else:
                self.remove_secret(action)
        with state.lock:
            state.startup_unchecked.discard(namespace)

    def ensure_secret(self, action: EnsureSecret) -> None:
        plan, namespace = action.plan, action.desired["metadata"]["namespace"]
        result = writes.ensure_secret(self.kube, action.desired, create_first=action.create_first)
        if result == "skipped":
            return
        with self.state.lock:
            self.state.secret_records[(namespace, plan.name)] = plan.fingerprint
            drift = self.state.secret_drift.pop((namespace, plan.name), None)
            if result != "unchanged":
                self.metrics.writes.labels("secrets").inc()
                remember_write(self.state.secret_writes, plan.name, f"{namespace}/{plan.secret_name}", now_rfc3339())
        if result != "unchanged":
            log.info("Secret %s/%s %s", namespace, plan.secret_name, result)
            if drift is not None:
                self.metrics.repairs.labels("secret").inc()
                self.events.record(plan.obj, "Warning", "SecretRepaired",
                           f"Secret {namespace}/{plan.secret_name} was {drift} outside the controller; restored it")
        # Also when unchanged: after a restart the counts become complete namespace by namespace.
        self.status_due(plan.name)

    def remove_secret(self, action: RemoveSecret) -> None:
        plan, namespace = action.plan, action.namespace
        existing = self.kube.get_secret(namespace, plan.secret_name)
        if existing is not None and reconcile.is_ours(existing, plan.name):
            uid = (existing.get("metadata") or {}).get("uid")
            if self.kube.delete(SECRETS.path(namespace, plan.secret_name), uid=uid):
                self.metrics.writes.labels("secrets").inc()
                log.info("Secret %s/%s deleted (no longer wanted)", namespace, plan.secret_name)
                self.status_due(plan.name)
        with self.state.lock:
            self.state.secret_records[(namespace, plan.name)] = ABSENT

    def link_service_account(self, account: ServiceAccountInfo) -> Requeue | None:
        """Bring ``imagePullSecrets`` of ``account`` to what the plans want; an entry someone
        removed is put back only after `reconcile.relink_due`."""
        state, key = self.state, (account.namespace, account.name)
        with state.lock:
            plans = list(state.plans.values())
            records = state.records_in(account.namespace, plans)
            wanted, managed = reconcile.wanted_entries(plans, state.namespaces.get(account.namespace), account, records)
            removals = state.sa_removals.get(key)
            drifted = removals.names & wanted if removals is not None else set()
            if removals is not None and drifted:
                wait = reconcile.relink_due(removals.times, self.sa_drift_delay) - time.monotonic()
                if wait > 0:
                    return Requeue(wait)

        def compute(current: Any) -> list[str | None]:
            return reconcile.desired_pull_secrets(list(current), wanted, managed)

        written, latest = writes.update_pull_secrets(self.kube, account, compute)
        with state.lock:
            seen = state.sa_first_seen.pop(key, None)
            state.consume_removals(key, drifted)
            if latest is not None:
                state.service_accounts.setdefault(account.namespace, {})[account.name] = latest
        if not written or latest is None:
            return None
        self.metrics.writes.labels("serviceaccounts").inc()
        if seen is not None:
            self.metrics.link_latency.observe(time.monotonic() - seen)
        added = set(latest.ours) - set(account.ours)  # (only entries named like ours change)
        removed = set(account.ours) - set(latest.ours)
        log.info("ServiceAccount %s imagePullSecrets: +%s -%s", account.key, sorted(map(str, added)),
                 sorted(map(str, removed)))
        when = now_rfc3339()
        for name in added | removed:
            with state.lock:
                plan = state.plan_by_secret_name(str(name))
                if plan is not None:
                    remember_write(state.sa_writes, plan.name, account.key, when)
            if plan is None:
                continue
            self.status_due(plan.name)
            if name in drifted and name in added:
                self.metrics.repairs.labels("serviceaccount").inc()
                self.events.record(plan.obj, "Warning", "ServiceAccountRelinked",
                           f"{name} was removed from imagePullSecrets of ServiceAccount {account.key} "
                           "outside the controller; added it back (set annotation "
                           f'{api.OPT_OUT_ANNOTATION}: "true" on the ServiceAccount to opt out)')
        return None
