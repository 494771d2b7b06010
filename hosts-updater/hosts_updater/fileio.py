"""In-place, crash-conscious writes to a bind-mounted hosts file.

The node's ``/etc/hosts`` is bind-mounted as a single file, so it cannot be replaced by a
rename (EBUSY) and there is no sibling directory for a backup or journal: every write is in
place. :meth:`HostsFile.write` therefore:

1. prepares the whole new content first and does nothing when it equals the current content;
2. re-reads the file and gives up the pass when it changed meanwhile (another writer);
3. writes only from the first differing byte ``p`` onwards, in one ``pwrite`` (bytes before
   ``p`` are never written, not even with identical data);
4. growing (or same size): ``pwrite(new[p:], p)`` then ``fsync``;
5. shrinking: if ``new`` is a prefix of the old content (e.g. removing our block at the end of
   the file) a single ``ftruncate`` + ``fsync``; otherwise ``pwrite(new[p:] + spaces, p)`` so the
   size does not change, ``fsync``, then ``ftruncate(len(new))``, ``fsync``.
   The file is never truncated before the new bytes are durable, so it is never cut short.

Guarantee (process kill, e.g. SIGKILL or OOM; SIGTERM/SIGINT/SIGHUP are blocked while writing):
after a kill at any point the file holds the old content, the new content, or the new content
followed by ASCII spaces without a line ending (kill between the shrinking ``pwrite`` and the
``ftruncate``; resolvers ignore the spaces, and when they follow our block the next pass removes
them, see :mod:`hosts_updater.core`). This holds because Linux only aborts a buffered write on a
fatal signal between pages: it requires the written range ``[p, max(old, new))`` to lie within
one 4 KiB page, which is the case for our block at the end of a hosts file smaller than a page
(typical node files are < 1 KiB). Otherwise, and on power loss (in-place overwrites are not
atomic on ext4/xfs), a torn write can mix old and new bytes, but only at offsets ``>= p``: every
line before our block is untouched and the file is never shorter than before. The next pass
then either finds a damaged block (e.g. no END line), reports it and leaves the file alone
(exit code 3 with ``--once``) rather than guess, or finds a valid block, rewrites it, and may
leave a junk fragment of an old line after END (harmless to resolvers). Power loss after the
final ``fsync`` cannot lose the write.
Concurrent readers (the node's resolver) may briefly see a partial tail during the write: no
in-place writer can prevent that.
"""

from __future__ import annotations

import os
import signal
import stat
from collections.abc import Callable

_CRITICAL_SIGNALS = {signal.SIGTERM, signal.SIGINT, signal.SIGHUP}


class ReplacedError(Exception):
    """The hosts file was deleted or replaced (new inode); our open file is stale."""


class ChangedMeanwhile(Exception):
    """Another process changed the file between our read and our write; retry next pass."""


def common_prefix(a: bytes, b: bytes) -> int:
    """Length of the longest common prefix of ``a`` and ``b``."""
    limit = min(len(a), len(b))
    low, high = 0, limit
    while low < high:  # binary search on slices compared in C
        mid = (low + high + 1) // 2
        if a[:mid] == b[:mid]:
            low = mid
        else:
            high = mid - 1
    return low


class HostsFile:
    """An open regular file written in place; remembers its identity to detect replacement."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
        st = os.fstat(self.fd)
        if not stat.S_ISREG(st.st_mode):
            os.close(self.fd)
            raise OSError(f"{path} is not a regular file")
        self.identity = (st.st_dev, st.st_ino)
        self.writes = 0  # number of write operations performed (for tests and logs)

    def close(self) -> None:
        os.close(self.fd)

    def __enter__(self) -> HostsFile:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def check_replaced(self) -> None:
        """Raise :class:`ReplacedError` if the path now names another file or ours was unlinked.

        Inside a container the bind mount keeps pointing at the old inode after the host
        replaces the file, so ``stat(path)`` still shows it; its link count drops to 0 though.
        Outside a container (tests, plain hosts) the path's inode changes.
        """
        st = os.fstat(self.fd)
        if st.st_nlink == 0:
            raise ReplacedError(f"{self.path}: the open file was deleted or replaced (link count 0)")
        try:
            now = os.stat(self.path)
        except FileNotFoundError:
            raise ReplacedError(f"{self.path}: no longer exists") from None
        if (now.st_dev, now.st_ino) != self.identity:
            raise ReplacedError(
                f"{self.path}: replaced (inode {self.identity[1]} -> {now.st_ino}); restart to get a fresh mount"
            )

    def read(self) -> bytes:
        chunks: list[bytes] = []
        offset = 0
        while True:
            chunk = os.pread(self.fd, 1 << 16, offset)
            if not chunk:
                return b"".join(chunks)
            chunks.append(chunk)
            offset += len(chunk)

    def _pwrite_all(self, data: bytes, offset: int) -> None:
        view = memoryview(data)
        while view:
            written = os.pwrite(self.fd, view, offset)
            view = view[written:]
            offset += written

    def write(self, old: bytes, new: bytes) -> None:
        """Turn the file from ``old`` into ``new`` in place (see the module docstring)."""
        previous = signal.pthread_sigmask(signal.SIG_BLOCK, _CRITICAL_SIGNALS)
        try:
            if self.read() != old:
                raise ChangedMeanwhile(f"{self.path}: changed by another process; will retry")
            self.writes += 1
            p = common_prefix(old, new)
            if len(new) >= len(old):
                self._pwrite_all(new[p:], p)
                os.fsync(self.fd)
            elif p == len(new):
                os.ftruncate(self.fd, len(new))
                os.fsync(self.fd)
            else:
                self._pwrite_all(new[p:] + b" " * (len(old) - len(new)), p)
                os.fsync(self.fd)
                os.ftruncate(self.fd, len(new))
                os.fsync(self.fd)
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, previous)

    def apply(self, transform: Callable[[bytes], bytes]) -> bool:
        """Read, transform, write when different. True when the file was written."""
        self.check_replaced()
        old = self.read()
        new = transform(old)
        if new == old:
            return False
        self.write(old, new)
        return True
