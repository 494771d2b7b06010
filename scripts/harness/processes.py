"""Process helpers shared by the harness: children that die with us, and killing until gone."""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import time
from collections.abc import Callable, Collection

PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """Child-side (`preexec_fn`): get SIGKILLed when the process that started us dies (pytest crash, Ctrl-C)."""
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def kill_until_gone(find: Callable[[], Collection[int]], timeout: float) -> list[int]:
    """SIGKILL what `find` returns until it returns nothing; the survivors after `timeout` (else [])."""
    deadline = time.monotonic() + timeout
    while pids := find():
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if time.monotonic() > deadline:
            return sorted(pids)
        time.sleep(0.1)
    return []
