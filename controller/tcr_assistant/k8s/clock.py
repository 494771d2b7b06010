"""The runtime's clock, injected so tests can drive time instead of waiting for it.

Everything in the runtime that reads the time or waits for a while does it through a ``Clock``:
the work queue (delays, backoff, token bucket), leader election (Lease timestamps, expiry, retry
period) and the reflector (backoff). Production uses ``REAL_CLOCK``; tests pass a fake one.
"""

from __future__ import annotations

import threading
import time
from typing import Protocol


class Clock(Protocol):
    def monotonic(self) -> float:
        """Seconds on a clock that never goes back: for durations and deadlines."""
        ...

    def now(self) -> float:
        """Wall time, seconds since the epoch: for timestamps others read (a Lease's renewTime)."""
        ...

    def wait(self, cond: threading.Condition, timeout: float | None) -> None:
        """Wait on ``cond`` (held by the caller) until notified or ``timeout`` passed. May return
        early: callers re-check their state and the time in a loop, as with Condition.wait."""
        ...

    def wait_event(self, event: threading.Event, timeout: float) -> bool:
        """Wait until ``event`` is set or ``timeout`` passed; returns whether it is set."""
        ...


class RealClock:
    def monotonic(self) -> float:
        return time.monotonic()

    def now(self) -> float:
        return time.time()

    def wait(self, cond: threading.Condition, timeout: float | None) -> None:
        cond.wait(timeout)

    def wait_event(self, event: threading.Event, timeout: float) -> bool:
        return event.wait(timeout)


REAL_CLOCK: Clock = RealClock()
