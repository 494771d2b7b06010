"""A clock for tests of the controller's runtime: time moves only when the test calls advance()."""

from __future__ import annotations

import threading
import time
from collections import Counter

REAL_POLL = 0.01  # seconds: how often a fake wait_event looks at its Event (Event.set() tells no one)


class FakeClock:
    """Implements tcr_assistant.k8s.clock.Clock. Waiters wake when the test advances the time
    (and, on a Condition, when the code under test notifies it, as with a real clock).

    A test that advances the time while another thread waits first calls ``await_waiters``: it
    returns once that many threads wait having seen the current time, so their deadlines are set
    from it and the next ``advance`` counts towards them."""

    def __init__(self, monotonic: float = 1000.0, wall: float = 1_767_225_600.0) -> None:
        self._lock = threading.Condition()
        self._monotonic = monotonic
        self._wall = wall
        self._seen: dict[int, float] = {}  # waiting thread's ticket -> the time it last saw
        self._conditions: Counter[threading.Condition] = Counter()  # conditions waited on now
        self._tickets = 0

    def monotonic(self) -> float:
        with self._lock:
            return self._monotonic

    def now(self) -> float:
        with self._lock:
            return self._wall

    def advance(self, seconds: float) -> None:
        assert seconds > 0, "time moves forwards"
        with self._lock:
            self._monotonic += seconds
            self._wall += seconds
            conditions = list(self._conditions)
            self._lock.notify_all()
        for cond in conditions:  # not under self._lock: waiters take self._lock while holding cond
            with cond:
                cond.notify_all()

    def _enter(self) -> int:  # with self._lock held
        self._tickets += 1
        self._seen[self._tickets] = self._monotonic
        self._lock.notify_all()
        return self._tickets

    def wait(self, cond: threading.Condition, timeout: float | None) -> None:
        if timeout is not None and timeout <= 0:
            return
        with self._lock:
            ticket = self._enter()
            self._conditions[cond] += 1
        try:
            # Returns on a notify from the code under test or from advance(); the caller then
            # re-checks the time. advance() cannot notify before this waits: it needs cond, which
            # the caller holds until cond.wait() releases it.
            cond.wait()
        finally:
            with self._lock:
                del self._seen[ticket]
                self._conditions[cond] -= 1
                if not self._conditions[cond]:
                    del self._conditions[cond]

    def wait_event(self, event: threading.Event, timeout: float) -> bool:
        with self._lock:
            deadline = self._monotonic + timeout
            ticket = self._enter()
            try:
                while not event.is_set() and self._monotonic < deadline:
                    self._lock.wait(REAL_POLL)
                    if self._seen[ticket] != self._monotonic:
                        self._seen[ticket] = self._monotonic
                        self._lock.notify_all()
            finally:
                del self._seen[ticket]
            return event.is_set()

    def _current_waiters(self) -> int:  # with self._lock held
        return sum(seen == self._monotonic for seen in self._seen.values())

    def await_waiters(self, count: int, real_timeout: float = 5.0) -> None:
        """Block (in real time) until ``count`` threads wait on this clock having seen its
        current time."""
        deadline = time.monotonic() + real_timeout
        with self._lock:
            while self._current_waiters() < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"expected {count} threads waiting on the fake clock, "
                                       f"{self._current_waiters()} seen")
                self._lock.wait(left)
