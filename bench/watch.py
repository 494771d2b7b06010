"""A watch on one collection in a background thread; every event is stamped with its arrival time
(``time.monotonic()`` in this process) and handed to a callback."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from tcr_assistant.k8s.client import Kube

OnEvent = Callable[[str, dict[str, Any], float], None]


class Watcher:
    """Watch ``path`` from its current resourceVersion until ``stop()``; reconnects from the last one seen."""

    def __init__(self, kube: Kube, path: str, on_event: OnEvent, query: Mapping[str, Any] | None = None) -> None:
        self.kube = kube
        self.path = path
        self.on_event = on_event
        self.query = dict(query or {})
        self.events = 0
        self.errors = 0
        listing = kube.request("GET", path, query={**self.query, "limit": 1})
        self.resource_version: str = listing["metadata"]["resourceVersion"]
        self._stop = threading.Event()
        self._connected = threading.Event()
        self._response: Any = None
        self._thread = threading.Thread(target=self._run, name=f"watch {path}", daemon=True)
        self._thread.start()
        if not self._connected.wait(30):
            raise RuntimeError(f"watch on {path} did not connect within 30 s")

    def _keep(self, response: Any) -> None:
        self._response = response
        self._connected.set()

    def _run(self) -> None:
        while not self._stop.is_set():
            query = {**self.query, "resourceVersion": self.resource_version, "timeoutSeconds": 120,
                     "allowWatchBookmarks": True}
            try:
                for event in self.kube.watch(self.path, query, read_timeout=150, on_response=self._keep):
                    now = time.monotonic()
                    obj: dict[str, Any] = event.get("object") or {}
                    kind = str(event.get("type"))
                    if kind == "ERROR":
                        raise RuntimeError(f"watch error: {obj.get('message')}")
                    rv = (obj.get("metadata") or {}).get("resourceVersion")
                    if rv:
                        self.resource_version = rv
                    if kind == "BOOKMARK":
                        continue
                    self.events += 1
                    self.on_event(kind, obj, now)
                    if self._stop.is_set():
                        return
            except Exception:
                if self._stop.is_set():
                    return
                self.errors += 1
                time.sleep(0.2)

    def stop(self) -> None:
        self._stop.set()
        response = self._response
        if response is not None:
            with contextlib.suppress(Exception):
                response.shutdown()
        self._thread.join(5)
