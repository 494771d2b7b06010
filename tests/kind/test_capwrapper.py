"""The runtime wrapper of the kind engine: runc, minus the capabilities the machine cannot grant."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from harness import capwrapper
from support import property_settings

ALL = frozenset(capwrapper.CAPABILITIES)
names = st.lists(st.sampled_from(capwrapper.CAPABILITIES), max_size=12)


def test_the_bounding_set_is_read_from_the_process_status() -> None:
    status = "Name:\tx\nCapInh:\t0000000000000000\nCapBnd:\t000001fffeffffff\n"
    found = capwrapper.bounding_set(status)
    assert "CAP_SYS_RESOURCE" not in found  # bit 24, the one this machine lacks
    assert {"CAP_SYS_ADMIN", "CAP_NET_ADMIN", "CAP_CHECKPOINT_RESTORE"} <= found
    assert capwrapper.capabilities_of_mask(1 << 24) == {"CAP_SYS_RESOURCE"}
    own = capwrapper.bounding_set(Path("/proc/self/status").read_text())
    assert own <= ALL


@given(sets=st.fixed_dictionaries({key: names for key in capwrapper.CAPABILITY_SETS}),
       available=st.frozensets(st.sampled_from(capwrapper.CAPABILITIES)))
@property_settings(200)
def test_it_only_ever_removes_and_only_what_is_unavailable(sets: dict[str, list[str]],
                                                          available: frozenset[str]) -> None:
    """Abuse: a wrapper that added a capability, or removed one the kernel grants, would widen or
    break a container; it does neither."""
    kept, removed = capwrapper.without_unavailable({**sets, "other": "kept"}, available)
    assert kept["other"] == "kept"
    for key, before in sets.items():
        assert kept[key] == [name for name in before if name in available]  # order kept, nothing added
    assert removed == {name for before in sets.values() for name in before} - available


def test_it_finds_the_file_runc_reads_the_process_from(tmp_path: Path) -> None:
    find = capwrapper.spec_and_process_files
    assert find(["--root", "/run/r", "--log", "l.json", "--log-format", "json", "create", "--bundle", "/b",
                 "--pid-file", "p", "id"], tmp_path) == [(Path("/b/config.json"), True)]
    assert find(["--root=/run/r", "run", "-b", "rel", "id"], tmp_path) == [(tmp_path / "rel" / "config.json", True)]
    assert find(["create", "id"], tmp_path) == [(tmp_path / "config.json", True)]  # runc's default: the cwd
    assert find(["--root", "/r", "exec", "--process", "/tmp/p.json", "--detach", "id"], tmp_path) == [
        (Path("/tmp/p.json"), False)]
    assert find(["exec", "id", "sh"], tmp_path) == []  # no process file: nothing of ours to change
    for other in (["state", "id"], ["delete", "--force", "id"], ["--version"], []):
        assert find(other, tmp_path) == []


def test_it_rewrites_the_bundle_and_runs_the_real_runc_with_the_same_arguments(tmp_path: Path) -> None:
    """End to end as dockerd runs it: the bundle's config loses exactly the unavailable capabilities."""
    available = capwrapper.bounding_set(Path("/proc/self/status").read_text())
    unavailable = sorted(ALL - available)  # here CAP_SYS_RESOURCE
    wanted = sorted(available)[:3] + unavailable
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    (bundle / "config.json").write_text(json.dumps({"process": {"capabilities": {
        "bounding": wanted, "effective": wanted, "permitted": wanted}}, "root": {"path": "rootfs"}}))
    real = tmp_path / "runc"
    real.write_text('#!/bin/sh\nprintf "%s\\n" "$@" > "$(dirname "$0")/argv"\n')
    real.chmod(0o755)
    argv = ["--root", "/run/x", "create", "--bundle", str(bundle), "--pid-file", "p", "ctr-1"]
    proc = subprocess.run([sys.executable, "-I", capwrapper.__file__, "--real-runc", str(real), "--", *argv],
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "argv").read_text().splitlines() == argv
    capabilities = json.loads((bundle / "config.json").read_text())["process"]["capabilities"]
    assert capabilities["bounding"] == sorted(available)[:3]
    assert json.loads((bundle / "config.json").read_text())["root"] == {"path": "rootfs"}
    usage = subprocess.run([sys.executable, "-I", capwrapper.__file__, "create"], capture_output=True, text=True)
    assert usage.returncode == 2 and "usage" in usage.stderr
