"""The OCI runtime the kind engine runs: runc, minus the capabilities this machine cannot grant.

kind starts its node container with `docker run --privileged`, which asks for every capability the
kernel knows. Where the machine's own bounding set lacks one (here CAP_SYS_RESOURCE), runc fails
with "unable to apply caps: operation not permitted", and Docker 20.10 ignores `--cap-drop` with
`--privileged`. This wrapper is the engine's default runtime: for `create`, `run` and `exec` it
removes from the container's config (the bundle's config.json, or exec's --process file) the
capabilities outside the bounding set of the process that runs it, then executes the real runc
with the same arguments. It adds nothing and removes only what the kernel would refuse anyway.

Standard library only; no state of its own. `python3 capwrapper.py --real-runc PATH -- ARGS…`.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

# linux/capability.h, by number.
CAPABILITIES = (
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_DAC_READ_SEARCH", "CAP_FOWNER", "CAP_FSETID", "CAP_KILL",
    "CAP_SETGID", "CAP_SETUID", "CAP_SETPCAP", "CAP_LINUX_IMMUTABLE", "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST", "CAP_NET_ADMIN", "CAP_NET_RAW", "CAP_IPC_LOCK", "CAP_IPC_OWNER", "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO", "CAP_SYS_CHROOT", "CAP_SYS_PTRACE", "CAP_SYS_PACCT", "CAP_SYS_ADMIN", "CAP_SYS_BOOT",
    "CAP_SYS_NICE", "CAP_SYS_RESOURCE", "CAP_SYS_TIME", "CAP_SYS_TTY_CONFIG", "CAP_MKNOD", "CAP_LEASE",
    "CAP_AUDIT_WRITE", "CAP_AUDIT_CONTROL", "CAP_SETFCAP", "CAP_MAC_OVERRIDE", "CAP_MAC_ADMIN", "CAP_SYSLOG",
    "CAP_WAKE_ALARM", "CAP_BLOCK_SUSPEND", "CAP_AUDIT_READ", "CAP_PERFMON", "CAP_BPF", "CAP_CHECKPOINT_RESTORE",
)
CAPABILITY_SETS = ("bounding", "effective", "inheritable", "permitted", "ambient")
# runc's global options that take a value (they come before the command).
GLOBAL_OPTIONS_WITH_VALUE = frozenset({"--root", "--log", "--log-format", "--criu", "--rootless"})
SPEC_COMMANDS = frozenset({"create", "run"})


def capabilities_of_mask(mask: int) -> frozenset[str]:
    """The names of the capabilities set in a CapBnd mask (unknown high bits are ignored)."""
    return frozenset(name for number, name in enumerate(CAPABILITIES) if mask >> number & 1)


def bounding_set(status: str) -> frozenset[str]:
    """The CapBnd line of a /proc/<pid>/status text, as capability names."""
    for line in status.splitlines():
        if line.startswith("CapBnd:"):
            return capabilities_of_mask(int(line.split()[1], 16))
    raise ValueError("no CapBnd line in the process status")


def without_unavailable(capabilities: dict[str, Any], available: frozenset[str]) -> tuple[dict[str, Any], set[str]]:
    """A process's `capabilities` object keeping only `available` names; and the names removed."""
    kept: dict[str, Any] = dict(capabilities)
    removed: set[str] = set()
    for key in CAPABILITY_SETS:
        names = capabilities.get(key)
        if isinstance(names, list):
            kept[key] = [name for name in names if name in available]
            removed.update(name for name in names if name not in available)
    return kept, removed


def spec_and_process_files(argv: Sequence[str], cwd: Path) -> list[tuple[Path, bool]]:
    """The files runc will read a process from, each with whether it is a whole bundle config
    (create, run: the bundle's config.json) or a bare process (exec --process FILE)."""
    index = 0
    while index < len(argv) and argv[index].startswith("-"):
        option = argv[index].split("=", 1)[0]
        index += 2 if option in GLOBAL_OPTIONS_WITH_VALUE and "=" not in argv[index] else 1
    if index >= len(argv):
        return []
    command, rest = argv[index], list(argv[index + 1:])

    def value_of(*names: str) -> str | None:
        for position, word in enumerate(rest):
            for name in names:
                if word == name and position + 1 < len(rest):
                    return rest[position + 1]
                if word.startswith(name + "="):
                    return word.split("=", 1)[1]
        return None

    if command in SPEC_COMMANDS:
        bundle = value_of("--bundle", "-b")
        return [((cwd / bundle if bundle else cwd) / "config.json", True)]
    if command == "exec":
        process = value_of("--process", "-p")
        return [(cwd / process, False)] if process else []
    return []


def rewrite(path: Path, whole_spec: bool, available: frozenset[str]) -> set[str]:
    """Remove unavailable capabilities from one config file in place; return the names removed."""
    document = json.loads(path.read_text())
    holder = document.get("process") if whole_spec else document
    if not isinstance(holder, dict) or not isinstance(holder.get("capabilities"), dict):
        return set()
    holder["capabilities"], removed = without_unavailable(holder["capabilities"], available)
    if removed:
        path.write_text(json.dumps(document))
    return removed


def main(argv: Iterable[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) < 3 or args[0] != "--real-runc" or args[2] != "--":
        print("usage: capwrapper.py --real-runc PATH -- RUNC-ARGS…", file=sys.stderr)
        return 2
    real, runc_args = args[1], args[3:]
    available = bounding_set(Path("/proc/self/status").read_text())
    for path, whole_spec in spec_and_process_files(runc_args, Path.cwd()):
        if path.is_file():
            rewrite(path, whole_spec, available)
    os.execv(real, [real, *runc_args])
    return 127  # not reached


if __name__ == "__main__":
    sys.exit(main())
