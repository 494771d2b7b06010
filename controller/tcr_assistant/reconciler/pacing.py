"""At most one run per key per interval; a run asked for within it is due at its end."""

from __future__ import annotations

import threading


class Pacing:
    """When each key (a namespace, an ImagePullSecret) last started. A burst of asks costs one
    run now and one at the end of the interval, so the last ask is still answered."""

    PRUNE_ABOVE = 4096  # keys remembered before those started over an interval ago are dropped

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self._started_at: dict[str, float] = {}
        self._lock = threading.Lock()

    def delay(self, key: str, now: float) -> float:
        """Seconds until a run of ``key`` asked for at ``now`` may start."""
        with self._lock:
            last = self._started_at.get(key)
        return 0.0 if last is None else max(0.0, last + self.interval - now)

    def started(self, key: str, now: float) -> None:
        with self._lock:
            self._started_at[key] = now
            if len(self._started_at) > self.PRUNE_ABOVE:
                self._started_at = {k: at for k, at in self._started_at.items() if at + self.interval > now}
