"""Smoke test of the benchmark driver: `python -m bench.run --quick` end to end (its own control plane,
the chart, the controller as a host process). Checks that the results file exists and holds sane,
non-empty figures; never asserts on timings (those go to BENCHMARKS.md)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from harness import REPO_ROOT, tools


def _positive(value: object) -> bool:
    return isinstance(value, int | float) and value > 0


@pytest.mark.cluster  # bench.run starts its own control plane
def test_quick_bench_writes_results(tmp_path: Path) -> None:
    for tool in ("kube-apiserver", "helm"):
        assert (tools.bin_dir() / tool).exists(), f"{tool} is not built: run 'make setup'"
    out = tmp_path / "quick.json"
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT / "scripts"), str(REPO_ROOT),
                                                       env.get("PYTHONPATH")]))
    proc = subprocess.run(
        [sys.executable, "-m", "bench.run", "--quick", "--out", str(out), "--workdir", str(tmp_path / "work")],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=420,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "| goal |" in proc.stdout  # the Markdown summary
    results = json.loads(out.read_text())

    meta = results["meta"]
    assert meta["mode"] == "quick" and meta["machine"]["nproc"] >= 1 and meta["machine"]["cpu_model"]
    assert results["phases"], "no phase measured"
    phase = results["phases"][0]
    n = phase["n"]
    full = phase["full_reconcile"]
    assert full["namespaces"] == n and full["service_accounts"] == n  # each `default`; `builder` is not served
    assert full["final_status"]["secretsSuccess"] == full["final_status"]["secretsDesired"] >= n
    assert full["final_status"]["sAsSuccess"] == full["final_status"]["sAsDesired"] >= n
    for key in ("all_secrets_s", "all_linked_s", "status_complete_s", "writes_per_namespace", "rss_mib"):
        assert _positive(full[key]), (key, full[key])
    # every namespace needs its Secret and one link: two writes each, and two requests
    assert 1.9 <= full["writes_per_namespace"] <= 2.5, full["writes_per_namespace"]
    assert full["requests_per_namespace"] <= 2.5, full["requests_per_namespace"]
    assert full["conflicts"] == 0

    # One namespace's label on, then off: its Secret and its `default` link, nothing else.
    label = phase["label_change"]
    assert label["add_requests"] == [2, 2] and label["remove_requests"] == [3, 3], label
    assert _positive(label["add_ms"]["max"]) and _positive(label["remove_ms"]["max"])

    admission = phase["pod_admission"]  # Pods created with the Pod webhook, then without it
    assert admission["pods"] == 10 and admission["given_the_entry_by_the_webhook"] >= 5, admission
    assert _positive(admission["with_webhook_ms"]["max"]) and _positive(admission["without_webhook_ms"]["max"])

    rotation = phase["rotation"]
    assert rotation["secrets"] >= n and _positive(rotation["all_rotated_s"])

    latency = phase["link_latency"]
    for group in ("sequential", "burst"):
        stats = latency[group]["namespace_created_to_linked_ms"]
        assert stats["n"] > 0 and _positive(stats["max"]) and stats["p50"] <= stats["p99"] <= stats["max"]

    for key in ("restart_resync", "idle"):  # a restart's resync and an idle spell write nothing
        assert phase[key]["writes_reconciled_resources"] == 0, (key, phase[key])
    assert _positive(phase["idle"]["controller_requests_per_min"])
    watch = phase["drift_watch"]
    assert watch["repair_ms"]["n"] == 3 and _positive(watch["repair_ms"]["max"])
    assert watch["idle"]["drift_check_requests_per_min"] == 0  # watch mode reads no Secret at rest
    assert set(watch["resync_secret_requests"]) <= {"LIST secrets", "WATCH secrets"}, watch["resync_secret_requests"]
    assert _positive(phase["cleanup"]["cleanup_s"])
    assert _positive(phase["after"]["peak_rss_mib"])

    hosts = results["hosts_updater"]
    assert hosts["hosts_file_written"] and _positive(hosts["peak_rss_mib"])
    assert {g["goal"] for g in results["goals"]} >= {"link_p99_ms", "resync_writes", "hosts_updater_mib",
                                                     "requests_per_namespace", "conflicts", "watch_repair_p99_ms"}
