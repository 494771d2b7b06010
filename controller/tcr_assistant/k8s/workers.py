"""Workers on a `WorkQueue`, as controller-runtime runs a reconciler: each takes a key, calls the
process function, and settles the key by its outcome. The retry policy lives here; what a key
means, and what a failure is worth reporting, belong to the caller's hooks.

Outcomes of ``process(key)``:
* ``None``: done; the key's failure count is forgotten;
* a number of seconds: done, come back after that long (not a failure: no backoff);
* one of the ``permanent`` exception types: dropped and never retried (a key that can never succeed);
* any other exception: retried with the queue's per-key exponential backoff.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Generic, TypeVar

from tcr_assistant.k8s.workqueue import WorkQueue

log = logging.getLogger(__name__)

K = TypeVar("K", bound=Hashable)


@dataclass(frozen=True)
class Hooks(Generic[K]):
    """What the caller counts and reports; each runs on the worker's thread."""

    succeeded: Callable[[K], None] = lambda key: None
    failed: Callable[[K, int, Exception], None] = lambda key, attempt, exc: None  # attempt: 0 = first
    dropped: Callable[[K, Exception], None] = lambda key, exc: None
    depth: Callable[[int], None] = lambda depth: None  # the queue's length after each take


class Workers(Generic[K]):
    def __init__(self, queue: WorkQueue[K], process: Callable[[K], float | None], hooks: Hooks[K],
                 stop: threading.Event, permanent: tuple[type[Exception], ...] = ()) -> None:
        self.queue = queue
        self.permanent = permanent
        self.process = process
        self.hooks = hooks
        self.stop_event = stop
        self._threads: list[threading.Thread] = []

    def start(self, count: int) -> None:
        for i in range(count):
            thread = threading.Thread(target=self._loop, name=f"worker-{i}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def join(self, timeout: float) -> None:
        for thread in self._threads:
            thread.join(timeout=timeout)

    def _loop(self) -> None:
        while not self.stop_event.is_set():
            key = self.queue.get()
            self.hooks.depth(len(self.queue))
            if key is None:
                continue
            try:
                self.process_one(key)
            finally:
                self.queue.done(key)

    def process_one(self, key: K) -> None:
        """Process ``key`` and settle it by the outcome (the caller holds it from `WorkQueue.get`)."""
        try:
            after = self.process(key)
        except Exception as exc:
            if isinstance(exc, self.permanent):
                log.error("%s (dropped)", exc)
                self.hooks.dropped(key, exc)
                self.queue.forget(key)
                return
            attempt = self.queue.failures(key)
            log.warning("%s failed (attempt %d): %s", key, attempt + 1, exc)
            self.hooks.failed(key, attempt, exc)
            self.queue.add_rate_limited(key)
            return
        self.queue.forget(key)
        self.hooks.succeeded(key)
        if after is not None:
            self.queue.add_after(key, after)
