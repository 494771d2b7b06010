"""`Kube` that counts what it sends, for tests that assert how many requests and writes the
controller makes (production code keeps no such counters)."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Mapping
from typing import Any

import urllib3

from tcr_assistant.k8s.client import Kube


def _resource_part(path: str) -> list[str]:
    """``plural[/name[/sub]]`` of a path (``/api/v1/…`` or ``/apis/group/version/…``, namespace dropped)."""
    parts = [p for p in path.split("/") if p]
    rest = parts[2 if parts[:1] == ["api"] else 3 :]
    if rest[:1] == ["namespaces"] and len(rest) >= 3:
        rest = rest[2:]  # …/namespaces/NS/plural[/name]
    return rest


def kind_of(path: str) -> str:
    """A path's plural, with ``/status`` for the status subresource ("namespaces" for a namespace)."""
    rest = _resource_part(path)
    return (rest[0] + ("/status" if rest[2:] == ["status"] else "")) if rest else ""


class RecordingKube(Kube):
    """Counts "VERB plural" (GET of one object, LIST, WATCH, and every write) and 409 retries."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.writes: Counter[str] = Counter()  # "POST secrets" -> n
        self.requests: Counter[str] = Counter()  # "GET secrets" (one object), "LIST secrets", "WATCH secrets"
        self.retries: Counter[str] = Counter()  # "serviceaccounts conflict" -> n
        self._counting = threading.Lock()

    def _send(self, method: str, path: str, query: Mapping[str, Any] | None, body: Any, content_type: str,
              timeout: float | tuple[float, float] | None, accept: str = "application/json",
              stream: bool = False) -> urllib3.BaseHTTPResponse:
        response = super()._send(method, path, query, body, content_type, timeout, accept, stream)
        verb = method
        if method == "GET" and len(_resource_part(path)) == 1:
            verb = "WATCH" if (query or {}).get("watch") else "LIST"
        with self._counting:
            self.requests[f"{verb} {kind_of(path)}"] += 1
            if method != "GET":
                self.writes[f"{method} {kind_of(path)}"] += 1
        return response

    def retried(self, resource: str, reason: str, what: str) -> None:
        with self._counting:
            self.retries[f"{resource} {reason}"] += 1
        super().retried(resource, reason, what)


def recorded(kube: Kube) -> RecordingKube:
    """The counts of a client the test fixtures made."""
    assert isinstance(kube, RecordingKube), "made by the controller suite's fixtures"
    return kube
