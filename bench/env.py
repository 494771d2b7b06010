"""The benchmark's environment: a local control plane, the chart installed by helm, the controller as a
host process with a token of the chart's ServiceAccount (harness.addon), and an admin API client."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from bench import procstat, prom
from harness import VENV
from harness.addon import Addon
from harness.cluster import ControlPlane
from harness.polling import wait_for
from tcr_assistant.k8s.client import NAMESPACES, SERVICEACCOUNTS, Kube, KubeError, make_api_client
from tcr_assistant.reconciler.writes import IMAGEPULLSECRETS
from tcr_assistant.spec import api

BENCH_LABEL = "tcr-bench"
EXTRA_SA = "builder"
KCM_QPS = 500
T = TypeVar("T")


class BenchControlPlane(ControlPlane):
    """The harness's control plane with kube-controller-manager's client rate limit raised.

    kube-controller-manager's default (20 QPS, burst 30) would take ~8 minutes to create the
    `default` ServiceAccounts and `kube-root-ca.crt` ConfigMaps of 10,000 namespaces; only the set-up
    needs this, the add-on's figures do not depend on it except where noted (burst link latency
    includes kube-controller-manager creating `default`).
    """

    controller_manager_args = (f"--kube-api-qps={KCM_QPS}", f"--kube-api-burst={KCM_QPS * 2}")


class BenchAddon(Addon):
    """harness.addon.Addon; with ``profile_out`` set, the controller runs under bench.profiling's sampler."""

    profile_out: Path | None = None
    starts: int = 0

    def controller_argv(self, kubeconfig: Path) -> list[str]:
        argv = super().controller_argv(kubeconfig)
        if self.profile_out is None:
            return argv
        self.starts += 1
        out = self.profile_out.with_name(f"{self.profile_out.stem}-start{self.starts}{self.profile_out.suffix}")
        return [str(VENV / "bin" / "python"), "-m", "bench.profiling", str(out), *argv[1:]]


CONTROLLER_METRICS = (
    "tcr_assistant_reconcile_total",
    "tcr_assistant_reconcile_errors_total",
    "tcr_assistant_workqueue_depth",
    "tcr_assistant_api_writes_total",
    "tcr_assistant_leader",
    "tcr_assistant_link_latency_seconds_bucket",
    "tcr_assistant_link_latency_seconds_count",
    "tcr_assistant_link_latency_seconds_sum",
    "tcr_assistant_drift_repairs_total",
    "tcr_assistant_api_retries_total",
)


@dataclass
class Env:
    plane: ControlPlane
    directory: Path
    kube: Kube = field(init=False)
    addon: BenchAddon = field(init=False)
    namespaces: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.kube = Kube(make_api_client(str(self.plane.kubeconfig), pool_size=64), timeout=60)
        self.addon = BenchAddon(self.plane, self.directory / "addon", [], [], tie_to_parent=True)
        self._tls = prom.admin_context(self.plane.directory / "pki")

    # -- metrics --------------------------------------------------------------------------------

    def apiserver(self) -> prom.Samples:
        text = prom.fetch(f"{self.plane.server}/metrics", self._tls)
        return prom.parse(text, (prom.APISERVER_REQUESTS, prom.APF_DISPATCHED, prom.DURATION_SUM, prom.DURATION_COUNT))

    def controller(self) -> prom.Samples:
        return prom.parse(prom.fetch(self.addon.metrics_url, timeout=10), CONTROLLER_METRICS)

    @property
    def pid(self) -> int:
        assert self.addon.process is not None, "the controller is not running"
        return self.addon.process.pid

    # -- controller -----------------------------------------------------------------------------

    def start_controller(self) -> float:
        """Start `tcr-assistant run` and wait until it is ready and leading; returns seconds to ready."""
        started = time.monotonic()
        self.addon.start_controller(timeout=600)
        ready = time.monotonic() - started
        self.wait_metric(lambda m: prom.value(m, "tcr_assistant_leader") == 1, 60, "leadership")
        return ready

    def stop_controller(self) -> None:
        if self.addon.process is not None:
            self.addon.stop_controller()

    def drift_mode(self, mode: str) -> None:
        """Stop the controller and switch to drift ``mode``: the chart upgraded to match (its
        RBAC), the next start with ``--drift-mode``."""
        self.stop_controller()
        setting = f"controller.driftRepair.mode={mode}"
        self.addon.set_values = [v for v in self.addon.set_values if not v.startswith("controller.driftRepair.mode=")]
        self.addon.set_values.append(setting)
        self.addon.install()
        self.addon.extra_args = [a for a in self.addon.extra_args if not a.startswith("--drift-mode=")]
        self.addon.extra_args.append(f"--drift-mode={mode}")

    def _wait_on_controller(self, probe: Callable[[], T | None], timeout: float, interval: float, what: str,
                            timeout_message: str) -> T:
        """`wait_for` on the controller: it fails at once, with the log's tail, when the controller exits."""
        return wait_for(probe, timeout, interval, what=what, process=self.addon.process, name="tcr-assistant",
                        log=self.addon.controller_log, timeout_message=timeout_message)

    def wait_metric(self, predicate: Callable[[prom.Samples], bool], timeout: float, what: str) -> prom.Samples:
        def matching() -> prom.Samples | None:
            with contextlib.suppress(OSError):
                samples = self.controller()
                if predicate(samples):
                    return samples
            return None

        return self._wait_on_controller(matching, timeout, 0.2, f"controller: {what}",
                                        f"controller: no {what} within {timeout:.0f} s")

    def wait_quiet(self, quiet: float = 2.5, timeout: float = 900) -> float:
        """Wait until the work queue is empty and no work item ran for ``quiet`` seconds; returns when
        the last work ended (monotonic, approximate to the polling interval)."""
        last_total = -1.0
        last_change = time.monotonic()

        def quiet_since() -> float | None:
            nonlocal last_total, last_change
            samples = self.controller()
            total = prom.value(samples, "tcr_assistant_reconcile_total") + prom.value(
                samples, "tcr_assistant_reconcile_errors_total")
            depth = prom.value(samples, "tcr_assistant_workqueue_depth")
            now = time.monotonic()
            if total != last_total or depth > 0:
                last_total, last_change = total, now
            elif now - last_change >= quiet:
                return last_change  # a monotonic reading: seconds since boot, never 0
            return None

        return self._wait_on_controller(quiet_since, timeout, 0.25, "the controller idle",
                                        "controller did not become idle")

    # -- objects --------------------------------------------------------------------------------

    def _create(self, path: str, body: dict[str, Any]) -> None:
        for attempt in range(20):
            try:
                self.kube.request("POST", path, body=body)
                return
            except KubeError as exc:
                if exc.already_exists:
                    return
                if exc.status in (429, 500, 503, 504) or (exc.status == 403 and attempt < 5):
                    time.sleep(0.2 * (attempt + 1))
                    continue
                raise

    def create_namespace(self, name: str, extra_sa: bool, group: str = "n") -> None:
        self._create(NAMESPACES.path(), {"apiVersion": "v1", "kind": "Namespace",
                                         "metadata": {"name": name, "labels": {BENCH_LABEL: group}}})
        if extra_sa:
            self._create(SERVICEACCOUNTS.path(name), {"apiVersion": "v1", "kind": "ServiceAccount",
                                                      "metadata": {"name": EXTRA_SA}})

    def grow_namespaces(self, n: int, threads: int = 24) -> dict[str, float]:
        """Create bench namespaces (each with ServiceAccount `builder`; kube-controller-manager adds
        `default`) until there are ``n``; wait until every `default` exists."""
        started = time.monotonic()
        fresh = [f"b-{i:05d}" for i in range(len(self.namespaces), n)]
        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(lambda name: self.create_namespace(name, True), fresh))
        self.namespaces.extend(fresh)
        created = time.monotonic() - started
        self.wait_default_service_accounts(set(self.namespaces))
        return {"namespaces_created": len(fresh), "create_s": round(created, 1),
                "until_default_sas_s": round(time.monotonic() - started, 1)}

    def wait_default_service_accounts(self, namespaces: set[str], timeout: float = 1200) -> None:
        missing = set(namespaces)

        def all_present() -> bool:
            have = {sa["metadata"]["namespace"] for sa in self.kube.list_all(
                SERVICEACCOUNTS.path(), {"fieldSelector": "metadata.name=default"})["items"]}
            missing.clear()
            missing.update(namespaces - have)
            return not missing

        wait_for(all_present, timeout, 1.0, what="every bench namespace's `default` ServiceAccount",
                 timeout_message=lambda: f"{len(missing)} namespaces have no `default` ServiceAccount")

    def create_ips(self, name: str, password: str, selector: dict[str, Any] | None = None) -> None:
        """One ImagePullSecret for every namespace (or those ``selector`` matches) and its `default`
        ServiceAccount (the bench's `builder` accounts stay unserved)."""
        spec: dict[str, Any] = {"namespaces": "*", "serviceAccounts": "default",
                                "docker": {"server": SERVER, "username": USERNAME, "password": password}}
        if selector is not None:
            spec["namespaceSelector"] = selector
        self.kube.request("POST", IMAGEPULLSECRETS.path(), body={
            "apiVersion": api.API_VERSION, "kind": api.KIND, "metadata": {"name": name}, "spec": spec})

    def label_namespace(self, name: str, labels: dict[str, str | None]) -> None:
        self.kube.request("PATCH", NAMESPACES.path(name=name), body={"metadata": {"labels": labels}},
                          content_type="application/merge-patch+json")

    def set_password(self, name: str, password: str) -> None:
        self.kube.request("PATCH", IMAGEPULLSECRETS.path(name=name), body={"spec": {"docker": {"password": password}}},
                          content_type="application/merge-patch+json")

    def rss(self) -> dict[str, float]:
        return {"rss_mib": round(procstat.rss_mib(self.pid), 1),
                "peak_rss_mib": round(procstat.peak_rss_mib(self.pid), 1)}


SERVER = "bench.tencentcloudcr.com"
USERNAME = "100012345678"
