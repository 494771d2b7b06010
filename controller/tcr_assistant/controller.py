"""The controller: wires the runtime (reflectors, work queue, Lease leader election) to the
decisions of `reconcile` and `status`, and carries them out through `kube`.

Event handlers record what the reflectors saw in `ControllerState` and enqueue a typed key
(`work`); they decide nothing. A worker processes one key at a time per key: it reads the
state, asks the pure functions what to write, and writes. Why our own runtime and not kopf or
the client's informer: docs/DESIGN.md "The controller".
"""

from __future__ import annotations

import gc
import logging
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from . import admission, api, reconcile, status
from .admission import CredentialSource, CredentialSources
from .drift import DriftPoller
from .kube import IMAGEPULLSECRETS, NAMESPACES, SECRETS, SERVICEACCOUNTS, Kube, KubeError, Resource, now_rfc3339
from .metrics import Metrics
from .observed import (
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
from .options import Options
from .reconcile import ABSENT, EnsureSecret, Plan, RemoveSecret
from .runtime.leaderelection import LeaderElector
from .runtime.reflector import Reflector
from .runtime.workqueue import Pending, WorkQueue
from .state import ControllerState, remember_event, remember_write
from .work import (
    ImagePullSecretKey,
    NamespaceKey,
    Requeue,
    ServiceAccountKey,
    StatusKey,
    UnknownKey,
    WorkKey,
    kind_of,
)

log = logging.getLogger(__name__)

EVENT_REPEAT_SECONDS = 60.0  # an identical Event at most this often
FAILURE_EVENT_ATTEMPTS = (0, 5, 10)  # a failing ImagePullSecret key gets a Warning on these attempts
CREDENTIAL_SOURCE_READ_TIMEOUT = 2.0  # the webhook's check of an uncached Secret, within its own timeout
# The Secret's metadata alone: checking a mark needs no data (so the webhook never holds a key it may not use).
PARTIAL_METADATA = "application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1"


class Controller:
    def __init__(self, kube: Kube, options: Options, metrics: Metrics | None = None) -> None:
        self.kube = kube
        self.opts = options
        self.metrics = metrics or Metrics()
        kube.on_retry = lambda resource, reason: self.metrics.retries.labels(resource, reason).inc()
        self.state = ControllerState()
        self.stop_event = threading.Event()
        self.queue: WorkQueue[WorkKey] = WorkQueue()
        self.leading = threading.Event()
        self.elector: LeaderElector | None = None
        self.exit_code = 0
        # ns and sa keys of one namespace may run at once: its Secrets are ensured by one at a time
        self._namespace_locks = [threading.Lock() for _ in range(64)]
        self._threads: list[threading.Thread] = []

        def reflector(
            resource: Resource,
            view: Callable[[Mapping[str, Any]], Any],
            handler: Callable[[str, Any, Any], None],
            name: str = "",
            namespace: str | None = None,
            label_selector: str | None = None,
        ) -> Reflector:
            return Reflector(kube, resource, view, handler, name=name or resource.plural, namespace=namespace,
                             label_selector=label_selector, watch_timeout=options.watch_timeout,
                             read_timeout=options.read_timeout, stop=self.stop_event)

        self.reflectors = [
            reflector(IMAGEPULLSECRETS, image_pull_secret_view, self._on_image_pull_secret),
            # Only the add-on's own namespace, and there only Secrets marked as credential sources
            # (passwordSecretRef may read nothing else): never Secrets cluster-wide.
            reflector(SECRETS, local_secret_view, self._on_local_secret, "local-secrets", options.namespace,
                      label_selector=api.CREDENTIAL_SOURCE_SELECTOR),
            reflector(NAMESPACES, namespace_info, self._on_namespace),
            reflector(SERVICEACCOUNTS, service_account_info, self._on_service_account),
        ]
        if options.drift_mode == "watch":
            # Only Secrets carrying our label, and only a fingerprint of each is kept.
            self.reflectors.append(reflector(SECRETS, distributed_secret_info, self._on_distributed_secret,
                                             "our-secrets", label_selector=f"{api.LABEL_MANAGED_BY}={api.MANAGED_BY}"))

    # -- event handlers: record what was seen, enqueue -----------------------------------------

    def synced(self) -> bool:
        return all(r.synced.is_set() for r in self.reflectors)

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
        name = (new if new is not None else old)["name"]
        with self.state.lock:
            if new is None:
                self.state.local_secrets.pop(name, None)
            else:
                self.state.local_secrets[name] = new["data"]
            referencing = [
                ips
                for ips, obj in self.state.image_pull_secrets.items()
                if reconcile.password_secret_name(obj.get("spec") or {}) == name
            ]
        for ips in referencing:
            self.queue.add(ImagePullSecretKey(ips))

    def image_pull_secret_review(self, body: bytes, max_body_bytes: int = admission.MAX_BODY_BYTES) -> tuple[int, Any]:
        """The ImagePullSecret webhook's answer, with passwordSecretRef checked against this add-on's Secrets."""
        return admission.handle(body, max_body_bytes, CredentialSources(self.opts.namespace, self.credential_source))

    def credential_source(self, name: str) -> CredentialSource:
        """How Secret ``name`` of the add-on's namespace is marked, for the webhook. The cache holds
        marked Secrets only; a miss is settled by reading the Secret's metadata (a new Secret may not
        be cached yet)."""
        with self.state.lock:
            if name in self.state.local_secrets:
                return CredentialSource.MARKED
        try:
            meta = self.kube.request("GET", SECRETS.path(self.opts.namespace, name),
                                     timeout=CREDENTIAL_SOURCE_READ_TIMEOUT, accept=PARTIAL_METADATA)
        except KubeError as exc:
            return CredentialSource.MISSING if exc.not_found else CredentialSource.UNKNOWN
        except Exception:  # a timeout or a broken connection: the webhook warns, the controller still checks
            return CredentialSource.UNKNOWN
        labels = (meta.get("metadata") or {}).get("labels") or {}
        marked = labels.get(api.LABEL_CREDENTIAL_SOURCE) == "true"
        return CredentialSource.MARKED if marked else CredentialSource.UNMARKED

    def _on_namespace(self, kind: str, old: NamespaceInfo | None, new: NamespaceInfo | None) -> None:
        state = self.state
        with state.lock:
            if new is None:
                assert old is not None
                state.namespaces.pop(old.name, None)
                state.startup_unchecked.discard(old.name)
                state.service_accounts.pop(old.name, None)
                state.forget_namespace_secrets(old.name)
                return
            state.namespaces[new.name] = new
            if new.terminating:
                state.forget_namespace_secrets(new.name)
        if not new.terminating:
            # a new namespace's Secret must exist before its `default` account can be linked
            self.queue.add(NamespaceKey(new.name), first=kind == "ADDED" and self.synced())

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
            if not self.synced():
                return  # the namespace keys of the start-up cover every account
            if echo or (old is not None and (old.pull_secrets, old.opt_out) == (new.pull_secrets, new.opt_out)):
                return  # nothing we act on changed
            now = time.monotonic()
            state.record_removals(key, removed_pull_secrets(old, new), now)
            state.sa_first_seen.setdefault(key, now)
        # A new account is what a Pod may be waiting for: ahead of the other keys.
        self.queue.add(ServiceAccountKey(*key), first=kind == "ADDED")

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
            if record == now or not self.synced():
                return
            if record is not None and record != ABSENT:
                self.state.secret_drift[key] = "changed" if new is not None else "deleted"
        self.queue.add(NamespaceKey(secret.namespace))

    # -- work ------------------------------------------------------------------------------------

    def process(self, key: WorkKey) -> Requeue | None:
        match key:
            case NamespaceKey(name):
                self.sync_namespace(name)
                return None
            case ServiceAccountKey(namespace, name):
                return self.sync_service_account(namespace, name)
            case ImagePullSecretKey(name):
                self.sync_image_pull_secret(name)
                return None
            case StatusKey(name):
                return self.sync_status(name)
        raise UnknownKey(f"unknown work key {key!r}")

    def _one_namespace(self, namespace: str) -> threading.Lock:
        """Held while a worker writes in ``namespace``: a namespace key and a ServiceAccount key
        of the same namespace would otherwise write one account at once (409 Conflict)."""
        return self._namespace_locks[hash(namespace) % len(self._namespace_locks)]

    def sync_namespace(self, namespace: str) -> None:
        with self._one_namespace(namespace):
            self.ensure_namespace_secrets(namespace)
            with self.state.lock:
                accounts = list(self.state.service_accounts.get(namespace, {}).values())
            for account in accounts:
                result = self.link_service_account(account)
                if result is not None:
                    self.queue.add_after(ServiceAccountKey(namespace, account.name), result.after)

    def sync_service_account(self, namespace: str, name: str) -> Requeue | None:
        with self._one_namespace(namespace):
            self.ensure_namespace_secrets(namespace)
            with self.state.lock:
                account = self.state.account(namespace, name)
                if account is None:
                    self.state.sa_first_seen.pop((namespace, name), None)
            return self.link_service_account(account) if account is not None else None

    def ensure_namespace_secrets(self, namespace: str) -> None:
        """Write our Secrets where wanted, delete ours where not (by name, no list). The caller
        holds `_one_namespace`."""
        state = self.state
        with state.lock:
            plans = list(state.plans.values())
            records = state.records_in(namespace, plans)
            resync = namespace in state.startup_unchecked
            actions = reconcile.namespace_secret_actions(state.namespaces.get(namespace), plans, records, resync)
        for action in actions:
            if isinstance(action, EnsureSecret):
                self._ensure_secret(action)
            else:
                self._remove_secret(action)
        with state.lock:
            state.startup_unchecked.discard(namespace)

    def _ensure_secret(self, action: EnsureSecret) -> None:
        plan, namespace = action.plan, action.desired["metadata"]["namespace"]
        result = self.kube.ensure_secret(action.desired, create_first=action.create_first)
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
                self.event(plan.obj, "Warning", "SecretRepaired",
                           f"Secret {namespace}/{plan.secret_name} was {drift} outside the controller; restored it")
        # Also when unchanged: after a restart the counts become complete namespace by namespace.
        self.queue.add_after(StatusKey(plan.name), self.opts.status_delay)

    def _remove_secret(self, action: RemoveSecret) -> None:
        plan, namespace = action.plan, action.namespace
        existing = self.kube.get_secret(namespace, plan.secret_name)
        if existing is not None and reconcile.is_ours(existing, plan.name):
            uid = (existing.get("metadata") or {}).get("uid")
            if self.kube.delete(SECRETS.path(namespace, plan.secret_name), uid=uid):
                self.metrics.writes.labels("secrets").inc()
                log.info("Secret %s/%s deleted (no longer wanted)", namespace, plan.secret_name)
                self.queue.add_after(StatusKey(plan.name), self.opts.status_delay)
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
                wait = reconcile.relink_due(removals.times, self.opts.sa_drift_delay) - time.monotonic()
                if wait > 0:
                    return Requeue(wait)

        def compute(current: Any) -> list[str | None]:
            return reconcile.desired_pull_secrets(list(current), wanted, managed)

        written, latest = self.kube.update_pull_secrets(account, compute)
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
            self.queue.add_after(StatusKey(plan.name), self.opts.status_delay)
            if name in drifted and name in added:
                self.metrics.repairs.labels("serviceaccount").inc()
                self.event(plan.obj, "Warning", "ServiceAccountRelinked",
                           f"{name} was removed from imagePullSecrets of ServiceAccount {account.key} "
                           "outside the controller; added it back (set annotation "
                           f'{api.OPT_OUT_ANNOTATION}: "true" on the ServiceAccount to opt out)')
        return None

    def sync_image_pull_secret(self, name: str) -> None:
        state = self.state
        with state.lock:
            obj = state.image_pull_secrets.get(name)
            if obj is None:
                state.forget_image_pull_secret(name)
                return
            plan = reconcile.plan_for(obj, state.local_secrets.get)
            state.plans[name] = plan
        finalizers = (obj.get("metadata") or {}).get("finalizers") or []
        if plan.deleting:
            if api.FINALIZER in finalizers:
                self.cleanup(plan)
                self.kube.set_finalizer(obj, present=False)
                log.info("ImagePullSecret %s: cleaned up, finalizer removed", name)
            return
        if api.FINALIZER not in finalizers and self.kube.set_finalizer(obj, present=True) is None:
            return  # deleted meanwhile
        if plan.problem is not None:
            self.event(obj, "Warning", plan.problem[0], plan.problem[1])
        with state.lock:
            fan_out = state.fanned_out.get(name) != plan.shape
            state.fanned_out[name] = plan.shape
            namespaces = list(state.namespaces) if fan_out else []
        for namespace in namespaces:
            self.queue.add(NamespaceKey(namespace))
        self.queue.add_after(StatusKey(name), self.opts.status_delay)

    def cleanup(self, plan: Plan) -> None:
        """Remove every Secret and ServiceAccount entry this ImagePullSecret created."""
        with self.state.lock:
            namespaces = set(self.state.namespaces) | self.state.namespaces_with_record(plan.name)
        for namespace in sorted(namespaces):
            with self._one_namespace(namespace):
                self.ensure_namespace_secrets(namespace)  # the plan is deleting: removes ours
                with self.state.lock:
                    accounts = [a for a in self.state.service_accounts.get(namespace, {}).values()
                                if plan.secret_name in a.pull_secrets or not a.ours_kept]
                for account in accounts:
                    self.link_service_account(account)

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
        previous = obj.get("status") or {}
        new_status = status.compute_status(
            previous,
            counts,
            generation=(obj.get("metadata") or {}).get("generation"),
            secrets_written=secrets_written,
            sas_written=sas_written,
            problem=plan.problem,
            now=now_rfc3339(),
        )
        if status.status_changed(previous, new_status):
            updated = self.kube.patch_status(name, new_status)
            self.metrics.writes.labels("imagepullsecrets/status").inc()
            with state.lock:
                current = state.image_pull_secrets.get(name)
                if updated is not None and current is not None:
                    # what we wrote, until the watch brings it: no second write of the same status
                    state.image_pull_secrets[name] = {**current, "status": updated.get("status") or new_status}
        return None

    def event(self, obj: Mapping[str, Any], etype: str, reason: str, message: str) -> None:
        """An Event on an ImagePullSecret; an identical one at most once a minute."""
        key = (str((obj.get("metadata") or {}).get("name")), reason, message)
        with self.state.lock:
            if not remember_event(self.state.recent_events, key, time.monotonic(), EVENT_REPEAT_SECONDS):
                return
        self.kube.event(obj, etype, reason, message)

    # -- workers and life cycle -----------------------------------------------------------------

    def _worker(self) -> None:
        while not self.stop_event.is_set():
            key = self.queue.get()
            self.metrics.queue_depth.set(len(self.queue))
            if key is None:
                continue
            try:
                self._process_one(key)
            finally:
                self.queue.done(key)

    def _process_one(self, key: WorkKey) -> None:
        kind = kind_of(key)
        try:
            result = self.process(key)
        except UnknownKey as exc:
            self.metrics.errors.labels(kind).inc()
            log.error("%s (dropped)", exc)
            self.queue.forget(key)
            return
        except Exception as exc:
            self.metrics.errors.labels(kind).inc()
            attempt = self.queue.failures(key)
            log.warning("%s failed (attempt %d): %s", key, attempt + 1, exc)
            if isinstance(key, ImagePullSecretKey | StatusKey) and attempt in FAILURE_EVENT_ATTEMPTS:
                with self.state.lock:
                    obj = self.state.image_pull_secrets.get(key.name)
                if obj is not None:
                    self.event(obj, "Warning", "ReconcileFailed", f"{key}: {_safe(exc)}")
            self.queue.add_rate_limited(key)
            return
        self.queue.forget(key)
        self.metrics.reconciles.labels(kind).inc()
        if result is not None:
            self.queue.add_after(key, result.after)

    def pending(self) -> Pending:
        """Work not yet done: keys queued, being processed, and waiting for their delay."""
        return self.queue.pending()

    def quiescent(self) -> bool:
        """Caches synced and no work queued, running or delayed."""
        return self.synced() and not any(self.pending())

    def start_caches(self) -> None:
        for r in self.reflectors:
            r.start()

    def wait_synced(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        return all(r.synced.wait(max(0.0, deadline - time.monotonic())) for r in self.reflectors)

    def start_workers(self) -> None:
        with self.state.lock:
            if self.opts.drift_mode == "poll":  # (the drift watch tells what exists: nothing to read)
                self.state.startup_unchecked = set(self.state.namespaces)
            # plans first, so the namespace keys queued during start-up already use them
            for name, obj in self.state.image_pull_secrets.items():
                self.state.plans[name] = reconcile.plan_for(obj, self.state.local_secrets.get)
            names = list(self.state.image_pull_secrets)
        for name in names:
            self.queue.add(ImagePullSecretKey(name))
        self.leading.set()
        self.metrics.leader.set(1)
        for i in range(self.opts.workers):
            self._start_thread(self._worker, f"worker-{i}")
        if self.opts.drift_mode == "poll":
            poller = DriftPoller(self.kube, self.state, self.opts.drift_period, self.stop_event,
                                 lambda namespace: self.queue.add(NamespaceKey(namespace)))
            self._start_thread(poller.run, "drift")

    def _start_thread(self, target: Callable[[], None], name: str) -> None:
        thread = threading.Thread(target=target, name=name, daemon=True)
        thread.start()
        self._threads.append(thread)

    def run(self, ready: Callable[[], None] | None = None) -> int:
        """Run until stop() (returns 0) or lost leadership (returns 1)."""
        self.start_caches()
        while not self.wait_synced(1.0):
            if self.stop_event.is_set():
                return self._shutdown()
        with self.state.lock:
            log.info("caches synced: %d namespaces, %d ServiceAccounts, %d ImagePullSecrets",
                     len(self.state.namespaces), sum(len(v) for v in self.state.service_accounts.values()),
                     len(self.state.image_pull_secrets))
        # The caches now hold most of what this process will ever allocate: move it out of the
        # cyclic collector's reach, so its full collections (pauses of tens of milliseconds at
        # 10,000 namespaces) stop scanning them.
        gc.collect()
        gc.freeze()
        if ready is not None:
            ready()
        if not self.opts.leader_elect:
            self.start_workers()
            self.stop_event.wait()
            return self._shutdown()
        o = self.opts
        self.elector = LeaderElector(self.kube, o.namespace, o.lease_name, o.identity, o.lease_duration,
                                     o.renew_deadline, o.retry_period)
        if self.elector.acquire(self.stop_event):
            self.start_workers()
            if not self.elector.keep_renewing(self.stop_event):
                self.exit_code = 1
        return self._shutdown()

    def stop(self) -> None:
        self.stop_event.set()
        self.queue.shutdown()
        for r in self.reflectors:
            r.interrupt()

    def _shutdown(self) -> int:
        self.stop()
        for t in self._threads:
            t.join(timeout=10)
        if self.elector is not None:
            self.elector.release()
        self.leading.clear()
        self.metrics.leader.set(0)
        for r in self.reflectors:
            r.join(2)
        return self.exit_code


def _safe(exc: BaseException) -> str:
    """An error message safe to publish (API Status messages carry no request bodies)."""
    if isinstance(exc, KubeError):
        return f"{exc.status} {exc.reason}: {exc.message}"[:500]
    return type(exc).__name__
