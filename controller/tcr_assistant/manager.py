"""The controller: wires the runtime (`tcr_assistant.runtime`: reflectors, work queue, Lease
leader election, HTTP server) to the decisions in `reconcile`; workers, drift checks, metrics.

Why not kopf: kopf writes its tracking annotations onto every object its
handlers see (here: users' Namespaces and ServiceAccounts), cannot narrow watches on the
server side, its "peering" is not Lease-based leader election, and it costs ~17 MiB more RSS
(the original runs in 30 MiB). Why not ``kubernetes.informer.SharedInformer`` /
``kubernetes.leaderelection`` as shipped in client 37: the informer keeps whole pydantic
models (memory), sets no client-side read timeout (a half-open watch hangs forever) and
cannot be told which ApiClient to use for the lock; ``LeaseLock`` always builds a
``CoordinationV1Api()`` on the global default configuration and its ``acquire()`` loop cannot
be stopped (no SIGTERM, no release). So this module has its own small list+watch loop
(resourceVersion resume, 410 Gone -> re-list, client-side read timeout, 0.8 s -> 30 s
reconnect backoff) and its own Lease elector (15 s / 10 s / 2 s, released on shutdown), both
on the official client's transport (``kube.Kube``).

Work items are keys: ``("ns", name)`` (all ImagePullSecrets in one namespace),
``("sa", ns, name)`` (one ServiceAccount: the fast path for new accounts),
``("ips", name)`` (finalizer, cleanup, fan-out to namespaces) and ``("status", name)``
(debounced status write). A key is never processed by two workers at once; a failing key is
retried with per-key exponential backoff (5 ms -> 1000 s).

Secrets: the controller never lists or watches Secrets cluster-wide. It writes them by name,
remembers what it wrote (a content fingerprint per namespace), and a drift checker GETs each
distributed Secret by name at a bounded rate (``drift_qps``, one full pass at most every
``drift_period`` seconds) to repair hand edits/deletions. Only Secrets in the add-on's own
namespace (``passwordSecretRef``) are listed and watched.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from . import api, reconcile
from .kube import IMAGEPULLSECRETS, NAMESPACES, SECRETS, SERVICEACCOUNTS, Kube, KubeError, Resource
from .runtime.leaderelection import LeaderElector
from .runtime.reflector import Reflector
from .runtime.workqueue import WorkQueue

log = logging.getLogger(__name__)

Key = tuple[str, ...]


# ---------------------------------------------------------------------------------------------
# Metrics and health


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.reconciles = Counter("tcr_assistant_reconcile", "Work items processed", ["kind"], registry=r)
        self.errors = Counter(
            "tcr_assistant_reconcile_errors", "Work items that failed (retried with backoff)", ["kind"], registry=r
        )
        self.queue_depth = Gauge("tcr_assistant_workqueue_depth", "Keys waiting in the work queue", registry=r)
        self.link_latency = Histogram(
            "tcr_assistant_link_latency_seconds",
            "Delay from a ServiceAccount being seen by the controller to its imagePullSecrets link being written",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
            registry=r,
        )
        self.writes = Counter("tcr_assistant_api_writes", "Writes sent to the API server", ["resource"], registry=r)
        self.repairs = Counter("tcr_assistant_drift_repairs", "Drift repaired", ["kind"], registry=r)
        self.leader = Gauge("tcr_assistant_leader", "1 while this replica holds the lease", registry=r)


# ---------------------------------------------------------------------------------------------
# The controller


@dataclass
class Plan:
    """What one ImagePullSecret wants, derived from its spec (and the referenced Secret)."""

    name: str
    obj: dict[str, Any]
    target: reconcile.Target
    creds: reconcile.Credentials | None
    problem: tuple[str, str] | None
    deleting: bool
    fingerprint: str = ""

    @property
    def secret_name(self) -> str:
        return api.secret_name(self.name)

    @property
    def active(self) -> bool:
        """Distributes (valid, credentials resolved, not being deleted)."""
        return self.creds is not None and self.problem is None and not self.deleting

    @property
    def managed(self) -> bool:
        """Its entries may be removed (valid spec, or being deleted)."""
        return self.deleting or self.problem is None


ABSENT = "absent"  # secret state: known not to exist


@dataclass
class Options:
    namespace: str
    workers: int = 16
    drift_qps: float = 20.0
    drift_period: float = 60.0
    sa_drift_delay: float = 1.0
    status_delay: float = 1.0
    status_settle_limit: float = 30.0
    watch_timeout: int = 300
    read_timeout: float = 330.0
    leader_elect: bool = False
    lease_name: str = api.LEASE_NAME
    identity: str | None = None
    lease_duration: float = 15.0
    renew_deadline: float = 10.0
    retry_period: float = 2.0
    extra: dict[str, Any] = field(default_factory=dict)


def _validation_problem(spec: Mapping[str, Any]) -> str | None:
    try:
        from . import validation
    except ImportError:  # pragma: no cover - validation.py ships with the package
        return None
    errors = validation.validate_spec(spec)
    if not errors:
        return None
    return "; ".join(f"{e.field}: {e.message}" for e in errors)[:900]


class Controller:
    def __init__(self, kube: Kube, options: Options, metrics: Metrics | None = None) -> None:
        self.kube = kube
        self.opts = options
        self.metrics = metrics or Metrics()
        self.stop_event = threading.Event()
        self.queue = WorkQueue()
        self.lock = threading.RLock()
        self.plans: dict[str, Plan] = {}
        self.namespaces: dict[str, reconcile.NamespaceInfo] = {}
        self.sas: dict[str, dict[str, reconcile.ServiceAccountInfo]] = {}
        self.local_secrets: dict[str, dict[str, str]] = {}
        self.secret_state: dict[tuple[str, str], str] = {}  # (namespace, ips name) -> fingerprint | ABSENT
        self.written_secrets: dict[str, list[str]] = {}
        self.written_sas: dict[str, list[str]] = {}
        self.sa_seen: dict[tuple[str, str], float] = {}  # for the link-latency histogram
        self.sa_drift: dict[tuple[str, str], tuple[int, float]] = {}
        self.sa_drift_pending: dict[tuple[str, str], set[str]] = {}
        self._ns_locks = [threading.Lock() for _ in range(64)]
        self._recent_events: dict[tuple[str, str, str], float] = {}
        self.elector: LeaderElector | None = None
        self.fanned_out: dict[str, tuple[Any, ...]] = {}
        self.status_deferred_since: dict[str, float] = {}
        self.new_namespaces: set[str] = set()  # created after start-up, not yet given our Secrets
        self.exit_code = 0
        self.leading = threading.Event()
        def reflector(resource: Resource, reduce: Callable[[Mapping[str, Any]], Any],
                      handler: Callable[[str, Any, Any], None], name: str = "",
                      namespace: str | None = None) -> Reflector:
            return Reflector(kube, resource, reduce, handler, name=name or resource.plural, namespace=namespace,
                             watch_timeout=options.watch_timeout, read_timeout=options.read_timeout,
                             stop=self.stop_event)

        self.reflectors = [
            reflector(IMAGEPULLSECRETS, _ips_reduce, self._on_ips),
            # Only the add-on's own namespace (passwordSecretRef): never Secrets cluster-wide.
            reflector(SECRETS, _secret_reduce, self._on_local_secret, "local-secrets", options.namespace),
            reflector(NAMESPACES, reconcile.namespace_info, self._on_namespace),
            reflector(SERVICEACCOUNTS, reconcile.service_account_info, self._on_sa),
        ]
        self._threads: list[threading.Thread] = []

    # -- caches & event handlers ----------------------------------------------------------------

    def synced(self) -> bool:
        return all(r.synced.is_set() for r in self.reflectors)

    def _plan(self, obj: dict[str, Any]) -> Plan:
        meta = obj.get("metadata") or {}
        name = str(meta.get("name"))
        spec = obj.get("spec") or {}
        deleting = bool(meta.get("deletionTimestamp"))
        target = reconcile.target_from_spec(name, spec)
        problem: tuple[str, str] | None = None
        creds = None
        invalid = _validation_problem(spec)
        if invalid:
            problem = ("InvalidSpec", invalid)
        else:
            try:
                creds = reconcile.resolve_credentials(spec, self.local_secrets.get)
            except reconcile.CredentialsError as exc:
                problem = ("CredentialsUnavailable", str(exc))
        fp = reconcile.fingerprint(reconcile.desired_secret(name, "-", creds)) if creds else ""
        return Plan(name, obj, target, creds, problem, deleting, fp)

    def _on_ips(self, kind: str, old: Any, new: Any) -> None:
        obj = new if new is not None else old
        name = str(obj["metadata"]["name"])
        with self.lock:
            if new is None:
                self.plans.pop(name, None)
                self.fanned_out.pop(name, None)
            else:
                self.plans[name] = self._plan(new)
        if old is None or new is None or _without_status(old) != _without_status(new):
            self.queue.add(("ips", name))

    def _on_local_secret(self, kind: str, old: Any, new: Any) -> None:
        obj = new if new is not None else old
        name = obj["name"]
        with self.lock:
            if new is None:
                self.local_secrets.pop(name, None)
            else:
                self.local_secrets[name] = new["data"]
            affected = [
                p.name
                for p in self.plans.values()
                if (((p.obj.get("spec") or {}).get("docker") or {}).get("passwordSecretRef") or {}).get("name") == name
            ]
            for n in affected:
                self.plans[n] = self._plan(self.plans[n].obj)
        for n in affected:
            self.queue.add(("ips", n))

    def _on_namespace(self, kind: str, old: Any, new: Any) -> None:
        if new is None:
            with self.lock:
                self.namespaces.pop(old.name, None)
                self.new_namespaces.discard(old.name)
                self.sas.pop(old.name, None)
                for key in [k for k in self.secret_state if k[0] == old.name]:
                    del self.secret_state[key]
            return
        with self.lock:
            self.namespaces[new.name] = new
            if kind == "ADDED" and self.synced():
                # Created after start-up: our Secrets cannot exist there yet, so create them without
                # reading first (one request less on the path to a linked `default` account).
                self.new_namespaces.add(new.name)
            if new.terminating:
                for key in [k for k in self.secret_state if k[0] == new.name]:
                    del self.secret_state[key]
        if not new.terminating:
            self.queue.add(("ns", new.name))

    def _on_sa(self, kind: str, old: Any, new: Any) -> None:
        sa = new if new is not None else old
        key = (sa.namespace, sa.name)
        with self.lock:
            if new is None:
                self.sas.get(sa.namespace, {}).pop(sa.name, None)
                self.sa_seen.pop(key, None)
                return
            self.sas.setdefault(sa.namespace, {})[sa.name] = new
            wanted, managed = self._wanted_for(new)
            desired = reconcile.desired_pull_secrets(new.pull_secrets, wanted, managed)
            if desired == list(new.pull_secrets):
                self.sa_seen.pop(key, None)
                return
            # drift: one of our wanted entries vanished from a ServiceAccount that had it
            lost = {n for n in wanted if old is not None and n in old.pull_secrets and n not in new.pull_secrets}
            if kind == "ADDED" or key not in self.sa_seen:
                self.sa_seen.setdefault(key, time.monotonic())
            if lost:
                count, last = self.sa_drift.get(key, (0, 0.0))
                count = count + 1 if time.monotonic() - last < 600 else 1
                self.sa_drift[key] = (count, time.monotonic())
                self.sa_drift_pending.setdefault(key, set()).update(lost)
                delay = min(300.0, self.opts.sa_drift_delay * (2 ** (count - 1)))
        if lost:
            self.queue.add_after(("sa", *key), delay)
        else:
            self.queue.add(("sa", *key))

    def _wanted_for(self, sa: reconcile.ServiceAccountInfo) -> tuple[set[str], set[str]]:
        """(wanted, managed) secret names for ``sa``; caller holds the lock."""
        ns = self.namespaces.get(sa.namespace)
        wanted: set[str] = set()
        managed: set[str] = set()
        for plan in self.plans.values():
            if plan.managed:
                managed.add(plan.secret_name)
            if plan.active and ns is not None and reconcile.service_account_served(plan.target, ns, sa):
                wanted.add(plan.secret_name)
        return wanted, managed

    # -- work -------------------------------------------------------------------------------------

    def process(self, key: Key) -> None:
        kind = key[0]
        if kind == "ns":
            self.sync_namespace(key[1])
        elif kind == "sa":
            self.sync_service_account(key[1], key[2])
        elif kind == "ips":
            self.sync_ips(key[1])
        elif kind == "status":
            self.sync_status(key[1])

    def _ns_lock(self, ns: str) -> threading.Lock:
        return self._ns_locks[hash(ns) % len(self._ns_locks)]

    def ensure_namespace_secrets(self, ns_name: str) -> None:
        """Create/update our Secrets where wanted, delete ours where not (by name, no list)."""
        with self._ns_lock(ns_name):
            with self.lock:
                ns = self.namespaces.get(ns_name)
                plans = list(self.plans.values())
                assume_absent = ns_name in self.new_namespaces
                self.new_namespaces.discard(ns_name)
            if ns is None or ns.terminating:
                return
            for plan in plans:
                skey = (ns_name, plan.name)
                with self.lock:
                    state = self.secret_state.get(skey)
                if plan.active and plan.creds is not None and reconcile.namespace_served(plan.target, ns):
                    if state == plan.fingerprint:
                        continue
                    desired = reconcile.desired_secret(plan.name, ns_name, plan.creds)
                    result = self.kube.ensure_secret(desired, assume_absent=assume_absent and state is None)
                    if result == "skipped":
                        continue
                    with self.lock:
                        self.secret_state[skey] = plan.fingerprint
                        if result in ("created", "updated"):
                            self.metrics.writes.labels("secrets").inc()
                            self.written_secrets.setdefault(plan.name, []).append(f"{ns_name}/{plan.secret_name}")
                    if result in ("created", "updated"):
                        log.info("Secret %s/%s %s", ns_name, plan.secret_name, result)
                    # Also on "unchanged": after a restart the counts only become complete as each
                    # namespace is re-checked, so the status must follow every state change.
                    self.queue.add_after(("status", plan.name), self.opts.status_delay)
                elif plan.managed and state != ABSENT and (plan.deleting or plan.problem is None):
                    existing = self.kube.get_secret(ns_name, plan.secret_name)
                    if existing is not None and reconcile.is_ours(existing, plan.name):
                        uid = (existing.get("metadata") or {}).get("uid")
                        if self.kube.delete(SECRETS.path(ns_name, plan.secret_name), uid=uid):
                            self.metrics.writes.labels("secrets").inc()
                            log.info("Secret %s/%s deleted (no longer wanted)", ns_name, plan.secret_name)
                            self.queue.add_after(("status", plan.name), self.opts.status_delay)
                    with self.lock:
                        self.secret_state[skey] = ABSENT

    def link_service_account(self, sa: reconcile.ServiceAccountInfo) -> None:
        key = (sa.namespace, sa.name)
        with self.lock:
            wanted, managed = self._wanted_for(sa)
            # link only to Secrets that exist
            wanted = {
                w
                for w in wanted
                if self.secret_state.get((sa.namespace, w[len(api.SECRET_PREFIX) :])) not in (None, ABSENT)
            }

        def compute(current: Iterable[str | None]) -> list[str | None]:
            return reconcile.desired_pull_secrets(list(current), wanted, managed)

        before = set(sa.pull_secrets)
        written, latest = self.kube.update_pull_secrets(sa, compute)
        with self.lock:
            seen = self.sa_seen.pop(key, None)
            drifted = self.sa_drift_pending.pop(key, set())
            if latest is not None:
                self.sas.setdefault(sa.namespace, {})[sa.name] = latest
        if not written or latest is None:
            return
        self.metrics.writes.labels("serviceaccounts").inc()
        if seen is not None:
            self.metrics.link_latency.observe(time.monotonic() - seen)
        added = set(latest.pull_secrets) - before
        removed = before - set(latest.pull_secrets)
        log.info(
            "ServiceAccount %s/%s imagePullSecrets: +%s -%s",
            sa.namespace,
            sa.name,
            sorted(str(a) for a in added),
            sorted(str(r) for r in removed),
        )
        with self.lock:
            plans = {p.secret_name: p for p in self.plans.values()}
        for name in added | removed:
            plan = plans.get(str(name))
            if plan is None:
                continue
            with self.lock:
                self.written_sas.setdefault(plan.name, []).append(f"{sa.namespace}/{sa.name}")
            self.queue.add_after(("status", plan.name), self.opts.status_delay)
            if name in drifted and name in added:
                self.metrics.repairs.labels("serviceaccount").inc()
                self.event(
                    plan.obj,
                    "Warning",
                    "ServiceAccountRelinked",
                    f"{name} was removed from imagePullSecrets of ServiceAccount {sa.namespace}/{sa.name} "
                    "outside the controller; added it back (set annotation "
                    f'{api.OPT_OUT_ANNOTATION}: "true" on the ServiceAccount to opt out)',
                )

    def sync_namespace(self, ns_name: str) -> None:
        self.ensure_namespace_secrets(ns_name)
        with self.lock:
            accounts = list(self.sas.get(ns_name, {}).values())
        for sa in accounts:
            self.link_service_account(sa)

    def sync_service_account(self, ns_name: str, sa_name: str) -> None:
        self.ensure_namespace_secrets(ns_name)
        with self.lock:
            sa = self.sas.get(ns_name, {}).get(sa_name)
        if sa is not None:
            self.link_service_account(sa)

    def sync_ips(self, name: str) -> None:
        with self.lock:
            plan = self.plans.get(name)
        if plan is None:
            with self.lock:
                for key in [k for k in self.secret_state if k[1] == name]:
                    del self.secret_state[key]
            return
        meta = plan.obj.get("metadata") or {}
        finalizers = meta.get("finalizers") or []
        if plan.deleting:
            if api.FINALIZER in finalizers:
                self.cleanup(plan)
                self.kube.set_finalizer(plan.obj, present=False)
                log.info("ImagePullSecret %s: cleaned up, finalizer removed", name)
            return
        if api.FINALIZER not in finalizers:
            updated = self.kube.set_finalizer(plan.obj, present=True)
            if updated is None:
                return
        if plan.problem is not None:
            self.event(plan.obj, "Warning", plan.problem[0], plan.problem[1])
        shape = (plan.target, plan.fingerprint, plan.active, plan.managed)
        with self.lock:
            names = list(self.namespaces) if self.fanned_out.get(name) != shape else []
            self.fanned_out[name] = shape
        for ns in names:
            self.queue.add(("ns", ns))
        self.queue.add_after(("status", name), self.opts.status_delay)

    def cleanup(self, plan: Plan) -> None:
        """Remove every Secret and ServiceAccount entry this ImagePullSecret created."""
        with self.lock:
            names = set(self.namespaces) | {k[0] for k in self.secret_state if k[1] == plan.name}
        for ns in sorted(names):
            self.ensure_namespace_secrets(ns)  # plan.deleting: deletes ours
            with self.lock:
                accounts = [sa for sa in self.sas.get(ns, {}).values() if plan.secret_name in sa.pull_secrets]
            for sa in accounts:
                self.link_service_account(sa)

    def _unchecked_namespaces(self, plan: Plan) -> bool:
        """Some served namespace has not been checked yet (start-up, or a fan-out in progress)."""
        if not plan.active or plan.creds is None:
            return False
        return any(
            reconcile.namespace_served(plan.target, ns) and (ns.name, plan.name) not in self.secret_state
            for ns in self.namespaces.values()
        )

    def sync_status(self, name: str) -> None:
        with self.lock:
            plan = self.plans.get(name)
            if plan is None or plan.deleting:
                return
            # Writing counts while namespaces are still being checked would store a wrong status
            # (and an extra write on every restart); wait for them, but not forever: a namespace
            # that keeps failing must show up in the status.
            if self._unchecked_namespaces(plan):
                first = self.status_deferred_since.setdefault(name, time.monotonic())
                if time.monotonic() - first < self.opts.status_settle_limit:
                    self.queue.add_after(("status", name), max(self.opts.status_delay, 0.1))
                    return
            self.status_deferred_since.pop(name, None)
            counts = self._counts(plan)
            secrets_written = self.written_secrets.pop(name, [])
            sas_written = self.written_sas.pop(name, [])
        meta = plan.obj.get("metadata") or {}
        previous = plan.obj.get("status") or {}
        status = reconcile.compute_status(
            previous,
            counts,
            generation=meta.get("generation"),
            secrets_written=secrets_written,
            sas_written=sas_written,
            problem=plan.problem,
            now=_now(),
        )
        if reconcile.status_changed(previous, status):
            updated = self.kube.patch_status(name, status)
            self.metrics.writes.labels("imagepullsecrets/status").inc()
            with self.lock:
                current = self.plans.get(name)
                if updated is not None and current is not None:
                    current.obj["status"] = updated.get("status") or status

    def _counts(self, plan: Plan) -> reconcile.Counts:
        sd = ss = ad = asucc = 0
        for ns in self.namespaces.values():
            if not reconcile.namespace_served(plan.target, ns):
                continue
            sd += 1
            if plan.active and self.secret_state.get((ns.name, plan.name)) == plan.fingerprint:
                ss += 1
            for sa in self.sas.get(ns.name, {}).values():
                if reconcile.service_account_served(plan.target, ns, sa):
                    ad += 1
                    if plan.secret_name in sa.pull_secrets:
                        asucc += 1
        return reconcile.Counts(sd, ss, ad, asucc)

    def event(self, obj: Mapping[str, Any], etype: str, reason: str, message: str) -> None:
        """Event on an ImagePullSecret; identical events at most once a minute."""
        key = (str((obj.get("metadata") or {}).get("name")), reason, message)
        now = time.monotonic()
        with self.lock:
            if now - self._recent_events.get(key, -1e9) < 60:
                return
            self._recent_events[key] = now
        self.kube.event(obj, etype, reason, message)

    # -- drift check of distributed Secrets (GET by name, rate-limited) ------------------------

    def check_secrets_once(self) -> int:
        """One pass over every Secret believed up to date; returns the number repaired."""
        with self.lock:
            items = [(k, v) for k, v in self.secret_state.items() if v != ABSENT]
        repaired = 0
        interval = 1.0 / self.opts.drift_qps if self.opts.drift_qps > 0 else 0.0
        for (ns, ips), fp in items:
            if self.stop_event.is_set():
                break
            with self.lock:
                plan = self.plans.get(ips)
                if plan is None or not plan.active or plan.fingerprint != fp or self.secret_state.get((ns, ips)) != fp:
                    continue
                creds = plan.creds
            assert creds is not None
            start = time.monotonic()
            try:
                current = self.kube.get_secret(ns, plan.secret_name)
            except Exception as exc:
                log.warning("drift check of %s/%s failed: %s", ns, plan.secret_name, exc)
                continue
            desired = reconcile.desired_secret(ips, ns, creds)
            if current is None or not reconcile.secret_up_to_date(current, desired):
                with self.lock:
                    if self.secret_state.get((ns, ips)) == fp:
                        del self.secret_state[(ns, ips)]
                what = "deleted" if current is None else "changed"
                log.info("Secret %s/%s was %s outside the controller; repairing", ns, plan.secret_name, what)
                self.metrics.repairs.labels("secret").inc()
                self.event(
                    plan.obj,
                    "Warning",
                    "SecretRepaired",
                    f"Secret {ns}/{plan.secret_name} was {what} outside the controller; restored it",
                )
                self.queue.add(("ns", ns))
                repaired += 1
            spent = time.monotonic() - start
            if interval > spent:
                self.stop_event.wait(interval - spent)
        return repaired

    def _drift_loop(self) -> None:
        while not self.stop_event.is_set():
            start = time.monotonic()
            try:
                self.check_secrets_once()
            except Exception:
                log.exception("drift check failed")
            self.stop_event.wait(max(0.0, self.opts.drift_period - (time.monotonic() - start)))

    # -- workers ----------------------------------------------------------------------------------

    def _worker(self) -> None:
        while not self.stop_event.is_set():
            key = self.queue.get(timeout=1.0)
            self.metrics.queue_depth.set(len(self.queue))
            if key is None:
                continue
            assert isinstance(key, tuple)
            kind = str(key[0])
            try:
                self.process(key)
                self.queue.forget(key)
                self.metrics.reconciles.labels(kind).inc()
            except Exception as exc:
                self.metrics.errors.labels(kind).inc()
                n = self.queue.failures(key)
                log.warning("%s failed (attempt %d): %s", "/".join(key), n + 1, exc)
                if kind in ("ips", "status", "ns"):
                    name = key[1] if kind != "ns" else None
                    if name is not None and n in (0, 5, 10):
                        with self.lock:
                            plan = self.plans.get(name)
                        if plan is not None:
                            self.event(plan.obj, "Warning", "ReconcileFailed", f"{kind} {name}: {_safe(exc)}")
                self.queue.add_rate_limited(key)
            finally:
                self.queue.done(key)

    def start_caches(self) -> None:
        for r in self.reflectors:
            r.start()

    def wait_synced(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        return all(r.synced.wait(max(0.0, deadline - time.monotonic())) for r in self.reflectors)

    def start_workers(self) -> None:
        self.leading.set()
        self.metrics.leader.set(1)
        with self.lock:
            for name in self.plans:
                self.queue.add(("ips", name))
        for i in range(self.opts.workers):
            t = threading.Thread(target=self._worker, name=f"worker-{i}", daemon=True)
            t.start()
            self._threads.append(t)
        t = threading.Thread(target=self._drift_loop, name="drift", daemon=True)
        t.start()
        self._threads.append(t)

    def run(self, ready: Callable[[], None] | None = None) -> int:
        """Run until stop() (returns 0) or lost leadership (returns 1)."""
        self.start_caches()
        while not self.wait_synced(1.0):
            if self.stop_event.is_set():
                return self._shutdown()
        log.info(
            "caches synced: %d namespaces, %d ServiceAccounts, %d ImagePullSecrets",
            len(self.namespaces),
            sum(len(v) for v in self.sas.values()),
            len(self.plans),
        )
        if ready is not None:
            ready()
        if self.opts.leader_elect:
            self.elector = LeaderElector(
                self.kube,
                self.opts.namespace,
                self.opts.lease_name,
                self.opts.identity,
                self.opts.lease_duration,
                self.opts.renew_deadline,
                self.opts.retry_period,
            )
            if not self.elector.acquire(self.stop_event):
                return self._shutdown()
            self.start_workers()
            if not self.elector.keep_renewing(self.stop_event):
                self.exit_code = 1
            return self._shutdown()
        self.start_workers()
        self.stop_event.wait()
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

    def idle(self) -> bool:
        return self.queue.idle()


def _ips_reduce(obj: Mapping[str, Any]) -> dict[str, Any]:
    meta = obj.get("metadata") or {}
    keep = {
        k: meta.get(k)
        for k in ("name", "uid", "resourceVersion", "generation", "deletionTimestamp", "finalizers", "labels")
        if meta.get(k) is not None
    }
    return {
        "apiVersion": obj.get("apiVersion"),
        "kind": obj.get("kind"),
        "metadata": keep,
        "spec": obj.get("spec") or {},
        "status": obj.get("status") or {},
    }


def _without_status(obj: Mapping[str, Any]) -> Any:
    meta = {k: v for k, v in (obj.get("metadata") or {}).items() if k != "resourceVersion"}
    return (meta, obj.get("spec"))


def _secret_reduce(obj: Mapping[str, Any]) -> dict[str, Any]:
    return {"name": (obj.get("metadata") or {}).get("name"), "data": dict(obj.get("data") or {})}


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _safe(exc: BaseException) -> str:
    """An error message safe to publish (API Status messages carry no request bodies)."""
    if isinstance(exc, KubeError):
        return f"{exc.status} {exc.reason}: {exc.message}"[:500]
    return type(exc).__name__


def health_routes(controller: Controller) -> dict[str, Callable[[], tuple[int, str, bytes]]]:
    def healthz() -> tuple[int, str, bytes]:
        return 200, "text/plain", b"ok\n"

    def readyz() -> tuple[int, str, bytes]:
        if controller.synced():
            return 200, "text/plain", b"ok\n"
        return 503, "text/plain", b"caches not synced\n"

    return {"/healthz": healthz, "/readyz": readyz}


def metrics_routes(controller: Controller) -> dict[str, Callable[[], tuple[int, str, bytes]]]:
    def metrics() -> tuple[int, str, bytes]:
        controller.metrics.queue_depth.set(len(controller.queue))
        return 200, CONTENT_TYPE_LATEST, generate_latest(controller.metrics.registry)

    return {"/metrics": metrics}


def default_namespace() -> str | None:
    from .kube import namespace_file

    return os.environ.get("POD_NAMESPACE") or namespace_file()
