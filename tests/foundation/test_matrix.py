"""The support matrix: which cells run, how a run is counted, and that the READMEs say what the
newest recorded run proved (nothing more)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from harness import matrix, tools


def test_cells_cover_every_minor_under_both_majors_and_a_node_on_the_oldest_and_newest() -> None:
    cells = matrix.cells()
    planes = {(c.minor, c.helm) for c in cells if c.scope == "control plane"}
    assert planes == {(m, h) for m in tools.KUBERNETES_RELEASES for h in tools.HELM_RELEASES}
    nodes = {(c.minor, c.helm) for c in cells if c.scope == "node"}
    assert {minor for minor, _ in nodes} == {tools.KUBERNETES_OLDEST, tools.KUBERNETES_NEWEST}
    assert {helm for _, helm in nodes} == set(tools.HELM_RELEASES), "each Helm major installs on a node"
    oldest = matrix.oldest_node_cell()
    assert (oldest.minor, oldest.helm, oldest.scope) in {(c.minor, c.helm, c.scope) for c in cells}
    assert "compat" in oldest.markers and "promise" in oldest.markers
    assert all("not node" in c.markers for c in cells if c.scope == "control plane"), "no node build needed"
    kind = [c for c in cells if c.scope == "kind"]
    assert [(c.minor, c.helm, c.markers) for c in kind] == [(tools.KUBERNETES_NEWEST, tools.HELM_DEFAULT_MAJOR, "kind")]


def test_junit_counts(tmp_path: Path) -> None:
    junit = tmp_path / "junit.xml"
    junit.write_text('<testsuites><testsuite name="pytest" tests="7" failures="1" errors="1" skipped="2">'
                     "</testsuite></testsuites>")
    assert matrix.junit_counts(junit) == {"tests": 7, "failures": 1, "errors": 1, "skipped": 2, "passed": 3}


def result(minor: str, helm: str, scope: str, **counts: int) -> dict[str, Any]:
    base = {"tests": 10, "failures": 0, "errors": 0, "skipped": 0, "passed": 10, "exit_code": 0}
    return {"minor": minor, "helm": helm, "scope": scope, **base, **counts}


def test_table_says_what_passed_where_and_marks_a_failure() -> None:
    cells = [result("1.30", "3", "control plane"), result("1.30", "3", "kind", passed=1, tests=1),
             result("1.30", "3", "node", passed=40, tests=40),
             result("1.32", "4", "control plane", failures=1, passed=9)]
    text = matrix.table({"cells": cells, "file": "matrix-x.json", "git": "abc"})
    row_130 = next(line for line in text.splitlines() if line.startswith("| 1.30 "))
    assert "node with real Pods: 40 passed; kind cluster: 1 passed; control plane: 10 passed" in row_130
    assert row_130.endswith("| not tested |"), "nothing ran under Helm 4 on 1.30 here"
    row_132 = next(line for line in text.splitlines() if line.startswith("| 1.32 "))
    assert "control plane: **failed**" in row_132
    assert "`docs/support/matrix-x.json` (git abc)" in text


def test_a_skip_or_an_empty_run_is_not_a_pass() -> None:
    assert matrix.ok(result("1.30", "3", "node"))
    assert not matrix.ok(result("1.30", "3", "node", skipped=1, passed=9))
    assert not matrix.ok(result("1.30", "3", "node", passed=0, tests=0))
    assert not matrix.ok(result("1.30", "3", "node", exit_code=1))


def test_the_newest_recorded_run_passed_every_cell_and_the_readmes_show_it() -> None:
    newest = json.loads(matrix.newest_results().read_text())
    recorded = {(r["minor"], r["helm"], r["scope"]) for r in newest["cells"] if matrix.ok(r)}
    wanted = {(c.minor, c.helm, c.scope) for c in matrix.cells()}
    assert wanted <= recorded, f"cells not passed in {matrix.newest_results().name}: {sorted(wanted - recorded)}"
    assert all(r["kubernetes"] == tools.KUBERNETES_RELEASES[r["minor"]] for r in newest["cells"]), "pins moved"
    assert matrix.write_tables(check=True) == 0, "run: PYTHONPATH=scripts .venv/bin/python -m harness.matrix table"
