"""The one polling helper of the harness, the tests and the benchmarks."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_for(probe: Callable[[], T | None], timeout: float = 30, interval: float = 0.05,
             what: str = "condition") -> T:
    """Call ``probe`` until it returns something truthy, and return that; raise TimeoutError
    naming ``what`` (and the last value seen) after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:g} s waiting for {what} (last: {value!r:.200})")
        time.sleep(interval)
