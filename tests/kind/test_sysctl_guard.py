"""The guard over host-wide sysctls that the kind node's /sbin/init sets up before systemd runs."""

from __future__ import annotations

import subprocess
from pathlib import Path

from harness import sysctl_guard
from harness.hoststate import sysctls

GUARDED = [*sysctl_guard.SYSTEMD_SYSCTLS, *sysctl_guard.KUBELET_SYSCTLS]


def test_the_init_script_binds_every_global_sysctl_before_it_becomes_systemd() -> None:
    script = sysctl_guard.kind_init_script().splitlines()
    assert script[0] == "#!/bin/sh" and "set -eu" in script
    assert script[-1] == f'exec {sysctl_guard.SYSTEMD} "$@"'
    binds = [line for line in script if line.startswith("mount --bind")]
    assert [line.rsplit(" ", 1)[1] for line in binds] == [f"/proc/sys/{path}" for path in GUARDED]
    first_bind = script.index(binds[0])
    for path in GUARDED:  # every file written (never empty) before any bind
        writes = [n for n, line in enumerate(script) if line.endswith(f"> /kind/sysctl/{sysctl_guard.file_name(path)}")]
        assert writes and writes[0] < first_bind
    for path, value in sysctl_guard.KUBELET_SYSCTLS.items():
        assert f"echo {value} > /kind/sysctl/{sysctl_guard.file_name(path)}" in script


def test_writes_from_inside_land_in_the_node_files_and_the_host_keeps_its_values(tmp_path: Path) -> None:
    """Abuse: what the kubelet and systemd write to the global sysctls, run in a mount namespace of its
    own behind the guard; the host's values stay. The stand-in for systemd writes only where the guard
    is in place (`mountpoint`), so a broken guard fails this test without touching the host."""
    before = sysctls(("/proc/sys/fs", "/proc/sys/vm", "/proc/sys/kernel/keys"), ("/proc/sys/kernel/panic",
                                                                                 "/proc/sys/kernel/panic_on_oops"))
    init = tmp_path / "init"
    writes = "\n".join(f"mountpoint -q /proc/sys/{path} || {{ echo unguarded {path}; exit 3; }}\n"
                       f"echo 7 > /proc/sys/{path}\ncat /proc/sys/{path}" for path in GUARDED)
    init.write_text(f"#!/bin/sh\nset -eu\n{writes}\n")
    init.chmod(0o755)
    guard = tmp_path / "guard"
    guard.write_text(sysctl_guard.kind_init_script(str(tmp_path / "node-sysctl"), str(init)))
    guard.chmod(0o755)
    proc = subprocess.run(["unshare", "--mount", "--propagation", "private", str(guard)],
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.split() == ["7"] * len(GUARDED)  # each write read back inside
    for path in GUARDED:
        assert (tmp_path / "node-sysctl" / sysctl_guard.file_name(path)).read_text() == "7\n"
    after = sysctls(("/proc/sys/fs", "/proc/sys/vm", "/proc/sys/kernel/keys"), ("/proc/sys/kernel/panic",
                                                                                "/proc/sys/kernel/panic_on_oops"))
    assert {k: v for k, v in after.items() if before.get(k) != v} == {}
