"""The controller: the handlers of what the reflectors see, and the `sync_*` of each work key.

Event handlers record what the reflectors saw in `ControllerState` and enqueue a typed key
(`work`); they decide nothing. A worker processes one key at a time per key: it reads the
state, asks the pure functions what to write, and writes (`linking` for a namespace, `writes`
for the requests). Every write in a namespace (its Secrets, its ServiceAccounts, an
ImagePullSecret's clean-up there) is the work of that namespace's one key, so the queue's
one-worker-per-key rule serialises them: no locks. The runtime (`k8s.manager`) runs the
caches, leader election and workers. Why our own runtime and not kopf or the client's informer:
docs/DESIGN.md "The controller".
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from tcr_assistant.k8s.client import NAMESPACES, SECRETS, SERVICEACCOUNTS, Kube, Resource, now_rfc3339
from tcr_assistant.k8s.leaderelection import LeaderElector
from tcr_assistant.k8s.manager import Manager
from tcr_assistant.k8s.reflector import Reflector
from tcr_assistant.k8s.workers import Hooks, Workers
from tcr_assistant.k8s.workqueue import WorkQueue
from tcr_assistant.reconciler import credcheck, status, writes
from tcr_assistant.reconciler import decisions as reconcile
from tcr_assistant.reconciler.decisions import ABSENT, Plan
from tcr_assistant.reconciler.drift import DriftPoller, check_namespace
from tcr_assistant.reconciler.keys import (
    CheckKey,
    ImagePullSecretKey,
    MintKey,
    NamespaceKey,
    RegistryKey,
    Requeue,
    StatusKey,
    UnknownKey,
    WorkKey,
    kind_of,
)
from tcr_assistant.reconciler.linking import NamespaceWriter
from tcr_assistant.reconciler.metrics import Metrics
from tcr_assistant.reconciler.minter import Minter
from tcr_assistant.reconciler.observed import (
    DistributedSecretInfo,
    NamespaceInfo,
    ServiceAccountInfo,
    distributed_secret_info,
    image_pull_secret_view,
    local_secret_view,
    namespace_info,
    removed_pull_secrets,
    service_account_info,
    spec_or_metadata_changed,
)
from tcr_assistant.reconciler.options import Options
from tcr_assistant.reconciler.pacing import Pacing
from tcr_assistant.reconciler.registrycheck import RegistryChecker
from tcr_assistant.reconciler.registryprobe import RegistryProbe
from tcr_assistant.reconciler.state import ControllerState
from tcr_assistant.reconciler.writes import Events
from tcr_assistant.spec import api
from tcr_assistant.tcrtoken import decision as tokens

log = logging.getLogger(__name__)

FAILURE_EVENT_ATTEMPTS = (0, 5, 10)  # a failing ImagePullSecret key gets a Warning on these attempts
#: Seconds between a new namespace's event and its key (see ``_on_namespace``): the API server's own
#: namespace cache lags ours by a few milliseconds (a Secret created 1 ms after its namespace met
#: the 50 ms wait in 2 of 150 tries, 3 ms after in none). Longer delays measured worse: in a burst
#: of new namespaces every link then also creates its Secret.
NEW_NAMESPACE_DELAY = 0.02


class Controller:
    def __init__(self, kube: Kube, options: Options, metrics: Metrics | None = None) -> None:
        self.kube = kube
        self.opts = options
        self.metrics = metrics or Metrics()
        kube.on_retry = lambda resource, reason: self.metrics.retries.labels(resource, reason).inc()
        self.state = ControllerState()
        self.events = Events(kube)
        self.queue: WorkQueue[WorkKey] = WorkQueue()

        def status_soon(ips: str) -> None:  # status writes are debounced
            self.queue.add_after(StatusKey(ips), options.status_delay)

        def warn(obj: Mapping[str, Any], reason: str, message: str) -> None:
            self.events.record(obj, "Warning", reason, message)

        self.admission_checks = Pacing(options.pod_check_interval)
        self.registry = RegistryChecker(
            RegistryProbe(options.registry_addresses, options.registry_ca_file), self.state, self.metrics,
            options.registry_check_period, self.queue.add_after, status_soon, warn,
            self.queue.clock.monotonic) if options.registry_check else None
        self.minter = Minter(kube, self.state, self.metrics, options.namespace, options.registry_ca_file,
                             self.queue.add_after, status_soon, warn, self.queue.clock.monotonic)
        self.writer = NamespaceWriter(kube, self.state, self.metrics, self.events, status_soon, options.sa_drift_delay)
        stop = threading.Event()

        def reflector(resource: Resource, view: Callable[[Mapping[str, Any]], Any],
                      handler: Callable[[str, Any, Any], None], name: str = "", namespace: str | None = None,
                      label_selector: str | None = None) -> Reflector:
            return Reflector(kube, resource, view, handler, name=name or resource.plural, namespace=namespace,
                             label_selector=label_selector, watch_timeout=options.watch_timeout,
                             read_timeout=options.read_timeout, stop=stop)

        reflectors = [
            reflector(writes.IMAGEPULLSECRETS, image_pull_secret_view, self._on_image_pull_secret),
            # Only the add-on's own namespace, and there only Secrets marked as credential sources
            # (passwordSecretRef may read nothing else) and the minted tokens: never Secrets cluster-wide.
            reflector(SECRETS, local_secret_view, self._on_local_secret, "local-secrets", options.namespace,
                      label_selector=api.LOCAL_SECRETS_SELECTOR),
            reflector(NAMESPACES, namespace_info, self._on_namespace),
            reflector(SERVICEACCOUNTS, service_account_info, self._on_service_account),
        ]
        if options.drift_mode == "watch":
            # Only Secrets carrying our label, and only a fingerprint of each is kept.
            reflectors.append(reflector(SECRETS, distributed_secret_info, self._on_distributed_secret,
                                        "our-secrets", label_selector=f"{api.LABEL_MANAGED_BY}={api.MANAGED_BY}"))
        hooks: Hooks[WorkKey] = Hooks(
            succeeded=lambda key: self.metrics.reconciles.labels(kind_of(key)).inc(),
            failed=self._on_failure,
            dropped=lambda key, exc: self.metrics.errors.labels(kind_of(key)).inc(),
            depth=self.metrics.queue_depth.set)
        o = options
        workers = Workers(self.queue, self.process, hooks, stop, permanent=(UnknownKey,))
        self.manager: Manager[WorkKey] = Manager(
            reflectors, self.queue, workers, o.workers, stop,
            elector=(lambda: LeaderElector(kube, o.namespace, o.lease_name, o.identity, o.lease_duration,
                                           o.renew_deadline, o.retry_period)) if o.leader_elect else None,
            on_synced=self._on_synced, on_leading=self._on_leading, on_leadership=self.metrics.leader.set)

    # -- handlers: of the runtime's life cycle -------------------------------------------------

    def _on_synced(self) -> None:
        with self.state.lock:
            log.info("caches synced: %d namespaces, %d ServiceAccounts, %d ImagePullSecrets",
                     len(self.state.namespaces), sum(len(v) for v in self.state.service_accounts.values()),
                     len(self.state.image_pull_secrets))

    def _on_leading(self) -> None:
        with self.state.lock:
            if self.opts.drift_mode == "poll":  # (the drift watch tells what exists: nothing to read)
                self.state.startup_unchecked = set(self.state.namespaces)
            # plans first, so the namespace keys queued during start-up already use them
            for name, obj in self.state.image_pull_secrets.items():
                self.state.plans[name] = reconcile.plan_for(obj, self.state.local_secrets.get)
            names = list(self.state.image_pull_secrets)
        for name in names:
            self.queue.add(ImagePullSecretKey(name))
        if self.opts.drift_mode == "poll":
            poller = DriftPoller(self.kube, self.state, self.opts.drift_period, self.manager.stop_event,
                                 lambda namespace: self.queue.add(NamespaceKey(namespace)))
            self.manager.spawn(poller.run, "drift")

    def _on_failure(self, key: WorkKey, attempt: int, exc: Exception) -> None:
        self.metrics.errors.labels(kind_of(key)).inc()
        if isinstance(key, ImagePullSecretKey | StatusKey) and attempt in FAILURE_EVENT_ATTEMPTS:
            with self.state.lock:
                obj = self.state.image_pull_secrets.get(key.name)
            if obj is not None:
                self.events.record(obj, "Warning", "ReconcileFailed", f"{key}: {writes.safe_message(exc)}")

    # -- handlers: record what was seen, enqueue -------------------------------------------------

    def _on_image_pull_secret(self, kind: str, old: Any, new: Any) -> None:
        name = str((new if new is not None else old)["metadata"]["name"])
        with self.state.lock:
            if new is None:
                self.state.image_pull_secrets.pop(name, None)
            else:
                self.state.image_pull_secrets[name] = new
        if spec_or_metadata_changed(old, new):
            self.queue.add(ImagePullSecretKey(name))

    def _on_local_secret(self, kind: str, old: Any, new: Any) -> None:
        secret = new if new is not None else old
        key = tokens.state_key(secret["name"]) if secret["source"] == tokens.SOURCE_MINTED else secret["name"]
        with self.state.lock:
            if new is None:
                self.state.local_secrets.pop(key, None)
            else:
                self.state.local_secrets[key] = new["data"]
            referencing = [ips for ips, obj in self.state.image_pull_secrets.items()
                           if key in reconcile.credential_secret_keys(ips, obj.get("spec") or {})]
        for ips in referencing:
            self.queue.add(ImagePullSecretKey(ips))

    def _on_namespace(self, kind: str, old: NamespaceInfo | None, new: NamespaceInfo | None) -> None:
        state = self.state
        if new is None:
            assert old is not None
            with state.lock:
                state.namespaces.pop(old.name, None)
                state.startup_unchecked.discard(old.name)
                state.service_accounts.pop(old.name, None)
                state.forget_namespace_secrets(old.name)
                cleaned = state.namespace_cleaned(old.name, list(state.cleanup_pending))
            for ips in cleaned:  # its Secrets and accounts went with it
                self.queue.add(ImagePullSecretKey(ips))
            return
        with state.lock:
            state.namespaces[new.name] = new
            if new.terminating:
                state.forget_namespace_secrets(new.name)
        if new.terminating:
            return
        if kind == "ADDED" and self.manager.synced():
            # Not at once: the API server holds a create in a namespace its own cache has not seen
            # yet for 50 ms (NamespaceLifecycle admission), and we can see the namespace a moment
            # before it does. Nor ahead of other keys: what a Pod may wait for is the link, and the
            # event of each new account queues the key ahead (its run creates the Secret first).
            self.queue.add_after(NamespaceKey(new.name), NEW_NAMESPACE_DELAY)
        else:
            self.queue.add(NamespaceKey(new.name))

    def _on_service_account(self, kind: str, old: ServiceAccountInfo | None, new: ServiceAccountInfo | None) -> None:
        state = self.state
        account = new if new is not None else old
        assert account is not None
        key = (account.namespace, account.name)
        with state.lock:
            if new is None:
                state.service_accounts.get(account.namespace, {}).pop(account.name, None)
                state.sa_first_seen.pop(key, None)
                state.sa_removals.pop(key, None)
                return
            accounts = state.service_accounts.setdefault(new.namespace, {})
            echo = accounts.get(new.name) == new  # the answer to our own write, already in the cache
            accounts[new.name] = new
            if not self.manager.synced():
                return  # the namespace keys of the start-up cover every account
            if echo or (old is not None and (old.pull_secrets, old.opt_out) == (new.pull_secrets, new.opt_out)):
                return  # nothing we act on changed
            now = time.monotonic()
            state.record_removals(key, removed_pull_secrets(old, new), now)
            state.sa_first_seen.setdefault(key, now)
        # A new account is what a Pod may be waiting for: ahead of the other keys. Its namespace's
        # key links it (one key per namespace: see the module's docstring).
        self.queue.add(NamespaceKey(account.namespace), first=kind == "ADDED")

    def _on_distributed_secret(self, kind: str, old: DistributedSecretInfo | None,
                               new: DistributedSecretInfo | None) -> None:
        """Drift watch: what our Secrets hold is known without a read; a change we did not
        write (its fingerprint differs from our record) queues the namespace."""
        secret = new if new is not None else old
        assert secret is not None
        if not secret.image_pull_secret:
            return
        key = (secret.namespace, secret.image_pull_secret)
        with self.state.lock:
            record = self.state.secret_records.get(key)
            now = new.fingerprint if new is not None else ABSENT
            self.state.secret_records[key] = now
            if record == now or not self.manager.synced():
                return
            if record is not None and record != ABSENT:
                self.state.secret_drift[key] = "changed" if new is not None else "deleted"
        self.queue.add(NamespaceKey(secret.namespace))

    # -- work: one key at a time per key ------------------------------------------------------------

    def process(self, key: WorkKey) -> float | None:
        """Sync one key; the seconds after which it is due again, if any (`k8s.workers`)."""
        result: Requeue | None = None
        match key:
            case NamespaceKey(name):
                result = self.sync_namespace(name)
            case ImagePullSecretKey(name):
                self.sync_image_pull_secret(name)
            case StatusKey(name):
                result = self.sync_status(name)
            case CheckKey(name):
                self.sync_check(name)
            case RegistryKey(name):
                result = self.registry.sync(name) if self.registry is not None else None
            case MintKey(name):
                result = self.minter.sync(name)
            case _:
                raise UnknownKey(f"unknown work key {key!r}")
        return None if result is None else result.after

    def sync_namespace(self, namespace: str) -> Requeue | None:
        """Its Secrets, then every ServiceAccount in it; then it counts as visited for the
        clean-up of ImagePullSecrets being deleted. Come back when a relink is due."""
        with self.state.lock:  # before the plans are read: a clean-up begun later needs another run
            cleaning = {ips for ips, pending in self.state.cleanup_pending.items() if namespace in pending}
        self.writer.ensure_namespace_secrets(namespace)
        with self.state.lock:
            accounts = list(self.state.service_accounts.get(namespace, {}).values())
        due = [result.after for result in map(self.writer.link_service_account, accounts) if result is not None]
        with self.state.lock:
            cleaned = self.state.namespace_cleaned(namespace, cleaning)
        for ips in cleaned:
            self.queue.add(ImagePullSecretKey(ips))
        return Requeue(min(due)) if due else None

    def check_on_admission(self, namespace: str) -> None:
        """A Pod was admitted in ``namespace``, which we serve: have our Secrets there read soon (poll
        mode, on the leader). It only queues: the webhook's answer never waits for it."""
        if self.opts.drift_mode != "poll" or self.opts.pod_check_interval <= 0 or not self.manager.leading.is_set():
            return
        self.queue.add_after(CheckKey(namespace), self.admission_checks.delay(namespace, self.queue.clock.monotonic()))

    def sync_check(self, namespace: str) -> None:
        self.admission_checks.started(namespace, self.queue.clock.monotonic())
        drifted = check_namespace(self.kube, self.state, namespace)
        self.metrics.admission_checks.labels("repaired" if drifted else "intact").inc()
        if drifted:
            self.queue.add(NamespaceKey(namespace), first=True)

    def sync_image_pull_secret(self, name: str) -> None:
        state = self.state
        with state.lock:
            obj = state.image_pull_secrets.get(name)
            if obj is None:
                state.forget_image_pull_secret(name)
                if self.registry is not None:
                    self.registry.forget(name)
                return
            plan = reconcile.plan_for(obj, state.local_secrets.get)
            state.plans[name] = plan
        self.minter.plan_seen(name)
        finalizers = (obj.get("metadata") or {}).get("finalizers") or []
        if plan.deleting:
            if api.FINALIZER in finalizers:
                self.sync_clean_up(plan, obj)
            return
        if api.FINALIZER not in finalizers and writes.set_finalizer(self.kube, obj, present=True) is None:
            return  # deleted meanwhile
        if plan.problem is not None:
            self.events.record(obj, "Warning", plan.problem[0], plan.problem[1])
        with state.lock:
            fan_out = state.fanned_out.get(name) != plan.shape
            state.fanned_out[name] = plan.shape
            namespaces = list(state.namespaces) if fan_out else []
        for namespace in namespaces:
            self.queue.add(NamespaceKey(namespace))
        self.queue.add_after(StatusKey(name), self.opts.status_delay)
        if self.registry is not None:
            self.registry.plan_seen(name)

    def sync_clean_up(self, plan: Plan, obj: Mapping[str, Any]) -> None:
        """Every namespace's key runs once with the plan deleting (which removes our Secret and
        entries there); when the last has, the finalizer goes. The namespace keys do the writes,
        so they stay serialised with everything else written in each namespace."""
        with self.state.lock:
            pending = self.state.cleanup_pending.get(plan.name)
            if pending is None:
                pending = set(self.state.namespaces) | self.state.namespaces_with_record(plan.name)
                self.state.cleanup_pending[plan.name] = pending
                fan_out = sorted(pending)
            else:
                fan_out = []
            done = not pending
        for namespace in fan_out:
            self.queue.add(NamespaceKey(namespace))
        if done and writes.set_finalizer(self.kube, obj, present=False) is not None:
            log.info("ImagePullSecret %s: cleaned up, finalizer removed", plan.name)

    def sync_status(self, name: str) -> Requeue | None:
        state = self.state
        with state.lock:
            plan, obj = state.plans.get(name), state.image_pull_secrets.get(name)
            if plan is None or obj is None or plan.deleting:
                return None
            if status.unchecked_namespaces(plan, state.namespaces.values(), state.secret_records):
                since = state.status_deferred_since.setdefault(name, time.monotonic())
                if status.status_wait(since, time.monotonic(), self.opts.status_settle_limit):
                    return Requeue(max(self.opts.status_delay, 0.1))
            state.status_deferred_since.pop(name, None)
            counts = status.count(plan, state.namespaces.values(), state.service_accounts, state.secret_records)
            secrets_written = dict(state.secret_writes.get(name) or {})
            sas_written = dict(state.sa_writes.get(name) or {})
            record = state.credential_checks.get(name)
        previous = obj.get("status") or {}
        now = now_rfc3339()
        accepted = [credcheck.accepted_condition(record, plan.fingerprint, previous.get("conditions"), now)
                    ] if self.registry is not None and plan.active else []
        minted, expires_at = self.minter.status_parts(name, obj.get("spec") or {}, previous.get("conditions"), now)
        new_status = status.compute_status(
            previous, counts, generation=(obj.get("metadata") or {}).get("generation"),
            secrets_written=secrets_written, sas_written=sas_written, problem=plan.problem, now=now,
            more_conditions=accepted + minted, token_expires_at=expires_at)
        if status.status_changed(previous, new_status):
            updated = writes.patch_status(self.kube, name, new_status)
            self.metrics.writes.labels("imagepullsecrets/status").inc()
            with state.lock:
                current = state.image_pull_secrets.get(name)
                if updated is not None and current is not None:
                    # what we wrote, until the watch brings it: no second write of the same status
                    state.image_pull_secrets[name] = {**current, "status": updated.get("status") or new_status}
        return None
