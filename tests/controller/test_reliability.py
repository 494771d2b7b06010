"""Integration tests of reliability: watches that survive 410 Gone, stalled connections and
API server outages/restarts; Lease leader election; SIGTERM; health and metrics endpoints."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any

from controller_support import ADDON_NS, K, Proxy, RunningController

from harness.cluster import ControlPlane, free_port
from support import wait_for
from tcr_assistant.k8s.client import LEASES, KubeError
from tcr_assistant.k8s.leaderelection import LeaderElector
from tcr_assistant.spec import api


def uid() -> str:
    return uuid.uuid4().hex[:8]


def serve_new_namespaces(k: K, prefix: str, ips_cleanup: list[str]) -> str:
    """An ImagePullSecret serving namespaces whose names we choose later; returns its Secret name."""
    name = f"{prefix}-{uid()}"
    ips_cleanup.append(name)
    k.create_ips(
        name,
        {
            "namespaces": "*",
            "serviceAccounts": "default",
            "docker": {"server": "demo.tencentcloudcr.com", "username": "u", "password": "p"},
        },
    )
    return api.secret_name(name)


def linked(k: K, ns: str, secret: str) -> bool:
    return secret in k.pull_secrets(ns)


class GoneOnce:
    """Wraps the controller's Kube for one reflector: the next watch answers 410 Gone (as an HTTP
    status or as an ERROR event, the two ways the API server says it), after ``gap`` ran while
    no watch was open. (A fresh etcd is not compacted, so an old resourceVersion alone does not
    give 410 here.)"""

    def __init__(self, kube: Any, gap: Callable[[], None], as_event: bool) -> None:
        self._kube = kube
        self._gap = gap
        self._as_event = as_event
        self.fired = False

    def __getattr__(self, name: str) -> Any:
        return getattr(self._kube, name)

    def watch(self, *args: Any, **kwargs: Any) -> Iterator[dict[str, Any]]:
        if self.fired:
            yield from self._kube.watch(*args, **kwargs)
            return
        self.fired = True
        self._gap()
        if self._as_event:
            yield {"type": "ERROR", "object": {"kind": "Status", "code": 410, "reason": "Expired"}}
            return
        raise KubeError(410, "Gone", "too old resource version")


def test_watch_410_gone_relists_without_losing_events(
    k: K, controller: RunningController, ips_cleanup: list[str]
) -> None:
    secret = serve_new_namespaces(k, "gone", ips_cleanup)
    doomed = k.create_namespace()
    controller.settle()
    c = controller.controller
    reflectors = {r.name: r for r in c.manager.reflectors}
    before = {n: r.relists for n, r in reflectors.items()}
    created: list[str] = []

    def gap_namespaces() -> None:  # while the namespace watch is down: one created, one deleted
        created.append(k.create_namespace())
        k.delete_namespace(doomed)
        wait_for(lambda: k.kube.get(f"/api/v1/namespaces/{doomed}") is None, timeout=60, what="namespace gone")

    for name, r in reflectors.items():
        r.kube = GoneOnce(
            r.kube,
            gap_namespaces if name == "namespaces" else lambda: None,  # type: ignore[assignment]
            as_event=name in ("namespaces", "imagepullsecrets"),
        )
        r.interrupt()
    # (the gap waits for a namespace deletion, which can take a while when the namespace controller is busy)
    wait_for(
        lambda: all(r.relists > before[n] for n, r in reflectors.items()), timeout=90, what="every reflector re-listed"
    )
    wait_for(lambda: created and linked(k, created[0], secret), what="namespace created during the gap linked")
    wait_for(lambda: doomed not in c.state.namespaces, what="namespace deleted during the gap forgotten")


def test_stalled_watch_connection_is_detected(
    k: K,
    start_controller: Callable[..., RunningController],
    proxy_kubeconfig: tuple[Proxy, str],
    ips_cleanup: list[str],
) -> None:
    proxy, kubeconfig = proxy_kubeconfig
    rc = start_controller(kubeconfig, read_timeout=5.0, watch_timeout=120, request_timeout=5.0)
    secret = serve_new_namespaces(k, "stall", ips_cleanup)
    rc.settle()
    ns_reflector = next(r for r in rc.controller.manager.reflectors if r.name == "namespaces")
    broken = ns_reflector.broken_streams
    proxy.stall()  # every open connection goes silent, like a half-open TCP connection
    ns = k.create_namespace()
    start = time.monotonic()
    # without a client-side read timeout the stalled watch would wait forever (the server's
    # timeoutSeconds=120 close never arrives through a stalled connection)
    wait_for(lambda: linked(k, ns, secret), timeout=60, what="linked after the stalled watch was replaced")
    print(f"\nstalled connection: linked {time.monotonic() - start:.1f}s after the stall (read timeout 5s)")
    assert ns_reflector.broken_streams > broken


def test_api_server_outage_converges(
    k: K,
    start_controller: Callable[..., RunningController],
    proxy_kubeconfig: tuple[Proxy, str],
    ips_cleanup: list[str],
) -> None:
    proxy, kubeconfig = proxy_kubeconfig
    rc = start_controller(kubeconfig, request_timeout=5.0)
    secret = serve_new_namespaces(k, "outage", ips_cleanup)
    rc.settle()
    proxy.outage(True)
    created = [k.create_namespace() for _ in range(3)]
    time.sleep(3)
    proxy.outage(False)
    for ns in created:
        wait_for(partial(linked, k, ns, secret), timeout=60, what=f"{ns} linked after the outage")


def test_real_api_server_restart(
    k: K, control_plane: ControlPlane, controller: RunningController, ips_cleanup: list[str]
) -> None:
    secret = serve_new_namespaces(k, "restart", ips_cleanup)
    controller.settle()
    control_plane.crash_and_restart("kube-apiserver")

    def api_up() -> bool:
        try:
            k.kube.request("GET", "/api/v1/namespaces/default", timeout=2)
            return True
        except Exception:
            return False

    wait_for(api_up, timeout=90, interval=0.2, what="kube-apiserver back")
    ns = k.create_namespace()
    wait_for(lambda: linked(k, ns, secret), timeout=60, what="linked after the API server restart")


def _holder(k: K, lease: str) -> str | None:
    obj = k.kube.get(LEASES.path(ADDON_NS, lease)) or {}
    return (obj.get("spec") or {}).get("holderIdentity")


def record_tries(elector: LeaderElector) -> list[bool]:
    """From now on, the outcome of each of the elector's tries to acquire or renew the Lease
    (a recording wrapper around its try_acquire_or_renew)."""
    tries: list[bool] = []
    try_once = elector.try_acquire_or_renew

    def recording() -> bool:
        took = try_once()
        tries.append(took)
        return took

    elector.try_acquire_or_renew = recording  # type: ignore[method-assign]
    return tries


def test_leader_election_failover(
    k: K, start_controller: Callable[..., RunningController], ips_cleanup: list[str]
) -> None:
    lease = f"le-{uid()}"
    timing = {"lease_duration": 4.0, "renew_deadline": 3.0, "retry_period": 0.5}
    a = start_controller(leader_elect=True, lease_name=lease, identity="replica-a", **timing)
    b = start_controller(leader_elect=True, lease_name=lease, identity="replica-b", wait_leading=False, **timing)
    assert _holder(k, lease) == "replica-a"
    b_elector = wait_for(lambda: b.controller.manager.elector, what="the standby's elector")
    b_tries = record_tries(b_elector)
    wait_for(lambda: len(b_tries) >= 3, what="the standby to try for the held lease three times")
    assert not any(b_tries), "the standby took a held lease"
    assert not b.controller.manager.leading.is_set(), "two replicas act at once"
    # the leader dies without releasing the lease (crash)
    assert a.controller.manager.elector is not None
    a.controller.manager.elector.leading.clear()  # so shutdown does not release: a crash
    crashed = time.monotonic()
    a.stop()
    wait_for(b.controller.manager.leading.is_set, timeout=15, what="standby takes over")
    took = time.monotonic() - crashed
    print(f"\nleader failover after a crash: {took:.1f}s (lease duration 4s)")
    assert took <= 4.0 + 2.0  # lease duration + one retry period with jitter, plus slack
    assert _holder(k, lease) == "replica-b"
    # the new leader does the work
    ips_cleanup_controller_independent = serve_new_namespaces(k, "le", ips_cleanup)
    ns = k.create_namespace()
    wait_for(lambda: linked(k, ns, ips_cleanup_controller_independent), what="new leader links")
    # a clean shutdown releases the lease at once
    k.delete_ips(ips_cleanup.pop(), wait=True)
    b.stop()
    assert not _holder(k, lease)


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=3) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, ""
    except OSError:  # not listening yet
        return 0, ""


def test_process_sigterm_health_and_metrics(k: K, control_plane: ControlPlane, tmp_path: Path, crd: None) -> None:
    health, metrics = free_port(), free_port()
    lease = f"sig-{uid()}"
    exe = Path(sys.executable).parent / "tcr-assistant"
    argv = [str(exe)] if exe.exists() else [sys.executable, "-m", "tcr_assistant.cli"]
    log = (tmp_path / "controller.log").open("wb")
    proc = subprocess.Popen(
        [
            *argv,
            "run",
            f"--kubeconfig={control_plane.kubeconfig}",
            f"--namespace={ADDON_NS}",
            "--leader-elect",
            f"--lease-name={lease}",
            f"--health-probe-bind-address=127.0.0.1:{health}",
            f"--metrics-bind-address=127.0.0.1:{metrics}",
            "--webhook-port=0",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        wait_for(lambda: _get(f"http://127.0.0.1:{health}/readyz")[0] == 200, timeout=30, what="readyz")
        assert _get(f"http://127.0.0.1:{health}/healthz")[0] == 200
        wait_for(lambda: _holder(k, lease), timeout=20, what="lease acquired")
        code, text = _get(f"http://127.0.0.1:{metrics}/metrics")
        assert code == 200
        for metric in (
            "tcr_assistant_reconcile_total",
            "tcr_assistant_reconcile_errors_total",
            "tcr_assistant_workqueue_depth",
            "tcr_assistant_link_latency_seconds_bucket",
            "tcr_assistant_leader 1.0",
        ):
            assert metric in text, metric
        rss_kib = int(
            next(
                line for line in Path(f"/proc/{proc.pid}/status").read_text().splitlines() if line.startswith("VmRSS:")
            ).split()[1]
        )
        print(f"\ncontroller RSS after start: {rss_kib / 1024:.1f} MiB")
        start = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0
        print(f"SIGTERM to exit: {time.monotonic() - start:.2f}s")
        assert not _holder(k, lease), "lease not released on SIGTERM"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        log.close()
    assert b"Traceback" not in (tmp_path / "controller.log").read_bytes()
