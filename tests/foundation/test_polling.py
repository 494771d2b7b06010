"""The one polling helper (harness.polling.wait_for), without a cluster: real clocks, real processes."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.polling import ProcessExited, wait_for


class CustomError(RuntimeError):
    pass


@pytest.fixture
def short_lived(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], Path]]:
    """A process that writes a line to its log and exits with status 3, and that log."""
    log = tmp_path / "short-lived.log"
    with log.open("wb") as log_file:
        proc = subprocess.Popen([sys.executable, "-c", "print('about to fail', flush=True); raise SystemExit(3)"],
                                stdout=log_file, stderr=subprocess.STDOUT)
    proc.wait(30)
    yield proc, log


def test_returns_the_first_truthy_value_of_the_probe() -> None:
    answers = iter([None, 0, "", "ready"])
    assert wait_for(lambda: next(answers), timeout=5, interval=0.01, what="an answer") == "ready"


def test_times_out_naming_what_it_waited_for_and_the_last_value() -> None:
    started = time.monotonic()
    with pytest.raises(TimeoutError, match=r"timed out after 0.3 s waiting for the impossible \(last: 0\)"):
        wait_for(lambda: 0, timeout=0.3, interval=0.05, what="the impossible")
    assert time.monotonic() - started >= 0.3


def test_a_timeout_message_and_error_type_of_the_caller_are_kept() -> None:
    with pytest.raises(CustomError, match=r"^nothing within 0 s$"):
        wait_for(lambda: False, timeout=0, what="x", error=CustomError, timeout_message="nothing within 0 s")
    calls: list[int] = []

    def probe() -> bool:
        calls.append(1)
        return False

    # A callable message reports the state at the moment of the timeout.
    with pytest.raises(TimeoutError, match=r"^probed \d+ times$"):
        wait_for(probe, timeout=0.1, interval=0.01, timeout_message=lambda: f"probed {len(calls)} times")
    assert len(calls) > 1


def test_fails_at_once_when_the_watched_process_has_exited(
        short_lived: tuple[subprocess.Popen[bytes], Path]) -> None:
    proc, log = short_lived
    started = time.monotonic()
    with pytest.raises(ProcessExited) as raised:
        wait_for(lambda: False, timeout=60, interval=0.05, what="the server to answer", process=proc,
                 name="the server", log=log)
    assert time.monotonic() - started < 5, "it waited out the timeout"
    message = str(raised.value)
    assert f"the server (pid {proc.pid}) exited with status 3 while waiting for the server to answer" in message
    assert "about to fail" in message, "the log's tail is part of the message"


def test_a_process_that_exits_during_the_wait_ends_it() -> None:
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(0.3)"])
    try:
        started = time.monotonic()
        with pytest.raises(CustomError, match=r"^python\S* \(pid \d+\) exited with status 0 while waiting for x$"):
            wait_for(lambda: False, timeout=60, what="x", process=proc, error=CustomError)
        assert time.monotonic() - started < 10
    finally:
        proc.kill()
        proc.wait()


def test_a_process_killed_by_a_signal_says_which() -> None:
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    proc.kill()
    proc.wait(30)
    with pytest.raises(ProcessExited, match=r"exited with status -9 \(killed by SIGKILL\)"):
        wait_for(lambda: False, timeout=60, process=proc)


def test_a_live_process_does_not_stop_the_wait() -> None:
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        answers = iter([False, False, True])
        assert wait_for(lambda: next(answers), timeout=10, interval=0.01, process=proc) is True
    finally:
        proc.kill()
        proc.wait()
