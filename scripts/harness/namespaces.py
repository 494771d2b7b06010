"""Network and mount namespaces the harness creates for a node or an image build, and removes;
the cgroups and processes that belong to them.

Shared facts (docs/DESIGN.md, "The local node"):
- `ip netns add` turns /run/netns into a mount point the first time; when that was one of ours,
  the last of ours to go undoes it, so the host's mount table ends as it began.
- A mount namespace pinned to a file outlives its processes; the pin's directory must itself be
  a private bind mount, or the new namespace would hold a copy of its own pin.
- A new mount namespace starts with copies of every namespace pin on the host (other nodes',
  other builds'); those copies would keep those namespaces alive, so they are dropped inside.
"""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
from collections.abc import Collection, Iterable, Sequence
from pathlib import Path

RUN_NETNS = Path("/run/netns")
# Present while /run/netns is a mount point because one of our namespaces made it so.
RUN_NETNS_MARKER = Path("/run/tcr-addon/run-netns-mounted")
# Inside a new mount namespace: lazily unmount every namespace pin copied from the host.
DROP_FOREIGN_PINS = (
    "awk '$0 ~ / - nsfs / {print $5}' /proc/self/mountinfo | sort -r | "
    "while read -r pin; do umount --lazy \"$pin\" 2>/dev/null || true; done; "
    f"umount --recursive --lazy {RUN_NETNS} 2>/dev/null || true"
)


class NamespaceError(RuntimeError):
    pass


def _run(argv: Sequence[str]) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(list(argv), capture_output=True, text=True, timeout=60)
    if proc.returncode != 0:
        raise NamespaceError(f"{' '.join(argv)} failed ({proc.returncode}): {proc.stderr.strip()[-1000:]}")
    return proc


def _unescape(text: str) -> str:
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), text)


def mount_points() -> list[str]:
    with open("/proc/self/mountinfo") as mountinfo:
        return [_unescape(line.split()[4]) for line in mountinfo]


def netns_names() -> list[str]:
    proc = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True)
    return [line.split()[0] for line in proc.stdout.splitlines() if line.strip()]


def add_netns(name: str) -> None:
    """`ip netns add NAME`, remembering when that is what makes /run/netns a mount point."""
    if str(RUN_NETNS) not in mount_points():
        RUN_NETNS_MARKER.parent.mkdir(parents=True, exist_ok=True)
        RUN_NETNS_MARKER.touch()
    _run(["ip", "netns", "add", name])


def delete_netns(name: str) -> None:
    """`ip netns delete NAME`; the last of ours also undoes the /run/netns mount we caused."""
    if name in netns_names():
        _run(["ip", "netns", "delete", name])
    if RUN_NETNS_MARKER.exists() and str(RUN_NETNS) in mount_points() and not any(RUN_NETNS.iterdir()):
        subprocess.run(["umount", str(RUN_NETNS)], capture_output=True)
        with contextlib.suppress(OSError):
            RUN_NETNS.rmdir()
        RUN_NETNS_MARKER.unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            RUN_NETNS_MARKER.parent.rmdir()


def cgroup_hierarchies() -> list[Path]:
    """Where a cgroup named NAME lives: `<hierarchy>/NAME` for each of these (one on cgroup v2)."""
    root = Path("/sys/fs/cgroup")
    if (root / "cgroup.controllers").exists():  # cgroup v2 only
        return [root]
    return sorted(path for path in root.iterdir() if path.is_dir() and not path.is_symlink())


def cgroup_dirs(name: str) -> list[Path]:
    """The cgroups named NAME that exist: `<hierarchy>/NAME` (see `cgroup_hierarchies`)."""
    return [path for path in (hierarchy / name for hierarchy in cgroup_hierarchies()) if path.is_dir()]


def ns_inode(pin: Path) -> int | None:
    """The inode of the namespace pinned at `pin`, or None when no namespace is pinned there."""
    try:
        pinned, nsfs = os.stat(pin), os.stat("/proc/self/ns/mnt")
    except OSError:
        return None
    return pinned.st_ino if pinned.st_dev == nsfs.st_dev else None


def processes_in(ns_inodes: Collection[int] = (), cgroups: Iterable[Path] = (),
                 cmdline_marker: bytes | None = None) -> set[int]:
    """Processes in one of the mount or network namespaces `ns_inodes`, in one of the cgroup
    directories `cgroups` or below them, or whose command line contains `cmdline_marker`.

    Never this process, and never by way of this process's own namespaces: those would select
    every process of the machine.
    """
    own = set()
    for kind in ("mnt", "net"):
        with contextlib.suppress(OSError):
            own.add(os.stat(f"/proc/self/ns/{kind}").st_ino)
    wanted = set(ns_inodes) - own
    pids: set[int] = set()
    for top in cgroups:
        for directory, _, _ in os.walk(top):
            with contextlib.suppress(OSError):
                pids.update(int(pid) for pid in (Path(directory) / "cgroup.procs").read_text().split())
    if wanted or cmdline_marker is not None:
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            with contextlib.suppress(OSError):
                if cmdline_marker is not None and cmdline_marker in (entry / "cmdline").read_bytes():
                    pids.add(int(entry.name))
                    continue
                if any(os.stat(entry / "ns" / kind).st_ino in wanted for kind in ("mnt", "net")):
                    pids.add(int(entry.name))
    pids.discard(os.getpid())
    return pids


def pin_mount_namespace(pin: Path) -> None:
    """A new private mount namespace, pinned at `pin` (inside a directory this makes a private mount)."""
    directory = pin.parent
    _run(["mount", "--bind", str(directory), str(directory)])
    _run(["mount", "--make-private", str(directory)])
    pin.touch()
    _run(["unshare", f"--mount={pin}", "--propagation", "private", "true"])


def unpin_mount_namespace(pin: Path) -> None:
    """Release the pinned namespace (every mount in it goes once no process is left inside)."""
    points = mount_points()
    if str(pin) in points:
        _run(["umount", str(pin)])
    if str(pin.parent) in points:
        _run(["umount", str(pin.parent)])
