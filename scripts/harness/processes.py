"""Process helpers shared by the harness: children that die with us, killing until gone, terminating."""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
from collections.abc import Callable, Collection
from pathlib import Path

from harness.polling import wait_for

PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """Child-side (`preexec_fn`): get SIGKILLed when the process that started us dies (pytest crash, Ctrl-C)."""
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def kill_until_gone(find: Callable[[], Collection[int]], timeout: float) -> list[int]:
    """SIGKILL what `find` returns until it returns nothing; the survivors after `timeout` (else [])."""

    def all_gone() -> bool:
        pids = find()
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        return not pids

    try:
        wait_for(all_gone, timeout, 0.1, what="every process killed")
    except TimeoutError:
        return sorted(find())
    return []


def pid_alive(pid: int) -> bool:
    """True while `pid` runs; a zombie (exited, not yet reaped) counts as gone."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with contextlib.suppress(OSError):
        if Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
            return False
    return True


def terminate(pid: int, proc: subprocess.Popen[bytes] | None, grace: float = 10.0) -> None:
    """SIGTERM the process group `pid` leads, SIGKILL it after `grace` seconds, reap `proc` if ours."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGTERM)
    gone: Callable[[], bool] = (lambda: proc.poll() is not None) if proc is not None else (lambda: not pid_alive(pid))
    try:
        wait_for(gone, grace, 0.05, what=f"process {pid} to exit after SIGTERM")
        return
    except TimeoutError:
        pass
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)
    if proc is not None:
        proc.wait()
