"""A trickle of 100 new namespaces: each linked, each Secret created without a read first.
The latency is printed, never asserted on (`make bench` measures it, and RSS, properly)."""

from __future__ import annotations

import statistics
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from typing import Any

from controller_support import K, RunningController
from recording_kube import recorded

from support import wait_for
from tcr_assistant.k8s.client import SERVICEACCOUNTS, Kube
from tcr_assistant.spec import api

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


def test_new_namespaces_linked_with_one_secret_write_and_no_read(
    k: K, start_controller: Callable[..., RunningController], ips_cleanup: list[str]
) -> None:
    controller = start_controller(drift_period=3600.0)  # no drift-check GETs during the measurement
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
    wait_for(lambda: (controller.controller.state.plans.get(name) or None), what="the ImagePullSecret's plan")
    controller.settle(60)
    requests_before = dict(recorded(controller.controller.kube).requests)
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
    controller.settle(60)
    requests = Counter(recorded(controller.controller.kube).requests)
    requests.subtract(requests_before)
    ns_to_link = [watcher.linked[ns] - created[ns] for ns in created]
    sa_to_link = [watcher.linked[ns] - watcher.appeared[ns] for ns in created]
    print(
        f"\ncreation-to-link over {N_LATENCY} namespaces:"
        f"\n  namespace created -> default SA linked: p50 {statistics.median(ns_to_link) * 1000:.0f} ms,"
        f" p99 {_pct(ns_to_link, 0.99) * 1000:.0f} ms, max {max(ns_to_link) * 1000:.0f} ms"
        f"\n  default SA appeared -> linked:         p50 {statistics.median(sa_to_link) * 1000:.0f} ms,"
        f" p99 {_pct(sa_to_link, 0.99) * 1000:.0f} ms, max {max(sa_to_link) * 1000:.0f} ms"
        f"\n  controller requests: {dict(+requests)}"
    )
    # A new namespace cannot hold our Secret yet: create it, never read it first.
    assert requests["POST secrets"] == N_LATENCY
    assert requests["GET secrets"] == 0
    assert requests["PUT secrets"] == 0
    for ns in created:
        k.delete_namespace(ns)
