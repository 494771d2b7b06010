"""The guard over host-wide sysctls: what a node writes, kept inside the node.

Most sysctls a node sets (net.*) belong to its own network namespace. A few do not: the kubelet
sets vm.overcommit_memory, vm.panic_on_oom, kernel.panic, kernel.panic_on_oops and
kernel.keys.root_max{keys,bytes}, and systemd, when it boots as PID 1 (the kind node), raises
fs.file-max and fs.nr_open. These are the same for the whole machine. A node binds a node-local
file over each of them before anything writes it, so the write lands in that file. A file holds
a value, never nothing: the kubelet's the value it wants (it reads it back, and crash-loops on its
second start otherwise), systemd's the machine's current one.

The local node binds them when it makes its mount namespace. The kind node runs systemd in a
privileged container, so there `/sbin/init` is a script (`kind_init_script`) that binds them and
then executes systemd; kind's entrypoint ends by executing `/sbin/init`. The image also carries no
/usr/lib/sysctl.d files: systemd-sysctl would otherwise apply Debian's kernel.* and fs.* defaults
to the machine.
"""

from __future__ import annotations

import shlex

# The global sysctls the kubelet writes (protectKernelDefaults: false), with the values it wants.
KUBELET_SYSCTLS = {
    "vm/overcommit_memory": "1",
    "vm/panic_on_oom": "0",
    "kernel/panic": "10",
    "kernel/panic_on_oops": "1",
    "kernel/keys/root_maxkeys": "1000000",
    "kernel/keys/root_maxbytes": "25000000",
}
# Raised by systemd as PID 1 (it keeps the machine's value in the node's file).
SYSTEMD_SYSCTLS = ("fs/file-max", "fs/nr_open")
KIND_GUARD_DIR = "/kind/sysctl"
SYSTEMD = "/usr/lib/systemd/systemd"


def file_name(path: str) -> str:
    """`vm/overcommit_memory` -> `vm.overcommit_memory`."""
    return path.replace("/", ".")


def bind_commands(directory: str, sysctls: dict[str, str] = KUBELET_SYSCTLS) -> list[str]:
    """`mount --bind` of each node-local file over its /proc/sys entry."""
    return [f"mount --bind {shlex.quote(f'{directory}/{file_name(path)}')} /proc/sys/{path}" for path in sysctls]


def kind_init_script(directory: str = KIND_GUARD_DIR, init: str = SYSTEMD, sysctls: dict[str, str] = KUBELET_SYSCTLS,
                     kept: tuple[str, ...] = SYSTEMD_SYSCTLS) -> str:
    """The kind node's /sbin/init: write each file, bind it over its sysctl, then become `init` (systemd)."""
    lines = ["#!/bin/sh",
             "# The kind node's /sbin/init: keep the host-wide sysctls that the kubelet and systemd write inside",
             "# this node (each bound to a file of its own), then run systemd as PID 1.",
             "set -eu", f"mkdir -p {shlex.quote(directory)}"]
    for path in kept:
        lines.append(f"cat /proc/sys/{path} > {shlex.quote(f'{directory}/{file_name(path)}')}")
    for path, value in sysctls.items():
        lines.append(f"echo {shlex.quote(value)} > {shlex.quote(f'{directory}/{file_name(path)}')}")
    lines += bind_commands(directory, {**dict.fromkeys(kept, ""), **sysctls})
    lines.append(f'exec {shlex.quote(init)} "$@"')
    return "\n".join(lines) + "\n"
