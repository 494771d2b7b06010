"""The controller's write steps: each reads what it must, asks `reconcile` what to write, and
writes through `kube`, re-reading and deciding again on a 409 (a conflict or AlreadyExists, about
5 tries, 10 ms apart). `kube` carries requests and decides nothing.

Errors mapped explicitly:
* 404 NotFound: object or namespace gone -> nothing to do;
* 409 AlreadyExists on create -> read and update instead;
* 409 Conflict on update -> re-read and retry;
* 403 Forbidden when the namespace is being terminated -> skip that namespace.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from tcr_assistant.k8s.client import EVENTS, SECRETS, SERVICEACCOUNTS, Kube, KubeError, Resource, now_rfc3339
from tcr_assistant.reconciler.decisions import SecretStep, secret_for_update, secret_step
from tcr_assistant.reconciler.observed import ServiceAccountInfo, pull_secret_names, service_account_info
from tcr_assistant.reconciler.state import remember_event
from tcr_assistant.spec import api

log = logging.getLogger(__name__)

CONFLICT_RETRIES = 5
CONFLICT_DELAY = 0.01
IMAGEPULLSECRETS = Resource(f"/apis/{api.GROUP}/{api.VERSION}", api.PLURAL, False)
EVENT_REPEAT_SECONDS = 60.0  # an identical Event at most this often


def ensure_secret(
    kube: Kube, desired: Mapping[str, Any], observed: Mapping[str, Any] | None = None, create_first: bool = False
) -> str:
    """Carry out `reconcile.secret_step` until the Secret matches ``desired``, re-reading on
    409/AlreadyExists. Returns "unchanged", "created", "updated" or "skipped" (namespace gone
    or terminating). ``observed``: a fresh read, if the caller has one; ``create_first``:
    create before reading (a new namespace), read only on AlreadyExists."""
    ns = desired["metadata"]["namespace"]
    name = desired["metadata"]["name"]
    current = observed
    read = not create_first or observed is not None
    for _attempt in range(CONFLICT_RETRIES):
        if current is None and read:
            current = kube.get_secret(ns, name)
        read = True
        step = secret_step(current, desired)
        try:
            if step is SecretStep.CREATE:
                kube.request("POST", SECRETS.path(ns), body=dict(desired))
                return "created"
            if step is SecretStep.UNCHANGED:
                return "unchanged"
            assert current is not None
            if step is SecretStep.REPLACE:
                kube.delete(SECRETS.path(ns, name), uid=(current.get("metadata") or {}).get("uid"))
                current = None
                continue
            kube.request("PUT", SECRETS.path(ns, name), body=secret_for_update(current, desired))
            return "updated"
        except KubeError as exc:
            if exc.already_exists or exc.conflict:
                reason = "already_exists" if exc.already_exists else "conflict"
                kube.retried("secrets", reason, f"Secret {ns}/{name}")
                current = None
                if exc.conflict:
                    time.sleep(CONFLICT_DELAY)
                continue
            if exc.not_found or exc.terminating:
                return "skipped"
            raise
    raise KubeError(409, "Conflict", f"Secret {ns}/{name}: still conflicting after {CONFLICT_RETRIES} tries")


# -- ServiceAccounts ----------------------------------------------------------------------

def update_pull_secrets(
    kube: Kube,
    sa: ServiceAccountInfo,
    compute: Callable[[Sequence[str | None]], list[str | None]],
) -> tuple[bool, ServiceAccountInfo | None]:
    """Read-modify-write of ``imagePullSecrets``, guarded by resourceVersion.

    Starts from the cached ``sa`` (no read when the cache is current); on 409 Conflict
    re-reads and recomputes, up to CONFLICT_RETRIES times. Returns (written, latest info);
    latest is None when the ServiceAccount is gone.
    """
    info: ServiceAccountInfo | None = sa
    if not sa.all_kept:
        # Only our entries are cached. ``compute`` keeps every other entry in place (and appends
        # missing ones at the end), so our entries alone tell what it would change.
        if sa.ours_kept:
            ours = list(sa.ours)
            new = compute(ours)
            if new == ours:
                return False, sa
            if new[: len(ours)] == ours:
                appended = _append_pull_secrets(kube, sa, [n for n in new[len(ours):] if n is not None])
                if appended is not None:
                    return appended
        info = None  # read the list whole
    for _attempt in range(CONFLICT_RETRIES):
        if info is None:
            obj = kube.get(SERVICEACCOUNTS.path(sa.namespace, sa.name))
            if obj is None:
                return False, None
            names = pull_secret_names(obj)
            info = service_account_info(obj)
        else:
            names = list(info.pull_secrets)
        new = compute(names)
        if names == new:
            return False, info
        patch = {
            "metadata": {"resourceVersion": info.resource_version},
            "imagePullSecrets": [{"name": n} if n is not None else {} for n in new],
        }
        try:
            obj = kube.request(
                "PATCH",
                SERVICEACCOUNTS.path(sa.namespace, sa.name),
                body=patch,
                content_type="application/merge-patch+json",
            )
            return True, service_account_info(obj)
        except KubeError as exc:
            if exc.not_found:
                return False, None
            if exc.conflict:
                kube.retried("serviceaccounts", "conflict", f"ServiceAccount {sa.key}")
                info = None
                time.sleep(CONFLICT_DELAY)
                continue
            raise
    raise KubeError(409, "Conflict", f"ServiceAccount {sa.key}: still conflicting after {CONFLICT_RETRIES} tries")

def _append_pull_secrets(kube: Kube, sa: ServiceAccountInfo, names: Sequence[str]
                         ) -> tuple[bool, ServiceAccountInfo | None] | None:
    """Append ``names`` to a long ``imagePullSecrets`` list without reading it: a JSON patch,
    guarded by the cached resourceVersion. None on 409 Conflict (the caller reads and retries)."""
    ops: list[dict[str, Any]] = [
        {"op": "replace", "path": "/metadata/resourceVersion", "value": sa.resource_version},
        *({"op": "add", "path": "/imagePullSecrets/-", "value": {"name": n}} for n in names),
    ]
    try:
        obj = kube.request("PATCH", SERVICEACCOUNTS.path(sa.namespace, sa.name), body=ops,
                           content_type="application/json-patch+json")
    except KubeError as exc:
        if exc.not_found:
            return False, None
        if exc.conflict:
            kube.retried("serviceaccounts", "conflict", f"ServiceAccount {sa.key}")
            return None
        raise
    return True, service_account_info(obj)

# -- ImagePullSecrets ---------------------------------------------------------------------

def patch_status(kube: Kube, name: str, status: Mapping[str, Any]) -> dict[str, Any] | None:
    try:
        return kube.request(
            "PATCH",
            IMAGEPULLSECRETS.path(name=name, sub="status"),
            body={"status": dict(status)},
            content_type="application/merge-patch+json",
        )
    except KubeError as exc:
        if exc.not_found:
            return None
        raise

def set_finalizer(kube: Kube, obj: Mapping[str, Any], present: bool) -> dict[str, Any] | None:
    """Add or remove our finalizer (merge patch guarded by resourceVersion). None if gone."""
    meta = obj.get("metadata") or {}
    finalizers = list(meta.get("finalizers") or [])
    if present == (api.FINALIZER in finalizers):
        return dict(obj)
    finalizers = [*finalizers, api.FINALIZER] if present else [f for f in finalizers if f != api.FINALIZER]
    patch = {"metadata": {"finalizers": finalizers, "resourceVersion": meta.get("resourceVersion")}}
    try:
        return kube.request(
            "PATCH",
            IMAGEPULLSECRETS.path(name=meta.get("name")),
            body=patch,
            content_type="application/merge-patch+json",
        )
    except KubeError as exc:
        if exc.not_found:
            return None
        raise

# -- Events -------------------------------------------------------------------------------

def event(
    kube: Kube, obj: Mapping[str, Any], event_type: str, reason: str, message: str, namespace: str = "default"
) -> None:
    """Record a core/v1 Event about ``obj`` (cluster-scoped objects: in namespace "default",
    where kubectl describe finds them). Failures are logged, never raised."""
    meta = obj.get("metadata") or {}
    ts = now_rfc3339()
    body = {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"generateName": f"{meta.get('name', 'object')}.", "namespace": namespace},
        "involvedObject": {
            "apiVersion": obj.get("apiVersion", api.API_VERSION),
            "kind": obj.get("kind", api.KIND),
            "name": meta.get("name"),
            "namespace": meta.get("namespace"),
            "uid": meta.get("uid"),
            "resourceVersion": meta.get("resourceVersion"),
        },
        "type": event_type,
        "reason": reason,
        "message": message[:1024],
        "source": {"component": api.COMPONENT},
        "reportingComponent": api.COMPONENT,
        "reportingInstance": api.COMPONENT,
        "firstTimestamp": ts,
        "lastTimestamp": ts,
        "count": 1,
    }
    try:
        kube.request("POST", EVENTS.path(namespace), body=body)
    except Exception as exc:
        log.warning("could not record event %s on %s: %s", reason, meta.get("name"), exc)


class Events:
    """Events on ImagePullSecrets, an identical one (object, reason, message) at most once a minute."""

    def __init__(self, kube: Kube) -> None:
        self.kube = kube
        self._recent: dict[tuple[str, str, str], float] = {}  # -> last sent (monotonic)
        self._lock = threading.Lock()

    def record(self, obj: Mapping[str, Any], event_type: str, reason: str, message: str) -> None:
        key = (str((obj.get("metadata") or {}).get("name")), reason, message)
        with self._lock:
            if not remember_event(self._recent, key, time.monotonic(), EVENT_REPEAT_SECONDS):
                return
        event(self.kube, obj, event_type, reason, message)


def safe_message(exc: BaseException) -> str:
    """An error message safe to publish (API Status messages carry no request bodies)."""
    if isinstance(exc, KubeError):
        return f"{exc.status} {exc.reason}: {exc.message}"[:500]
    return type(exc).__name__
