"""Thin API layer: raw JSON requests over our own urllib3 transport (`apiclient`), for any
resource; it knows nothing of ImagePullSecrets and decides nothing (the controller's write steps
are in `writes`).

Objects travel as plain dicts (no pydantic models): less memory, no (de)serialisation cost,
and the caches keep only a few fields anyway. Every request has a client-side timeout; watch
streams have a read timeout so a half-open connection is noticed.

API errors become `KubeError` (status, reason, message) with the cases callers act on named:
not_found, already_exists, conflict, terminating (403 in a namespace being deleted). A write
retried after a 409 is reported through `retried` (the metric ``tcr_assistant_api_retries_total``).
"""

from __future__ import annotations

import codecs
import json
import logging
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import urllib3

from tcr_assistant.k8s import apiclient
from tcr_assistant.k8s.apiclient import ApiClient

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT = 30.0
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


def make_api_client(kubeconfig: str | None = None, pool_size: int = 16, user_agent: str = "tcr-assistant"
                    ) -> ApiClient:
    """``--kubeconfig`` when given; in-cluster when running in a Pod; else $KUBECONFIG/~/.kube/config."""
    return ApiClient(apiclient.load(kubeconfig), pool_size, user_agent=user_agent)


def connect(kubeconfig: str | None, pool_size: int = 16, user_agent: str = "tcr-assistant") -> Kube:
    """``--kubeconfig`` when given; in-cluster when running in a Pod; else $KUBECONFIG/~/.kube/config."""
    return Kube(make_api_client(kubeconfig, pool_size, user_agent=user_agent))


def rfc3339(epoch: float) -> str:
    """``epoch`` (seconds) as the API's timestamps write it, to the second in UTC."""
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def now_rfc3339() -> str:
    return rfc3339(datetime.now(UTC).timestamp())


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


class Kube:
    """Raw JSON access to the API server through ``kubernetes.client.ApiClient``."""

    def __init__(self, api_client: ApiClient, timeout: float = DEFAULT_TIMEOUT) -> None:
        self.api_client = api_client
        self.timeout = timeout
        self.on_retry: Callable[[str, str], None] | None = None  # (resource, "conflict" | "already_exists")

    def retried(self, resource: str, reason: str, what: str) -> None:
        """A write answered 409 and is retried after a read."""
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

def _qv(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    return str(v)


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
