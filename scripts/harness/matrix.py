"""The support matrix: the compatibility suite on every pinned Kubernetes minor under both Helm
majors, and the node promise (real Pods) on the oldest and the newest minor.

Each cell is one pytest run in a process of its own, with `TCR_ADDON_KUBERNETES` and
`TCR_ADDON_HELM` choosing the minor and the Helm major, and a marker expression choosing the tests
(markers in pyproject.toml). `run --record` writes a dated results file under docs/support/, and
`table` writes the support tables of README.md and chart/README.md from the newest one, so the
tables say only what a run proved.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from harness import REPO_ROOT, VENV, previous, tools

RESULTS_DIR = REPO_ROOT / "docs" / "support"
READMES = (REPO_ROOT / "README.md", REPO_ROOT / "chart" / "README.md")
TABLE_BEGIN = "<!-- support-table: begin (scripts: python -m harness.matrix table) -->"
TABLE_END = "<!-- support-table: end -->"
# What each scope runs (markers in pyproject.toml). `make test` leaves the helm paths (GitOps
# render, OCI install) out of its run on the oldest minor to stay within its time budget: the whole
# suite before it runs them with Helm 4, the matrix's node cells with both majors.
CONTROL_PLANE_TESTS = "compat and not node"
NODE_TESTS = "compat or promise or helm_paths"
MAKE_TEST_NODE_TESTS = "compat or promise"
KIND_TESTS = "kind"
SCOPE_WORDS = {"node": "node with real Pods", "kind": "kind cluster", "control plane": "control plane"}
# Helm 4 installs on the newest node, Helm 3 on the oldest; `make test` runs the oldest's cell.
NODE_HELM = {tools.KUBERNETES_OLDEST: "3", tools.KUBERNETES_NEWEST: "4"}


@dataclass(frozen=True)
class Cell:
    minor: str
    helm: str  # major
    scope: str  # "control plane", "node" or "kind"
    markers: str = ""  # the pytest marker expression (default: the scope's)

    def __post_init__(self) -> None:
        if not self.markers:
            object.__setattr__(self, "markers", NODE_TESTS if self.scope == "node" else CONTROL_PLANE_TESTS)

    @property
    def name(self) -> str:
        return f"{self.minor}/helm{self.helm}/{self.scope.replace(' ', '-')}"


def node_markers(minor: str) -> str:
    """A node cell's tests: the upgrade from the previous release too where that release installs
    (its chart's kubeVersion; on an older minor `helm install` of it is refused, so it is not selected)."""
    if tools.minor_number(minor) >= previous.MIN_KUBERNETES_MINOR:
        return f"{NODE_TESTS} or upgrade"
    return NODE_TESTS


def cells() -> list[Cell]:
    """The node cells on the oldest and newest (their builds come with `make setup`), then every minor
    under both Helm majors on a control plane (building a minor the first time it is needed)."""
    found = [Cell(minor, major, "node", node_markers(minor)) for minor, major in NODE_HELM.items()]
    found += [Cell(minor, major, "control plane")
              for minor in tools.KUBERNETES_RELEASES for major in tools.HELM_RELEASES]
    # The e2e journey on a real kind cluster (its node image: the newest minor), with the default Helm.
    found.append(Cell(tools.KUBERNETES_NEWEST, tools.HELM_DEFAULT_MAJOR, "kind", KIND_TESTS))
    return found


def oldest_node_cell() -> Cell:
    """What `make test` adds to the whole suite on the newest minor."""
    return Cell(tools.KUBERNETES_OLDEST, NODE_HELM[tools.KUBERNETES_OLDEST], "node", MAKE_TEST_NODE_TESTS)


def junit_counts(path: Path) -> dict[str, int]:
    suite = ET.parse(path).getroot()
    suite = suite if suite.tag == "testsuite" else suite.find("testsuite")  # type: ignore[assignment]
    counts = {key: int(suite.get(key, "0")) for key in ("tests", "failures", "errors", "skipped")}
    counts["passed"] = counts["tests"] - counts["failures"] - counts["errors"] - counts["skipped"]
    return counts


def run_cell(cell: Cell, pytest_args: list[str]) -> dict[str, Any]:
    """Build what the cell needs (timed: the cold build of a minor), then its pytest run."""
    started = time.monotonic()
    tools.ensure_kubernetes(cell.minor, node=cell.scope != "control plane")
    build_seconds = time.monotonic() - started
    env = {**os.environ, "TCR_ADDON_KUBERNETES": cell.minor, "TCR_ADDON_HELM": cell.helm}
    print(f"[matrix] {cell.name}: pytest -m {cell.markers!r}", flush=True)
    with tempfile.TemporaryDirectory(prefix="matrix-") as tmp:
        junit = Path(tmp) / "junit.xml"
        started = time.monotonic()
        proc = subprocess.run([str(VENV / "bin" / "python"), "-m", "pytest", "-m", cell.markers,
                               f"--junitxml={junit}", *pytest_args], cwd=REPO_ROOT, env=env)
        seconds = time.monotonic() - started
        counts = junit_counts(junit) if junit.exists() else {"tests": 0, "failures": 0, "errors": 1, "skipped": 0,
                                                              "passed": 0}
    result = {**asdict(cell), "kubernetes": tools.kubernetes_release(cell.minor),
              "helm_version": tools.HELM_RELEASES[cell.helm], **counts,
              "exit_code": proc.returncode, "seconds": round(seconds, 1), "build_seconds": round(build_seconds, 1)}
    print(f"[matrix] {cell.name}: {counts['passed']} passed, {counts['failures']} failed, {counts['errors']} errors, "
          f"{counts['skipped']} skipped in {seconds:.0f} s (build {build_seconds:.0f} s)", flush=True)
    return result


def ok(result: dict[str, Any]) -> bool:
    return bool(result["exit_code"] == 0 and result["passed"] > 0 and not result["failures"] and not result["errors"]
                and not result["skipped"])


def git_describe() -> str:
    proc = subprocess.run(["git", "-C", str(REPO_ROOT), "describe", "--always", "--dirty"],
                          capture_output=True, text=True, check=False)
    return proc.stdout.strip() or "?"


def newest_results() -> Path:
    found = sorted(RESULTS_DIR.glob("matrix-*.json"))
    if not found:
        raise SystemExit(f"no results under {RESULTS_DIR}: run 'make test-matrix'")
    return found[-1]


def table(results: dict[str, Any]) -> str:
    """The support table: a row per minor, a column per Helm major, each cell what passed there."""
    by_cell: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for result in results["cells"]:
        by_cell.setdefault((result["minor"], result["helm"]), []).append(result)
    majors = sorted(tools.HELM_RELEASES)
    header = "| Kubernetes | " + " | ".join(f"Helm {m} ({tools.HELM_RELEASES[m]})" for m in majors) + " |"
    lines = [header, "|---|" + "---|" * len(majors)]
    for minor, release in tools.KUBERNETES_RELEASES.items():
        row = [f"{minor} ({release})"]
        for major in majors:
            done = by_cell.get((minor, major), [])
            words = []
            for result in sorted(done, key=lambda r: list(SCOPE_WORDS).index(r["scope"])):
                state = f"{result['passed']} passed" if ok(result) else "**failed**"
                what = SCOPE_WORDS[result["scope"]]
                words.append(f"{what}: {state}")
            row.append("; ".join(words) or "not tested")
        lines.append("| " + " | ".join(row) + " |")
    stamp = f"From `{RESULTS_DIR.relative_to(REPO_ROOT)}/{results['file']}` (git {results['git']})."
    return "\n".join([*lines, "", stamp])


def write_tables(check: bool = False) -> int:
    path = newest_results()
    results = {**json.loads(path.read_text()), "file": path.name}
    wanted = f"{TABLE_BEGIN}\n{table(results)}\n{TABLE_END}"
    stale = []
    for readme in READMES:
        text = readme.read_text()
        if TABLE_BEGIN not in text or TABLE_END not in text:
            raise SystemExit(f"{readme} has no support-table markers")
        head, rest = text.split(TABLE_BEGIN, 1)
        new = head + wanted + rest.split(TABLE_END, 1)[1]
        if new != text:
            stale.append(str(readme.relative_to(REPO_ROOT)))
            if not check:
                readme.write_text(new)
    if check and stale:
        print(f"support table out of date in {', '.join(stale)}: run 'PYTHONPATH=scripts .venv/bin/python -m "
              "harness.matrix table'", file=sys.stderr)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m harness.matrix",
        description="The support matrix. 'run' runs the compatibility suite on every pinned Kubernetes minor "
        f"({', '.join(tools.KUBERNETES_RELEASES)}) under Helm 3 and Helm 4, the node promise on "
        f"{tools.KUBERNETES_OLDEST} and {tools.KUBERNETES_NEWEST}, and the e2e journey on a kind cluster of "
        f"{tools.KUBERNETES_NEWEST}, building each minor (and the kind node image) first if needed; "
        "'table' writes the support tables of README.md and chart/README.md from the newest results file.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run the cells (default: all of them)")
    run.add_argument("--oldest-node", action="store_true",
                     help=f"only {tools.KUBERNETES_OLDEST} with its node, under "
                     f"Helm {NODE_HELM[tools.KUBERNETES_OLDEST]} (what make test adds to the newest's full run)")
    run.add_argument("--record", action="store_true",
                     help="write docs/support/matrix-<date>.json and the README tables from it")
    run.add_argument("pytest_args", nargs="*", help="more pytest arguments (after --)")
    table_cmd = sub.add_parser("table", help="write the README tables from the newest results file")
    table_cmd.add_argument("--check", action="store_true", help="only say whether they are up to date")
    args = parser.parse_args(argv)
    if args.command == "table":
        return write_tables(args.check)
    chosen = [oldest_node_cell()] if args.oldest_node else cells()
    started = time.monotonic()
    results = [run_cell(cell, args.pytest_args) for cell in chosen]
    failed = [r for r in results if not ok(r)]
    print(f"[matrix] {len(results) - len(failed)} of {len(results)} cells passed "
          f"in {time.monotonic() - started:.0f} s")
    if args.record:
        RESULTS_DIR.mkdir(parents=True, exist_ok=True)
        path = RESULTS_DIR / f"matrix-{dt.date.today():%Y%m%d}.json"
        path.write_text(json.dumps({"date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
                                    "git": git_describe(), "cells": results}, indent=2) + "\n")
        print(f"[matrix] results: {path.relative_to(REPO_ROOT)}")
        write_tables()
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
