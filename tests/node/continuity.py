"""Load and invariants while a cluster changes hands (migration, upgrade, rollback).

`Continuity` keeps creating work and watching for gaps while a test runs its steps:

* a Pod every `pod_interval` seconds, cycling through the served namespaces (old ones and ones
  it creates along the way), with the private image, `imagePullPolicy: Always` (every Pod is a
  real pull through the registry name) and no `imagePullSecrets` of its own; each is deleted
  once Ready;
* a new namespace every `new_namespace_every` Pods: it joins the rotation once its `default`
  ServiceAccount is linked (a Pod admitted before that would race the linking, with any
  controller);
* an edit of each of `edited_ips` (ImagePullSecrets not owned by Helm, so the validating
  webhook reviews them) every `edit_interval` seconds: any refusal other than a conflict is a gap;
* watches (not polls) on Secrets and ServiceAccounts in every namespace: a distributed Secret
  deleted or recreated (new UID), or an entry removed from a ServiceAccount even for one
  event, is a gap; a watch that expires re-lists and compares with what it knew (a Secret
  recreated meanwhile shows by its UID; one only deleted, by the tests' final UID check);
* watches on the webhook Service and its EndpointSlices (`webhook_service`): replayed in
  resourceVersion order at the end, every state in which a port of the Service had no Ready
  endpoint under its name is a gap (kube-proxy refuses connections then). This sees a gap that
  the edits, one a second, may fall between;
* the node's hosts file, read every 50 ms: two lines answering the registry name at any moment
  is a gap; none is a gap when two reads in a row agree (a single read may meet the
  updater's in-place write half done) and at the end of every step.

`finish()` stops the loops, waits for every Pod and returns a `Report`; `assert_no_gap()`
fails with every violation at once.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import statistics
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kubernetes import client, config, watch
from kubernetes.client.exceptions import ApiException

GROUP, VERSION, PLURAL = "tcr.tencentcloudcr.com", "v1", "imagepullsecrets"
RUN_LABEL = "tcr-addon.test/continuity"
EDIT_ANNOTATION = "tcr-addon.test/continuity-edit"
HOSTS_SAMPLE_SECONDS = 0.05
WATCH_SECONDS = 30  # server-side timeout of one watch; it is resumed from its resourceVersion


def hosts_answers(text: str, hostname: str) -> int:
    """How many lines of a hosts file answer ``hostname`` (case-insensitive, trailing dot ignored)."""
    wanted = hostname.lower().rstrip(".")
    count = 0
    for line in text.splitlines():
        fields = line.split("#", 1)[0].split()
        if len(fields) >= 2 and wanted in (name.lower().rstrip(".") for name in fields[1:]):
            count += 1
    return count


@dataclass
class Report:
    """What happened under load; every list holds one human-readable line per violation."""

    step_seconds: dict[str, float] = field(default_factory=dict)
    pods_created: int = 0
    pods_ready: int = 0
    pod_ready_seconds: list[float] = field(default_factory=list)
    namespaces_created: int = 0
    link_seconds: list[float] = field(default_factory=list)
    edits: int = 0
    hosts_samples: int = 0
    tolerated: list[str] = field(default_factory=list)  # refusals a step declared known (`step(tolerate=...)`)
    pods_refused: list[str] = field(default_factory=list)
    pods_without_entry: list[str] = field(default_factory=list)
    pods_not_ready: list[str] = field(default_factory=list)
    namespaces_not_linked: list[str] = field(default_factory=list)
    writes_refused: list[str] = field(default_factory=list)
    secrets_deleted: list[str] = field(default_factory=list)
    secrets_recreated: list[str] = field(default_factory=list)
    links_removed: list[str] = field(default_factory=list)
    hosts_violations: list[str] = field(default_factory=list)
    service_unserved: list[str] = field(default_factory=list)
    watch_errors: list[str] = field(default_factory=list)
    service_changes: int = 0  # Service and EndpointSlice changes replayed

    VIOLATIONS = ("pods_refused", "pods_without_entry", "pods_not_ready", "namespaces_not_linked",
                  "writes_refused", "secrets_deleted", "secrets_recreated", "links_removed",
                  "hosts_violations", "service_unserved", "watch_errors")

    def violations(self) -> dict[str, list[str]]:
        return {name: getattr(self, name) for name in self.VIOLATIONS if getattr(self, name)}

    def assert_no_gap(self) -> None:
        found = self.violations()
        assert self.pods_created > 0 and self.edits > 0, "the load never ran"
        assert not found, "gaps under load:\n" + "\n".join(
            f"{name} ({len(lines)}): " + "; ".join(lines[:10]) for name, lines in found.items())

    def figures(self) -> dict[str, Any]:
        """The numbers for a results file (violations as counts)."""
        def summary(values: list[float]) -> dict[str, float]:
            if not values:
                return {}
            return {"median": round(statistics.median(values), 2), "max": round(max(values), 2)}
        return {
            "step_seconds": {k: round(v, 1) for k, v in self.step_seconds.items()},
            "pods_created": self.pods_created, "pods_ready": self.pods_ready,
            "pod_ready_seconds": summary(self.pod_ready_seconds),
            "namespaces_created": self.namespaces_created, "link_seconds": summary(self.link_seconds),
            "ips_edits": self.edits, "hosts_samples": self.hosts_samples, "service_changes": self.service_changes,
            "tolerated": list(self.tolerated),
            "violations": {name: len(lines) for name, lines in self.violations().items()},
        }


def _message(exc: ApiException) -> str:
    """The API server's message, its end kept (the cause of a failed webhook call comes last)."""
    try:
        text = str(json.loads(exc.body or "{}").get("message") or exc.body)
    except ValueError:
        text = str(exc.body)
    return text if len(text) <= 400 else "…" + text[-400:]


@dataclass(frozen=True)
class ServiceChange:
    """One Service or EndpointSlice as a watch delivered it."""

    version: int  # resourceVersion: the API server's etcd revision, ordered across kinds
    kind: str  # "Service" or "EndpointSlice"
    event: str  # LISTED, ADDED, MODIFIED, DELETED
    name: str
    obj: Any
    seen: str  # wall clock when it arrived


def _port_name(port: Any) -> str:
    return port.name or ""


def unserved_ports(service: Any, slices: Sequence[Any]) -> list[str]:
    """The ports of `service` that no EndpointSlice serves with a Ready endpoint under their name
    (kube-proxy matches a Service port to slice ports by name and refuses when none is left)."""
    served = {_port_name(port) for found in slices if any(
        e.conditions is None or e.conditions.ready is not False for e in found.endpoints or [])
        for port in found.ports or []}
    return [_port_name(port) or "(unnamed)" for port in service.spec.ports or [] if _port_name(port) not in served]


def replay_service(changes: Sequence[ServiceChange], after: int) -> tuple[int, list[str]]:
    """Replay the changes in resourceVersion order; from revision `after` on (when both watches
    had listed), every state with an unserved port is a gap. Returns (changes replayed, gaps)."""
    service: Any = None
    slices: dict[str, Any] = {}
    gaps: list[str] = []
    gap_open = False
    for change in sorted(changes, key=lambda c: c.version):
        if change.kind == "Service":
            service = None if change.event == "DELETED" else change.obj
        elif change.event == "DELETED":
            slices.pop(change.name, None)
        else:
            slices[change.name] = change.obj
        if change.version <= after or service is None:
            continue
        missing = unserved_ports(service, list(slices.values()))
        if missing and not gap_open:
            gaps.append(f"{change.seen} port(s) {', '.join(missing)} without a Ready endpoint after "
                        f"{change.kind} {change.name} {change.event.lower()} (resourceVersion {change.version})")
        gap_open = bool(missing)
    return len(changes), gaps


def _api(kubeconfig: str) -> client.ApiClient:
    return config.new_client_from_config(config_file=kubeconfig)


def _ready(pod: Any) -> bool:
    return any(c.type == "Ready" and c.status == "True" for c in (pod.status.conditions or []))


def _waiting_reason(pod: Any) -> str:
    for status in pod.status.container_statuses or []:
        if status.state and status.state.waiting:
            return f"{status.state.waiting.reason}: {(status.state.waiting.message or '')[:200]}"
    return pod.status.phase or "unknown"


class Continuity:
    """Context manager: the load and the watches run from `__enter__` until `finish()` (or exit)."""

    def __init__(self, *, hostname: str, image: str, secret_names: Sequence[str], served_namespaces: Sequence[str],
                 edited_ips: Sequence[str], hosts_file: Path, pod_interval: float = 1.0,
                 new_namespace_every: int = 5, edit_interval: float = 1.0, kubeconfig: Path | None = None,
                 webhook_service: tuple[str, str] | None = None) -> None:
        self.hostname = hostname
        self.image = image
        self.secret_names = frozenset(secret_names)
        self.namespaces = list(served_namespaces)
        self.edited_ips = list(edited_ips)
        self.hosts_file = hosts_file
        self.pod_interval = pod_interval
        self.new_namespace_every = new_namespace_every
        self.edit_interval = edit_interval
        self.kubeconfig = str(kubeconfig or os.environ["KUBECONFIG"])
        self.webhook_service = webhook_service  # (namespace, name)
        self.run_id = secrets.token_hex(3)
        self.report = Report()
        self.created_namespaces: list[str] = []
        self._lock = threading.Lock()
        self._loading = threading.Event()  # set while Pods, namespaces and edits are being made
        self._stop = threading.Event()  # set when the watches and the sampler stop
        self._threads: list[threading.Thread] = []
        self._pods: dict[str, float] = {}  # "ns/name" -> created (monotonic), until Ready
        self._secret_uids: dict[str, str] = {}  # "ns/name" -> uid of every distributed Secret seen
        self._links: dict[str, frozenset[str]] = {}  # "ns/sa" -> our entries on it
        self._pending_namespaces = 0
        self._tolerate: str | None = None
        self._service_changes: list[ServiceChange] = []
        self._service_listed: dict[str, int] = {}  # kind -> resourceVersion of its watch's first list
        watches = [self._watch_secrets, self._watch_service_accounts]
        if webhook_service is not None:
            watches += [self._watch_webhook_service, self._watch_webhook_slices]
        self._watches = watches
        self._synced = threading.Barrier(len(watches) + 1)  # the watches and __enter__: the load starts once all listed

    # -- life cycle -----------------------------------------------------------------------------

    def __enter__(self) -> Continuity:
        for target in (*self._watches, self._sample_hosts, self._watch_pods):
            self._start(target)
        self._synced.wait(timeout=120)
        self._loading.set()
        for target in (self._create_pods, self._edit_ips):
            self._start(target)
        return self

    def __exit__(self, *exc: object) -> None:
        self._loading.clear()
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=WATCH_SECONDS + 10)
        self.cleanup()

    def _start(self, target: Callable[[], None]) -> None:
        def guarded() -> None:
            try:
                target()
            except Exception as exc:  # a dying loop is a failed measurement, never a silent one
                self._violation("watch_errors", f"{target.__name__}: {type(exc).__name__}: {exc}"[:300])
        thread = threading.Thread(target=guarded, name=f"continuity-{target.__name__}", daemon=True)
        thread.start()
        self._threads.append(thread)

    def _violation(self, kind: str, line: str) -> None:
        with self._lock:
            tolerate = self._tolerate
            if kind == "writes_refused" and tolerate is not None and tolerate in line:
                self.report.tolerated.append(f"{time.strftime('%H:%M:%S')} {line}")
                return
            getattr(self.report, kind).append(f"{time.strftime('%H:%M:%S')} {line}")

    @contextlib.contextmanager
    def step(self, name: str, tolerate: str | None = None) -> Iterator[None]:
        """Time one step; at its end the hosts file must answer the registry name exactly once.

        ``tolerate``: a refused ImagePullSecret write whose message holds this text, during this
        step only, is recorded in `Report.tolerated` instead of failing (a gap the step cannot
        close, which the caller names and documents)."""
        started = time.monotonic()
        self._tolerate = tolerate
        try:
            yield
        finally:
            self._tolerate = None
            self.report.step_seconds[name] = time.monotonic() - started
            answers = hosts_answers(self.hosts_file.read_text(), self.hostname)
            if answers != 1:
                self._violation("hosts_violations", f"after step {name!r}: {answers} lines answer {self.hostname}")

    def finish(self, timeout: float = 300) -> Report:
        """Stop making work, wait until every Pod is Ready (or `timeout`), stop the watches."""
        self._loading.clear()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if not self._pods and not self._pending_namespaces:
                    break
            time.sleep(0.5)
        api = client.CoreV1Api(_api(self.kubeconfig))
        with self._lock:
            waiting = list(self._pods)
        for key in waiting:
            namespace, name = key.split("/", 1)
            try:
                reason = _waiting_reason(api.read_namespaced_pod(name, namespace))
            except ApiException as exc:
                reason = f"unreadable ({exc.status})"
            self._violation("pods_not_ready", f"{key}: {reason}")
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=WATCH_SECONDS + 10)
        self._threads.clear()
        if self.webhook_service is not None:
            with self._lock:
                after = max(self._service_listed.values(), default=0)
                self.report.service_changes, gaps = replay_service(self._service_changes, after)
                self.report.service_unserved += gaps
        return self.report

    def cleanup(self) -> None:
        """Delete the namespaces this load created (with their Pods)."""
        api = client.CoreV1Api(_api(self.kubeconfig))
        for namespace in self.created_namespaces:
            with contextlib.suppress(ApiException):
                api.delete_namespace(namespace)
        self.created_namespaces.clear()

    # -- the load -------------------------------------------------------------------------------

    def _pod_body(self, name: str) -> dict[str, Any]:
        return {"apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": name, "labels": {RUN_LABEL: self.run_id}},
                "spec": {"terminationGracePeriodSeconds": 0, "automountServiceAccountToken": False,
                         "containers": [{"name": "app", "image": self.image, "imagePullPolicy": "Always"}]}}

    def _create_pods(self) -> None:
        api = client.CoreV1Api(_api(self.kubeconfig))
        sequence = 0
        while self._loading.is_set():
            tick = time.monotonic()
            sequence += 1
            if self.new_namespace_every and sequence % self.new_namespace_every == 0:
                self._start_namespace(f"cont-{self.run_id}-{sequence}")
            with self._lock:
                namespace = self.namespaces[sequence % len(self.namespaces)]
            name = f"cont-{self.run_id}-{sequence}"
            with self._lock:
                self._pods[f"{namespace}/{name}"] = time.monotonic()
            try:
                api.create_namespaced_pod(namespace, self._pod_body(name))  # type: ignore[arg-type]  # a dict is sent as is
                with self._lock:
                    self.report.pods_created += 1
            except ApiException as exc:
                with self._lock:
                    self._pods.pop(f"{namespace}/{name}", None)
                self._violation("pods_refused", f"{namespace}/{name}: {exc.status} {exc.reason}: {exc.body!s:.200}")
            time.sleep(max(0.0, self.pod_interval - (time.monotonic() - tick)))

    def _start_namespace(self, name: str) -> None:
        with self._lock:
            self._pending_namespaces += 1

        def link_then_serve() -> None:
            api = client.CoreV1Api(_api(self.kubeconfig))
            try:
                api.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
                self.created_namespaces.append(name)
                created = time.monotonic()
                deadline = created + 120
                while time.monotonic() < deadline and not self._stop.is_set():
                    with contextlib.suppress(ApiException):
                        sa = api.read_namespaced_service_account("default", name)
                        if self.secret_names & {ref.name for ref in sa.image_pull_secrets or []}:
                            with self._lock:
                                self.report.link_seconds.append(time.monotonic() - created)
                                self.report.namespaces_created += 1
                                self.namespaces.append(name)
                            return
                    time.sleep(0.2)
                self._violation("namespaces_not_linked", f"{name}: default never linked within 120 s")
            finally:
                with self._lock:
                    self._pending_namespaces -= 1

        self._start(link_then_serve)

    def _edit_ips(self) -> None:
        api = client.CustomObjectsApi(_api(self.kubeconfig))
        sequence = 0
        while self._loading.is_set():
            tick = time.monotonic()
            for name in self.edited_ips:
                sequence += 1
                body = {"metadata": {"annotations": {EDIT_ANNOTATION: str(sequence)}}}
                try:
                    api.patch_cluster_custom_object(GROUP, VERSION, PLURAL, name, body)
                    with self._lock:
                        self.report.edits += 1
                except ApiException as exc:
                    if exc.status != 409:
                        self._violation("writes_refused", f"{name}: {exc.status} {exc.reason}: {_message(exc)}")
            time.sleep(max(0.0, self.edit_interval - (time.monotonic() - tick)))

    # -- the watches ----------------------------------------------------------------------------

    def _watch_all(self, list_call: Callable[..., Any], observe: Callable[[str, Any], None],
                   synced: threading.Barrier | None, on_list: Callable[[int], None] | None = None,
                   **selectors: str) -> None:
        """List, then watch from the list's resourceVersion until stopped; re-list when it expires.

        ``list_call`` is the client's own method (the watch reads its return type from it);
        ``selectors`` go to the list and the watch alike. ``observe(event_type, obj)`` sees each
        listed object as "LISTED", so after an expired watch a change shows as a difference from
        what it knew; ``on_list`` gets each list's resourceVersion."""
        while not self._stop.is_set():
            listed = list_call(**selectors)
            for item in listed.items:
                observe("LISTED", item)
            version = listed.metadata.resource_version
            if on_list is not None:
                on_list(int(version))
            if synced is not None:
                synced.wait(timeout=120)
                synced = None
            stream = watch.Watch()
            try:
                while not self._stop.is_set():
                    for event in stream.stream(list_call, resource_version=version, timeout_seconds=WATCH_SECONDS,
                                               allow_watch_bookmarks=True, **selectors):
                        if event["type"] == "BOOKMARK":  # its object is a plain dict, not a model
                            version = stream.resource_version or version
                        else:
                            obj = event["object"]
                            version = obj.metadata.resource_version
                            observe(event["type"], obj)
                        if self._stop.is_set():
                            break
            except ApiException as exc:
                if exc.status != 410:  # expired: list again and compare with what we knew
                    raise
            finally:
                stream.stop()

    def _watch_secrets(self) -> None:
        api = client.CoreV1Api(_api(self.kubeconfig))

        def observe(kind: str, secret: Any) -> None:
            name = secret.metadata.name
            if name not in self.secret_names:
                return
            key = f"{secret.metadata.namespace}/{name}"
            uid = secret.metadata.uid
            with self._lock:
                known = self._secret_uids.get(key)
                if kind == "DELETED":
                    if secret.metadata.namespace not in self.created_namespaces:
                        self.report.secrets_deleted.append(f"{time.strftime('%H:%M:%S')} {key}")
                    return
                if known is not None and known != uid:
                    self.report.secrets_recreated.append(f"{time.strftime('%H:%M:%S')} {key} ({known} -> {uid})")
                self._secret_uids[key] = uid

        self._watch_all(api.list_secret_for_all_namespaces, observe, self._synced)

    def _watch_service_accounts(self) -> None:
        api = client.CoreV1Api(_api(self.kubeconfig))

        def observe(kind: str, sa: Any) -> None:
            key = f"{sa.metadata.namespace}/{sa.metadata.name}"
            ours = frozenset(ref.name for ref in sa.image_pull_secrets or [] if ref.name in self.secret_names)
            with self._lock:
                before = self._links.get(key, frozenset())
                if kind == "DELETED":
                    self._links.pop(key, None)
                    return
                lost = before - ours
                if lost:
                    self.report.links_removed.append(
                        f"{time.strftime('%H:%M:%S')} {key} lost {', '.join(sorted(lost))} ({kind})")
                self._links[key] = ours

        self._watch_all(api.list_service_account_for_all_namespaces, observe, self._synced)

    def _record_service_change(self, kind: str) -> Callable[[str, Any], None]:
        def observe(event: str, obj: Any) -> None:
            change = ServiceChange(int(obj.metadata.resource_version), kind, event, obj.metadata.name, obj,
                                   time.strftime("%H:%M:%S"))
            with self._lock:
                self._service_changes.append(change)
        return observe

    def _service_listed_at(self, kind: str) -> Callable[[int], None]:
        def on_list(version: int) -> None:
            with self._lock:
                self._service_listed.setdefault(kind, version)
        return on_list

    def _watch_webhook_service(self) -> None:
        assert self.webhook_service is not None
        namespace, name = self.webhook_service
        api = client.CoreV1Api(_api(self.kubeconfig))
        self._watch_all(api.list_namespaced_service, self._record_service_change("Service"), self._synced,
                        self._service_listed_at("Service"), namespace=namespace, field_selector=f"metadata.name={name}")

    def _watch_webhook_slices(self) -> None:
        assert self.webhook_service is not None
        namespace, name = self.webhook_service
        api = client.DiscoveryV1Api(_api(self.kubeconfig))
        self._watch_all(api.list_namespaced_endpoint_slice, self._record_service_change("EndpointSlice"),
                        self._synced, self._service_listed_at("EndpointSlice"), namespace=namespace,
                        label_selector=f"kubernetes.io/service-name={name}")

    def _watch_pods(self) -> None:
        api = client.CoreV1Api(_api(self.kubeconfig))
        deleting: set[str] = set()

        def observe(kind: str, pod: Any) -> None:
            key = f"{pod.metadata.namespace}/{pod.metadata.name}"
            if kind == "DELETED" or key in deleting:
                return
            with self._lock:
                created = self._pods.get(key)
            if created is None or not _ready(pod):
                return
            entries = {ref.name for ref in pod.spec.image_pull_secrets or []}
            with self._lock:
                self._pods.pop(key, None)
                self.report.pods_ready += 1
                self.report.pod_ready_seconds.append(time.monotonic() - created)
                if not entries & self.secret_names:
                    self.report.pods_without_entry.append(f"{key}: imagePullSecrets {sorted(entries)}")
            deleting.add(key)
            with contextlib.suppress(ApiException):
                api.delete_namespaced_pod(pod.metadata.name, pod.metadata.namespace, grace_period_seconds=0)

        self._watch_all(api.list_pod_for_all_namespaces, observe, None, label_selector=f"{RUN_LABEL}={self.run_id}")

    def _sample_hosts(self) -> None:
        previous_empty = False
        while not self._stop.is_set():
            try:
                answers = hosts_answers(self.hosts_file.read_text(), self.hostname)
            except OSError as exc:
                self._violation("hosts_violations", f"unreadable: {exc}")
                answers = 1
            with self._lock:
                self.report.hosts_samples += 1
            if answers > 1:
                self._violation("hosts_violations", f"{answers} lines answer {self.hostname}")
            if answers == 0 and previous_empty:
                self._violation("hosts_violations", f"no line answers {self.hostname} (two reads in a row)")
            previous_empty = answers == 0
            self._stop.wait(HOSTS_SAMPLE_SECONDS)
