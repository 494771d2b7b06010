"""The life cycle of a controller, as controller-runtime's manager runs one: fill the caches, then
(as leader, when leader election is on) start the workers, and on stop undo it all in reverse.

It knows reflectors, a work queue, workers and a leader elector, and nothing of what they carry:
the caller says what to do once the caches are filled (`on_synced`) and once it leads
(`on_leading`).
"""

from __future__ import annotations

import gc
import threading
import time
from collections.abc import Callable, Hashable, Sequence
from typing import Any, Generic, TypeVar

from tcr_assistant.k8s.leaderelection import LeaderElector
from tcr_assistant.k8s.reflector import Reflector
from tcr_assistant.k8s.workers import Workers
from tcr_assistant.k8s.workqueue import Pending, WorkQueue

K = TypeVar("K", bound=Hashable)


class Manager(Generic[K]):
    def __init__(self, reflectors: Sequence[Reflector], queue: WorkQueue[K], workers: Workers[K], worker_count: int,
                 stop: threading.Event, *, elector: Callable[[], LeaderElector] | None = None,
                 on_synced: Callable[[], None] = lambda: None, on_leading: Callable[[], None] = lambda: None,
                 on_leadership: Callable[[bool], None] = lambda leading: None) -> None:
        self.reflectors = list(reflectors)
        self.queue = queue
        self.workers = workers
        self.worker_count = worker_count
        self.stop_event = stop
        self.make_elector = elector
        self.on_synced = on_synced
        self.on_leading = on_leading
        self.on_leadership = on_leadership
        self.leading = threading.Event()
        self.elector: LeaderElector | None = None
        self.exit_code = 0
        self._threads: list[threading.Thread] = []

    def synced(self) -> bool:
        return all(r.synced.is_set() for r in self.reflectors)

    def wait_synced(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        return all(r.synced.wait(max(0.0, deadline - time.monotonic())) for r in self.reflectors)

    def pending(self) -> Pending:
        """Work not yet done: keys queued, being processed, and waiting for their delay."""
        return self.queue.pending()

    def quiescent(self) -> bool:
        """Caches synced and no work queued, running or delayed."""
        return self.synced() and not any(self.pending())

    def spawn(self, target: Callable[[], Any], name: str) -> None:
        """A thread of the caller's (e.g. a poller) that stops with the workers."""
        thread = threading.Thread(target=target, name=name, daemon=True)
        thread.start()
        self._threads.append(thread)

    def run(self, ready: Callable[[], None] | None = None) -> int:
        """Run until `stop()` (returns 0) or lost leadership (returns 1)."""
        for r in self.reflectors:
            r.start()
        while not self.wait_synced(1.0):
            if self.stop_event.is_set():
                return self._shutdown()
        self.on_synced()
        # The caches now hold most of what this process will ever allocate: move it out of the
        # cyclic collector's reach, so its full collections (pauses of tens of milliseconds at
        # 10,000 namespaces) stop scanning them.
        gc.collect()
        gc.freeze()
        if ready is not None:
            ready()
        if self.make_elector is None:
            self._lead()
            self.stop_event.wait()
            return self._shutdown()
        self.elector = self.make_elector()
        if self.elector.acquire(self.stop_event):
            self._lead()
            if not self.elector.keep_renewing(self.stop_event):
                self.exit_code = 1
        return self._shutdown()

    def _lead(self) -> None:
        self.on_leading()
        self.leading.set()
        self.on_leadership(True)
        self.workers.start(self.worker_count)

    def stop(self) -> None:
        self.stop_event.set()
        self.queue.shutdown()
        for r in self.reflectors:
            r.interrupt()

    def _shutdown(self) -> int:
        self.stop()
        self.workers.join(timeout=10)
        for thread in self._threads:
            thread.join(timeout=10)
        if self.elector is not None:
            self.elector.release()
        self.leading.clear()
        self.on_leadership(False)
        for r in self.reflectors:
            r.join(2)
        return self.exit_code
