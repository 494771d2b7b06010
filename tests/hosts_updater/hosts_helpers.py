"""Shared helpers for the hosts-updater tests: run the CLI, build ConfigMap-like config dirs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[2]
PACKAGE_DIR = REPO_ROOT / "hosts-updater"


def cli_env() -> dict[str, str]:
    env = os.environ.copy()
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(PACKAGE_DIR), env.get("PYTHONPATH", "")]))
    return env


def cli_command(*args: str) -> list[str]:
    """The updater as a fresh interpreter (works whether or not the package is pip-installed)."""
    return [sys.executable, "-m", "hosts_updater", *args]


def run_cli(*args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cli_command(*args), capture_output=True, text=True, timeout=timeout, env=cli_env())


def start_cli(*args: str, log: Path) -> subprocess.Popen[str]:
    """Start the daemon with its stderr going to ``log`` (read it while it runs with log.read_text())."""
    with open(log, "w") as handle:
        return subprocess.Popen(cli_command(*args), stdout=subprocess.DEVNULL, stderr=handle, text=True, env=cli_env())


def config_json(hosts: Sequence[dict[str, Any]] | None) -> str:
    return json.dumps({"hosts": None if hosts is None else list(hosts)})


class ConfigMapDir:
    """Mimics a kubelet ConfigMap volume: KEY -> ..data/KEY, ..data -> ..<timestamp> swapped atomically."""

    def __init__(self, root: Path, key: str = "config.json") -> None:
        self.root = root
        self.key = key
        self.generation = 0
        root.mkdir(parents=True, exist_ok=True)

    @property
    def path(self) -> Path:
        return self.root / self.key

    def publish(self, content: str) -> None:
        self.generation += 1
        version = self.root / f"..2026_11_26_00_00_{self.generation:02d}.{os.getpid()}"
        version.mkdir()
        (version / self.key).write_text(content)
        old_target = os.readlink(self.root / "..data") if (self.root / "..data").is_symlink() else None
        tmp_link = self.root / "..data_tmp"
        os.symlink(version.name, tmp_link)
        os.rename(tmp_link, self.root / "..data")  # the atomic swap kubelet does
        if not self.path.is_symlink():
            os.symlink(f"..data/{self.key}", self.path)
        if old_target:
            for child in (self.root / old_target).iterdir():
                child.unlink()
            (self.root / old_target).rmdir()
