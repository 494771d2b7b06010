"""The Pod webhook's I/O: answer one Pod CREATE from the controller's caches, record why.

Every replica answers (leader or not): its reflectors hold the ImagePullSecrets, Namespaces,
ServiceAccounts and the add-on namespace's Secrets, and ``reconcile.plan_for`` is pure, so the
plans are computed here from the cached objects. A namespace the cache has not seen yet (created
a few milliseconds ago) is read once from the API server. The decision is
``podadmission.entries_to_add``; a Pod is never refused, and any error admits it unchanged.
The Event (on the ServiceAccount: a generated Pod has no name yet) is recorded by a background
thread, never on the admission's path, and not for dry-run requests.
"""

from __future__ import annotations

import logging
import queue
import threading
from http import HTTPStatus
from typing import Any

from . import admission, podadmission, reconcile
from .kube import NAMESPACES, Kube, KubeError
from .observed import NamespaceInfo, ServiceAccountInfo, namespace_info
from .state import ControllerState

log = logging.getLogger(__name__)

EVENT_REASON = "PullSecretAddedToPod"
NAMESPACE_READ_TIMEOUT = 2.0  # within the webhook's own timeout


class PodWebhook:
    def __init__(self, state: ControllerState, kube: Kube) -> None:
        self.state = state
        self.kube = kube
        self._events: queue.SimpleQueue[tuple[podadmission.PodFacts, list[str]] | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._record_events, name="pod-webhook-events", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._events.put(None)
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
            wanted, account_entries = self.entries_for(facts.namespace, facts.service_account)
            add = podadmission.entries_to_add(facts, wanted, account_entries)
        except Exception:
            log.exception("pod webhook: error deciding request %s; admitted unchanged", uid)
            return HTTPStatus.OK, podadmission.review_response(uid)
        if not add:
            return HTTPStatus.OK, podadmission.review_response(uid)
        log.info("pod webhook: %s: Pod of %s (ServiceAccount %s) gets %s", facts.namespace, facts.owner or "-",
                 facts.service_account, ", ".join(add))
        if not facts.dry_run:
            self._events.put((facts, add))
        return HTTPStatus.OK, podadmission.review_response(uid, podadmission.patch_for(facts, add))

    def entries_for(self, namespace: str, service_account: str) -> tuple[list[str], list[str] | None]:
        """(our Secret names the account is served with, the account's entries as cached or None)."""
        with self.state.lock:
            ns = self.state.namespaces.get(namespace)
            account = self.state.account(namespace, service_account)
            objects = list(self.state.image_pull_secrets.values())
            local = dict(self.state.local_secrets)
        if ns is None:
            ns = self._read_namespace(namespace)
            if ns is None:
                return [], None
        sa = account if account is not None else ServiceAccountInfo(namespace, service_account)
        wanted = sorted(plan.secret_name for plan in (reconcile.plan_for(obj, local.get) for obj in objects)
                        if plan.active and reconcile.service_account_served(plan.target, ns, sa))
        entries = None if account is None else [e for e in account.pull_secrets if e]
        return wanted, entries

    def _read_namespace(self, name: str) -> NamespaceInfo | None:
        try:
            raw = self.kube.request("GET", NAMESPACES.path(name=name), timeout=NAMESPACE_READ_TIMEOUT)
        except KubeError as exc:
            log.warning("pod webhook: cannot read namespace %s (%s %s); Pod admitted unchanged",
                        name, exc.status, exc.reason)
            return None
        return namespace_info(raw)

    # -- events ------------------------------------------------------------------------------

    def _record_events(self) -> None:
        while (item := self._events.get()) is not None:
            facts, add = item
            account = {"apiVersion": "v1", "kind": "ServiceAccount",
                       "metadata": {"name": facts.service_account, "namespace": facts.namespace}}
            self.kube.event(account, "Normal", EVENT_REASON, podadmission.why(facts, add), namespace=facts.namespace)

