"""Crash safety: SIGKILL a process that keeps rewriting a hosts file, at random moments.

The guarantee under test (hosts_updater.fileio): after a kill the file holds the old content,
the new content, or the new content followed by ASCII spaces (a kill between the shrinking
pwrite and the ftruncate), which the next pass cleans up; never a truncated file. It is
claimed for changes confined to one page (our block at the end of a small hosts file) — the
case here. For a file whose changed tail spans pages we only check the weaker claim: the bytes
before our block are never touched.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from collections import Counter
from pathlib import Path

import pytest
from hosts_helpers import cli_env

from hosts_updater.core import Entry, find_block, render
from hosts_updater.fileio import HostsFile

SMALL_ENTRIES = [Entry("10.0.0.12", "tcr-x.tencentcloudcr.com")]
BIG_ENTRIES = [Entry(f"10.0.{i}.{i + 1}", f"tcr-{i}.tencentcloudcr.com") for i in range(20)]

CHILD = textwrap.dedent(
    """
    import sys
    from hosts_updater.core import Entry, render
    from hosts_updater.fileio import HostsFile
    small = [Entry("10.0.0.12", "tcr-x.tencentcloudcr.com")]
    big = [Entry(f"10.0.{i}.{i + 1}", f"tcr-{i}.tencentcloudcr.com") for i in range(20)]
    cycle = [small, big, small, [], big, []]  # grow, shrink (padded), remove (truncate), ...
    with HostsFile(sys.argv[1]) as hosts:
        n = 0
        while True:
            wanted = cycle[n % len(cycle)]
            hosts.apply(lambda data: render(data, wanted))
            n += 1
    """
)


def prefix_of(size: int) -> bytes:
    lines = [b"127.0.0.1 localhost", b"::1\tip6-localhost ip6-loopback", b"# node entries"]
    i = 0
    while sum(len(x) + 1 for x in lines) < size:
        lines.append(f"192.168.{i // 250}.{i % 250 + 1}\tnode-{i}.cluster.local node-{i}".encode())
        i += 1
    return b"\n".join(lines) + b"\n"


def kill_loop(tmp_path: Path, prefix: bytes, rounds: int) -> Counter[str]:
    path = tmp_path / "hosts"
    small = render(prefix, SMALL_ENTRIES)
    big = render(prefix, BIG_ENTRIES)
    allowed = {
        prefix: "original",
        small: "small",
        big: "big",
        small + b" " * (len(big) - len(small)): "small+slack",
    }
    seen: Counter[str] = Counter()
    rng = random.Random(6)
    for _ in range(rounds):
        path.write_bytes(prefix)
        child = subprocess.Popen([sys.executable, "-c", CHILD, str(path)], env=cli_env())
        deadline = time.monotonic() + 10
        while path.stat().st_size == len(prefix) and child.poll() is None and time.monotonic() < deadline:
            time.sleep(0.001)  # wait until it has started writing
        time.sleep(rng.random() * 0.02)
        child.send_signal(signal.SIGKILL)
        child.wait()
        assert child.returncode == -signal.SIGKILL
        content = path.read_bytes()
        assert content[: len(prefix)] == prefix, "a line before our block was touched"
        state = allowed.get(content)
        seen[state or "torn"] += 1
        if state is None:
            continue  # only possible when the change spans pages; the caller decides
        with HostsFile(str(path)) as hosts:  # recovery: the next pass reaches the wanted state
            hosts.apply(lambda data: render(data, SMALL_ENTRIES))
        assert path.read_bytes() == small
        assert find_block(small) is not None
    return seen


def test_kill_9_leaves_old_or_new_content(tmp_path: Path) -> None:
    prefix = prefix_of(600)
    assert len(render(prefix, BIG_ENTRIES)) < 4096  # the claim covers a change within one page
    rounds = int(os.environ.get("HOSTS_CRASH_ROUNDS", "60"))
    seen = kill_loop(tmp_path, prefix, rounds)
    print(f"states after SIGKILL over {rounds} rounds: {dict(seen)}")
    assert seen["torn"] == 0
    # The kills landed at different points of the writer's cycle, with and without our block in the
    # file: the rounds tested the moments the guarantee is about, not one state over and over.
    assert seen["original"] > 0 and seen["small"] + seen["small+slack"] + seen["big"] > 0, dict(seen)


@pytest.mark.long
def test_kill_9_many_rounds_and_a_multi_page_file(tmp_path: Path) -> None:
    seen = kill_loop(tmp_path, prefix_of(600), 1000)
    print(f"single page: {dict(seen)}")
    assert seen["torn"] == 0
    (tmp_path / "big").mkdir()
    seen = kill_loop(tmp_path / "big", prefix_of(3900), 300)  # our block straddles offset 4096
    print(f"straddling a page boundary: {dict(seen)} (torn states allowed, prefix checked)")
