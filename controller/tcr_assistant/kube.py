"""Thin API layer: raw JSON requests on the official client's transport, and the handful of
writes the controller makes, each mapping API errors explicitly.

Objects travel as plain dicts (no pydantic models): less memory, no (de)serialisation cost,
and the caches keep only a few fields anyway. Every request has a client-side timeout; watch
streams have a read timeout so a half-open connection is noticed.

Errors mapped explicitly:
* 404 NotFound: object or namespace gone -> nothing to do;
* 409 AlreadyExists on create -> read and update instead;
* 409 Conflict on update -> re-read and retry (about 5 tries, 10 ms apart);
* 403 Forbidden when the namespace is being terminated -> skip that namespace.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

from kubernetes import client, config
from kubernetes.watch.watch import iter_resp_lines

from . import api, reconcile
from .observed import ServiceAccountInfo, service_account_info

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT = 30.0
CONFLICT_RETRIES = 5
CONFLICT_DELAY = 0.01


class KubeError(Exception):
    """A non-2xx answer from the API server (message from its Status, never a request body)."""

    def __init__(self, status: int, reason: str = "", message: str = "") -> None:
        super().__init__(f"{status} {reason}: {message}")
        self.status = status
        self.reason = reason
        self.message = message

    @property
    def not_found(self) -> bool:
        return self.status == 404

    @property
    def already_exists(self) -> bool:
        return self.status == 409 and self.reason == "AlreadyExists"

    @property
    def conflict(self) -> bool:
        return self.status == 409 and self.reason != "AlreadyExists"

    @property
    def terminating(self) -> bool:
        """Forbidden because the namespace is being terminated (create into it)."""
        return self.status == 403 and "being terminated" in self.message


def make_api_client(kubeconfig: str | None = None, pool_size: int = 16) -> client.ApiClient:
    """``--kubeconfig`` when given; in-cluster when running in a Pod; else $KUBECONFIG/~/.kube/config."""
    cfg = client.Configuration()
    if kubeconfig:
        config.load_kube_config(config_file=kubeconfig, client_configuration=cfg)
    else:
        try:
            config.load_incluster_config(client_configuration=cfg)
        except config.ConfigException:
            config.load_kube_config(client_configuration=cfg)
    cfg.connection_pool_maxsize = pool_size
    api_client = client.ApiClient(configuration=cfg)
    api_client.user_agent = f"{api.COMPONENT}/{_version()}"
    return api_client


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("tcr-assistant")
    except Exception:
        return "dev"


def now_rfc3339() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True, slots=True)
class Resource:
    """Where a kind lives in the REST API."""

    prefix: str  # "/api/v1" or "/apis/group/version"
    plural: str
    namespaced: bool

    def path(self, namespace: str | None = None, name: str | None = None, sub: str | None = None) -> str:
        p = self.prefix
        if self.namespaced and namespace is not None:
            p += f"/namespaces/{quote(namespace, safe='')}"
        p += f"/{self.plural}"
        if name is not None:
            p += f"/{quote(name, safe='')}"
        if sub:
            p += f"/{sub}"
        return p


NAMESPACES = Resource("/api/v1", "namespaces", False)
SERVICEACCOUNTS = Resource("/api/v1", "serviceaccounts", True)
SECRETS = Resource("/api/v1", "secrets", True)
EVENTS = Resource("/api/v1", "events", True)
LEASES = Resource("/apis/coordination.k8s.io/v1", "leases", True)
IMAGEPULLSECRETS = Resource(f"/apis/{api.GROUP}/{api.VERSION}", api.PLURAL, False)


class Kube:
    """Raw JSON access to the API server through ``kubernetes.client.ApiClient``."""

    def __init__(self, api_client: client.ApiClient, timeout: float = DEFAULT_TIMEOUT) -> None:
        self.api_client = api_client
        self.timeout = timeout
        self.writes: Counter[str] = Counter()  # "POST secrets" -> n (tests assert zero writes)
        self.requests: Counter[str] = Counter()
        self._lock = threading.Lock()

    # -- transport ----------------------------------------------------------------------------

    def _send(
        self,
        method: str,
        path: str,
        query: Mapping[str, Any] | None,
        body: Any,
        content_type: str,
        timeout: float | tuple[float, float] | None,
        accept: str = "application/json",
    ) -> Any:
        params = [(k, _qv(v)) for k, v in (query or {}).items() if v is not None]
        m, url, headers, data, _ = self.api_client.param_serialize(
            method=method,
            resource_path=path,
            query_params=params,
            header_params={"Accept": accept, "Content-Type": content_type},
            body=body,
            auth_settings=["BearerToken"],
        )
        resp = self.api_client.call_api(m, url, headers, data, _request_timeout=timeout or self.timeout)
        kind = _kind_of(path)
        with self._lock:
            self.requests[f"{method} {kind}"] += 1
            if method != "GET":
                self.writes[f"{method} {kind}"] += 1
        return resp

    def request(
        self,
        method: str,
        path: str,
        *,
        query: Mapping[str, Any] | None = None,
        body: Any = None,
        content_type: str = "application/json",
        timeout: float | None = None,
        accept: str = "application/json",
    ) -> dict[str, Any]:
        resp = self._send(method, path, query, body, content_type, timeout, accept)
        raw = resp.read()
        if not 200 <= resp.status <= 299:
            raise _error(resp.status, raw)
        return json.loads(raw) if raw else {}

    def watch(
        self,
        path: str,
        query: Mapping[str, Any],
        read_timeout: float,
        on_response: Callable[[Any], None] | None = None,
    ) -> Iterator[dict[str, Any]]:
        """Yield watch events (dicts with "type" and "object"); raise KubeError on HTTP errors.

        ``read_timeout`` is client-side: a stream silent for longer raises (urllib3
        ReadTimeoutError / ProtocolError), which the caller treats as a dead connection.
        """
        q = dict(query)
        q["watch"] = "true"
        resp = self._send("GET", path, q, None, "application/json", (10.0, read_timeout))
        if resp.status != 200:
            raise _error(resp.status, resp.read())
        raw = resp.response
        if on_response is not None:
            on_response(raw)
        try:
            for line in iter_resp_lines(raw):
                if line:
                    yield json.loads(line)
        finally:
            raw.release_conn()

    def list_all(self, path: str, query: Mapping[str, Any] | None = None, page: int = 500) -> dict[str, Any]:
        """Paginated list; returns {"items": [...], "resourceVersion": "..."}."""
        items: list[dict[str, Any]] = []
        cont: str | None = None
        rv = ""
        while True:
            q = dict(query or {})
            q["limit"] = page
            if cont:
                q["continue"] = cont
            doc = self.request("GET", path, query=q)
            items.extend(doc.get("items") or [])
            meta = doc.get("metadata") or {}
            rv = meta.get("resourceVersion") or rv
            cont = meta.get("continue")
            if not cont:
                return {"items": items, "resourceVersion": rv}

    def get(self, path: str) -> dict[str, Any] | None:
        try:
            return self.request("GET", path)
        except KubeError as exc:
            if exc.not_found:
                return None
            raise

    # -- Secrets ------------------------------------------------------------------------------

    def get_secret(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self.get(SECRETS.path(namespace, name))

    def ensure_secret(
        self, desired: Mapping[str, Any], observed: Mapping[str, Any] | None = None, create_first: bool = False
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
                current = self.get_secret(ns, name)
            read = True
            step = reconcile.secret_step(current, desired)
            try:
                if step is reconcile.SecretStep.CREATE:
                    self.request("POST", SECRETS.path(ns), body=dict(desired))
                    return "created"
                if step is reconcile.SecretStep.UNCHANGED:
                    return "unchanged"
                assert current is not None
                if step is reconcile.SecretStep.REPLACE:
                    self.delete(SECRETS.path(ns, name), uid=(current.get("metadata") or {}).get("uid"))
                    current = None
                    continue
                self.request("PUT", SECRETS.path(ns, name), body=reconcile.secret_for_update(current, desired))
                return "updated"
            except KubeError as exc:
                if exc.already_exists or exc.conflict:
                    current = None
                    time.sleep(CONFLICT_DELAY)
                    continue
                if exc.not_found or exc.terminating:
                    return "skipped"
                raise
        raise KubeError(409, "Conflict", f"Secret {ns}/{name}: still conflicting after {CONFLICT_RETRIES} tries")

    def delete(self, path: str, uid: str | None = None) -> bool:
        """DELETE; False when already gone. ``uid`` makes it a precondition."""
        body = {"kind": "DeleteOptions", "apiVersion": "v1", "preconditions": {"uid": uid}} if uid else None
        try:
            self.request("DELETE", path, body=body)
            return True
        except KubeError as exc:
            if exc.not_found or (exc.conflict and uid):
                return False
            raise

    def delete_secret(self, namespace: str, name: str) -> bool:
        return self.delete(SECRETS.path(namespace, name))

    # -- ServiceAccounts ----------------------------------------------------------------------

    def update_pull_secrets(
        self,
        sa: ServiceAccountInfo,
        compute: Callable[[Sequence[str | None]], list[str | None]],
    ) -> tuple[bool, ServiceAccountInfo | None]:
        """Read-modify-write of ``imagePullSecrets``, guarded by resourceVersion.

        Starts from the cached ``sa`` (no read when the cache is current); on 409 Conflict
        re-reads and recomputes, up to CONFLICT_RETRIES times. Returns (written, latest info);
        latest is None when the ServiceAccount is gone.
        """
        info: ServiceAccountInfo | None = sa
        for _attempt in range(CONFLICT_RETRIES):
            if info is None:
                obj = self.get(SERVICEACCOUNTS.path(sa.namespace, sa.name))
                if obj is None:
                    return False, None
                info = service_account_info(obj)
            new = compute(info.pull_secrets)
            if list(info.pull_secrets) == new:
                return False, info
            patch = {
                "metadata": {"resourceVersion": info.resource_version},
                "imagePullSecrets": [{"name": n} if n is not None else {} for n in new],
            }
            try:
                obj = self.request(
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
                    info = None
                    time.sleep(CONFLICT_DELAY)
                    continue
                raise
        raise KubeError(409, "Conflict", f"ServiceAccount {sa.key}: still conflicting after {CONFLICT_RETRIES} tries")

    # -- ImagePullSecrets ---------------------------------------------------------------------

    def patch_status(self, name: str, status: Mapping[str, Any]) -> dict[str, Any] | None:
        try:
            return self.request(
                "PATCH",
                IMAGEPULLSECRETS.path(name=name, sub="status"),
                body={"status": dict(status)},
                content_type="application/merge-patch+json",
            )
        except KubeError as exc:
            if exc.not_found:
                return None
            raise

    def set_finalizer(self, obj: Mapping[str, Any], present: bool) -> dict[str, Any] | None:
        """Add or remove our finalizer (merge patch guarded by resourceVersion). None if gone."""
        meta = obj.get("metadata") or {}
        finalizers = list(meta.get("finalizers") or [])
        if present == (api.FINALIZER in finalizers):
            return dict(obj)
        finalizers = [*finalizers, api.FINALIZER] if present else [f for f in finalizers if f != api.FINALIZER]
        patch = {"metadata": {"finalizers": finalizers, "resourceVersion": meta.get("resourceVersion")}}
        try:
            return self.request(
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
        self, obj: Mapping[str, Any], event_type: str, reason: str, message: str, namespace: str = "default"
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
            self.request("POST", EVENTS.path(namespace), body=body)
        except Exception as exc:
            log.warning("could not record event %s on %s: %s", reason, meta.get("name"), exc)


def _qv(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    return str(v)


def _kind_of(path: str) -> str:
    parts = [p for p in path.split("/") if p]
    known = ("secrets", "serviceaccounts", "events", "leases", api.PLURAL)
    for part in reversed(parts):
        if part in known:
            return part + ("/status" if parts[-1] == "status" else "")
    return "namespaces" if "namespaces" in parts else (parts[-1] if parts else "")


def _error(status: int, raw: bytes | None) -> KubeError:
    reason, message = "", ""
    try:
        doc = json.loads(raw or b"{}")
        reason = str(doc.get("reason") or "")
        message = str(doc.get("message") or "")
    except ValueError:
        message = (raw or b"")[:200].decode("utf-8", "replace")
    return KubeError(status, reason, message)


def namespace_file() -> str | None:
    p = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
    try:
        return p.read_text().strip() or None
    except OSError:
        return None
