"""The measurements. Each returns a JSON-able dict; times in seconds unless the key says ms."""

from __future__ import annotations

import base64
import contextlib
import gc
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from bench import procstat, prom
from bench.env import SERVER, Env
from bench.watch import Watcher
from harness import VENV
from harness.polling import wait_for
from harness.tcr_standin import INSTANCE as STANDIN_INSTANCE
from harness.tcr_standin import REGION as STANDIN_REGION
from harness.tcr_standin import SECRET_ID as STANDIN_SECRET_ID
from harness.tcr_standin import SECRET_KEY as STANDIN_SECRET_KEY
from harness.tcr_standin import TcrStandIn
from tcr_assistant.k8s.client import NAMESPACES, SECRETS, SERVICEACCOUNTS, KubeError, Resource
from tcr_assistant.reconciler.writes import IMAGEPULLSECRETS
from tcr_assistant.spec import api

# Writes that a resync must not make (leader-election Lease renewals and the harness's TokenRequest are not resync).
RECONCILED_RESOURCES = ("secrets", "serviceaccounts", "imagepullsecrets", "imagepullsecrets/status", "events")


def percentiles(values: Iterable[float], scale: float = 1000.0) -> dict[str, float]:
    """p50/p90/p99/max/mean (nearest-rank), scaled (default: seconds -> ms)."""
    ordered = sorted(values)
    if not ordered:
        return {"n": 0}

    def rank(q: float) -> float:
        index = max(0, min(len(ordered) - 1, int(-(-q * len(ordered) // 1)) - 1))
        return round(ordered[index] * scale, 1)

    return {"n": len(ordered), "p50": rank(0.50), "p90": rank(0.90), "p99": rank(0.99),
            "max": round(ordered[-1] * scale, 1), "mean": round(sum(ordered) / len(ordered) * scale, 1)}


def _pull_secrets(obj: dict[str, Any]) -> list[str]:
    return [str((e or {}).get("name")) for e in obj.get("imagePullSecrets") or []]


def _password(secret: dict[str, Any]) -> str | None:
    raw = (secret.get("data") or {}).get(api.SECRET_KEY)
    if not raw:
        return None
    try:
        doc = json.loads(base64.b64decode(raw))
        return str(doc["auths"][SERVER]["password"])
    except (ValueError, KeyError, TypeError):
        return None


def _controller_requests(samples: prom.Samples) -> float:
    """Requests dispatched for the controller: its ServiceAccount token puts it (alone) in APF's
    `service-accounts` FlowSchema; the admin clients (bench, kube-controller-manager) are exempt."""
    return prom.value(samples, prom.APF_DISPATCHED, flow_schema="service-accounts")


class Window:
    """Deltas of API requests (all clients, by verb/resource), the controller's dispatched requests,
    its own write counters and its CPU time between start() and stop()."""

    def __init__(self, env: Env) -> None:
        self.env = env
        self.api0 = env.apiserver()
        self.ctl0 = env.controller()
        self.cpu0 = procstat.cpu_seconds(env.pid)
        self.t0 = time.monotonic()

    def stop(self) -> dict[str, Any]:
        elapsed = time.monotonic() - self.t0
        cpu = procstat.cpu_seconds(self.env.pid) - self.cpu0
        api_delta = prom.diff(self.env.apiserver(), self.api0)
        ctl_delta = prom.diff(self.env.controller(), self.ctl0)
        requests = prom.by_verb_resource(api_delta)
        own_writes = {dict(labels).get("resource", "?"): round(v) for (name, labels), v in ctl_delta.items()
                      if name == "tcr_assistant_api_writes_total"}
        retries = {f"{dict(labels).get('resource')} {dict(labels).get('reason')}": round(v)
                   for (name, labels), v in ctl_delta.items() if name == "tcr_assistant_api_retries_total" and v}
        return {
            "window_s": round(elapsed, 2),
            "controller_cpu_s": round(cpu, 2),
            "controller_cpu_millicores": round(cpu / elapsed * 1000, 1) if elapsed else None,
            "controller_requests": round(_controller_requests(api_delta)),
            "apiserver_requests_by_verb_resource": requests,
            "apiserver_mean_latency_ms": prom.mean_latency_ms(api_delta),
            "writes_reconciled_resources": prom.writes_of(requests, RECONCILED_RESOURCES),
            "writes_leases": prom.writes_of(requests, ["leases"]),
            "controller_reported_writes": own_writes,
            "controller_retries": retries,
            "conflicts": sum(n for key, n in retries.items() if key.endswith(" conflict")),
        }


# -- full reconcile -----------------------------------------------------------------------------------


def full_reconcile(env: Env, name: str, password: str, timeout: float) -> dict[str, Any]:
    """Create one ImagePullSecret `*`/`*` over the existing namespaces; time until every bench
    ServiceAccount lists the Secret, every bench namespace has it, and the status says done."""
    secret = api.secret_name(name)
    bench = set(env.namespaces)
    want_sas = {(ns, "default") for ns in bench}
    linked: dict[tuple[str, str], float] = {}
    secrets: dict[str, float] = {}
    status_done: list[float] = []
    last_status: dict[str, Any] = {}

    def on_sa(kind: str, obj: dict[str, Any], now: float) -> None:
        meta = obj.get("metadata") or {}
        key = (str(meta.get("namespace")), str(meta.get("name")))
        if key in want_sas and secret in _pull_secrets(obj):
            linked.setdefault(key, now)

    def on_secret(kind: str, obj: dict[str, Any], now: float) -> None:
        if kind != "DELETED":
            secrets.setdefault(str((obj.get("metadata") or {}).get("namespace")), now)

    def on_ips(kind: str, obj: dict[str, Any], now: float) -> None:
        status = obj.get("status") or {}
        last_status.clear()
        last_status.update({k: v for k, v in status.items() if not isinstance(v, list)})
        if (status.get("secretsDesired", 0) >= len(bench) and status.get("secretsSuccess") == status.get(
                "secretsDesired") and status.get("sAsDesired", 0) >= len(want_sas)
                and status.get("sAsSuccess") == status.get("sAsDesired") and not status_done):
            status_done.append(now)

    watchers = [Watcher(env.kube, SERVICEACCOUNTS.path(), on_sa),
                Watcher(env.kube, SECRETS.path(), on_secret, {"labelSelector": f"{api.LABEL_IPS}={name}"}),
                Watcher(env.kube, IMAGEPULLSECRETS.path(), on_ips, {"fieldSelector": f"metadata.name={name}"})]
    window = Window(env)
    rss_samples: list[float] = []
    try:
        t0 = time.monotonic()
        env.create_ips(name, password)
        t_created = time.monotonic()

        def done() -> bool:
            with contextlib.suppress(OSError):
                rss_samples.append(procstat.rss_mib(env.pid))
            return len(linked) >= len(want_sas) and bench <= secrets.keys() and bool(status_done)

        wait_for(done, timeout, what=f"ImagePullSecret {name} to reach {len(bench)} namespaces", interval=0.1)
        env.wait_quiet()
        counts = window.stop()
    finally:
        for w in watchers:
            w.stop()
    served = int(last_status.get("secretsDesired") or len(bench))
    t_secrets = max(secrets[ns] for ns in bench)
    t_linked = max(linked.values())
    return {
        "namespaces": len(bench),
        "namespaces_served": served,
        "service_accounts": len(want_sas),
        "create_call_ms": round((t_created - t0) * 1000, 1),
        "all_secrets_s": round(t_secrets - t0, 2),
        "all_linked_s": round(t_linked - t0, 2),
        "status_complete_s": round(status_done[0] - t0, 2),
        "first_link_s": round(min(linked.values()) - t0, 3),
        "writes_per_namespace": round(counts["writes_reconciled_resources"] / served, 2),
        "requests_per_namespace": round(counts["controller_requests"] / served, 2),
        "object_requests_per_namespace": round(sum(
            n for key, n in counts["apiserver_requests_by_verb_resource"].items()
            if key.split()[0] in ("GET", "POST", "PUT", "PATCH", "DELETE")
            and key.split()[1] in ("secrets", "serviceaccounts")) / served, 2),
        "conflicts": counts["conflicts"],
        "final_status": last_status,
        "peak_rss_during_mib": round(max(rss_samples, default=0.0), 1),
        **env.rss(),
        "counts": counts,
    }


# -- rotation ------------------------------------------------------------------------------------------


def rotation(env: Env, name: str, password: str, timeout: float) -> dict[str, Any]:
    """Change the password; time until every distributed Secret carries it."""
    expected = {s["metadata"]["namespace"] for s in env.kube.list_all(
        SECRETS.path(), {"labelSelector": f"{api.LABEL_IPS}={name}"})["items"]}
    rotated: dict[str, float] = {}

    def on_secret(kind: str, obj: dict[str, Any], now: float) -> None:
        if kind != "DELETED" and _password(obj) == password:
            rotated.setdefault(str((obj.get("metadata") or {}).get("namespace")), now)

    watcher = Watcher(env.kube, SECRETS.path(), on_secret, {"labelSelector": f"{api.LABEL_IPS}={name}"})
    window = Window(env)
    try:
        t0 = time.monotonic()
        env.set_password(name, password)
        wait_for(lambda: expected <= rotated.keys(), timeout, what="every Secret rotated", interval=0.1)
        env.wait_quiet()
        counts = window.stop()
    finally:
        watcher.stop()
    times = [rotated[ns] - t0 for ns in expected]
    return {"secrets": len(expected), "all_rotated_s": round(max(times), 2),
            "first_rotated_s": round(min(times), 3), "spread_ms": percentiles(times),
            "writes_per_secret": round(counts["writes_reconciled_resources"] / len(expected), 2),
            "requests_per_secret": round(counts["controller_requests"] / len(expected), 2), "counts": counts}


# -- a namespace label -----------------------------------------------------------------------------------

SELECT_LABEL = "bench.tcr-addon.io/selected"


def object_requests(counts: dict[str, Any]) -> int:
    """Reads and writes of Secrets and ServiceAccounts in a window (the bench itself only watches)."""
    return sum(n for key, n in counts["apiserver_requests_by_verb_resource"].items()
               if key.split()[0] in ("GET", "POST", "PUT", "PATCH", "DELETE")
               and key.split()[1] in ("secrets", "serviceaccounts"))


def label_change(env: Env, n: int, toggles: int) -> dict[str, Any]:
    """An ImagePullSecret that selects namespaces by label (none carry it yet); then, ``toggles``
    times, the label put on one namespace and taken off again. Per change: requests on Secrets and
    ServiceAccounts, and the time until the namespace is served (Secret there and `default`
    linked) or no longer served. The cost must not grow with N: no re-list, one namespace's work."""
    name = f"bench-selected-{n}"
    secret = api.secret_name(name)
    seen: dict[tuple[str, str], float] = {}  # (namespace, "secret"|"linked"|"gone"|"unlinked") -> when

    def on_secret(kind: str, obj: dict[str, Any], now: float) -> None:
        seen[(str((obj.get("metadata") or {}).get("namespace")), "gone" if kind == "DELETED" else "secret")] = now

    def on_sa(kind: str, obj: dict[str, Any], now: float) -> None:
        namespace = str((obj.get("metadata") or {}).get("namespace"))
        seen[(namespace, "linked" if secret in _pull_secrets(obj) else "unlinked")] = now

    # Watch mode: poll mode's drift checks (GETs spread over the period, N / 1,200 s) would be
    # counted in every window and grow with N; they are not the label change's.
    env.drift_mode("watch")
    env.start_controller()
    env.wait_quiet()
    env.create_ips(name, "pw-selected", selector={"matchLabels": {SELECT_LABEL: "yes"}})
    env.wait_quiet()
    step = max(1, len(env.namespaces) // max(1, toggles))
    chosen = env.namespaces[::step][:toggles]
    watchers = [Watcher(env.kube, SECRETS.path(), on_secret, {"labelSelector": f"{api.LABEL_IPS}={name}"}),
                Watcher(env.kube, SERVICEACCOUNTS.path(), on_sa, {"fieldSelector": "metadata.name=default"})]
    changes: dict[str, list[Any]] = {"add_requests": [], "remove_requests": [], "add_s": [], "remove_s": []}
    try:
        for ns in chosen:
            for value, done, kind in (("yes", ("secret", "linked"), "add"), (None, ("gone", "unlinked"), "remove")):
                window = Window(env)
                t0 = time.monotonic()
                env.label_namespace(ns, {SELECT_LABEL: value})
                wait_for(lambda ns=ns, done=done, t0=t0: all(seen.get((ns, d), 0.0) > t0 for d in done),  # type: ignore[misc]
                         60, what=f"label {SELECT_LABEL}={value} on {ns} taking effect", interval=0.002)
                changes[f"{kind}_s"].append(max(seen[(ns, d)] for d in done) - t0)
                env.wait_quiet()
                changes[f"{kind}_requests"].append(object_requests(window.stop()))
    finally:
        for watcher in watchers:
            watcher.stop()
        env.kube.request("DELETE", IMAGEPULLSECRETS.path(name=name))
        wait_for(lambda: env.kube.get(IMAGEPULLSECRETS.path(name=name)) is None, 120, what=f"{name} deleted")
        env.drift_mode("poll")
        env.start_controller()
        env.wait_quiet()
    return {"namespaces": len(env.namespaces), "toggles": len(chosen),
            "add_requests": changes["add_requests"], "remove_requests": changes["remove_requests"],
            "requests_per_change_max": max(changes["add_requests"] + changes["remove_requests"]),
            "add_ms": percentiles(changes["add_s"]), "remove_ms": percentiles(changes["remove_s"])}


# -- Pod admission -----------------------------------------------------------------------------------

PODS = Resource("/api/v1", "pods", True)
MUTATING = Resource("/apis/admissionregistration.k8s.io/v1", "mutatingwebhookconfigurations", False).path(
    name="tcr-assistant-mutating-webhook-configuration")


def pod_admission(env: Env, pods: int) -> dict[str, Any]:
    """Latency of a Pod create (the API server's answer, as a client sees it) with the Pod webhook
    registered, then without it (its configuration deleted and put back after). Half of the Pods
    find their ServiceAccount unlinked (our entry taken off by hand first), so the webhook both
    adds entries and lets Pods through unchanged."""
    namespace = env.namespaces[0]
    body = {"apiVersion": "v1", "kind": "Pod", "metadata": {"generateName": "admission-"},
            "spec": {"containers": [{"name": "c", "image": f"{SERVER}/app:1"}]}}

    def create_all() -> tuple[list[float], int]:
        took, added = [], 0
        for i in range(pods):
            if i % 2:
                env.kube.request("PATCH", SERVICEACCOUNTS.path(namespace, "default"),
                                 body={"imagePullSecrets": None}, content_type="application/merge-patch+json")
            t0 = time.monotonic()
            pod = env.kube.request("POST", PODS.path(namespace), body=body)
            took.append(time.monotonic() - t0)
            added += bool(pod["metadata"].get("annotations"))
        return took, added

    with_webhook, added = create_all()
    saved = env.kube.get(MUTATING)
    assert saved is not None, "the chart registers the Pod webhook"
    env.kube.request("DELETE", MUTATING)
    try:
        without, _ = create_all()
    finally:
        meta = {k: v for k, v in saved["metadata"].items() if k in ("name", "labels", "annotations")}
        env.kube.request("POST", MUTATING.rsplit("/", 1)[0], body={**saved, "metadata": meta})
        env.kube.request("DELETE", PODS.path(namespace))
    on, off = percentiles(with_webhook), percentiles(without)
    return {"pods": pods, "given_the_entry_by_the_webhook": added, "with_webhook_ms": on, "without_webhook_ms": off,
            "added_p50_ms": round(on["p50"] - off["p50"], 1), "added_p99_ms": round(on["p99"] - off["p99"], 1)}


# -- idle and resync -----------------------------------------------------------------------------------


def idle(env: Env, seconds: float) -> dict[str, Any]:
    """Nothing changes: API requests per minute (drift checks, Lease renewals, the rest), CPU and
    writes of the controller over ``seconds``."""
    window = Window(env)
    time.sleep(seconds)
    counts = window.stop()
    minutes = counts["window_s"] / 60
    drift = counts["apiserver_requests_by_verb_resource"].get("GET secrets", 0)
    return {"window_s": counts["window_s"],
            "controller_requests_per_min": round(counts["controller_requests"] / minutes, 1),
            "drift_check_requests_per_min": round(drift / minutes, 1),
            # Lease renewals (leader election) and watch reconnections
            "other_requests_per_min": round((counts["controller_requests"] - drift) / minutes, 1),
            "controller_cpu_millicores": counts["controller_cpu_millicores"],
            "writes_reconciled_resources": counts["writes_reconciled_resources"],
            "lease_writes_per_min": round(counts["writes_leases"] / minutes, 1),
            **env.rss(), "counts": counts}


def drift_watch(env: Env, name: str, idle_s: float, repairs: int) -> dict[str, Any]:
    """Drift repair in watch mode: restart in it (what the resync costs), an idle window, then
    ``repairs`` Secrets deleted one at a time (delete call returned -> recreated, on a watch).
    The controller is left in poll mode again."""
    secret = api.secret_name(name)
    env.drift_mode("watch")
    api0 = env.apiserver()  # after helm's own Secret requests (its release records)
    env.start_controller()
    env.wait_quiet()
    requests = prom.by_verb_resource(prom.diff(env.apiserver(), api0))
    resync = {key: n for key, n in requests.items() if key.endswith(" secrets")}
    quiet = idle(env, idle_s)
    created: dict[str, float] = {}

    def on_secret(kind: str, obj: dict[str, Any], now: float) -> None:
        if kind == "ADDED":
            created[str((obj.get("metadata") or {}).get("namespace"))] = now

    watcher = Watcher(env.kube, SECRETS.path(), on_secret, {"labelSelector": f"{api.LABEL_IPS}={name}"})
    delays = []
    try:
        for ns in env.namespaces[:repairs]:
            created.pop(ns, None)
            env.kube.request("DELETE", SECRETS.path(ns, secret))
            deleted = time.monotonic()
            back = wait_for(lambda ns=ns: created.get(ns), 30, what=f"{ns}/{secret} repaired",  # type: ignore[misc]
                            interval=0.002)
            delays.append(back - deleted)
    finally:
        watcher.stop()
        env.drift_mode("poll")
        env.start_controller()
        env.wait_quiet()
    return {"resync_secret_requests": resync, "idle": quiet, "repair_ms": percentiles(delays)}


def restart_resync(env: Env, name: str) -> dict[str, Any]:
    """Restart the controller with everything in place (full re-list and a pass over every namespace):
    writes must be zero."""
    env.stop_controller()
    api0 = env.apiserver()
    t0 = time.monotonic()
    ready_s = env.start_controller()
    cpu0 = 0.0  # a fresh process: all its CPU time is this resync's
    quiet_at = env.wait_quiet()
    cpu = procstat.cpu_seconds(env.pid) - cpu0
    api_delta = prom.diff(env.apiserver(), api0)
    requests = prom.by_verb_resource(api_delta)
    status = (env.kube.get(IMAGEPULLSECRETS.path(name=name)) or {}).get("status") or {}
    return {"ready_s": round(ready_s, 2), "until_idle_s": round(quiet_at - t0, 2),
            "status_after": {k: v for k, v in status.items() if not isinstance(v, list)},
            "controller_cpu_s": round(cpu, 2),
            "controller_requests": round(_controller_requests(api_delta)),
            "writes_reconciled_resources": prom.writes_of(requests, RECONCILED_RESOURCES),
            "apiserver_requests_by_verb_resource": requests, **env.rss()}


# -- link latency --------------------------------------------------------------------------------------


class DriverPauses:
    """The driver's own garbage collections while it stamps events (a collection pauses every thread
    of the driver, the watcher's too, and would be measured as link latency): counted, so that a
    result shows they were not what it measured."""

    def __init__(self) -> None:
        self.pauses_ms: list[float] = []
        self._started: float | None = None
        gc.callbacks.append(self._on_gc)

    def _on_gc(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
        elif self._started is not None:
            self.pauses_ms.append((time.perf_counter() - self._started) * 1000.0)
            self._started = None

    def stop(self) -> None:
        gc.callbacks.remove(self._on_gc)

    def summary(self) -> dict[str, Any]:
        return {"collections": len(self.pauses_ms), "max_pause_ms": round(max(self.pauses_ms, default=0.0), 1)}


def link_latency(env: Env, name: str, sequential: int, bursts: int, burst_size: int) -> dict[str, Any]:
    """New namespaces while the ImagePullSecret serves everything: namespace created (client side, when
    the create call returned) -> its `default` ServiceAccount lists our Secret (seen on a watch)."""
    secret = api.secret_name(name)
    created: dict[str, tuple[float, float]] = {}
    appeared: dict[str, float] = {}
    linked: dict[str, float] = {}

    def on_sa(kind: str, obj: dict[str, Any], now: float) -> None:
        ns = str((obj.get("metadata") or {}).get("namespace"))
        if not ns.startswith("lat-"):
            return
        appeared.setdefault(ns, now)
        if secret in _pull_secrets(obj):
            linked.setdefault(ns, now)

    def create(ns: str) -> None:
        before = time.monotonic()
        env.create_namespace(ns, extra_sa=False, group="lat")
        created[ns] = (before, time.monotonic())

    watcher = Watcher(env.kube, SERVICEACCOUNTS.path(), on_sa, {"fieldSelector": "metadata.name=default"})
    pauses = DriverPauses()
    steal0, started = procstat.steal_seconds(), time.monotonic()
    ctl0 = env.controller()
    groups: dict[str, list[str]] = {"sequential": [], "burst": []}
    try:
        for i in range(sequential):
            ns = f"lat-s-{i:03d}"
            create(ns)
            groups["sequential"].append(ns)
            wait_for(lambda ns=ns: ns in linked, 60, what=f"{ns} linked", interval=0.005)  # type: ignore[misc]
            time.sleep(0.05)
        for b in range(bursts):
            names = [f"lat-b{b}-{i:03d}" for i in range(burst_size)]
            with ThreadPoolExecutor(burst_size) as pool:
                list(pool.map(create, names))
            groups["burst"].extend(names)
            wait_for(lambda names=names: all(n in linked for n in names), 120,  # type: ignore[misc]
                     what=f"burst {b} linked", interval=0.01)
            time.sleep(1.0)
    finally:
        watcher.stop()
        pauses.stop()
    ctl1 = env.controller()
    out: dict[str, Any] = {"namespaces_present": len(env.namespaces), "timestamp": (
        "client side: time.monotonic() right after the namespace create call returned; link seen on an "
        "admin watch of ServiceAccounts (fieldSelector metadata.name=default)")}
    for group, names in groups.items():
        out[group] = {
            "namespace_created_to_linked_ms": percentiles(linked[n] - created[n][1] for n in names),
            "create_call_started_to_linked_ms": percentiles(linked[n] - created[n][0] for n in names),
            "namespace_created_to_default_sa_ms": percentiles(appeared[n] - created[n][1] for n in names),
            "default_sa_to_linked_ms": percentiles(linked[n] - appeared[n] for n in names),
        }
    out["driver_gc"] = pauses.summary()
    elapsed, stolen = time.monotonic() - started, procstat.steal_seconds() - steal0
    out["host_steal"] = {"cpu_seconds": round(stolen, 2), "window_s": round(elapsed, 1),
                         "share_of_cpus": round(stolen / (elapsed * (os.cpu_count() or 1)), 3)}
    out["controller_histogram_delta"] = {dict(labels).get("le", name): round(v) for (name, labels), v in
                                         prom.diff(ctl1, ctl0).items() if name.startswith("tcr_assistant_link")}
    # tidy up: the namespaces go, so later phases see exactly their N
    for ns in created:
        with contextlib.suppress(KubeError):
            env.kube.request("DELETE", NAMESPACES.path(name=ns))
    with contextlib.suppress(TimeoutError):
        wait_for(lambda: not env.kube.list_all(NAMESPACES.path(), {"labelSelector": "tcr-bench=lat"})["items"],
                 300, what="latency namespaces deleted", interval=1.0)
    return out


# -- cleanup -------------------------------------------------------------------------------------------


def cleanup(env: Env, name: str, timeout: float) -> dict[str, Any]:
    """Delete the ImagePullSecret; time until its finalizer is released (every Secret and entry removed)."""
    window = Window(env)
    t0 = time.monotonic()
    env.kube.request("DELETE", IMAGEPULLSECRETS.path(name=name))
    wait_for(lambda: env.kube.get(IMAGEPULLSECRETS.path(name=name)) is None, timeout, what=f"{name} gone",
             interval=0.2)
    gone = time.monotonic() - t0
    env.wait_quiet()
    counts = window.stop()
    return {"cleanup_s": round(gone, 2), "writes": counts["writes_reconciled_resources"], "counts": counts}


# -- minted tokens ---------------------------------------------------------------------------------------

MINT_API_KEY = "bench-tcr-api-key"


def minted_renewal(env: Env, name: str, standin: TcrStandIn, ca_file: Path, timeout: float) -> dict[str, Any]:
    """An ImagePullSecret whose token the controller mints from the TCR API stand-in (temp tokens
    of ``standin.token_lifetime`` seconds): time until the first token is in every namespace, then
    the cost of one renewal (TCR API calls, requests to the API server, writes) until the renewed
    token is in every namespace, the controller's RSS with minting on, and the token helper's own
    peak RSS (a process per mint, measured by running it once here)."""
    env.kube.request("POST", SECRETS.path(env.addon.namespace), body={
        "apiVersion": "v1", "kind": "Secret", "metadata": {
            "name": MINT_API_KEY, "labels": {api.LABEL_CREDENTIAL_SOURCE: "true"}},
        "stringData": {"secretId": STANDIN_SECRET_ID, "secretKey": STANDIN_SECRET_KEY}})
    bench = set(env.namespaces)
    tokens: dict[str, str] = {}
    arrived: dict[tuple[str, str], float] = {}  # (namespace, token) -> monotonic time seen

    def on_secret(kind: str, obj: dict[str, Any], now: float) -> None:
        token = _password(obj)
        namespace = str((obj.get("metadata") or {}).get("namespace"))
        if kind != "DELETED" and token and namespace in bench:
            tokens[namespace] = token
            arrived.setdefault((namespace, token), now)

    def everywhere(token: str) -> bool:
        return all(tokens.get(ns) == token for ns in bench)

    watcher = Watcher(env.kube, SECRETS.path(), on_secret, {"labelSelector": f"{api.LABEL_IPS}={name}"})
    try:
        t0 = time.monotonic()
        env.kube.request("POST", IMAGEPULLSECRETS.path(), body={
            "apiVersion": api.API_VERSION, "kind": api.KIND, "metadata": {"name": name},
            "spec": {"namespaces": "*", "serviceAccounts": "default", "docker": {
                "server": SERVER, "tokenFrom": {"tcr": {
                    "instanceId": STANDIN_INSTANCE, "region": STANDIN_REGION, "endpoint": standin.address,
                    "apiKeySecretRef": {"name": MINT_API_KEY}}}}}})
        wait_for(lambda: bool(standin.issued) and everywhere(standin.issued[0].token), timeout,
                 what="the first minted token in every namespace", interval=0.1)
        first = standin.issued[0]
        first_everywhere = max(arrived[(ns, first.token)] for ns in bench) - t0
        env.wait_quiet(quiet=1.0)
        window = Window(env)
        wait_for(lambda: len(standin.issued) > 1 and everywhere(standin.issued[-1].token),
                 timeout + standin.token_lifetime, what="the renewed token in every namespace", interval=0.1)
        renewed = standin.issued[-1]
        seen = [arrived[(ns, renewed.token)] for ns in bench]
        last_seen_wall = time.time() - (time.monotonic() - max(seen))
        env.wait_quiet(quiet=1.0)
        counts = window.stop()
    finally:
        watcher.stop()
    calls = len(standin.issued) - 1
    helper_peak = _helper_peak_rss_mib(standin, ca_file)
    rss = env.rss()
    env.kube.request("DELETE", IMAGEPULLSECRETS.path(name=name))
    wait_for(lambda: env.kube.get(IMAGEPULLSECRETS.path(name=name)) is None, timeout, what=f"{name} gone",
             interval=0.2)
    env.kube.request("DELETE", SECRETS.path(env.addon.namespace, MINT_API_KEY))
    env.wait_quiet()
    assert first.expires_at is not None and renewed.expires_at is not None
    return {"namespaces": len(bench), "token_lifetime_s": standin.token_lifetime,
            "first_token_everywhere_s": round(first_everywhere, 2),
            "renewal_tcr_api_calls": calls,
            "renewal_requests": counts["controller_requests"],
            "renewal_requests_per_namespace": round(counts["controller_requests"] / len(bench), 2),
            "renewal_writes": counts["writes_reconciled_resources"],
            "renewal_spread_s": round(max(seen) - min(seen), 2),
            # when the renewal was minted, as a fraction of the first token's lifetime
            "renewed_at_fraction": round((renewed.expires_at - first.expires_at) / standin.token_lifetime, 2),
            "margin_before_old_expiry_s": round(first.expires_at - last_seen_wall, 1),
            "controller_rss_mib": rss["rss_mib"], "controller_peak_rss_mib": rss["peak_rss_mib"],
            "helper_peak_rss_mib": helper_peak, "counts": counts}


def _helper_peak_rss_mib(standin: TcrStandIn, ca_file: Path) -> float:
    """Peak RSS of one ``python -m tcr_assistant.tcrtoken.helper`` run (ru_maxrss of a child of its own)."""
    request = {"source": {"instanceId": STANDIN_INSTANCE, "region": STANDIN_REGION, "tokenType": "temp",
                          "endpoint": standin.address},
               "apiKey": {"secretId": STANDIN_SECRET_ID, "secretKey": STANDIN_SECRET_KEY},
               "caFile": str(ca_file), "timeout": 10}
    script = ("import json, resource, subprocess, sys; "
              "p = subprocess.run([sys.executable, '-m', 'tcr_assistant.tcrtoken.helper'], input=sys.stdin.read(), "
              "capture_output=True, text=True); "
              "assert 'token' in json.loads(p.stdout), p.stdout; "
              "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)")
    proc = subprocess.run([sys.executable, "-c", script], input=json.dumps(request), capture_output=True, text=True,
                          timeout=60, check=True)
    return round(int(proc.stdout.strip()) / 1024, 1)


# -- hosts-updater -------------------------------------------------------------------------------------


def hosts_updater(intervals: int, interval: float = 1.0) -> dict[str, Any]:
    """RSS of `hosts-updater` while it runs ``intervals`` loops over a 3-entry config."""
    with tempfile.TemporaryDirectory(prefix="tcr-bench-hosts-") as tmp:
        config = Path(tmp) / "config.json"
        hosts = Path(tmp) / "hosts"
        config.write_text(json.dumps({"hosts": [
            {"domain": "a.tencentcloudcr.com", "ip": "10.0.0.10", "disabled": False},
            {"domain": "b.tencentcloudcr.com", "ip": "10.0.0.11", "disabled": False},
            {"domain": "c.tencentcloudcr.com", "ip": "10.0.0.12", "disabled": True},
        ]}))
        hosts.write_text("127.0.0.1 localhost\n::1 localhost\n")
        log = Path(tmp) / "hosts-updater.log"
        with log.open("wb") as log_file:
            proc = subprocess.Popen([str(VENV / "bin" / "hosts-updater"), "--config", str(config), "--hosts-file",
                                     str(hosts), "--interval", str(interval)], stdout=subprocess.DEVNULL,
                                    stderr=log_file, start_new_session=True)
        samples: list[float] = []
        cpu = peak = 0.0
        try:
            window = intervals * interval + 0.5
            window_end = time.monotonic() + window

            def sampled_to_the_end() -> bool:
                samples.append(procstat.rss_mib(proc.pid))
                return time.monotonic() >= window_end

            # The window is the wait: one RSS sample every 0.1 s, failing at once if hosts-updater exits.
            wait_for(sampled_to_the_end, window + 30, 0.1, what=f"{window:g} s of RSS samples",
                     process=proc, name="hosts-updater", log=log, error=RuntimeError)
            peak = procstat.peak_rss_mib(proc.pid)
            cpu = procstat.cpu_seconds(proc.pid)
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(10)
        wrote = "10.0.0.11 b.tencentcloudcr.com" in hosts.read_text()
    return {"intervals": intervals, "interval_s": interval, "rss_mib": round(samples[-1], 1),
            "max_rss_mib": round(max(samples), 1), "peak_rss_mib": round(peak, 1), "cpu_s": round(cpu, 2),
            "hosts_file_written": wrote}
