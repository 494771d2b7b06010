"""A process made of parts: started in order, stopped in reverse, and the part that failed named.

Each part is a name with a start and a stop; the process's main loop runs once every part has
started. A part that fails to start stops the ones started before it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Part:
    name: str
    start: Callable[[], None]
    stop: Callable[[], None]


class PartFailed(RuntimeError):
    """A part did not start (the message names it and why)."""


class App:
    def __init__(self, parts: Sequence[Part], main: Callable[[], int]) -> None:
        self.parts = list(parts)
        self.main = main

    def run(self) -> int:
        """Start every part, run the main loop, stop the started parts in reverse; its exit code."""
        started: list[Part] = []
        try:
            for part in self.parts:
                try:
                    part.start()
                except Exception as exc:
                    raise PartFailed(f"{part.name} did not start: {exc}") from exc
                started.append(part)
            return self.main()
        finally:
            for part in reversed(started):
                try:
                    part.stop()
                except Exception:
                    log.exception("%s did not stop cleanly", part.name)
