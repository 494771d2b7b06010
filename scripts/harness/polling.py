"""The one polling helper of the harness, the tests and the benchmarks.

`wait_for` calls a probe until it answers, and fails with a message naming what it waited for:
after the timeout, or at once when the process the wait depends on has exited (a component that
crashed at start-up fails the wait in a tenth of a second, not after a minute, and says why).
"""

from __future__ import annotations

import contextlib
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")

LOG_TAIL_CHARS = 3000


class ProcessExited(RuntimeError):
    """The process a wait depended on exited before what the wait waited for came true."""


def log_tail(log: Path) -> str:
    """The end of a process's log file ('' when it cannot be read)."""
    with contextlib.suppress(OSError):
        return log.read_text(errors="replace")[-LOG_TAIL_CHARS:]
    return ""


def exit_status(returncode: int) -> str:
    """`returncode` of a Popen in words: a negative one is the signal that killed it."""
    if returncode < 0:
        with contextlib.suppress(ValueError):
            return f"{returncode} (killed by {signal.Signals(-returncode).name})"
    return str(returncode)


def exited_message(process: subprocess.Popen[Any], name: str | None, what: str, log: Path | None) -> str:
    """Why a wait on `what` ended early: `process` exited; its status and, with `log`, the log's tail."""
    returncode = process.returncode
    label = name or Path(str(process.args[0] if isinstance(process.args, list | tuple) else process.args)).name
    message = (f"{label} (pid {process.pid}) exited with status "
               f"{exit_status(returncode) if returncode is not None else '?'} while waiting for {what}")
    if log is not None:
        message += f"; log tail ({log}):\n{log_tail(log)}"
    return message


def wait_for(probe: Callable[[], T | None], timeout: float = 30, interval: float = 0.05,
             what: str = "condition", *, process: subprocess.Popen[Any] | None = None, name: str | None = None,
             log: Path | None = None, error: Callable[[str], Exception] | None = None,
             timeout_message: str | Callable[[], str] | None = None) -> T:
    """Call ``probe`` every ``interval`` seconds until it returns something truthy, and return that.

    ``process`` is one the wait depends on (the server it waits to answer): once it has exited, the
    wait fails at once with its exit status, naming it ``name`` (default: its command's name) and
    adding the tail of its ``log`` file if given. After ``timeout`` seconds the wait fails with
    ``timeout_message`` (a string, or a function called then for one that reports the state at that
    moment), default: ``what`` and the last value seen. Failures raise ``error(message)`` when
    given, so callers keep their own exception types; else TimeoutError or ProcessExited.
    The probe runs at least once, also with a timeout of 0.
    """
    deadline = time.monotonic() + timeout
    while True:
        if process is not None and process.poll() is not None:
            message = exited_message(process, name, what, log)
            raise error(message) if error is not None else ProcessExited(message)
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            if timeout_message is None:
                message = f"timed out after {timeout:g} s waiting for {what} (last: {value!r:.200})"
            else:
                message = timeout_message if isinstance(timeout_message, str) else timeout_message()
            raise error(message) if error is not None else TimeoutError(message)
        time.sleep(interval)
