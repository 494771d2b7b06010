"""Command line: ``hosts-updater --config FILE --hosts-file PATH [--once] [--interval S] [--remove]``."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from collections.abc import Sequence

from .config import Config, ConfigError, parse_config
from .core import BlockError, Entry, Finding, reconcile, remove
from .fileio import ChangedMeanwhile, HostsFile, ReplacedError

EXIT_OK = 0
EXIT_CONFIG = 1  # bad or unreadable config (--once)
EXIT_USAGE = 2  # bad command line (argparse)
EXIT_DAMAGED = 3  # our block in the hosts file is damaged; file left untouched (--once)
EXIT_REPLACED = 4  # the hosts file was replaced or deleted (new inode): restart for a fresh mount
EXIT_IO = 5  # the hosts file cannot be opened, read or written
EXIT_REFUSED = 6  # some entries were refused (logged) and left out; the others were written (--once)
EXIT_CONFLICT = 7  # a line we did not write maps a configured domain to another address (--once)

DEFAULT_INTERVAL = 10.0
_STOP_SIGNALS = {signal.SIGTERM, signal.SIGINT}

DESCRIPTION = """\
Keep registry domain -> private IP lines in a hosts file, between the marker comments
  # BEGIN tcr-addon hosts-updater (managed, do not edit)
  # END tcr-addon hosts-updater
(the BEGIN line ends in "; line break above added)" when the file had no final
newline and we added one). Every byte outside that block is left exactly as it was.
The file is written in place (it may be a single bind-mounted file), only when its
content must change, and fsynced.

Without --once it runs until SIGTERM/SIGINT: every --interval seconds it re-reads the config
file (so ConfigMap updates apply without a restart) and the hosts file (so removed lines come
back). A bad config is logged and the last good one stays in force. SIGTERM leaves the lines
in place (a rolling update must not make the registry unreachable); use --remove to take
them out.

config.json: {"hosts": [{"domain": "x.tencentcloudcr.com", "ip": "10.0.0.12", "disabled": false}]}
Disabled entries and an empty list remove our lines.

Refused entries (logged, never written; the other entries still are, and the ready file is
withheld while any is refused): names that are no registry's (single-label names, localhost
and *.localhost, *.local, Service names with a "svc" label or ending in ".default", a
top-level label that is not letters, cloud metadata names such as metadata.tencentyun.com,
metadata.google.internal, instance-data.*) and addresses that are no registry's unicast
address (unspecified, 0.0.0.0/8, loopback, link-local such as 169.254.0.23, multicast,
broadcast, reserved, IPv4-mapped IPv6).

Lines written by others: when a line outside our block already maps a configured domain
(any address family; case and a trailing dot ignored; comments do not count) we write no
line for it (one name, one answer) and never touch theirs; ours comes back once theirs is
gone. The same address as configured is logged once; another address is a conflict: a
warning names the line, the ready file is withheld while it lasts, --once exits 7.
"""

EPILOG = f"""\
exit codes:
  {EXIT_OK}  success (or stopped by SIGTERM/SIGINT)
  {EXIT_CONFIG}  config missing, unreadable or invalid (--once; the hosts file is not touched)
  {EXIT_USAGE}  bad command line
  {EXIT_DAMAGED}  our block in the hosts file is damaged (e.g. BEGIN without END); file left untouched (--once)
  {EXIT_REPLACED}  the hosts file was replaced or deleted since start (new inode); restart to remount
  {EXIT_IO}  the hosts file cannot be opened, read or written
  {EXIT_REFUSED}  some entries were refused and left out (named in the log); the others were written (--once)
  {EXIT_CONFLICT}  a line we did not write maps a configured domain to another address (named in the log);
     no line of ours for that domain, the others were written (--once; {EXIT_REFUSED} wins when both apply)
"""


def log(message: str) -> None:
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    sys.stderr.write(f"{stamp} hosts-updater: {message}\n")
    sys.stderr.flush()


def _interval(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0 < value <= 86400:
        raise argparse.ArgumentTypeError("must be > 0 and <= 86400 seconds")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hosts-updater",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--config",
        metavar="FILE",
        help="JSON config (the ConfigMap's config.json); re-read on every pass. Required unless --remove.",
    )
    parser.add_argument("--hosts-file", metavar="PATH", required=True, help="hosts file to maintain in place")
    parser.add_argument("--once", action="store_true", help="apply (or remove) once and exit")
    parser.add_argument(
        "--interval",
        metavar="S",
        type=_interval,
        default=DEFAULT_INTERVAL,
        help=f"seconds between passes when not --once (default {DEFAULT_INTERVAL:g})",
    )
    parser.add_argument(
        "--remove",
        action="store_true",
        help="remove our whole block instead of applying the config (with --once: then exit; "
        "without: keep it removed until SIGTERM, used for uninstall)",
    )
    parser.add_argument(
        "--ready-file",
        metavar="PATH",
        help="create PATH after each successful pass and delete it after a failed one, or while an entry is "
        "refused or a line written by others disagrees (for an exec readiness probe, e.g. `test -e PATH`)",
    )
    return parser


class Updater:
    """One pass = load config (unless removing), check the hosts file, write if needed."""

    def __init__(self, hosts: HostsFile, config_path: str | None, removing: bool, ready_file: str | None) -> None:
        self.hosts = hosts
        self.config_path = config_path
        self.removing = removing
        self.ready_file = ready_file
        self.good: list[Entry] | None = None  # last valid config
        self.config_problem: str | None = None  # logged once while it persists
        self.refused: list[str] = []  # entries of the current config that are left out
        self.file_problem: str | None = None
        self.conflicts: list[str] = []  # warnings about others' lines that contradict the config
        self.notes: list[str] = []  # others' lines that agree with the config (logged once)

    def load_config(self) -> Config:
        assert self.config_path is not None
        try:
            with open(self.config_path, "rb") as handle:  # opened afresh: follows a swapped ..data link
                raw = handle.read()
        except OSError as error:
            raise ConfigError(f"cannot read config {self.config_path}: {error.strerror or error}") from None
        return parse_config(raw)

    def set_ready(self, ready: bool) -> None:
        if not self.ready_file:
            return
        try:
            if not ready:
                os.unlink(self.ready_file)
            elif not os.path.exists(self.ready_file):
                with open(self.ready_file, "wb"):
                    pass
        except OSError:
            pass

    def _file_problem(self, message: str, code: int) -> int:
        if message != self.file_problem:
            log(message)
            self.file_problem = message
        self.set_ready(False)
        return code

    def _entries(self, strict: bool) -> list[Entry] | None:
        """The entries to apply now, or None when there is no usable config."""
        try:
            config = self.load_config()
        except ConfigError as error:
            if strict or self.good is None:
                message = f"config error, hosts file not changed: {error}"
            else:
                message = f"config error, keeping the last good config ({len(self.good)} entries): {error}"
            if message != self.config_problem:
                log(message)
                self.config_problem = message
            return None if strict else self.good
        entries = config.entries
        if config.refused != self.refused:
            for message in config.refused:
                log(f"refused, not written: {message}")
            self.refused = config.refused
        if entries != self.good or self.config_problem is not None:
            described = ", ".join(f"{e.domain}={e.ip}" for e in entries) or "none"
            count = f"{len(entries)} enabled entr{'y' if len(entries) == 1 else 'ies'}"
            log(f"config {self.config_path}: {count}: {described}")
        self.config_problem = None
        self.good = entries
        return entries

    def run_pass(self, strict: bool) -> int:
        """One pass; returns an exit code. With ``strict`` (--once) a config error is fatal."""
        if self.removing:
            wanted: list[Entry] | None = []
        else:
            wanted = self._entries(strict)
            if wanted is None:
                self.set_ready(False)
                return EXIT_CONFIG
        entries = list(wanted or [])
        findings: list[Finding] = []

        def transform(data: bytes) -> bytes:
            if self.removing:
                return remove(data)
            updated, findings[:] = reconcile(data, entries)
            return updated

        try:
            wrote = self.hosts.apply(transform)
        except BlockError as error:
            message = f"{self.hosts.path}: damaged managed block, file left untouched: {error}"
            return self._file_problem(message, EXIT_DAMAGED)
        except ChangedMeanwhile as error:
            return self._file_problem(str(error), EXIT_IO)
        except OSError as error:
            return self._file_problem(f"{self.hosts.path}: {error}", EXIT_IO)
        if self.file_problem is not None:
            log(f"{self.hosts.path}: OK again")
            self.file_problem = None
        self._report(findings)
        if wrote:
            elsewhere = {finding.entry.domain for finding in findings}
            written = [entry for entry in entries if entry.domain not in elsewhere]
            what = f"wrote {len(written)} entries" if written else "removed our block"
            log(f"{self.hosts.path}: {what}")
        self.set_ready(
            (self.config_problem is None or self.good is not None) and not self.refused and not self.conflicts
        )
        if self.removing:
            return EXIT_OK
        return EXIT_REFUSED if self.refused else EXIT_CONFLICT if self.conflicts else EXIT_OK

    def _report(self, findings: list[Finding]) -> None:
        """Log others' lines for our domains when they first appear (not on every pass)."""
        path = self.hosts.path
        conflicts: list[str] = []
        notes: list[str] = []
        for finding in findings:
            domain, ip, line, address = finding.entry.domain, finding.entry.ip, finding.line, finding.address
            if not (address.isascii() and address.isprintable()):
                address = ascii(address)  # an IPv6 zone is any text the file holds: no control bytes in the log
            if finding.conflict:
                conflicts.append(
                    f"warning: {path} line {line}, not written by us, maps {domain} to {address} but the config "
                    f"maps it to {ip}; we write no line for {domain} (one name, one answer) and stay not ready: "
                    f"remove line {line} from {path}, or configure {domain} with {address}"
                )
            else:
                notes.append(
                    f"{path} line {line}, not written by us, already maps {domain} to {ip} as configured; "
                    "we write no line of our own for it while that line is there"
                )
        for message in notes:
            if message not in self.notes:
                log(message)
        for message in conflicts:
            if message not in self.conflicts:
                log(message)
        if self.conflicts and not conflicts:
            log(f"{path}: no line written by others contradicts the config any more")
        self.conflicts, self.notes = conflicts, notes


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if not args.remove and not args.config:
        build_parser().error("--config is required unless --remove is given")
    # SIGTERM/SIGINT are blocked and only taken with sigtimedwait between passes, so a write is
    # never interrupted by them (this also works as PID 1, where default actions are ignored).
    signal.pthread_sigmask(signal.SIG_BLOCK, _STOP_SIGNALS)
    try:
        hosts = HostsFile(args.hosts_file)
    except OSError as error:
        log(f"cannot open hosts file: {error}")
        return EXIT_IO
    updater = Updater(hosts, args.config, args.remove, args.ready_file)
    with hosts:
        try:
            if args.once:
                return updater.run_pass(strict=True)
            mode = "removing our block" if args.remove else f"config {args.config}"
            log(f"started: {mode}, hosts file {args.hosts_file}, every {args.interval:g}s")
            while True:
                updater.run_pass(strict=False)
                received = signal.sigtimedwait(_STOP_SIGNALS, args.interval)
                if received is not None:
                    log(f"stopping on {signal.Signals(received.si_signo).name}; our lines stay in place")
                    updater.set_ready(False)
                    return EXIT_OK
        except ReplacedError as error:
            log(f"{error}; exiting with code {EXIT_REPLACED}")
            updater.set_ready(False)
            return EXIT_REPLACED


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
