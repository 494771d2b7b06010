"""The hosts-updater command on temp files, as a subprocess: --once, --remove, the daemon loop."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from hosts_helpers import ConfigMapDir, config_json, run_cli, start_cli

from hosts_updater.cli import EXIT_CONFIG, EXIT_CONFLICT, EXIT_DAMAGED, EXIT_IO, EXIT_REFUSED, EXIT_REPLACED
from hosts_updater.core import BEGIN, END, Entry, entries_in, render
from support import wait_for

ORIGINAL = b"127.0.0.1\tlocalhost\r\n# keep me\r\n\r\n::1 ip6-localhost ip6-loopback\r\n10.9.9.9 last-no-newline"
A = {"domain": "tcr-x.tencentcloudcr.com", "ip": "10.0.0.12", "disabled": False}
B = {"domain": "tcr-x-vpc.tencentcloudcr.com", "ip": "172.16.0.7", "disabled": False}


def expected(*hosts: dict[str, object]) -> bytes:
    return render(ORIGINAL, [Entry(str(h["ip"]), str(h["domain"])) for h in hosts if not h.get("disabled")])


@pytest.fixture
def files(tmp_path: Path) -> tuple[Path, Path]:
    hosts = tmp_path / "hosts"
    hosts.write_bytes(ORIGINAL)
    config = tmp_path / "config.json"
    config.write_text(config_json([A, B]))
    return hosts, config


@pytest.fixture
def daemons() -> Iterator[list[subprocess.Popen[str]]]:
    started: list[subprocess.Popen[str]] = []
    yield started
    for proc in started:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=10)


def test_help_documents_the_interface() -> None:
    result = run_cli("--help")
    assert result.returncode == 0
    for text in (
        "--config FILE",
        "--hosts-file PATH",
        "--once",
        "--interval S",
        "--remove",
        "exit codes",
        BEGIN.decode(),
        f"{EXIT_CONFLICT}  a line we did not write",
    ):
        assert text in result.stdout


def test_usage_errors() -> None:
    assert run_cli("--once", "--hosts-file", "/nonexistent").returncode == 2  # no --config
    assert run_cli("--config", "c", "--hosts-file", "h", "--interval", "0").returncode == 2
    assert run_cli("--config", "c").returncode == 2  # no --hosts-file


def test_once_applies_then_is_a_no_op(files: tuple[Path, Path]) -> None:
    hosts, config = files
    inode = hosts.stat().st_ino
    result = run_cli("--config", str(config), "--hosts-file", str(hosts), "--once")
    assert result.returncode == 0, result.stderr
    assert hosts.read_bytes() == expected(A, B)
    assert hosts.stat().st_ino == inode
    stamp = hosts.stat().st_mtime_ns
    again = run_cli("--config", str(config), "--hosts-file", str(hosts), "--once")
    assert again.returncode == 0
    assert hosts.stat().st_mtime_ns == stamp  # not written again
    assert "wrote" not in again.stderr


def test_disabled_and_empty_configs_remove_our_lines(files: tuple[Path, Path]) -> None:
    hosts, config = files
    run_cli("--config", str(config), "--hosts-file", str(hosts), "--once")
    config.write_text(config_json([A, {**B, "disabled": True}]))
    assert run_cli("--config", str(config), "--hosts-file", str(hosts), "--once").returncode == 0
    assert hosts.read_bytes() == expected(A)
    config.write_text(config_json([{**A, "disabled": True}]))
    assert run_cli("--config", str(config), "--hosts-file", str(hosts), "--once").returncode == 0
    assert hosts.read_bytes() == ORIGINAL
    run_cli("--config", str(config), "--hosts-file", str(hosts), "--once")
    for empty in ('{"hosts": []}', '{"hosts": null}', "{}"):
        config.write_text(config_json([A]))
        run_cli("--config", str(config), "--hosts-file", str(hosts), "--once")
        config.write_text(empty)
        assert run_cli("--config", str(config), "--hosts-file", str(hosts), "--once").returncode == 0
        assert hosts.read_bytes() == ORIGINAL, empty


def test_remove_once(files: tuple[Path, Path]) -> None:
    hosts, config = files
    run_cli("--config", str(config), "--hosts-file", str(hosts), "--once")
    result = run_cli("--remove", "--once", "--hosts-file", str(hosts))
    assert result.returncode == 0, result.stderr
    assert hosts.read_bytes() == ORIGINAL
    assert "removed our block" in result.stderr
    assert run_cli("--remove", "--once", "--hosts-file", str(hosts)).returncode == 0  # idempotent


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("not json", "config is not valid JSON"),
        (config_json([A, {"domain": "b.example.com", "ip": "10.0.0.300"}]), "hosts[1].ip: '10.0.0.300'"),
        (config_json([{"domain": "https://x.example.com", "ip": "10.0.0.1"}]), "hosts[0].domain: 'https://x"),
        (config_json([{**A, "port": 443}]), "hosts[0]: unknown key(s) 'port'"),
        (config_json([A, {**A, "ip": "10.0.0.99"}]), "maps to 10.0.0.99 but hosts[0] maps it to 10.0.0.12"),
    ],
)
def test_bad_config_changes_nothing(files: tuple[Path, Path], content: str, message: str) -> None:
    hosts, config = files
    run_cli("--config", str(config), "--hosts-file", str(hosts), "--once")
    before = hosts.read_bytes()
    stamp = hosts.stat().st_mtime_ns
    config.write_text(content)
    result = run_cli("--config", str(config), "--hosts-file", str(hosts), "--once")
    assert result.returncode == EXIT_CONFIG
    assert message in result.stderr
    assert "hosts file not changed" in result.stderr
    assert hosts.read_bytes() == before
    assert hosts.stat().st_mtime_ns == stamp


def test_once_leaves_refused_entries_out_and_writes_the_others(files: tuple[Path, Path]) -> None:
    hosts, config = files
    config.write_text(config_json([A, {"domain": "localhost", "ip": "10.0.0.66"}, {**B, "ip": "169.254.0.23"}]))
    result = run_cli("--config", str(config), "--hosts-file", str(hosts), "--once")
    assert result.returncode == EXIT_REFUSED, result.stderr
    assert hosts.read_bytes() == expected(A)
    assert "refused, not written: hosts[1].domain: 'localhost' is a loopback name" in result.stderr
    assert "refused, not written: hosts[2].ip: '169.254.0.23' is a link-local address" in result.stderr


NODE = b"127.0.0.1 localhost\n10.0.0.99 TCR-X.tencentcloudcr.com. tcr  # left by the TKE add-on\n"


def test_once_exits_7_when_a_line_of_others_maps_a_configured_domain_elsewhere(files: tuple[Path, Path]) -> None:
    hosts, config = files
    hosts.write_bytes(NODE)
    result = run_cli("--config", str(config), "--hosts-file", str(hosts), "--once")
    assert result.returncode == EXIT_CONFLICT, result.stderr
    assert hosts.read_bytes() == render(NODE, [Entry(str(B["ip"]), str(B["domain"]))])  # B still written, theirs kept
    warning = next(line for line in result.stderr.splitlines() if "warning:" in line)
    for text in ("line 2,", "tcr-x.tencentcloudcr.com to 10.0.0.99", "maps it to 10.0.0.12", "remove line 2",
                 "configure tcr-x.tencentcloudcr.com with 10.0.0.99"):
        assert text in warning, warning
    stamp = hosts.stat().st_mtime_ns
    again = run_cli("--config", str(config), "--hosts-file", str(hosts), "--once")
    assert again.returncode == EXIT_CONFLICT
    assert hosts.stat().st_mtime_ns == stamp
    config.write_text(config_json([A, {"domain": "localhost", "ip": "10.0.0.66"}]))
    assert run_cli("--config", str(config), "--hosts-file", str(hosts), "--once").returncode == EXIT_REFUSED


def test_control_bytes_of_a_line_of_others_do_not_reach_the_log(files: tuple[Path, Path]) -> None:
    hosts, config = files
    hosts.write_bytes(b"fe80::1%\x1b[2J tcr-x-vpc.tencentcloudcr.com\n")  # a zone is any text to resolvers
    result = run_cli("--config", str(config), "--hosts-file", str(hosts), "--once")
    assert result.returncode == EXIT_CONFLICT, result.stderr
    assert "\x1b" not in result.stderr
    assert "maps tcr-x-vpc.tencentcloudcr.com to 'fe80::1%\\x1b[2J'" in result.stderr


def test_once_accepts_a_line_of_others_with_the_configured_address(files: tuple[Path, Path]) -> None:
    hosts, config = files
    hosts.write_bytes(NODE.replace(b"10.0.0.99", b"10.0.0.12"))
    result = run_cli("--config", str(config), "--hosts-file", str(hosts), "--once")
    assert result.returncode == 0, result.stderr
    assert entries_in(hosts.read_bytes()) == [(B["ip"], B["domain"])]
    assert "line 2, not written by us, already maps tcr-x.tencentcloudcr.com to 10.0.0.12" in result.stderr
    assert "warning" not in result.stderr


@dataclass
class Daemon:
    """A hosts-updater daemon on a ConfigMap-style config volume (first config: entry A)."""

    hosts: Path
    volume: ConfigMapDir
    ready: Path
    log: Path
    proc: subprocess.Popen[str]


def start_daemon(tmp_path: Path, daemons: list[subprocess.Popen[str]]) -> Daemon:
    hosts = tmp_path / "hosts"
    hosts.write_bytes(ORIGINAL)
    volume = ConfigMapDir(tmp_path / "etc-updater")
    volume.publish(config_json([A]))
    ready, log = tmp_path / "ready", tmp_path / "log"
    proc = start_cli("--config", str(volume.path), "--hosts-file", str(hosts), "--interval", "0.1",
                     "--ready-file", str(ready), log=log)
    daemons.append(proc)
    return Daemon(hosts, volume, ready, log, proc)


def test_daemon_withholds_readiness_while_an_entry_is_refused(
    tmp_path: Path, daemons: list[subprocess.Popen[str]]
) -> None:
    daemon = start_daemon(tmp_path, daemons)
    hosts, volume, ready, log, proc = daemon.hosts, daemon.volume, daemon.ready, daemon.log, daemon.proc
    wait_for(ready.exists, what="ready")
    volume.publish(config_json([A, B, {"domain": "metadata.tencentyun.com", "ip": "10.0.0.66"}]))
    wait_for(lambda: hosts.read_bytes() == expected(A, B), what="the valid entries applied")
    wait_for(lambda: not ready.exists(), what="readiness withheld")
    volume.publish(config_json([A, B]))
    wait_for(ready.exists, what="ready again once nothing is refused")
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=10) == 0
    assert log.read_text().count("metadata.tencentyun.com' is a cloud metadata service name") == 1


def test_daemon_yields_to_lines_of_others_and_withholds_readiness_while_they_disagree(
    tmp_path: Path, daemons: list[subprocess.Popen[str]]
) -> None:
    daemon = start_daemon(tmp_path, daemons)
    hosts, ready, log, proc = daemon.hosts, daemon.ready, daemon.log, daemon.proc
    wait_for(lambda: hosts.read_bytes() == expected(A) and ready.exists(), what="ready with our line")
    theirs = b"10.0.0.99 tcr-x.tencentcloudcr.com\r\n"
    hosts.write_bytes(expected(A) + theirs)  # an administrator appends a line for our domain
    # ours goes (one name, one answer), theirs stays byte for byte; ORIGINAL's last line keeps its line break
    wait_for(lambda: hosts.read_bytes() == ORIGINAL + b"\r\n" + theirs, what="our line dropped")
    wait_for(lambda: not ready.exists(), what="readiness withheld")
    assert "line 6, not written by us, maps tcr-x.tencentcloudcr.com to 10.0.0.99" in log.read_text()

    hosts.write_bytes(ORIGINAL + b"\r\n" + theirs.replace(b"10.0.0.99", b"10.0.0.12"))  # they agree now
    wait_for(ready.exists, what="ready again once their line agrees")
    assert "line 6, not written by us, already maps tcr-x.tencentcloudcr.com to 10.0.0.12" in log.read_text()
    assert entries_in(hosts.read_bytes()) == []

    hosts.write_bytes(ORIGINAL + b"\r\n")  # their line is gone: ours comes back on the next pass
    wait_for(lambda: entries_in(hosts.read_bytes()) == [(A["ip"], A["domain"])], what="our line back")
    assert hosts.read_bytes() == render(ORIGINAL + b"\r\n", [Entry(str(A["ip"]), str(A["domain"]))])
    assert ready.exists()
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=10) == 0
    err = log.read_text()
    assert err.count("warning:") == 1  # once while it lasts, not once per pass
    assert err.count("already maps tcr-x.tencentcloudcr.com") == 1


def test_missing_config_and_missing_hosts_file(tmp_path: Path, files: tuple[Path, Path]) -> None:
    hosts, config = files
    result = run_cli("--config", str(tmp_path / "nope.json"), "--hosts-file", str(hosts), "--once")
    assert result.returncode == EXIT_CONFIG
    assert "cannot read config" in result.stderr
    assert hosts.read_bytes() == ORIGINAL
    result = run_cli("--config", str(config), "--hosts-file", str(tmp_path / "nohosts"), "--once")
    assert result.returncode == EXIT_IO
    assert "cannot open hosts file" in result.stderr


def test_damaged_block_is_left_alone(files: tuple[Path, Path]) -> None:
    hosts, config = files
    damaged = ORIGINAL + b"\n" + BEGIN + b"\n10.0.0.12 tcr-x.tencentcloudcr.com\n# someone deleted our END line\n"
    hosts.write_bytes(damaged)
    for args in (("--config", str(config)), ("--remove",)):
        result = run_cli(*args, "--hosts-file", str(hosts), "--once")
        assert result.returncode == EXIT_DAMAGED
        assert "line 6: BEGIN marker without a matching END marker" in result.stderr
        assert hosts.read_bytes() == damaged


def test_unwritable_hosts_path_is_an_io_error(files: tuple[Path, Path], tmp_path: Path) -> None:
    # The tests run as root, which ignores file modes: a directory is a path nobody can write as a file.
    _, config = files
    directory = tmp_path / "not-a-file"
    directory.mkdir()
    result = run_cli("--config", str(config), "--hosts-file", str(directory), "--once")
    assert result.returncode == EXIT_IO
    assert "cannot open hosts file" in result.stderr


def test_daemon_follows_configmap_updates_and_repairs_the_file(
    tmp_path: Path, daemons: list[subprocess.Popen[str]]
) -> None:
    daemon = start_daemon(tmp_path, daemons)
    hosts, volume, ready, log, proc = daemon.hosts, daemon.volume, daemon.ready, daemon.log, daemon.proc
    wait_for(lambda: hosts.read_bytes() == expected(A), what="first apply")
    wait_for(ready.exists, what="ready file")

    volume.publish(config_json([A, B]))  # kubelet-style ..data symlink swap
    wait_for(lambda: hosts.read_bytes() == expected(A, B), what="config change applied")

    hosts.write_bytes(ORIGINAL)  # someone rewrites the file in place without our lines
    wait_for(lambda: hosts.read_bytes() == expected(A, B), what="lines re-applied")

    volume.publish("{broken")  # bad config: last good state stays
    wait_for(lambda: "config is not valid JSON" in log.read_text(), what="bad JSON reported")
    volume.publish(config_json([{"domain": "x.example.com", "ip": "10.0.0.300"}]))
    wait_for(lambda: "10.0.0.300" in log.read_text(), what="bad IP reported")
    hosts.write_bytes(ORIGINAL)
    wait_for(lambda: hosts.read_bytes() == expected(A, B), what="last good config re-applied")

    volume.publish(config_json([{**A, "disabled": True}, {**B, "disabled": True}]))
    wait_for(lambda: hosts.read_bytes() == ORIGINAL, what="disabled entries removed")

    volume.publish(config_json([B]))
    wait_for(lambda: hosts.read_bytes() == expected(B), what="re-enabled")

    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=10)
    err = log.read_text()
    assert proc.returncode == 0
    assert hosts.read_bytes() == expected(B)  # SIGTERM keeps our lines (rolling updates must not flap)
    assert "10.0.0.300" in err and "keeping the last good config" in err
    assert err.count("keeping the last good config") == 2  # one line per distinct problem, not per pass
    assert "stopping on SIGTERM" in err
    assert not ready.exists()


def test_daemon_bad_config_at_start_touches_nothing(
    tmp_path: Path, files: tuple[Path, Path], daemons: list[subprocess.Popen[str]]
) -> None:
    hosts, config = files
    config.write_text("[]")
    ready = tmp_path / "ready"
    log = tmp_path / "log"
    proc = start_cli(
        "--config", str(config), "--hosts-file", str(hosts), "--interval", "0.1", "--ready-file", str(ready), log=log
    )
    daemons.append(proc)
    wait_for(lambda: "must be a JSON object" in log.read_text(), what="config error reported")
    assert hosts.read_bytes() == ORIGINAL
    assert not ready.exists()
    config.write_text(config_json([A]))
    wait_for(lambda: hosts.read_bytes() == expected(A), what="applied once the config is fixed")
    wait_for(ready.exists, what="ready")
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=10) == 0
    assert log.read_text().count("must be a JSON object") == 1


@pytest.mark.parametrize("how", ["rename", "unlink"])
def test_daemon_exits_when_the_hosts_file_is_replaced(
    tmp_path: Path, files: tuple[Path, Path], daemons: list[subprocess.Popen[str]], how: str
) -> None:
    hosts, config = files
    log = tmp_path / "log"
    proc = start_cli("--config", str(config), "--hosts-file", str(hosts), "--interval", "0.1", log=log)
    daemons.append(proc)
    wait_for(lambda: hosts.read_bytes() == expected(A, B), what="first apply")
    if how == "rename":
        fresh = tmp_path / "hosts.new"
        fresh.write_bytes(ORIGINAL)
        os.rename(fresh, hosts)
    else:
        hosts.unlink()
    assert proc.wait(timeout=10) == EXIT_REPLACED
    err = log.read_text()
    assert "restart" in err or "no longer exists" in err or "link count 0" in err
    if how == "rename":
        assert hosts.read_bytes() == ORIGINAL  # the new file was not touched by the stale process


def test_uninstall_sequence_remove_daemon_signals_readiness_after_removal(
    tmp_path: Path, files: tuple[Path, Path], daemons: list[subprocess.Popen[str]]
) -> None:
    """What the proposed pre-delete hook relies on: the normal updater is stopped (SIGTERM keeps
    the lines), a `--remove` updater takes its place, and its ready file (readiness probe) exists
    only once the block is gone, so "rollout complete" means "every node is clean"."""
    hosts, config = files
    normal = start_cli("--config", str(config), "--hosts-file", str(hosts), "--interval", "0.1", log=tmp_path / "a")
    daemons.append(normal)
    wait_for(lambda: hosts.read_bytes() == expected(A, B), what="applied")
    normal.terminate()
    assert normal.wait(timeout=10) == 0
    assert hosts.read_bytes() == expected(A, B)

    ready = tmp_path / "ready"
    proc = start_cli(
        "--remove", "--hosts-file", str(hosts), "--interval", "0.1", "--ready-file", str(ready), log=tmp_path / "b"
    )
    daemons.append(proc)
    wait_for(ready.exists, what="ready after removal")
    assert hosts.read_bytes() == ORIGINAL
    hosts.write_bytes(expected(A))  # an old updater raced us: removed again on the next pass
    wait_for(lambda: hosts.read_bytes() == ORIGINAL, what="removed again")
    proc.terminate()
    assert proc.wait(timeout=10) == 0
    assert hosts.read_bytes() == ORIGINAL
    assert not ready.exists()


def test_console_script_is_installed(files: tuple[Path, Path]) -> None:
    script = Path(sys.executable).parent / "hosts-updater"
    assert script.exists() or shutil.which("hosts-updater"), "hosts-updater is not installed: run `make setup`"
    hosts, config = files
    result = subprocess.run(
        [
            str(script if script.exists() else shutil.which("hosts-updater")),
            "--config",
            str(config),
            "--hosts-file",
            str(hosts),
            "--once",
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr
    assert hosts.read_bytes() == expected(A, B)
    assert END in hosts.read_bytes()
