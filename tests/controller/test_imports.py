"""The direction of imports in docs/DESIGN.md "The controller": pure modules import no I/O
module, and the runtime knows nothing of ImagePullSecrets."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "controller" / "tcr_assistant"
PURE = ("reconcile", "status", "observed", "validation", "rules", "admission", "work", "api", "certificates",
        "selectors", "podadmission")
IO_MODULES = {"kube", "apiclient", "controller", "cli", "webhook", "servingcert", "podwebhook", "runtime", "metrics",
              "kubernetes", "socket", "urllib3", "ssl", "subprocess", "threading", "prometheus_client"}
DOMAIN = {"reconcile", "status", "observed", "validation", "rules", "admission", "work", "state", "controller", "api",
          "certificates", "servingcert", "selectors", "podadmission", "podwebhook"}


def imported(path: Path) -> set[str]:
    """First components of the modules ``path`` imports (relative ones without their dots)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level and not node.module:
                names.update(alias.name for alias in node.names)
            elif node.module:
                names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("module", PURE)
def test_pure_modules_import_no_io(module: str) -> None:
    assert not imported(PACKAGE / f"{module}.py") & IO_MODULES


@pytest.mark.parametrize("path", sorted((PACKAGE / "runtime").glob("*.py")), ids=lambda p: p.name)
def test_runtime_knows_nothing_of_image_pull_secrets(path: Path) -> None:
    assert not imported(path) & DOMAIN


def test_the_check_sees_imports() -> None:
    assert {"api", "validation", "observed"} <= imported(PACKAGE / "reconcile.py")
    assert "kube" in imported(PACKAGE / "controller.py")


def test_the_controller_process_never_imports_cryptography() -> None:
    """cryptography costs about 10 MiB of RSS: only certificates.py imports it, and nothing imports
    certificates.py (the keeper runs it as ``python -m tcr_assistant.certificates``)."""
    importers = sorted(p.name for p in PACKAGE.rglob("*.py") if "cryptography" in imported(p))
    assert importers == ["certificates.py"]
    assert sorted(p.name for p in PACKAGE.rglob("*.py") if "certificates" in imported(p)) == []
