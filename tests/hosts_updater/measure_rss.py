#!/usr/bin/env python3
"""Measure hosts-updater's resident memory (not a test; prints figures, asserts nothing).

Runs the real daemon on a temp hosts file for a few intervals, changing its config each time,
and samples VmRSS / VmHWM from /proc/PID/status. Usage:

    .venv/bin/python tests/hosts_updater/measure_rss.py [--interval 0.5] [--passes 10]
"""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from hosts_helpers import cli_command, cli_env


def status(pid: int) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        out[key] = value.strip()
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--interval", type=float, default=0.5)
    parser.add_argument("--passes", type=int, default=10)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="hosts-updater-rss-"))
    try:
        hosts = work / "hosts"
        hosts.write_bytes(b"127.0.0.1 localhost\n::1 ip6-localhost\n")
        config = work / "config.json"

        def publish(n: int) -> None:
            entries = [{"domain": f"tcr-{i}.tencentcloudcr.com", "ip": f"10.0.0.{i + 1}"} for i in range(n % 4 + 1)]
            config.write_text(json.dumps({"hosts": entries}))

        publish(0)
        command = cli_command("--config", str(config), "--hosts-file", str(hosts), "--interval", str(args.interval))
        proc = subprocess.Popen(command, env=cli_env(), stderr=subprocess.DEVNULL)
        samples: list[int] = []
        for n in range(args.passes):
            time.sleep(args.interval)
            publish(n + 1)
            samples.append(int(status(proc.pid)["VmRSS"].split()[0]))
        final = status(proc.pid)
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=10)
        print(f"command: {' '.join(command)}")
        print(f"python {sys.version.split()[0]}; {args.passes} passes x {args.interval}s; exit {proc.returncode}")
        print(f"VmRSS samples (KiB): {samples}")
        print(f"VmRSS last: {final['VmRSS']}  VmHWM (peak): {final['VmHWM']}  limit 20 MiB = 20480 kB")
        peak_kib = int(final["VmHWM"].split()[0])
        print(f"peak = {peak_kib / 1024:.1f} MiB -> {'within' if peak_kib <= 20480 else 'OVER'} the 20 MiB budget")
    finally:
        shutil.rmtree(work)
    return 0


if __name__ == "__main__":
    sys.exit(main())
