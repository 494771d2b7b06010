"""Helpers to run the values wizard, and the TCR API stand-in it talks to in these tests
(`harness.tcr_standin`, one fixed user and token per call, as the wizard's tests expect)."""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import support
from harness.tcr_standin import INSTANCE, ISSUED_TOKEN, ISSUED_USER, SECRET_KEY, TOKEN_ID, serving
from harness.tcr_standin import TcrStandIn as FakeTcr
from values_wizard import CHART
from values_wizard.cli import main as wizard_main

__all__ = ["INSTANCE", "ISSUED_TOKEN", "ISSUED_USER", "SECRET_KEY", "TOKEN_ID", "FakeTcr", "serving"]

# -------------------------------------------------------------------------------------- runner


class TerminalIO(io.StringIO):
    """A text stream that says it is a terminal."""

    def isatty(self) -> bool:
        return True


@dataclass
class Result:
    status: int
    stdout: str
    stderr: str

    @property
    def errors(self) -> list[str]:
        return [line for line in self.stderr.splitlines() if "error:" in line]


def run(args: Sequence[str], *, stdin: str = "", env: Mapping[str, str] | None = None,
        stdout: io.StringIO | None = None) -> Result:
    """Run the wizard in this process (argparse usage errors come back as status 2)."""
    out = io.StringIO() if stdout is None else stdout
    err = io.StringIO()
    try:
        with redirect_stderr(err), redirect_stdout(out):  # argparse writes to sys.stderr / sys.stdout
            status = wizard_main(list(args), stdin=io.StringIO(stdin), stdout=out, stderr=err,
                                 environ=dict(env or {}))
    except SystemExit as exc:  # argparse: --help, usage errors
        status = int(exc.code or 0)
    return Result(status, out.getvalue(), err.getvalue())


def api_env(fake: FakeTcr, **extra: str) -> dict[str, str]:
    return {"TENCENTCLOUD_SECRET_ID": fake.secret_id, "TENCENTCLOUD_SECRET_KEY": fake.secret_key,
            "TCR_API_ENDPOINT": fake.endpoint, **extra}


# -------------------------------------------------------------------------------------- helm

def helm_template(values_file: Path) -> list[dict[str, Any]]:
    """The chart's manifests as `helm template` renders them with ``values_file``."""
    return support.helm_template("tcr-addon", str(CHART), "-n", "tcr-system", "-f", str(values_file))
