"""Creation-to-link latency over 100 namespaces (printed, never asserted on time), the
ImagePullSecret-on-the-chart's-RBAC path, and (marked long) RSS with 1,000 namespaces."""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from controller_support import ADDON_NS, K, RunningController, wait_for

from harness.cluster import ControlPlane, free_port
from tcr_assistant import api
from tcr_assistant.kube import SERVICEACCOUNTS, Kube, make_api_client

N_LATENCY = 100


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


class SAWatcher:
    """Watches ServiceAccounts named default (admin) and stamps when each appears and when it lists ``secret``."""

    def __init__(self, kube: Kube, secret: str, prefix: str) -> None:
        self.kube = kube
        self.secret = secret
        self.prefix = prefix
        self.appeared: dict[str, float] = {}
        self.linked: dict[str, float] = {}
        self.stop = False
        rv = kube.request("GET", SERVICEACCOUNTS.path(), query={"limit": 1})["metadata"]["resourceVersion"]
        self.thread = threading.Thread(target=self._run, args=(rv,), daemon=True)
        self.thread.start()

    def _run(self, rv: str) -> None:
        while not self.stop:
            try:
                for ev in self.kube.watch(
                    SERVICEACCOUNTS.path(), {"resourceVersion": rv, "timeoutSeconds": 30}, read_timeout=40
                ):
                    obj: dict[str, Any] = ev.get("object") or {}
                    meta = obj.get("metadata") or {}
                    rv = meta.get("resourceVersion", rv)
                    ns = meta.get("namespace", "")
                    if not ns.startswith(self.prefix) or meta.get("name") != "default":
                        continue
                    now = time.monotonic()
                    self.appeared.setdefault(ns, now)
                    names = [(e or {}).get("name") for e in obj.get("imagePullSecrets") or []]
                    if self.secret in names:
                        self.linked.setdefault(ns, now)
                    if self.stop:
                        return
            except Exception:
                time.sleep(0.2)


def test_creation_to_link_latency(k: K, controller: RunningController, ips_cleanup: list[str]) -> None:
    name = f"lat-{uuid.uuid4().hex[:6]}"
    ips_cleanup.append(name)
    secret = api.secret_name(name)
    prefix = f"lat{uuid.uuid4().hex[:4]}-"
    k.create_ips(
        name,
        {
            "namespaces": "*",
            "serviceAccounts": "*",
            "docker": {"server": "demo.tencentcloudcr.com", "username": "u", "password": "p"},
        },
    )
    controller.settle(60)
    watcher = SAWatcher(k.kube, secret, prefix)
    created: dict[str, float] = {}
    for i in range(N_LATENCY):
        ns = f"{prefix}{i:03d}"
        created[ns] = time.monotonic()
        k.create_namespace(ns)
        time.sleep(0.02)  # a steady trickle, as in a real cluster
    try:
        wait_for(lambda: len(watcher.linked) == N_LATENCY, timeout=120, interval=0.2, what="all linked")
    finally:
        watcher.stop = True
    ns_to_link = [watcher.linked[ns] - created[ns] for ns in created]
    sa_to_link = [watcher.linked[ns] - watcher.appeared[ns] for ns in created]
    print(
        f"\ncreation-to-link over {N_LATENCY} namespaces:"
        f"\n  namespace created -> default SA linked: p50 {statistics.median(ns_to_link) * 1000:.0f} ms,"
        f" p99 {_pct(ns_to_link, 0.99) * 1000:.0f} ms, max {max(ns_to_link) * 1000:.0f} ms"
        f"\n  default SA appeared -> linked:         p50 {statistics.median(sa_to_link) * 1000:.0f} ms,"
        f" p99 {_pct(sa_to_link, 0.99) * 1000:.0f} ms, max {max(sa_to_link) * 1000:.0f} ms"
    )
    assert all(v >= 0 for v in sa_to_link)
    for ns in created:
        k.delete_namespace(ns)


@pytest.mark.long
def test_rss_with_1000_namespaces(k: K, control_plane: ControlPlane, tmp_path: Path, crd: None) -> None:
    prefix = f"rss{uuid.uuid4().hex[:4]}-"
    admin = Kube(make_api_client(str(control_plane.kubeconfig), pool_size=16))
    names = [f"{prefix}{i:04d}" for i in range(1000)]
    threads = [
        threading.Thread(target=lambda chunk=names[j::8]: [K(admin).create_namespace(n) for n in chunk])
        for j in range(8)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    ips = f"rss-{uuid.uuid4().hex[:6]}"
    k.create_ips(
        ips,
        {"namespaces": "*", "docker": {"server": "demo.tencentcloudcr.com", "username": "u", "password": "p"}},
    )
    health = free_port()
    exe = Path(sys.executable).parent / "tcr-assistant"
    proc = subprocess.Popen(
        [
            str(exe),
            "run",
            f"--kubeconfig={control_plane.kubeconfig}",
            f"--namespace={ADDON_NS}",
            f"--health-probe-bind-address=127.0.0.1:{health}",
            "--metrics-bind-address=0",
            "--webhook-port=0",
        ],
        stdout=(tmp_path / "log").open("wb"),
        stderr=subprocess.STDOUT,
        env={**os.environ},
    )
    try:
        secret = api.secret_name(ips)
        start = time.monotonic()
        wait_for(lambda: all(secret in K(admin).pull_secrets(n) for n in names[-5:]), timeout=600, interval=1)

        def converged() -> bool:
            st = (k.ips(ips) or {}).get("status") or {}
            return bool(st) and st.get("sAsSuccess") == st.get("sAsDesired") and st.get("sAsDesired", 0) >= 1000

        wait_for(converged, timeout=600, interval=1, what="status converged")
        took = time.monotonic() - start
        rss = int(
            next(
                x for x in Path(f"/proc/{proc.pid}/status").read_text().splitlines() if x.startswith("VmRSS:")
            ).split()[1]
        )
        print(
            f"\n1000 namespaces: converged in {took:.0f}s; controller RSS {rss / 1024:.1f} MiB; status "
            + json.dumps({key: (k.ips(ips) or {})["status"][key] for key in ("secretsDesired", "sAsDesired")})
        )
        k.delete_ips(ips, wait=True, timeout=600)
    finally:
        proc.terminate()
        proc.wait(30)
        for n in names:
            K(admin).delete_namespace(n)
