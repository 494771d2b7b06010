"""What the host looks like from outside a node or an engine: compared before and after one runs.

The node suite and the kind run both check that the machine's network, routes, hosts file,
resolv.conf, sysctls, network namespaces, mounts and cgroups are as they were.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

from harness import namespaces

SYSCTL_TREES = ("/proc/sys/net/ipv4", "/proc/sys/net/ipv6/conf/all", "/proc/sys/net/bridge",
                "/proc/sys/net/netfilter", "/proc/sys/vm", "/proc/sys/kernel/keys")
SYSCTL_FILES = ("/proc/sys/kernel/panic", "/proc/sys/kernel/panic_on_oops")
# A privileged container (the kind node) could reach every global sysctl: it is checked whole.
WHOLE_SYSCTL_TREES = ("/proc/sys/net/ipv4", "/proc/sys/net/ipv6/conf/all", "/proc/sys/net/bridge",
                      "/proc/sys/net/netfilter", "/proc/sys/net/core", "/proc/sys/net/unix", "/proc/sys/vm",
                      "/proc/sys/kernel", "/proc/sys/fs", "/proc/sys/user")
# Counters, per-flow tables and random values move on their own; they are not settings.
VOLATILE = ("count", "neigh", "stat", "route/gc_", "nr_", "drop_caches", "compact_memory", "kernel/random",
            "ns_last_pid", "dentry-state", "inode-state", "file-nr", "inode-nr", "pty/nr", "/tainted",
            "dentry-negative", "aio-nr", "fs/quota", "fs/binfmt_misc")


def sysctls(trees: tuple[str, ...] = SYSCTL_TREES, files: tuple[str, ...] = SYSCTL_FILES) -> dict[str, str]:
    values: dict[str, str] = {}
    paths = [Path(p) for p in files]
    for tree in trees:
        paths += [Path(d) / f for d, _, names in os.walk(tree) for f in names]
    for path in paths:
        if any(word in str(path) for word in VOLATILE):
            continue
        try:
            values[str(path)] = path.read_text()
        except OSError:
            continue  # write-only or not permitted to read
    return values


def command(*argv: str) -> str:
    return subprocess.run(list(argv), capture_output=True, text=True, timeout=30).stdout


def strip_counters(rules: str) -> str:
    return "\n".join(line for line in rules.splitlines() if not line.startswith("#"))


def host_state(*, every_sysctl: bool = False) -> dict[str, Any]:
    """The host's network, routes, files, sysctls, namespaces, mounts and cgroups."""
    return {
        "/etc/hosts": Path("/etc/hosts").read_bytes(),
        "/etc/resolv.conf": Path("/etc/resolv.conf").read_bytes(),
        "addresses": command("ip", "-o", "address", "show"),
        "links": command("ip", "-o", "link", "show"),
        "routes": command("ip", "route", "show", "table", "all"),
        "rules": command("ip", "rule", "show"),
        "iptables": strip_counters(command("iptables-save")),
        "nftables": command("nft", "list", "ruleset"),
        "netns": command("ip", "netns", "list"),
        "sysctls": sysctls(WHOLE_SYSCTL_TREES, ()) if every_sysctl else sysctls(),
        "mounts": sorted(namespaces.mount_points()),
        "cgroups": sorted(str(p) for h in namespaces.cgroup_hierarchies() for p in h.iterdir() if p.is_dir()),
    }


def differences(before: dict[str, Any], after: dict[str, Any]) -> list[str]:
    changed = []
    for key, value in before.items():
        if key == "sysctls":
            changed += [f"sysctl {name}: {value[name]!r} -> {after[key].get(name)!r}"
                        for name in value if after[key].get(name) != value[name]]
        elif after[key] != value:
            changed.append(f"{key}: {value!r} -> {after[key]!r}")
    return changed
