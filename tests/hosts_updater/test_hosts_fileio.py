"""Unit tests of the in-place writer (hosts_updater.fileio): write plan, crash states, replacement."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from hosts_updater import fileio
from hosts_updater.core import Entry, find_block, remove, render
from hosts_updater.fileio import ChangedMeanwhile, HostsFile, ReplacedError, common_prefix

A = Entry("10.0.0.12", "a.tencentcloudcr.com")
B = Entry("10.0.0.13", "b.tencentcloudcr.com")
PREFIX = b"127.0.0.1 localhost\n::1 ip6-localhost\n"


class Recorder:
    """Wraps os.pwrite/os.ftruncate in fileio to record the write plan; can simulate a kill."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, die_at: str | None = None) -> None:
        self.calls: list[tuple[str, int, int]] = []
        self.die_at = die_at
        real_pwrite, real_truncate = os.pwrite, os.ftruncate

        def pwrite(fd: int, data: bytes, offset: int) -> int:
            self.calls.append(("pwrite", offset, len(data)))
            return real_pwrite(fd, data, offset)

        def ftruncate(fd: int, length: int) -> None:
            self.calls.append(("ftruncate", length, 0))
            if self.die_at == "ftruncate":
                raise KeyboardInterrupt("simulated kill before ftruncate")
            real_truncate(fd, length)

        monkeypatch.setattr(fileio.os, "pwrite", pwrite)
        monkeypatch.setattr(fileio.os, "ftruncate", ftruncate)


def make(tmp_path: Path, content: bytes) -> Path:
    path = tmp_path / "hosts"
    path.write_bytes(content)
    return path


def test_common_prefix() -> None:
    assert common_prefix(b"", b"abc") == 0
    assert common_prefix(b"abc", b"abd") == 2
    assert common_prefix(b"abc", b"abcdef") == 3
    assert common_prefix(b"x" * 5000 + b"a", b"x" * 5000 + b"b") == 5000


def test_growing_writes_only_the_changed_tail(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = make(tmp_path, PREFIX)
    recorder = Recorder(monkeypatch)
    with HostsFile(str(path)) as hosts:
        assert hosts.apply(lambda d: render(d, [A]))
    new = render(PREFIX, [A])
    assert recorder.calls == [("pwrite", len(PREFIX), len(new) - len(PREFIX))]
    assert path.read_bytes() == new


def test_removing_a_trailing_block_is_a_single_truncate(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = make(tmp_path, render(PREFIX, [A, B]))
    recorder = Recorder(monkeypatch)
    with HostsFile(str(path)) as hosts:
        assert hosts.apply(remove)
    assert recorder.calls == [("ftruncate", len(PREFIX), 0)]
    assert path.read_bytes() == PREFIX


def test_shrinking_pads_then_truncates_and_a_kill_in_between_is_recoverable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    old = render(PREFIX, [A, B])
    new = render(PREFIX, [B])
    path = make(tmp_path, old)
    recorder = Recorder(monkeypatch, die_at="ftruncate")
    with HostsFile(str(path)) as hosts, pytest.raises(KeyboardInterrupt):
        hosts.apply(lambda d: render(d, [B]))
    p = common_prefix(old, new)
    assert recorder.calls == [("pwrite", p, len(old) - p), ("ftruncate", len(new), 0)]
    crashed = path.read_bytes()
    # the documented crash state: new content, then spaces up to the old length, never shorter
    assert crashed == new + b" " * (len(old) - len(new))
    block = find_block(crashed)
    assert block is not None and block.stop == len(crashed)  # the spaces count as our slack
    monkeypatch.undo()
    with HostsFile(str(path)) as hosts:
        assert hosts.apply(lambda d: render(d, [B]))  # the next pass cleans up
    assert path.read_bytes() == new


def test_no_write_when_unchanged(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = make(tmp_path, render(PREFIX, [A]))
    recorder = Recorder(monkeypatch)
    with HostsFile(str(path)) as hosts:
        assert not hosts.apply(lambda d: render(d, [A]))
        assert hosts.writes == 0
    assert recorder.calls == []


def test_concurrent_change_is_not_overwritten(tmp_path: Path) -> None:
    path = make(tmp_path, PREFIX)
    with HostsFile(str(path)) as hosts:

        def sneaky(data: bytes) -> bytes:
            with open(path, "ab") as other:
                other.write(b"10.1.1.1 added-meanwhile\n")
            return render(data, [A])

        with pytest.raises(ChangedMeanwhile):
            hosts.apply(sneaky)
    assert path.read_bytes() == PREFIX + b"10.1.1.1 added-meanwhile\n"


def test_replaced_by_rename_is_detected(tmp_path: Path) -> None:
    path = make(tmp_path, PREFIX)
    with HostsFile(str(path)) as hosts:
        hosts.check_replaced()
        replacement = tmp_path / "hosts.new"
        replacement.write_bytes(PREFIX)
        os.rename(replacement, path)
        with pytest.raises(ReplacedError, match="link count 0"):
            hosts.apply(lambda d: render(d, [A]))
    assert path.read_bytes() == PREFIX


def test_replaced_with_a_hard_link_kept_is_detected_by_inode(tmp_path: Path) -> None:
    path = make(tmp_path, PREFIX)
    with HostsFile(str(path)) as hosts:
        os.link(path, tmp_path / "keep")
        os.unlink(path)
        path.write_bytes(PREFIX)
        with pytest.raises(ReplacedError, match="replaced"):
            hosts.check_replaced()


def test_deleted_is_detected(tmp_path: Path) -> None:
    path = make(tmp_path, PREFIX)
    with HostsFile(str(path)) as hosts:
        os.unlink(path)
        with pytest.raises(ReplacedError):
            hosts.check_replaced()


def test_not_a_regular_file(tmp_path: Path) -> None:
    with pytest.raises(OSError, match="Is a directory"):
        HostsFile(str(tmp_path))
    os.mkfifo(tmp_path / "fifo")
    with pytest.raises(OSError, match="not a regular file"):
        HostsFile(str(tmp_path / "fifo"))


@pytest.mark.parametrize("cut", [0.0, 0.3, 0.5, 0.8, 0.99])
@pytest.mark.parametrize("grow", [True, False])
def test_torn_write_never_touches_lines_before_the_change(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cut: float, grow: bool
) -> None:
    """Outside the guarantee (a change spanning pages, or power loss) a pwrite may be torn.

    Simulate it: only part of the pwrite lands, then the process dies. The bytes before the
    first change (all the node's own lines before our block) are intact, and the next pass
    either refuses a damaged block (BlockError) and leaves the file alone, or leaves a valid
    block with exactly the wanted entries (a torn shrink may leave a harmless junk line after
    END; a torn growth may leave END without its line ending).
    """
    from hosts_updater.core import BlockError, entries_in

    few, many = [A], [A, B, Entry("10.0.0.14", "c.tencentcloudcr.com")]
    old = render(PREFIX, few if grow else many)
    new = render(PREFIX, many if grow else few)
    path = make(tmp_path, old)
    real_pwrite = os.pwrite

    def torn(fd: int, data: bytes, offset: int) -> int:
        real_pwrite(fd, bytes(data[: int(len(data) * cut)]), offset)
        raise KeyboardInterrupt("simulated kill in the middle of a write")

    monkeypatch.setattr(fileio.os, "pwrite", torn)
    with HostsFile(str(path)) as hosts, pytest.raises(KeyboardInterrupt):
        hosts.apply(lambda d: render(d, many if grow else few))
    monkeypatch.undo()
    crashed = path.read_bytes()
    assert crashed.startswith(PREFIX + old[len(PREFIX) : common_prefix(old, new)])
    assert len(crashed) >= len(old)  # never cut short
    with HostsFile(str(path)) as hosts:
        try:
            hosts.apply(lambda d: render(d, many if grow else few))
        except BlockError:
            assert path.read_bytes() == crashed  # refused, untouched
        else:
            repaired = path.read_bytes()
            assert repaired.startswith(PREFIX)
            assert entries_in(repaired) == entries_in(new)
