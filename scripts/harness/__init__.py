"""The tcr-addon development harness: tools, local control plane, add-on runner."""

from __future__ import annotations

import os
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
VENV = REPO_ROOT / ".venv"


def use_venv() -> None:
    """Re-run the calling script under the repository's .venv (made by `make setup`) if it exists."""
    python = VENV / "bin" / "python"
    try:
        usable = python.exists() and Path(sys.prefix).resolve() != VENV.resolve()
    except OSError:  # an unprivileged user may not see where the venv's interpreter lives
        usable = False
    if usable:
        os.execv(str(python), [str(python), sys.argv[0], *sys.argv[1:]])
