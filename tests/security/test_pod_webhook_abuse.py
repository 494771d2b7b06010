"""The Pod webhook's abuse paths, on the real API server.

Actors: anyone who can create Pods or ServiceAccounts in a namespace, and a node (its kubelet).
Each test makes the request an attacker (or an unlucky user) would make and asserts what the
add-on refuses to do: give a node a Secret through a mirror Pod or a Pod it creates, ignore a
brand-new ServiceAccount's opt-out, produce a Pod the API server must refuse, or grow the
controller's memory with ServiceAccounts carrying thousands of entries.

The chart is installed once for the module (helm) and `tcr-assistant run` serves the Pod
webhook as a host process with the chart's own ServiceAccount token, as in
tests/controller/test_pod_webhook.py. The uncached-ServiceAccount test runs first, before that
release exists: it serves the webhook from this process with a frozen copy of a controller's
cache, the only way to hold a ServiceAccount out of the cache for as long as a test needs.
"""

from __future__ import annotations

import base64
import contextlib
import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import yaml
from controller_support import K, RunningController, admission_checks
from webhook_support import loopback_pair, write_pair

from harness import addon
from harness.cluster import ControlPlane
from harness.pki import CertificateAuthority
from support import pointed_at, wait_for
from tcr_assistant.admission.podreview import ANNOTATION_ADDED, PodFacts
from tcr_assistant.admission.pods import PodWebhook
from tcr_assistant.admission.server import WebhookServer
from tcr_assistant.k8s.client import NAMESPACES, SERVICEACCOUNTS, Kube, KubeError
from tcr_assistant.reconciler.state import ControllerState
from tcr_assistant.spec import api

NAME = "podsec"
SECRET = api.secret_name(NAME)
CHECK_INTERVAL = 10  # controller.driftRepair.checkOnPodSeconds, by default
MEMORY_LIMIT_MIB = 128  # the chart's controller limit (values.yaml resources.limits.memory)
TENANT_ACCOUNTS = 150
TENANT_ENTRIES = 4000
ENTRY_NAME_CHARS = 250
# The API server's own rules (Kubernetes facts, not the add-on's)
MIRROR_ANNOTATION = "kubernetes.io/config.mirror"
ANNOTATIONS_LIMIT_BYTES = 256 * 1024  # apimachinery's TotalAnnotationSizeLimitB
DOCKER = {"dockerServer": "pods.tencentcloudcr.com", "dockerUsername": "100012345678", "dockerPassword": "pw"}


def bare_pod(name: str, annotations: dict[str, str] | None = None, service_account: str | None = None
             ) -> dict[str, Any]:
    spec: dict[str, Any] = {"containers": [{"name": "c", "image": "pods.tencentcloudcr.com/app:1"}]}
    if service_account:
        spec["serviceAccountName"] = service_account
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "annotations": annotations or {}},
            "spec": spec}


def create_pod(k: K, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
    return k.kube.request("POST", f"/api/v1/namespaces/{namespace}/pods", body=body)


def entries(pod: dict[str, Any]) -> list[str]:
    return [str(e.get("name")) for e in pod["spec"].get("imagePullSecrets") or []]


def added_by_webhook(pod: dict[str, Any]) -> bool:
    return ANNOTATION_ADDED in (pod["metadata"].get("annotations") or {})


def unlinked(k: K, namespace: str) -> None:
    """Take our entry off `default` by hand: the controller waits before putting it back (relink
    backoff), and a Pod created meanwhile is one the webhook would give the entry to."""
    k.patch_sa(namespace, "default", {"imagePullSecrets": None})


def linked_namespace(k: K) -> str:
    namespace = k.create_namespace(f"podsec-{uuid.uuid4().hex[:8]}")
    wait_for(lambda: SECRET in k.pull_secrets(namespace), timeout=60, what=f"{namespace}/default linked")
    return namespace


# ---------------------------------------------------------------------------------------------
# A ServiceAccount the controller has not cached yet (runs first: before the module's release).


def mutating_configuration(name: str, port: int, ca_pem: bytes, label: tuple[str, str]) -> dict[str, Any]:
    """The chart's Pod webhook, pointed at this process, for namespaces carrying ``label`` only;
    failurePolicy Fail, so a Pod is created only once this webhook has answered."""
    return {"apiVersion": "admissionregistration.k8s.io/v1", "kind": "MutatingWebhookConfiguration",
            "metadata": {"name": name},
            "webhooks": [{
                "name": "mpod.tcr.tencentcloudcr.com", "admissionReviewVersions": ["v1"],
                "clientConfig": {"url": f"https://127.0.0.1:{port}{api.POD_WEBHOOK_PATH}",
                                 "caBundle": base64.b64encode(ca_pem).decode()},
                "rules": [{"apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE"], "resources": ["pods"],
                           "scope": "Namespaced"}],
                "failurePolicy": "Fail", "sideEffects": "NoneOnDryRun", "timeoutSeconds": 10,
                "namespaceSelector": {"matchLabels": {label[0]: label[1]}}, "reinvocationPolicy": "Never"}]}


def frozen_copy(state: ControllerState) -> ControllerState:
    """What the Pod webhook reads of a controller's cache, as it is now: nothing more arrives."""
    with state.lock:
        return ControllerState(image_pull_secrets=dict(state.image_pull_secrets),
                               local_secrets=dict(state.local_secrets), namespaces=dict(state.namespaces),
                               service_accounts={ns: dict(sas) for ns, sas in state.service_accounts.items()})


@pytest.fixture
def frozen_cache_webhook(k: K, admin_kube: Kube, start_controller: Callable[..., RunningController],
                         ips_cleanup: list[str], tmp_path: Path) -> Iterator[tuple[str, str, PodWebhook]]:
    """(namespace, our Secret's name, the webhook): a namespace served by an ImagePullSecret, and the
    Pod webhook answering for it from a copy of the controller's cache taken once the namespace
    was in it: every ServiceAccount created afterwards is one this cache has not seen."""
    label = ("tcr-podsec-test", uuid.uuid4().hex[:8])
    namespace = k.create_namespace(labels={label[0]: label[1]})
    ips = f"uncached-{label[1]}"
    k.create_ips(ips, {"namespaces": namespace, "serviceAccounts": "*", "docker": {
        "server": DOCKER["dockerServer"], "username": DOCKER["dockerUsername"], "password": DOCKER["dockerPassword"]}})
    ips_cleanup.append(ips)
    controller = start_controller()
    wait_for(lambda: k.pull_secrets(namespace) == [api.secret_name(ips)], timeout=30, what="default linked")
    webhook = PodWebhook(frozen_copy(controller.controller.state), admin_kube)
    controller.stop()  # nor does it link new accounts: a Pod gets our entry from the webhook or not at all
    ca = CertificateAuthority("tcr-podsec-test-ca")
    write_pair(tmp_path / "certs", loopback_pair(ca))
    server = WebhookServer("127.0.0.1", 0, tmp_path / "certs", routes={api.POD_WEBHOOK_PATH: webhook.handle})
    server.start()
    config = f"tcr-podsec-{label[1]}"
    admin_kube.request("POST", "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations",
                       body=mutating_configuration(config, server.port, ca.cert_pem, label))
    try:
        def consulted() -> bool:
            before = server.reviews
            k.kube.request("POST", f"/api/v1/namespaces/{namespace}/pods", query={"dryRun": "All"},
                           body=bare_pod(f"probe-{uuid.uuid4().hex[:6]}"))
            return server.reviews > before

        wait_for(consulted, timeout=60, interval=0.2, what="the API server to call the Pod webhook")
        yield namespace, api.secret_name(ips), webhook
    finally:
        admin_kube.delete(f"/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations/{config}")
        server.stop()
        webhook.stop()
        start_controller()  # for ips_cleanup: the ImagePullSecret's finalizer


def test_opt_out_of_a_service_account_not_cached_yet_is_honoured(
        k: K, frozen_cache_webhook: tuple[str, str, PodWebhook]) -> None:
    namespace, secret, webhook = frozen_cache_webhook
    k.create_sa(namespace, "opted-out", annotations={api.OPT_OUT_ANNOTATION: "true"})
    k.create_sa(namespace, "plain")
    with webhook.state.lock:
        assert webhook.state.account(namespace, "opted-out") is None  # not cached: the race, held open
    opted = create_pod(k, namespace, bare_pod("opted", service_account="opted-out"))
    plain = create_pod(k, namespace, bare_pod("plain", service_account="plain"))
    print(f"\n[pod webhook] uncached ServiceAccounts: opted-out one's Pod {entries(opted)}, "
          f"plain one's Pod {entries(plain)}")
    assert entries(opted) == [] and not added_by_webhook(opted), \
        f"the Pod of the opted-out ServiceAccount was given {entries(opted)}"
    # The webhook still acts for an uncached account that did not opt out (it read it live).
    assert entries(plain) == [secret] and added_by_webhook(plain)


# ---------------------------------------------------------------------------------------------
# The chart's release, one for the tests below.


@pytest.fixture(scope="module")
def release(control_plane: ControlPlane, admin_kube: Kube, crd: None,
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[addon.Addon]:
    directory = tmp_path_factory.mktemp("pod-webhook-security")
    values = directory / "values.yaml"
    values.write_text(yaml.safe_dump({"global": {"imagePullSecretsCrs": [{
        "name": NAME, "namespaces": "*", "serviceAccounts": "*", "type": "docker", **DOCKER}]}}))
    with addon.running(control_plane, directory / "addon", [values]) as running, pointed_at(control_plane):
        yield running
        log = (running.directory / "controller.log").read_text(errors="replace")
        running.cleanup_and_uninstall()
    assert "Traceback" not in log, log[-3000:]


@pytest.fixture(scope="module")
def kk(admin_kube: Kube) -> Iterator[K]:
    helper = K(admin_kube)
    yield helper
    for name in helper.created:
        with contextlib.suppress(KubeError):
            helper.delete_namespace(name)


def post_pod(k: K, namespace: str, body: dict[str, Any], headers: dict[str, str] | None = None
             ) -> tuple[dict[str, Any], str]:
    """Create a Pod (with ``headers``, e.g. impersonation); (the Pod, the Warning headers a client
    such as kubectl prints). Raises on refusal, with the API server's message."""
    resp = k.kube.api_client.request(
        "POST", f"/api/v1/namespaces/{namespace}/pods", body=json.dumps(body).encode(),
        headers={"Content-Type": "application/json", "Accept": "application/json", **(headers or {})})
    if not 200 <= resp.status <= 299:
        raise AssertionError(f"the Pod was refused ({resp.status}): {json.loads(resp.data).get('message')}")
    return json.loads(resp.data), resp.headers.get("Warning") or ""


def beside_an_ordinary_pod(k: K, namespace: str, attack: Callable[[str], tuple[dict[str, Any], str]]
                           ) -> tuple[dict[str, Any], str, dict[str, Any]]:
    """(the Pod ``attack`` creates, its warnings, an ordinary Pod created right after) while our entry
    is off `default`, so that the ordinary Pod shows the webhook adding it at that moment. Should
    the controller put the entry back before the ordinary Pod is created (a slow machine), again:
    each removal doubles the controller's wait (relink backoff)."""
    for attempt in range(4):
        unlinked(k, namespace)
        pod, warnings = attack(f"-{attempt}")
        control = create_pod(k, namespace, bare_pod(f"ordinary-{attempt}"))
        if added_by_webhook(control):
            return pod, warnings, control
        wait_for(lambda: SECRET in k.pull_secrets(namespace), timeout=60, what=f"{namespace}/default relinked")
    raise AssertionError("the controller put the entry back before the ordinary Pod each time")


def test_a_storm_of_pods_costs_one_read_per_namespace_per_interval(release: addon.Addon, kk: K) -> None:
    """A Pod admitted in a served namespace asks the controller to read our Secrets there (a
    deleted one is back before the kubelet pulls). Creating Pods must not buy more reads: one
    per namespace per 10 s (`controller.driftRepair.checkOnPodSeconds`), the asks within it
    coalesced into one at its end; dry runs ask nothing. (First to use the release: no ask of an
    earlier test is pending.)"""
    namespace = linked_namespace(kk)
    before = admission_checks(release.metrics_url)
    started = time.monotonic()

    def storm(i: int) -> None:
        post_pod(kk, namespace, bare_pod(f"storm-{i}"))
        kk.kube.request("POST", f"/api/v1/namespaces/{namespace}/pods", query={"dryRun": "All"},
                        body=bare_pod(f"dry-{i}"))

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(storm, range(100)))
    print(f"\n[pod webhook] 100 Pods and 100 dry runs in {time.monotonic() - started:.1f} s")
    wait_for(lambda: admission_checks(release.metrics_url).get("intact", 0) >= before.get("intact", 0) + 2,
             timeout=25, what="the first read and the one at the end of the interval")
    time.sleep(CHECK_INTERVAL + 2)
    after = admission_checks(release.metrics_url)
    assert after == {**before, "intact": before.get("intact", 0) + 2}, (before, after)


def test_mirror_pod_gets_no_entry(release: addon.Addon, kk: K) -> None:
    namespace = linked_namespace(kk)

    def mirror_pod(suffix: str) -> tuple[dict[str, Any], str]:
        static = bare_pod(f"static-web{suffix}", annotations={MIRROR_ANNOTATION: "3f2a"})
        static["spec"]["nodeName"] = "podsec-node"  # (a mirror Pod is bound to its node)
        return post_pod(kk, namespace, static)

    mirror, _, control = beside_an_ordinary_pod(kk, namespace, mirror_pod)
    print(f"\n[pod webhook] mirror Pod: {entries(mirror)}; an ordinary Pod at the same moment: {entries(control)}")
    assert entries(mirror) == [] and not added_by_webhook(mirror)
    assert entries(control) == [SECRET]


def test_pod_created_by_a_node_is_not_mutated(release: addon.Addon, kk: K) -> None:
    namespace = linked_namespace(kk)
    node = f"system:node:podsec-{uuid.uuid4().hex[:6]}"
    # What the Node authorizer grants a kubelet, here through RBAC (this control plane runs RBAC only).
    kk.kube.request("POST", f"/apis/rbac.authorization.k8s.io/v1/namespaces/{namespace}/rolebindings", body={
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": {"name": "node"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "system:node"},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": node}]})

    def as_node(suffix: str) -> tuple[dict[str, Any], str]:
        return post_pod(kk, namespace, bare_pod(f"by-node{suffix}"),
                        {"Impersonate-User": node, "Impersonate-Group": "system:nodes"})

    created, _, control = beside_an_ordinary_pod(kk, namespace, as_node)
    print(f"\n[pod webhook] Pod created as {node}: {entries(created)}; by an admin at the same moment: "
          f"{entries(control)}")
    assert entries(created) == [] and not added_by_webhook(created)
    assert entries(control) == [SECRET]


def test_annotations_near_the_limit_are_admitted_unchanged_with_a_warning(release: addon.Addon, kk: K) -> None:
    namespace = linked_namespace(kk)
    key = "example.com/big"
    value = "x" * (ANNOTATIONS_LIMIT_BYTES - len(key) - 16)  # 16 bytes to spare: too few for ours

    def big(suffix: str) -> tuple[dict[str, Any], str]:
        return post_pod(kk, namespace, bare_pod(f"big{suffix}", annotations={key: value}))

    pod, warnings, control = beside_an_ordinary_pod(kk, namespace, big)
    print(f"\n[pod webhook] Pod with {ANNOTATIONS_LIMIT_BYTES - 16} bytes of annotations: admitted with "
          f"{entries(pod)}; warning: {warnings}")
    assert entries(pod) == [] and not added_by_webhook(pod)
    assert f"tcr-assistant: imagePullSecrets {SECRET} not added" in warnings
    assert f"over the API server's limit of {ANNOTATIONS_LIMIT_BYTES}" in warnings
    assert entries(control) == [SECRET]


# ---------------------------------------------------------------------------------------------
# Memory: ServiceAccounts with thousands of long entries.


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmHWM in /proc/{pid}/status")


def has_entry(k: K, namespace: str, name: str) -> Callable[[], bool]:
    return lambda: SECRET in k.pull_secrets(namespace, name)


def test_service_accounts_with_thousands_of_entries_do_not_grow_the_controller(
        release: addon.Addon, kk: K) -> None:
    tenant = kk.create_namespace(f"podsec-tenant-{uuid.uuid4().hex[:6]}")
    names = [f"tenant-registry-{i:04d}-".ljust(ENTRY_NAME_CHARS, "x") for i in range(TENANT_ENTRIES)]

    def create(i: int) -> None:
        kk.kube.request("POST", SERVICEACCOUNTS.path(tenant), body={
            "apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": f"heavy-{i:03d}"},
            "imagePullSecrets": [{"name": n} for n in names]})

    started = time.monotonic()
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(create, range(TENANT_ACCOUNTS)))
    size_mib = len(json.dumps([{"name": n} for n in names])) / 2**20
    print(f"\n[memory] {TENANT_ACCOUNTS} ServiceAccounts x {TENANT_ENTRIES} entries of {ENTRY_NAME_CHARS} characters "
          f"(~{size_mib:.2f} MiB each, ~{size_mib * TENANT_ACCOUNTS:.0f} MiB in all) created in "
          f"{time.monotonic() - started:.1f} s")
    # The controller that watched them arrive links every one (each write reads the account whole).
    heavy = [f"heavy-{i:03d}" for i in (0, TENANT_ACCOUNTS // 2, TENANT_ACCOUNTS - 1)]
    started = time.monotonic()
    for name in heavy:
        # (each check reads a 1 MiB account: not too often, the API server is busy enough)
        wait_for(has_entry(kk, tenant, name), timeout=300, interval=1.0, what=f"{tenant}/{name} linked")
    print(f"[memory] the last of them linked {time.monotonic() - started:.1f} s later")
    assert release.process is not None
    watched_peak = peak_rss_mib(release.process.pid)

    # A restart: the initial LIST now carries every one of them.
    release.stop_controller()
    started = time.monotonic()
    release.start_controller(timeout=180)
    ready = time.monotonic() - started
    assert release.process is not None
    pid = release.process.pid
    started = time.monotonic()
    elsewhere = kk.create_namespace(f"podsec-other-{uuid.uuid4().hex[:6]}")
    wait_for(lambda: SECRET in kk.pull_secrets(elsewhere), timeout=30, interval=0.05,
             what=f"{elsewhere}/default linked while the tenant's ServiceAccounts are cached")
    linked = time.monotonic() - started
    after_list_peak = peak_rss_mib(pid)
    assert [SECRET in kk.pull_secrets(tenant, name) for name in heavy] == [True] * len(heavy)
    print(f"[memory] peak RSS (VmHWM) of the controller: {watched_peak:.1f} MiB while they arrived by watch; "
          f"{after_list_peak:.1f} MiB after a restart that listed them (ready in {ready:.1f} s); "
          f"a new namespace elsewhere linked {linked:.2f} s after its creation; limit {MEMORY_LIMIT_MIB} MiB")
    assert watched_peak < MEMORY_LIMIT_MIB, f"peak RSS {watched_peak:.1f} MiB while watching"
    assert after_list_peak < MEMORY_LIMIT_MIB, f"peak RSS {after_list_peak:.1f} MiB after the initial list"
    kk.delete_namespace(tenant)
    wait_for(lambda: kk.kube.get(NAMESPACES.path(name=tenant)) is None, timeout=120, interval=1.0,
             what=f"namespace {tenant} gone")


# ---------------------------------------------------------------------------------------------
# The bounds themselves, without a cluster.


def test_a_list_page_is_parsed_one_item_at_a_time() -> None:
    """The initial LIST never holds a page whole: an item is handed over before the next is read."""
    from tcr_assistant.k8s.client import list_members  # (here: the module's other tests run on older code too)

    entry = {"name": "x" * ENTRY_NAME_CHARS}
    item = json.dumps({"metadata": {"name": "heavy"}, "imagePullSecrets": [entry] * TENANT_ENTRIES}).encode()
    body = b'{"kind":"ServiceAccountList","metadata":{"resourceVersion":"7"},"items":[' + b",".join(
        [item] * 20) + b"]}"
    chunk = 1 << 16
    read = 0

    def chunks() -> Iterator[bytes]:
        nonlocal read
        for start in range(0, len(body), chunk):
            read = start + chunk
            yield body[start:start + chunk]

    most_read_per_item = 0
    items = 0
    for key, value in list_members(chunks()):
        if key == "items":
            items += 1
            most_read_per_item = max(most_read_per_item, read - (items - 1) * len(item))
            assert value["metadata"]["name"] == "heavy"
    print(f"\n[list] {len(body) / 2**20:.1f} MiB page of 20 items: at most {most_read_per_item / 2**20:.2f} MiB "
          "read ahead of the items handed over")
    assert items == 20
    assert most_read_per_item < 3 * len(item)  # one item and the read-ahead, never the page


def test_pod_event_queue_and_event_memory_are_bounded() -> None:
    from tcr_assistant.reconciler.state import RECENT_EVENTS_KEPT, remember_event

    class SlowEvents:
        """Event writes that do not finish until released (an API server that stopped answering)."""

        def __init__(self) -> None:
            self.release = threading.Event()
            self.written = 0

        def event(self, *args: Any, **kwargs: Any) -> None:
            self.release.wait(10)
            self.written += 1

    events = SlowEvents()
    webhook = PodWebhook(ControllerState(), events, events_queued=8)  # type: ignore[arg-type]
    facts = PodFacts("team", "default", (), False, False, "", False)
    for _ in range(1000):
        webhook._queue_event((facts, [SECRET]))
    assert webhook._events.qsize() <= 8 and webhook.events_dropped >= 1000 - 8 - 1
    events.release.set()
    webhook.stop()

    recent: dict[tuple[str, str, str], float] = {}
    sent = sum(remember_event(recent, ("ips", "Reason", f"namespace {i}"), float(i) / 1000, 60.0)
               for i in range(100_000))
    assert sent == 100_000 and len(recent) <= RECENT_EVENTS_KEPT
    assert not remember_event(recent, ("ips", "Reason", "namespace 99999"), 100.0, 60.0)  # still de-duplicated
