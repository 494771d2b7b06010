"""client-go's rate-limited work queue, in small: dedup, one worker per key, per-key backoff."""

from __future__ import annotations

import heapq
import threading
from collections import deque
from collections.abc import Hashable
from typing import Generic, NamedTuple, TypeVar

from tcr_assistant.k8s.clock import REAL_CLOCK, Clock

K = TypeVar("K", bound=Hashable)


class Pending(NamedTuple):
    """Work not yet done (all zero: the queue is quiescent)."""

    queued: int
    processing: int
    delayed: int  # waiting for their delay (add_after, retries with backoff)


class WorkQueue(Generic[K]):
    """client-go's rate-limited work queue, in small: dedup, never the same key in two workers,
    per-key exponential backoff, delayed adds. All its times come from ``clock``."""

    def __init__(
        self,
        base_delay: float = 0.005,
        max_delay: float = 1000.0,
        qps: float = 10.0,
        burst: int = 100,
        clock: Clock = REAL_CLOCK,
    ) -> None:
        self.clock = clock
        self.base_delay = base_delay
        self.max_delay = max_delay
        self.qps = qps
        self.burst = burst
        self._tokens = float(burst)
        self._tokens_at = self.clock.monotonic()
        self._cond = threading.Condition()
        self._queue: deque[K] = deque()
        self._urgent: deque[K] = deque()  # handed out before _queue, in their own order
        self._first: set[K] = set()  # the keys that go to _urgent
        self._dirty: set[K] = set()
        self._processing: set[K] = set()
        self._waiting: list[tuple[float, int, K]] = []
        self._waiting_at: dict[K, float] = {}
        self._seq = 0
        self._failures: dict[K, int] = {}
        self._shutdown = False

    def __len__(self) -> int:
        with self._cond:
            return len(self._queue) + len(self._urgent)

    def add(self, key: K, first: bool = False) -> None:
        """Queue ``key`` (once); ``first``: ahead of the other keys (first-come among themselves)."""
        with self._cond:
            if self._shutdown:
                return
            if key in self._dirty:
                if first and key not in self._first:
                    self._first.add(key)
                    if key not in self._processing:  # rare: a waiting key moves ahead
                        self._queue.remove(key)
                        self._urgent.append(key)
                return
            self._dirty.add(key)
            if first:
                self._first.add(key)
            if key not in self._processing:
                (self._urgent if first else self._queue).append(key)
                self._cond.notify()

    def add_after(self, key: K, delay: float) -> None:
        if delay <= 0:
            self.add(key)
            return
        with self._cond:
            if self._shutdown:
                return
            at = self.clock.monotonic() + delay
            if key in self._waiting_at and self._waiting_at[key] <= at:
                return
            self._waiting_at[key] = at
            self._seq += 1
            heapq.heappush(self._waiting, (at, self._seq, key))
            self._cond.notify()

    def add_rate_limited(self, key: K) -> None:
        """Retry later: the larger of the key's exponential backoff and the overall token bucket
        (``qps``/``burst``), as client-go's default controller rate limiter."""
        with self._cond:
            n = self._failures.get(key, 0)
            self._failures[key] = n + 1
            now = self.clock.monotonic()
            self._tokens = min(float(self.burst), self._tokens + (now - self._tokens_at) * self.qps)
            self._tokens_at = now
            self._tokens -= 1.0
            bucket_delay = -self._tokens / self.qps if self._tokens < 0 else 0.0
        self.add_after(key, max(bucket_delay, min(self.max_delay, self.base_delay * (2**n))))

    def forget(self, key: K) -> None:
        with self._cond:
            self._failures.pop(key, None)

    def failures(self, key: K) -> int:
        with self._cond:
            return self._failures.get(key, 0)

    def _promote(self, now: float) -> None:
        while self._waiting and self._waiting[0][0] <= now:
            at, _, key = heapq.heappop(self._waiting)
            if self._waiting_at.get(key) != at:
                continue
            del self._waiting_at[key]
            if key not in self._dirty:
                self._dirty.add(key)
                if key not in self._processing:
                    self._queue.append(key)

    def get(self, timeout: float | None = None) -> K | None:
        """Next key (the caller must call done(key)), or None on shutdown/timeout."""
        deadline = None if timeout is None else self.clock.monotonic() + timeout
        with self._cond:
            while True:
                if self._shutdown:
                    return None
                now = self.clock.monotonic()
                self._promote(now)
                if self._urgent or self._queue:
                    key = self._urgent.popleft() if self._urgent else self._queue.popleft()
                    self._dirty.discard(key)
                    self._first.discard(key)
                    self._processing.add(key)
                    return key
                wait = None if deadline is None else deadline - now
                if self._waiting:
                    nxt = self._waiting[0][0] - now
                    wait = nxt if wait is None else min(wait, nxt)
                if wait is not None and wait <= 0:
                    if deadline is not None and now >= deadline:
                        return None
                    continue
                self.clock.wait(self._cond, wait)

    def done(self, key: K) -> None:
        with self._cond:
            self._processing.discard(key)
            if key in self._dirty:
                (self._urgent if key in self._first else self._queue).append(key)
                self._cond.notify()

    def shutdown(self) -> None:
        with self._cond:
            self._shutdown = True
            self._cond.notify_all()

    def pending(self) -> Pending:
        with self._cond:
            return Pending(len(self._queue) + len(self._urgent), len(self._processing), len(self._waiting_at))
