"""Thin API layer: raw JSON requests on the official client's transport, and the handful of
writes the controller makes, each mapping API errors explicitly.

Objects travel as plain dicts (no pydantic models): less memory, no (de)serialisation cost,
and the caches keep only a few fields anyway. Every request has a client-side timeout; watch
streams have a read timeout so a half-open connection is noticed.

Errors mapped explicitly:
* 404 NotFound: object or namespace gone -> nothing to do;
* 409 AlreadyExists on create -> read and update instead;
* 409 Conflict on update -> re-read and retry (about 5 tries, 10 ms apart);
  both counted in ``retries`` (and the metric ``tcr_assistant_api_retries_total``);
* 403 Forbidden when the namespace is being terminated -> skip that namespace.
"""

from __future__ import annotations

import codecs
import json
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import urllib3

from . import api, apiclient, reconcile
from .apiclient import ApiClient
from .observed import ServiceAccountInfo, pull_secret_names, service_account_info

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT = 30.0
CONFLICT_RETRIES = 5
CONFLICT_DELAY = 0.01
LIST_READ_CHUNK = 1 << 16


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


def make_api_client(kubeconfig: str | None = None, pool_size: int = 16) -> ApiClient:
    """``--kubeconfig`` when given; in-cluster when running in a Pod; else $KUBECONFIG/~/.kube/config."""
    return ApiClient(apiclient.load(kubeconfig), pool_size, user_agent=f"{api.COMPONENT}/{_version()}")


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

    def __init__(self, api_client: ApiClient, timeout: float = DEFAULT_TIMEOUT) -> None:
        self.api_client = api_client
        self.timeout = timeout
        self.writes: Counter[str] = Counter()  # "POST secrets" -> n (tests assert zero writes)
        self.requests: Counter[str] = Counter()  # "GET secrets" (one object), "LIST secrets", "WATCH secrets"
        self.retries: Counter[str] = Counter()  # "serviceaccounts conflict" -> n
        self.on_retry: Callable[[str, str], None] | None = None  # (resource, "conflict" | "already_exists")
        self._lock = threading.Lock()

    def _retried(self, resource: str, reason: str, what: str) -> None:
        """A write answered 409 and is retried after a read."""
        with self._lock:
            self.retries[f"{resource} {reason}"] += 1
        (log.info if reason == "conflict" else log.debug)("%s: 409 %s, reading it again", what, reason)
        if self.on_retry is not None:
            self.on_retry(resource, reason)

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
        stream: bool = False,
    ) -> urllib3.BaseHTTPResponse:
        params = [(k, _qv(v)) for k, v in (query or {}).items() if v is not None]
        data = json.dumps(body).encode() if body is not None else None
        resp = self.api_client.request(
            method, path, params, data, {"Accept": accept, "Content-Type": content_type},
            timeout=timeout or self.timeout, stream=stream,
        )
        kind = _kind_of(path)
        verb = method
        if method == "GET" and _is_collection(path):
            verb = "WATCH" if (query or {}).get("watch") else "LIST"
        with self._lock:
            self.requests[f"{verb} {kind}"] += 1
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
        raw = resp.data
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
        resp = self._send("GET", path, q, None, "application/json", (10.0, read_timeout), stream=True)
        try:
            if resp.status != 200:
                raise _error(resp.status, resp.read())
            if on_response is not None:
                on_response(resp)
            for line in _lines(resp):
                yield json.loads(line)
        finally:
            resp.release_conn()

    def list_each(
        self, path: str, query: Mapping[str, Any] | None, on_item: Callable[[dict[str, Any]], None], page: int = 500
    ) -> str:
        """Paginated list, one item at a time: each page is parsed as its response streams in, so
        only one item is held at once however large a page is (a page of 500 ServiceAccounts of
        1 MiB each would otherwise be 500 MiB at once). Returns the list's resourceVersion."""
        cont: str | None = None
        rv = ""
        while True:
            q = dict(query or {})
            q["limit"] = page
            if cont:
                q["continue"] = cont
            resp = self._send("GET", path, q, None, "application/json", None, stream=True)
            meta: Mapping[str, Any] = {}
            try:
                if not 200 <= resp.status <= 299:
                    raise _error(resp.status, resp.read())
                for key, value in list_members(resp.stream(LIST_READ_CHUNK)):
                    if key == "items" and isinstance(value, dict):
                        on_item(value)
                    elif key == "metadata" and isinstance(value, Mapping):
                        meta = value
            finally:
                resp.release_conn()
            rv = meta.get("resourceVersion") or rv
            cont = meta.get("continue")
            if not cont:
                return rv

    def list_all(self, path: str, query: Mapping[str, Any] | None = None, page: int = 500) -> dict[str, Any]:
        """Paginated list; returns {"items": [...], "resourceVersion": "..."} (every item held:
        for small lists; the reflectors use `list_each`)."""
        items: list[dict[str, Any]] = []
        rv = self.list_each(path, query, items.append, page)
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
                    reason = "already_exists" if exc.already_exists else "conflict"
                    self._retried("secrets", reason, f"Secret {ns}/{name}")
                    current = None
                    if exc.conflict:
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
        if not sa.all_kept:
            # Only our entries are cached. ``compute`` keeps every other entry in place (and appends
            # missing ones at the end), so our entries alone tell what it would change.
            if sa.ours_kept:
                ours = list(sa.ours)
                new = compute(ours)
                if new == ours:
                    return False, sa
                if new[: len(ours)] == ours:
                    appended = self._append_pull_secrets(sa, [n for n in new[len(ours):] if n is not None])
                    if appended is not None:
                        return appended
            info = None  # read the list whole
        for _attempt in range(CONFLICT_RETRIES):
            if info is None:
                obj = self.get(SERVICEACCOUNTS.path(sa.namespace, sa.name))
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
                    self._retried("serviceaccounts", "conflict", f"ServiceAccount {sa.key}")
                    info = None
                    time.sleep(CONFLICT_DELAY)
                    continue
                raise
        raise KubeError(409, "Conflict", f"ServiceAccount {sa.key}: still conflicting after {CONFLICT_RETRIES} tries")

    def _append_pull_secrets(self, sa: ServiceAccountInfo, names: Sequence[str]
                             ) -> tuple[bool, ServiceAccountInfo | None] | None:
        """Append ``names`` to a long ``imagePullSecrets`` list without reading it: a JSON patch,
        guarded by the cached resourceVersion. None on 409 Conflict (the caller reads and retries)."""
        ops: list[dict[str, Any]] = [
            {"op": "replace", "path": "/metadata/resourceVersion", "value": sa.resource_version},
            *({"op": "add", "path": "/imagePullSecrets/-", "value": {"name": n}} for n in names),
        ]
        try:
            obj = self.request("PATCH", SERVICEACCOUNTS.path(sa.namespace, sa.name), body=ops,
                               content_type="application/json-patch+json")
        except KubeError as exc:
            if exc.not_found:
                return False, None
            if exc.conflict:
                self._retried("serviceaccounts", "conflict", f"ServiceAccount {sa.key}")
                return None
            raise
        return True, service_account_info(obj)

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


def _is_collection(path: str) -> bool:
    """A collection path ends in a plural (``…/namespaces/x/secrets``), an object path in a name."""
    parts = [p for p in path.split("/") if p]
    start = 2 if parts[:1] == ["api"] else 3  # /api/v1/… or /apis/group/version/…
    rest = parts[start:]
    if rest[:1] == ["namespaces"] and len(rest) >= 3:
        rest = rest[2:]  # …/namespaces/NS/plural[/name]
    return len(rest) == 1


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


class ListParseError(ValueError):
    pass


def list_members(chunks: Iterable[bytes]) -> Iterator[tuple[str, Any]]:
    """The members of a JSON list response (``{"kind": …, "metadata": {…}, "items": [...]}``) as
    (key, value) pairs, parsed as the chunks arrive, with one ("items", item) pair per item: only
    the item being parsed is held, never the whole body."""
    decode = codecs.getincrementaldecoder("utf-8")().decode
    parser = json.JSONDecoder()
    source = iter(chunks)
    buf, pos, eof = "", 0, False

    def read_more(at_least: int) -> None:
        nonlocal buf, pos, eof
        buf, pos = buf[pos:], 0  # drop what is parsed
        wanted = len(buf) + at_least
        while not eof and len(buf) < wanted:
            chunk = next(source, None)
            if chunk is None:
                eof = True
                buf += decode(b"", final=True)
            else:
                buf += decode(chunk)

    def peek() -> str:
        nonlocal pos
        while True:
            while pos < len(buf) and buf[pos] in " \t\r\n":
                pos += 1
            if pos < len(buf) or eof:
                return buf[pos] if pos < len(buf) else ""
            read_more(LIST_READ_CHUNK)

    def expect(char: str) -> None:
        nonlocal pos
        if peek() != char:
            raise ListParseError(f"list response: expected {char!r} at character {pos}")
        pos += 1

    def value() -> Any:
        nonlocal pos
        peek()
        while True:
            try:
                parsed, end = parser.raw_decode(buf, pos)
                if end < len(buf) or eof:  # (a number at the very end may continue in the next chunk)
                    pos = end
                    return parsed
            except json.JSONDecodeError as exc:
                if eof:
                    raise ListParseError(f"list response: {exc.msg} at character {exc.pos}") from None
            read_more(max(len(buf) - pos, LIST_READ_CHUNK))  # doubling: each retry parses at most twice as much

    expect("{")
    if peek() == "}":
        return
    while True:
        key = value()
        if not isinstance(key, str):
            raise ListParseError("list response: a member name is not a string")
        expect(":")
        if key == "items" and peek() == "[":
            pos += 1
            if peek() == "]":
                pos += 1
            else:
                while True:
                    yield key, value()
                    if peek() != ",":
                        break
                    pos += 1
                expect("]")
        else:
            yield key, value()
        if peek() != ",":
            break
        pos += 1
    expect("}")


def _lines(resp: urllib3.BaseHTTPResponse) -> Iterator[bytes]:
    """The non-empty lines of a streamed body (one JSON watch event each)."""
    pending = b""
    for chunk in resp.stream(65536):
        pending += chunk
        *lines, pending = pending.split(b"\n")
        yield from (line for line in lines if line.strip())
    if pending.strip():
        yield pending
