"""A reflector: list, then watch, into a store of reduced objects; survives 410 Gone and stalls."""

from __future__ import annotations

import contextlib
import logging
import random
import threading
from collections.abc import Callable, Mapping
from typing import Any

from tcr_assistant.k8s.client import Kube, KubeError, Resource
from tcr_assistant.k8s.clock import REAL_CLOCK, Clock

log = logging.getLogger(__name__)

Handler = Callable[[str, Any, Any], None]  # (event type, old reduced value | None, new reduced value | None)

FIRST_BACKOFF = 0.8  # seconds before retrying after a first failure in a row
MAX_BACKOFF = 30.0


def next_backoff(backoff: float) -> float:
    """The wait after one more failure in a row: doubled, at most MAX_BACKOFF."""
    return min(MAX_BACKOFF, backoff * 2)


class Reflector:
    """List, then watch from the list's resourceVersion; keep ``store`` (key -> reduced object).

    * watch ended by the server (timeoutSeconds) or a read timeout (stalled connection): resume
      from the last resourceVersion seen (bookmarks requested);
    * 410 Gone (HTTP status or an ERROR event): re-list and diff against the store, firing
      ADDED/MODIFIED/DELETED for the differences, so nothing is lost;
    * any other error (API server down, ...): back off 0.8 s -> 30 s, then resume.
    """

    def __init__(
        self,
        kube: Kube,
        resource: Resource,
        reduce: Callable[[Mapping[str, Any]], Any],
        handler: Handler,
        *,
        name: str,
        namespace: str | None = None,
        label_selector: str | None = None,
        field_selector: str | None = None,
        watch_timeout: int = 300,
        read_timeout: float = 330.0,
        stop: threading.Event,
        clock: Clock = REAL_CLOCK,
    ) -> None:
        self.kube = kube
        self.clock = clock  # times the backoff between failed attempts
        self.resource = resource
        self.reduce = reduce
        self.handler = handler
        self.name = name
        self.namespace = namespace
        self.label_selector = label_selector
        self.field_selector = field_selector
        self.watch_timeout = watch_timeout
        self.read_timeout = read_timeout
        self.stop_event = stop
        self.store: dict[str, Any] = {}
        self.synced = threading.Event()
        self.resource_version: str | None = None
        self.relists = 0
        self._response: Any = None
        self._connected = False
        self.broken_streams = 0  # established watch connections that died (read timeout, reset)
        self._thread: threading.Thread | None = None

    @staticmethod
    def key_of(obj: Mapping[str, Any]) -> str:
        meta = obj.get("metadata") or {}
        ns = meta.get("namespace")
        return f"{ns}/{meta.get('name')}" if ns else str(meta.get("name"))

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name=f"reflector-{self.name}", daemon=True)
        self._thread.start()

    def interrupt(self) -> None:
        """Drop the current watch connection (used on shutdown and by tests)."""
        resp = self._response
        if resp is not None:
            with contextlib.suppress(Exception):
                resp.shutdown()

    def join(self, timeout: float) -> None:
        if self._thread is not None:
            self._thread.join(timeout)

    def _query(self) -> dict[str, Any]:
        q: dict[str, Any] = {}
        if self.label_selector:
            q["labelSelector"] = self.label_selector
        if self.field_selector:
            q["fieldSelector"] = self.field_selector
        return q

    def _path(self) -> str:
        return self.resource.path(self.namespace)

    def _list(self) -> None:
        # Each object is reduced as it is parsed and only the reduced view kept: a list of large
        # objects is never held whole.
        fresh: dict[str, Any] = {}

        def keep(obj: Mapping[str, Any]) -> None:
            fresh[self.key_of(obj)] = self.reduce(obj)

        resource_version = self.kube.list_each(self._path(), self._query(), keep)
        for key in [k for k in self.store if k not in fresh]:
            old = self.store.pop(key)
            self._fire("DELETED", old, None)
        for key, new in fresh.items():
            self._upsert(key, new)
        self.resource_version = resource_version
        self.relists += 1
        self.synced.set()

    def _upsert(self, key: Any, new: Any) -> None:
        old = self.store.get(key)
        self.store[key] = new
        if old is None:
            self._fire("ADDED", None, new)
        elif old != new:
            self._fire("MODIFIED", old, new)

    def _fire(self, kind: str, old: Any, new: Any) -> None:
        try:
            self.handler(kind, old, new)
        except Exception:
            log.exception("handler for %s %s failed", self.name, kind)

    def _watch_once(self) -> None:
        q = self._query()
        q["resourceVersion"] = self.resource_version
        q["allowWatchBookmarks"] = True
        q["timeoutSeconds"] = int(self.watch_timeout * random.uniform(0.9, 1.0)) or 1

        def keep(resp: Any) -> None:
            self._response = resp
            self._connected = True

        try:
            for event in self.kube.watch(self._path(), q, self.read_timeout, on_response=keep):
                if self.stop_event.is_set():
                    return
                etype = event.get("type")
                obj = event.get("object") or {}
                if etype == "ERROR":
                    code = obj.get("code")
                    if code == 410:
                        self.resource_version = None
                        return
                    raise KubeError(int(code or 500), str(obj.get("reason") or ""), str(obj.get("message") or ""))
                rv = (obj.get("metadata") or {}).get("resourceVersion")
                if etype == "BOOKMARK":
                    if rv:
                        self.resource_version = rv
                    continue
                key = self.key_of(obj)
                if etype in ("ADDED", "MODIFIED"):
                    self._upsert(key, self.reduce(obj))
                elif etype == "DELETED":
                    old = self.store.pop(key, None)
                    if old is not None:
                        self._fire("DELETED", old, None)
                if rv:
                    self.resource_version = rv
        finally:
            self._response = None

    def _run(self) -> None:
        backoff = FIRST_BACKOFF
        while not self.stop_event.is_set():
            self._connected = False
            try:
                if self.resource_version is None:
                    self._list()
                self._watch_once()
                backoff = FIRST_BACKOFF
            except KubeError as exc:
                if exc.status == 410:
                    log.info("watch %s: 410 Gone, re-listing", self.name)
                    self.resource_version = None
                    continue
                log.warning("watch %s: %s; retrying in %.1fs", self.name, exc, backoff)
                self.clock.wait_event(self.stop_event, backoff)
                backoff = next_backoff(backoff)
            except Exception as exc:
                if self.stop_event.is_set():
                    return
                if self._connected:
                    # an established stream died (client read timeout on a stalled connection,
                    # reset): resume at once from the last resourceVersion
                    self.broken_streams += 1
                    log.info("watch %s: stream ended (%s); resuming", self.name, type(exc).__name__)
                    backoff = FIRST_BACKOFF
                    self.clock.wait_event(self.stop_event, 0.05)
                    continue
                # cannot connect (API server down or restarting): back off 0.8 s -> 30 s
                log.warning("watch %s: cannot connect (%s); retrying in %.1fs", self.name, type(exc).__name__, backoff)
                self.clock.wait_event(self.stop_event, backoff)
                backoff = next_backoff(backoff)
