"""Policy scanners: checkov finds nothing on any render of the chart (defaults and every
chart/ci file). A finding that stays by design carries a `checkov.io/skipN` annotation on its
object, with the reason."""

from __future__ import annotations

import copy
import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from chart_support import CASES, render

from harness import tools


def checkov(directory: Path) -> dict[str, Any]:
    binary = tools.bin_dir() / "checkov"
    assert binary.exists(), "checkov is not installed: run 'make setup'"
    proc = subprocess.run([str(binary), "-d", str(directory), "--framework", "kubernetes", "--compact", "-o", "json"],
                          capture_output=True, text=True, timeout=300)
    assert proc.stdout, proc.stderr[-3000:]
    report = json.loads(proc.stdout)
    reports = report if isinstance(report, list) else [report]
    (kubernetes,) = [r for r in reports if r.get("check_type") == "kubernetes"]
    return dict(kubernetes)


BARE = "bare-hosts-updater-daemonset.yaml"


def bare_daemonset() -> tuple[dict[str, Any], set[str]]:
    """The hosts-updater DaemonSet without its `checkov.io/skipN` annotations, and the checks they skipped."""
    manifests = render(CASES["tke-two-registries-with-hosts-values"])
    (daemonset,) = [copy.deepcopy(m) for m in manifests if m["kind"] == "DaemonSet"]
    annotations = daemonset["metadata"]["annotations"]
    skipped = {v.split("=", 1)[0] for k, v in annotations.items() if k.startswith("checkov.io/skip")}
    daemonset["metadata"]["annotations"] = {k: v for k, v in annotations.items() if not k.startswith("checkov.io/skip")}
    return daemonset, skipped


@pytest.fixture(scope="module")
def scan(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One checkov run (it takes seconds to start) over every render and, in a file of its own,
    the bare DaemonSet."""
    directory = tmp_path_factory.mktemp("renders")
    for name, values in CASES.items():
        (directory / f"{name}.yaml").write_text(yaml.safe_dump_all(render(values)))
    (directory / BARE).write_text(yaml.safe_dump(bare_daemonset()[0]))
    return checkov(directory)


def of_bare(check: dict[str, Any]) -> bool:
    return Path(check["file_path"]).name == BARE


@pytest.fixture(scope="module")
def report(scan: dict[str, Any]) -> dict[str, Any]:
    """The scan's results for the chart's renders only."""
    results = {kind: [c for c in checks if not of_bare(c)] for kind, checks in scan["results"].items()}
    return {**scan, "results": results}


def test_no_failed_check_on_any_render(report: dict[str, Any]) -> None:
    failed = [f"{f['check_id']} {f['resource']} ({f['file_path']})" for f in report["results"]["failed_checks"]]
    assert failed == []
    results = report["results"]
    resources = {(c["file_path"], c["resource"]) for kind in ("passed_checks", "skipped_checks") for c in results[kind]}
    assert len(resources) >= 10 * len(CASES)
    assert len(results["passed_checks"]) > 1000


def test_every_skip_gives_its_reason(report: dict[str, Any]) -> None:
    skipped = report["results"]["skipped_checks"]
    assert skipped, "the chart's by-design findings are annotated, so some checks are skipped"
    for check in skipped:
        reason = str((check.get("check_result") or {}).get("suppress_comment") or "")
        assert len(reason) > 20, (check["check_id"], check["resource"], reason)


def test_the_scan_finds_what_the_annotations_cover(scan: dict[str, Any]) -> None:
    """Without its annotations the hosts-updater DaemonSet fails the checks they skip: the scan
    looks at these objects, and each annotation is needed."""
    _, skipped = bare_daemonset()
    failed = {f["check_id"] for f in scan["results"]["failed_checks"] if of_bare(f)}
    assert skipped - {"CKV2_K8S_6"} <= failed  # (the NetworkPolicy check needs the whole render)
    assert {"CKV_K8S_23", "CKV_K8S_40"} <= failed
