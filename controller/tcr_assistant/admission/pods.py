"""The Pod webhook's I/O: answer one Pod CREATE from the controller's caches, record why.

Every replica answers (leader or not): its reflectors hold the ImagePullSecrets, Namespaces,
ServiceAccounts and the add-on namespace's Secrets, and ``reconcile.plan_for`` is pure, so the
plans are computed here from the cached objects. A namespace or ServiceAccount the cache has not
seen yet (created a few milliseconds ago) is read once from the API server, so an opt-out on a
brand-new ServiceAccount is honoured; when that read fails, the Pod is admitted unchanged (as if
the webhook were down) with a warning. The decision is ``podadmission.entries_to_add``; a Pod is
never refused, and any error admits it unchanged. Mirror Pods and requests made by nodes are
never changed, nor a Pod whose annotations would exceed the API server's limit with ours.
A Pod admitted (not dry-run) in a served namespace also tells ``on_served``, which queues a
read of our Secrets there (drift "poll" mode: one deleted by hand is back before the kubelet
pulls). The Event (on the ServiceAccount: a generated Pod has no name yet) is recorded by a background
thread, never on the admission's path, and not for dry-run requests; its queue is bounded
(EVENTS_QUEUED), Events beyond it are dropped and counted.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
from collections.abc import Callable
from http import HTTPStatus
from typing import Any

from tcr_assistant.admission import podreview as podadmission
from tcr_assistant.admission import review as admission
from tcr_assistant.k8s.client import NAMESPACES, SERVICEACCOUNTS, Kube, KubeError
from tcr_assistant.reconciler import decisions as reconcile
from tcr_assistant.reconciler import writes
from tcr_assistant.reconciler.observed import NamespaceInfo, ServiceAccountInfo, namespace_info, service_account_info
from tcr_assistant.reconciler.state import ControllerState

log = logging.getLogger(__name__)

EVENT_REASON = "PullSecretAddedToPod"
NAMESPACE_READ_TIMEOUT = 2.0  # within the webhook's own timeout
SERVICE_ACCOUNT_READ_TIMEOUT = 2.0  # likewise
EVENTS_QUEUED = 256  # Events waiting to be recorded; more are dropped (counted in events_dropped)

EventItem = tuple[podadmission.PodFacts, list[str]]


class AccountUnknown(Exception):
    """The Pod's ServiceAccount is not cached and could not be read: its opt-out is unknown."""


class PodWebhook:
    def __init__(self, state: ControllerState, kube: Kube, events_queued: int = EVENTS_QUEUED,
                 on_served: Callable[[str], None] = lambda namespace: None) -> None:
        self.state = state
        self.kube = kube
        self.on_served = on_served  # a Pod is admitted in this namespace, which we serve; must not block
        self.events_dropped = 0
        self.skipped: dict[str, int] = {}  # why Pods were left alone that a plan would serve -> count
        self._events: queue.Queue[EventItem | None] = queue.Queue(maxsize=events_queued)
        self._stopping = threading.Event()
        self._counts = threading.Lock()
        self._thread = threading.Thread(target=self._record_events, name="pod-webhook-events", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        with contextlib.suppress(queue.Full):  # full: the thread sees _stopping after the Event it sends
            self._events.put_nowait(None)
        self._thread.join(5.0)

    # -- one review --------------------------------------------------------------------------

    def handle(self, body: bytes, max_body_bytes: int) -> tuple[int, dict[str, Any]]:
        """(HTTP status, AdmissionReview) for one request body. Never raises, never refuses a Pod."""
        try:
            uid, review = admission.parse_review(body, max_body_bytes)
        except admission.BadReview as bad:
            return bad.status, bad.doc
        request = review["request"]
        try:
            facts = podadmission.pod_facts(request)
            if facts is None:
                return HTTPStatus.OK, podadmission.review_response(uid)
            if podadmission.not_for_us(facts) is not None:
                # before any read: a node's requests cost the API server nothing more
                return HTTPStatus.OK, podadmission.review_response(uid)
            try:
                wanted, account = self.entries_for(facts.namespace, facts.service_account)
            except AccountUnknown as unknown:
                self._count("ServiceAccount unknown")
                return HTTPStatus.OK, podadmission.review_response(uid, warnings=[str(unknown)])
            add = podadmission.entries_to_add(facts, wanted, account)
        except Exception:
            log.exception("pod webhook: error deciding request %s; admitted unchanged", uid)
            return HTTPStatus.OK, podadmission.review_response(uid)
        if wanted and not facts.dry_run:
            try:
                self.on_served(facts.namespace)
            except Exception:  # the check is a bonus: never the reason a Pod goes without its entries
                log.exception("pod webhook: could not queue the check of namespace %s", facts.namespace)
        if not add:
            return HTTPStatus.OK, podadmission.review_response(uid)
        too_large = podadmission.too_large_warning(facts, add)
        if too_large is not None:
            self._count("annotations too large")
            log.warning("pod webhook: %s: Pod of %s (ServiceAccount %s) admitted unchanged: %s", facts.namespace,
                        facts.owner or "-", facts.service_account, too_large)
            return HTTPStatus.OK, podadmission.review_response(uid, warnings=[too_large])
        log.info("pod webhook: %s: Pod of %s (ServiceAccount %s) gets %s", facts.namespace, facts.owner or "-",
                 facts.service_account, ", ".join(add))
        if not facts.dry_run:
            self._queue_event((facts, add))
        return HTTPStatus.OK, podadmission.review_response(uid, podadmission.patch_for(facts, add))

    def entries_for(self, namespace: str, service_account: str) -> tuple[list[str], ServiceAccountInfo | None]:
        """(our Secret names the account is served with, the account as cached or read; None when
        no plan serves the namespace). Raises AccountUnknown when the account must be read and cannot."""
        with self.state.lock:
            ns = self.state.namespaces.get(namespace)
            account = self.state.account(namespace, service_account)
            objects = list(self.state.image_pull_secrets.values())
            local = dict(self.state.local_secrets)
        if ns is None:
            ns = self._read_namespace(namespace)
            if ns is None:
                return [], None
        plans = [plan for plan in (reconcile.plan_for(obj, local.get) for obj in objects) if plan.active]

        def served(sa: ServiceAccountInfo) -> list[str]:
            return sorted(plan.secret_name for plan in plans if reconcile.service_account_served(plan.target, ns, sa))

        if account is None:
            # Served as an account without opt-out would be? Only then is its opt-out worth a read.
            if not served(ServiceAccountInfo(namespace, service_account)):
                return [], None
            account = self._read_service_account(namespace, service_account)
        return served(account), account

    def _read_namespace(self, name: str) -> NamespaceInfo | None:
        try:
            raw = self.kube.request("GET", NAMESPACES.path(name=name), timeout=NAMESPACE_READ_TIMEOUT)
        except KubeError as exc:
            log.warning("pod webhook: cannot read namespace %s (%s %s); Pod admitted unchanged",
                        name, exc.status, exc.reason)
            return None
        return namespace_info(raw)

    def _read_service_account(self, namespace: str, name: str) -> ServiceAccountInfo:
        try:
            raw = self.kube.request("GET", SERVICEACCOUNTS.path(namespace, name), timeout=SERVICE_ACCOUNT_READ_TIMEOUT)
        except Exception as exc:  # a KubeError, a timeout, a broken connection
            why = f"{exc.status} {exc.reason}" if isinstance(exc, KubeError) else type(exc).__name__
            log.warning("pod webhook: cannot read ServiceAccount %s/%s (%s); Pod admitted unchanged",
                        namespace, name, why)
            raise AccountUnknown(f"tcr-assistant: imagePullSecrets not added: ServiceAccount {name} could not be "
                                 f"read ({why}) to check its opt-out") from None
        return service_account_info(raw)

    def _count(self, why: str) -> None:
        with self._counts:
            self.skipped[why] = self.skipped.get(why, 0) + 1

    # -- events ------------------------------------------------------------------------------

    def _queue_event(self, item: EventItem) -> None:
        try:
            self._events.put_nowait(item)
        except queue.Full:
            with self._counts:
                self.events_dropped += 1
                dropped = self.events_dropped
            if dropped == 1 or dropped % 1000 == 0:  # not a log line per Pod in a storm
                log.warning("pod webhook: Event queue full (%d waiting); %d Events dropped so far",
                            self._events.maxsize, dropped)

    def _record_events(self) -> None:
        while not self._stopping.is_set() and (item := self._events.get()) is not None:
            facts, add = item
            account = {"apiVersion": "v1", "kind": "ServiceAccount",
                       "metadata": {"name": facts.service_account, "namespace": facts.namespace}}
            try:
                writes.event(self.kube, account, "Normal", EVENT_REASON, podadmission.why(facts, add),
                                namespace=facts.namespace)
            except Exception as exc:  # the thread must outlive a failed write
                log.warning("pod webhook: Event not recorded (%s)", type(exc).__name__)
