"""Benchmark driver: ``PYTHONPATH=scripts .venv/bin/python -m bench.run [--quick] [--out FILE]``.

Starts its own local control plane (etcd, kube-apiserver, kube-controller-manager), helm-installs the
chart, runs `tcr-assistant run` as a host process with a token of the chart's ServiceAccount, and
measures (see BENCHMARKS.md): full reconcile at each N, rotation, restart resync, idle cost and link
latency at the detail N, ImagePullSecret cleanup, memory, and hosts-updater's RSS. Writes a JSON
results file and prints a Markdown summary.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import procstat, scenarios
from bench.env import KCM_QPS, BenchControlPlane, Env
from harness import REPO_ROOT, pki, tools
from harness.tcr_standin import TcrStandIn, https_context, serving

RESULTS_DIR = REPO_ROOT / "bench" / "results"

FULL: dict[str, Any] = {"sizes": [100, 1000, 10000], "detail": 1000, "sequential": 100, "bursts": 2, "burst_size": 50,
        "idle_s": 120.0, "idle_largest_s": 30.0, "cleanup_last": False, "hosts_intervals": 5, "repairs": 20,
        "label_toggles": 3, "admission_pods": 100, "token_lifetime": 30.0}
QUICK: dict[str, Any] = {"sizes": [40], "detail": 40, "sequential": 10, "bursts": 1, "burst_size": 10,
         "idle_s": 8.0, "idle_largest_s": 0.0, "cleanup_last": True, "hosts_intervals": 3, "repairs": 3,
         "label_toggles": 2, "admission_pods": 10, "token_lifetime": 10.0}

GOALS = [
    # (key, description, limit, unit)
    ("label_change_requests", "requests on Secrets and ServiceAccounts for one namespace label change (the most "
     "at any N)", 4.0, "requests"),
    ("link_p99_ms", "link latency p99 at 1,000 namespaces, one after another (namespace created -> default SA "
     "linked)", 100.0, "ms"),
    ("link_burst_p99_ms", "link latency p99 at 1,000 namespaces, bursts of 50 (same measure; includes "
     "kube-controller-manager creating `default`)", 300.0, "ms"),
    ("link_burst_own_p99_ms", "our share of it: `default` appeared -> linked, p99, bursts of 50", 50.0, "ms"),
    ("requests_per_namespace", "requests on Secrets and ServiceAccounts per namespace, one ImagePullSecret "
     "over existing namespaces (detail N)", 2.0, "requests"),
    ("conflicts", "409 Conflicts the controller met (every phase)", 0, "conflicts"),
    ("idle_poll_drift_per_min", "idle drift-check requests per minute at 1,000 namespaces, poll mode", 60.0, "/min"),
    ("idle_watch_drift_per_min", "idle drift-check requests per minute, watch mode", 0.0, "/min"),
    ("idle_cpu_millicores", "idle controller CPU at 1,000 namespaces, leader election on (poll mode)", 5.0,
     "millicores"),
    ("watch_repair_p99_ms", "watch mode: a deleted Secret back (p99)", 1000.0, "ms"),
    ("reconcile_1000_s", "full reconcile at 1,000 namespaces", 5.0, "s"),
    ("reconcile_10000_s", "full reconcile at 10,000 namespaces", 60.0, "s"),
    ("resync_writes", "writes on an idle resync (controller restart) and an idle window", 0, "writes"),
    ("rss_1000_mib", "controller RSS at 1,000 namespaces (peak)", 50.0, "MiB"),
    ("rss_10000_mib", "controller RSS at 10,000 namespaces (peak)", 96.0, "MiB"),
    ("hosts_updater_mib", "hosts-updater RSS (peak)", 20.0, "MiB"),
]


def log(message: str) -> None:
    print(f"[bench {datetime.now(UTC).strftime('%H:%M:%S')}] {message}", flush=True)


def versions() -> dict[str, str]:
    out: dict[str, str] = {"python": sys.version.split()[0]}
    for name in ("kube-apiserver", "helm"):
        args = ["--version"] if name == "kube-apiserver" else ["version", "--short"]
        try:
            out[name] = subprocess.run([str(tools.bin_dir() / name), *args], capture_output=True, text=True,
                                       timeout=30).stdout.strip()
        except OSError:
            out[name] = "?"
    digest = hashlib.sha256()
    for source in sorted((REPO_ROOT / "controller" / "tcr_assistant").glob("*.py")):
        digest.update(source.name.encode() + b"\0" + source.read_bytes())
    out["controller_sources_sha256"] = digest.hexdigest()[:16]
    try:
        out["git"] = subprocess.run(["git", "-C", str(REPO_ROOT), "describe", "--always", "--dirty"],
                                    capture_output=True, text=True, timeout=10).stdout.strip()
    except OSError:
        out["git"] = "?"
    return out


def run(profile: dict[str, Any], workdir: Path, profile_dir: Path | None = None,
        controller_args: tuple[str, ...] = ()) -> dict[str, Any]:
    results: dict[str, Any] = {"phases": []}
    sizes: list[int] = profile["sizes"]
    log("hosts-updater RSS")
    results["hosts_updater"] = scenarios.hosts_updater(profile["hosts_intervals"])
    log("starting the control plane")
    plane = BenchControlPlane(workdir / "cluster", tie_to_parent=True)
    t0 = time.monotonic()
    plane.up()
    results["control_plane_up_s"] = round(time.monotonic() - t0, 1)
    env: Env | None = None
    # The TCR API stand-in for the minted-token scenario, over HTTPS from a CA of its own, which the
    # controller is told to trust.
    api_tls = workdir / "tcr-api"
    standin = TcrStandIn(fixed_token=None, token_lifetime=profile["token_lifetime"])
    stack = contextlib.ExitStack()
    stack.enter_context(serving(standin, tls=https_context(pki.CertificateAuthority("bench-tcr-api-ca"), api_tls)))
    try:
        env = Env(plane, workdir)
        env.addon.extra_args = [*controller_args, f"--registry-ca-file={api_tls / 'ca.crt'}"]
        log("helm install")
        env.addon.install()
        for index, n in enumerate(sizes):
            phase: dict[str, Any] = {"n": n}
            results["phases"].append(phase)
            last = index == len(sizes) - 1
            env.stop_controller()
            log(f"N={n}: creating namespaces")
            phase["setup"] = env.grow_namespaces(n)
            if profile_dir is not None:
                env.addon.profile_out = profile_dir / f"controller-{n}.txt"
            log(f"N={n}: starting the controller")
            phase["startup_ready_s"] = round(env.start_controller(), 2)
            env.wait_quiet()
            phase["before"] = env.rss()
            name = f"bench-{n}"
            log(f"N={n}: full reconcile")
            phase["full_reconcile"] = scenarios.full_reconcile(env, name, "pw-1", timeout=max(300.0, n * 0.1))
            log(f"N={n}: {_brief(phase['full_reconcile'])}")
            log(f"N={n}: a namespace label put on and taken off")
            phase["label_change"] = scenarios.label_change(env, n, profile["label_toggles"])
            if n == profile["detail"]:
                log(f"N={n}: rotation")
                phase["rotation"] = scenarios.rotation(env, name, "pw-2", timeout=max(300.0, n * 0.1))
                log(f"N={n}: a minted token, renewed")
                phase["minted_renewal"] = scenarios.minted_renewal(env, f"minted-{n}", standin, api_tls / "ca.crt",
                                                                   timeout=max(300.0, n * 0.1))
                log(f"N={n}: restart resync")
                phase["restart_resync"] = scenarios.restart_resync(env, name)
                log(f"N={n}: idle {profile['idle_s']:.0f} s")
                phase["idle"] = scenarios.idle(env, profile["idle_s"])
                if profile["sequential"] or profile["bursts"]:
                    log(f"N={n}: link latency")
                    phase["link_latency"] = scenarios.link_latency(env, name, profile["sequential"],
                                                                   profile["bursts"], profile["burst_size"])
                log(f"N={n}: Pod admission with and without the Pod webhook")
                phase["pod_admission"] = scenarios.pod_admission(env, profile["admission_pods"])
                log(f"N={n}: drift repair in watch mode")
                phase["drift_watch"] = scenarios.drift_watch(env, name, profile["idle_s"], profile["repairs"])
            elif last and profile["idle_largest_s"]:
                log(f"N={n}: idle {profile['idle_largest_s']:.0f} s")
                phase["idle"] = scenarios.idle(env, profile["idle_largest_s"])
            if not last or profile["cleanup_last"]:
                log(f"N={n}: cleanup")
                phase["cleanup"] = scenarios.cleanup(env, name, timeout=max(300.0, n * 0.2))
            phase["after"] = env.rss()
    finally:
        if env is not None:
            env.stop_controller()
        plane.down()
        stack.close()
    return results


def _brief(r: dict[str, Any]) -> str:
    return (f"all linked {r['all_linked_s']} s, status {r['status_complete_s']} s, "
            f"{r['writes_per_namespace']} writes/ns, RSS {r['rss_mib']} MiB (peak {r['peak_rss_mib']})")


def evaluate(results: dict[str, Any]) -> list[dict[str, Any]]:
    by_n = {p["n"]: p for p in results["phases"]}
    values: dict[str, float | None] = {k: None for k, *_ in GOALS}
    for p in results["phases"]:
        if "link_latency" in p and p["n"] == 1000:
            values["link_p99_ms"] = p["link_latency"]["sequential"]["namespace_created_to_linked_ms"]["p99"]
            values["link_burst_p99_ms"] = p["link_latency"]["burst"]["namespace_created_to_linked_ms"]["p99"]
            values["link_burst_own_p99_ms"] = p["link_latency"]["burst"]["default_sa_to_linked_ms"]["p99"]
        if "idle" in p and "drift_watch" in p:
            values["requests_per_namespace"] = p["full_reconcile"]["object_requests_per_namespace"]
            values["idle_poll_drift_per_min"] = p["idle"]["drift_check_requests_per_min"]
            values["idle_cpu_millicores"] = p["idle"]["controller_cpu_millicores"]
            values["idle_watch_drift_per_min"] = p["drift_watch"]["idle"]["drift_check_requests_per_min"]
            values["watch_repair_p99_ms"] = p["drift_watch"]["repair_ms"]["p99"]
    values["conflicts"] = sum(p[k]["counts"]["conflicts"] for p in results["phases"] for k in p
                              if isinstance(p[k], dict) and "conflicts" in p[k].get("counts", {}))
    for n, key in ((1000, "reconcile_1000_s"), (10000, "reconcile_10000_s")):
        if n in by_n:
            values[key] = by_n[n]["full_reconcile"]["all_linked_s"]
    writes = [p[k]["writes_reconciled_resources"] for p in results["phases"] for k in ("restart_resync", "idle")
              if k in p]
    values["resync_writes"] = sum(writes) if writes else None
    for n, key in ((1000, "rss_1000_mib"), (10000, "rss_10000_mib")):
        if n in by_n:
            values[key] = by_n[n]["after"]["peak_rss_mib"]
    values["hosts_updater_mib"] = results["hosts_updater"]["peak_rss_mib"]
    label_costs = [p["label_change"]["requests_per_change_max"] for p in results["phases"] if "label_change" in p]
    values["label_change_requests"] = max(label_costs) if label_costs else None
    out = []
    for key, text, limit, unit in GOALS:
        v = values[key]
        out.append({"goal": key, "what": text, "limit": limit, "unit": unit, "value": v,
                    "met": None if v is None else v <= limit})
    return out


def markdown(results: dict[str, Any]) -> str:
    lines = ["| N | startup (ready) | full reconcile: all linked | status complete | writes/ns | requests/ns"
             " (Secrets + ServiceAccounts / all) | conflicts | CPU | RSS before IPS | RSS after / peak | cleanup |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for p in results["phases"]:
        r = p["full_reconcile"]
        cleanup = f"{p['cleanup']['cleanup_s']} s" if "cleanup" in p else "-"
        lines.append(f"| {p['n']:,} | {p['startup_ready_s']} s | {r['all_linked_s']} s | {r['status_complete_s']} s"
                     f" | {r['writes_per_namespace']} | {r.get('object_requests_per_namespace', '-')} /"
                     f" {r['requests_per_namespace']} | {r.get('conflicts', '-')} |"
                     f" {r['counts']['controller_cpu_s']} s | {p['before']['rss_mib']} MiB |"
                     f" {p['after']['rss_mib']} / {p['after']['peak_rss_mib']} MiB | {cleanup} |")
    for p in results["phases"]:
        if "link_latency" in p:
            lat = p["link_latency"]
            lines += ["", f"Link latency with {lat['namespaces_present']:,} namespaces present (ms):", "",
                      "| mode | measure | n | p50 | p90 | p99 | max |", "|---|---|---:|---:|---:|---:|---:|"]
            for group in ("sequential", "burst"):
                for measure, label in (("namespace_created_to_linked_ms", "namespace created -> linked"),
                                       ("default_sa_to_linked_ms", "default SA appeared -> linked"),
                                       ("namespace_created_to_default_sa_ms", "namespace created -> default SA")):
                    s = lat[group][measure]
                    lines.append(f"| {group} | {label} | {s['n']} | {s['p50']} | {s['p90']} | {s['p99']} |"
                                 f" {s['max']} |")
            if "host_steal" in lat:
                steal, driver = lat["host_steal"], lat["driver_gc"]
                lines.append(f"\nDuring it: {steal['share_of_cpus'] * 100:.1f} % of the CPUs' time taken by the"
                             f" hypervisor (steal, {steal['cpu_seconds']} s in {steal['window_s']} s); the driver's"
                             f" garbage collections: {driver['collections']}, longest {driver['max_pause_ms']} ms")
        if "rotation" in p:
            r = p["rotation"]
            lines.append(f"\nRotation at N={p['n']:,}: all {r['secrets']} Secrets rotated in {r['all_rotated_s']} s"
                         f" ({r['writes_per_secret']} writes, {r['requests_per_secret']} requests per Secret)")
        if "minted_renewal" in p:
            r = p["minted_renewal"]
            lines.append(f"\nMinted token at N={p['n']:,} (temp tokens of {r['token_lifetime_s']:g} s): the first in"
                         f" every namespace {r['first_token_everywhere_s']} s after the create; one renewal (minted"
                         f" at {r['renewed_at_fraction']} of the lifetime): {r['renewal_tcr_api_calls']} TCR API"
                         f" call(s), {r['renewal_requests']} requests to the API server"
                         f" ({r['renewal_requests_per_namespace']} per namespace), {r['renewal_writes']} writes,"
                         f" in every namespace within {r['renewal_spread_s']} s,"
                         f" {r['margin_before_old_expiry_s']} s before the old token expired; controller RSS"
                         f" {r['controller_rss_mib']} MiB (peak {r['controller_peak_rss_mib']}), the token helper's"
                         f" own peak {r['helper_peak_rss_mib']} MiB (a process per mint)")
        if "restart_resync" in p:
            r = p["restart_resync"]
            lines.append(f"\nRestart resync at N={p['n']:,}: ready {r['ready_s']} s, idle after {r['until_idle_s']} s,"
                         f" {r['controller_requests']} requests, {r['writes_reconciled_resources']} writes,"
                         f" CPU {r['controller_cpu_s']} s")
        for key, label in (("idle", "poll mode"), ("drift_watch", "watch mode")):
            if key not in p:
                continue
            r = p[key] if key == "idle" else p[key]["idle"]
            lines.append(f"\nIdle at N={p['n']:,}, {label}, over {r['window_s']} s:"
                         f" {r['controller_requests_per_min']} requests/min"
                         f" ({r.get('drift_check_requests_per_min', '-')} drift checks,"
                         f" {r.get('other_requests_per_min', '-')} Lease renewals and watch reconnections),"
                         f" {r['controller_cpu_millicores']} millicores, {r['writes_reconciled_resources']} writes,"
                         f" RSS {r['rss_mib']} MiB")
        if "drift_watch" in p:
            r = p["drift_watch"]
            lines.append(f"\nWatch mode at N={p['n']:,}: restart resync Secret requests {r['resync_secret_requests']};"
                         f" a deleted Secret back in p50 {r['repair_ms']['p50']} ms, max {r['repair_ms']['max']} ms"
                         f" (n = {r['repair_ms']['n']})")
    for p in results["phases"]:
        if "pod_admission" in p:
            r = p["pod_admission"]
            given = r["given_the_entry_by_the_webhook"]
            lines.append(f"\nPod admission at N={p['n']:,} ({r['pods']} Pods, {given} given"
                         f" the entry by the webhook): p50 / p99 {r['with_webhook_ms']['p50']} /"
                         f" {r['with_webhook_ms']['p99']} ms with the Pod webhook, {r['without_webhook_ms']['p50']} /"
                         f" {r['without_webhook_ms']['p99']} ms without (added: {r['added_p50_ms']} /"
                         f" {r['added_p99_ms']} ms)")
    label_rows = [p for p in results["phases"] if "label_change" in p]
    if label_rows:
        lines += ["", "A namespace label put on / taken off (spec.namespaceSelector; requests on Secrets and "
                  "ServiceAccounts per change, time until served / no longer served):", "",
                  "| N | requests: label on | requests: label off | on: p50 / max | off: p50 / max |",
                  "|---:|---|---|---:|---:|"]
        for p in label_rows:
            r = p["label_change"]
            lines.append(f"| {p['n']:,} | {r['add_requests']} | {r['remove_requests']} |"
                         f" {r['add_ms']['p50']} / {r['add_ms']['max']} ms | {r['remove_ms']['p50']} /"
                         f" {r['remove_ms']['max']} ms |")
    h = results["hosts_updater"]
    lines.append(f"\nhosts-updater: RSS {h['rss_mib']} MiB (peak {h['peak_rss_mib']} MiB)"
                 f" over {h['intervals']} intervals")
    lines += ["", "| goal | limit | measured | met |", "|---|---:|---:|---|"]
    for g in results["goals"]:
        met = "n/a" if g["met"] is None else ("yes" if g["met"] else "**no**")
        lines.append(f"| {g['what']} | {g['limit']} {g['unit']} | {g['value']} | {met} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small N for CI smoke (< 2 minutes)")
    parser.add_argument("--sizes", help="comma list of N (overrides the mode's); the detail N is the one "
                        "nearest 1,000")
    parser.add_argument("--idle", type=float, help="idle window in seconds (overrides the mode's)")
    parser.add_argument("--no-latency", action="store_true", help="skip the link-latency measurement")
    parser.add_argument("--out", type=Path, help="results JSON (default: bench/results/<mode>-<UTC time>.json)")
    parser.add_argument("--profile", type=Path, metavar="DIR",
                        help="run the controller under bench.profiling (all-thread sampler; adds overhead, so "
                        "figures are not comparable); reports go to DIR/controller-<N>.txt")
    parser.add_argument("--controller-arg", action="append", default=[], metavar="ARG",
                        help="extra `tcr-assistant run` argument, e.g. --controller-arg=--workers=16 (repeatable)")
    parser.add_argument("--workdir", type=Path, help="state and logs (default: a temporary directory, removed "
                        "unless the run fails)")
    parser.add_argument("--summarize", type=Path, metavar="FILE",
                        help="print the Markdown summary of an existing results file and exit")
    args = parser.parse_args(argv)
    if args.summarize is not None:
        print(markdown(json.loads(args.summarize.read_text())))
        return 0
    profile: dict[str, Any] = dict(QUICK if args.quick else FULL)
    mode = "quick" if args.quick else "full"
    if args.sizes:
        profile["sizes"] = sorted(int(s) for s in args.sizes.split(","))
        profile["detail"] = min(profile["sizes"], key=lambda n: abs(n - 1000))
        mode = "custom"
    if args.no_latency:
        profile["sequential"] = profile["bursts"] = 0
    if args.idle is not None:
        profile["idle_s"] = args.idle
    started = datetime.now(UTC)
    out = args.out or RESULTS_DIR / f"{mode}-{started.strftime('%Y%m%dT%H%M%SZ')}.json"
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="tcr-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    meta: dict[str, Any] = {
        "command": shlex.join(["python", "-m", "bench.run", *(argv if argv is not None else sys.argv[1:])]),
        "mode": mode, "profile": profile, "started": started.isoformat(timespec="seconds"),
        "machine": procstat.machine(), "versions": versions(), "kube_controller_manager_qps": KCM_QPS,
        "workdir": str(workdir),
    }
    log(f"{mode} benchmark; state in {workdir}")
    t0 = time.monotonic()
    if args.profile is not None:
        args.profile = args.profile.resolve()
        args.profile.mkdir(parents=True, exist_ok=True)
        os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))
        meta["profiled"] = True
    meta["controller_args"] = args.controller_arg
    results = run(profile, workdir, args.profile, tuple(args.controller_arg))
    meta["duration_s"] = round(time.monotonic() - t0, 1)
    meta["loadavg_end"] = procstat.machine()["loadavg"]
    results = {"meta": meta, **results}
    results["goals"] = evaluate(results)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(markdown(results))
    log(f"results: {out} ({meta['duration_s']} s)")
    if args.workdir is None:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
