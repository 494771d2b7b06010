"""The product's promise on a real node: a Pod that names no imagePullSecrets pulls a private image.

A private registry (Debian's distribution) with htpasswd authentication and TLS from our own CA
runs inside the node's network namespace under a TCR-like name that resolves only through the
node's hosts file, where the hosts-updater DaemonSet writes it. Values come from
`scripts/values`, as a user writes them. The steps run in order, on one release:

1. a Deployment in a namespace created after the install pulls a private image and is Ready;
   with our Secret deleted by hand just before, the Deployment's Pod brings it back and pulls
   at the first try;
2. the same Pod in an excluded namespace is refused by the registry (the kubelet's own error); an
   image the node already holds follows the kubelet's rule of its minor (refused from 1.35);
3. with the hosts-updater turned off the name no longer resolves (the kubelet's own error);
4. the password rotates: new values, `helm upgrade`, and a freshly pushed image is pulled;
   throughout, the controller's registry check (through the hosts entry, trusting the
   registry's CA from the values) shows the credential accepted;
5. the controller container stayed within the chart's memory limit (peak from its cgroup);
6. `helm uninstall` leaves the node's hosts file byte for byte as it was before the install.

Every private image has a digest of its own: the kubelet remembers which Secret pulled an image
and would otherwise refuse or allow a cached one for reasons unrelated to the step.
"""

from __future__ import annotations

import base64
import contextlib
import json
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from harness import addon, node, oci, registry, tools
from node_support import deployment, pods, pull_failure, ready, tcr_like_registry
from support import REPO_ROOT, kubectl, wait_for

pytestmark = pytest.mark.promise

NAMESPACE = addon.NAMESPACE
IPS_NAME = "e2e-private"
SECRET = f"tcr.ips{IPS_NAME}"
USERNAME = "100012345678"
REPOSITORY = "team/app"
RESULTS = REPO_ROOT / ".local" / "results" / "node-promise.json"


@dataclass
class Promise:
    cluster: node.NodeCluster
    registry: registry.PrivateRegistry
    release: addon.NodeRelease
    directory: Path
    excluded: str
    hosts_before: bytes
    started: float
    figures: dict[str, Any] = field(default_factory=dict)

    @property
    def hostname(self) -> str:
        return self.registry.hostname

    def push(self, tag: str) -> str:
        """A new private image with a digest of its own; returns its reference."""
        image = oci.private_test_image(self.directory / f"{tag}.tar", f"{self.hostname}/{REPOSITORY}:{tag}",
                                       nonce=secrets.token_hex(16))
        self.registry.push(image.archive, REPOSITORY, tag, via=self.registry.listen)
        return image.ref

    def values(self, password: str, *, hosts_updater: bool = True) -> Path:
        """Values as a user writes them with `scripts/values` (password from a file, never echoed)."""
        password_file = self.directory / "password"
        password_file.write_text(password)
        password_file.chmod(0o600)
        path = self.directory / "values.yaml"
        argv = [sys.executable, str(REPO_ROOT / "scripts" / "values"), "--registry", self.hostname,
                "--name", IPS_NAME, "--username", USERNAME, "--password-file", str(password_file),
                "--exclude-namespaces", self.excluded, "-o", str(path)]
        if hosts_updater:
            argv += ["--host", f"{self.hostname}={node.SERVICE_HOST_IP}"]
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0, proc.stderr
        assert password not in proc.stdout + proc.stderr
        return path

    def registry_ca_values(self) -> Path:
        """The registry's CA for the controller's registry check (the node trusts it already)."""
        path = self.directory / "registry-ca-values.yaml"
        path.write_text(yaml.safe_dump({"controller": {"registryCheck": {
            "caBundle": self.registry.ca_file.read_text()}}}))
        return path

    def upgrade(self, values: Path, *extra: str) -> None:
        self.release.values_files = [values, self.registry_ca_values()]
        self.release.set_values = ["hostsUpdater.interval=2", *extra]
        self.release.install()


def new_namespace(prefix: str) -> str:
    """A namespace created after the install, once the add-on has linked its `default` ServiceAccount.

    A Pod copies its ServiceAccount's imagePullSecrets once, at admission: a Pod admitted before
    the controller links `default` never gets the Secret (a race this suite does not measure).
    """
    name = f"{prefix}-{secrets.token_hex(3)}"
    kubectl("create", "namespace", name)
    wait_for(lambda: SECRET in kubectl("-n", name, "get", "serviceaccount", "default", "-o",
                                       "jsonpath={.imagePullSecrets[*].name}", check=False).stdout,
             timeout=60, what=f"ServiceAccount default in {name} linked to {SECRET}")
    return name


@pytest.fixture(scope="module")
def promise(node_cluster: node.NodeCluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Promise]:
    directory = Path(tmp_path_factory.mktemp("promise"))
    # The node trusts the registry's CA, as a node of a cluster trusts its company's CA.
    with tcr_like_registry(node_cluster, directory, USERNAME, "tcr-addon-e2e-registry-ca") as private:
        state = Promise(node_cluster, private, addon.NodeRelease(node_cluster), directory,
                        excluded=f"excluded-{secrets.token_hex(3)}", hosts_before=node_cluster.hosts_file.read_bytes(),
                        started=time.monotonic())
        try:
            yield state
        finally:
            RESULTS.parent.mkdir(parents=True, exist_ok=True)
            RESULTS.write_text(json.dumps(state.figures, indent=2) + "\n")
            print(f"\n[node] promise figures: {json.dumps(state.figures)}")
            if addon.NAMESPACE in kubectl("get", "namespaces", "-o", "name").stdout and kubectl(
                    "-n", NAMESPACE, "get", "deploy", "-o", "name").stdout:
                with contextlib.suppress(addon.AddonError):
                    state.release.uninstall()


def test_a_new_namespace_pulls_a_private_image_with_no_pull_secret_written(promise: Promise) -> None:
    image = promise.push("v1")
    assert f"{promise.hostname}" not in promise.hosts_before.decode(), "the name resolves only through our line"
    installed = time.monotonic()
    promise.upgrade(promise.values(promise.registry.password))
    promise.figures["helm_install_wait_s"] = round(time.monotonic() - installed, 1)
    assert f"{node.SERVICE_HOST_IP}\t{promise.hostname}".encode() in promise.cluster.hosts_file.read_bytes() or (
        promise.hostname.encode() in promise.cluster.hosts_file.read_bytes()), "hosts-updater wrote the node's line"

    created = time.monotonic()
    namespace = new_namespace("app")
    kubectl("-n", namespace, "apply", "-f", "-", input_text=deployment("app", image))
    wait_for(lambda: ready(namespace, "app"), timeout=180, interval=0.2,
             what=f"the private image's Pod in {namespace} Ready (last pull error: {pull_failure(namespace, 'app')})")
    promise.figures["namespace_to_pod_ready_s"] = round(time.monotonic() - created, 1)
    promise.figures["nothing_to_pod_ready_s"] = round(time.monotonic() - promise.started, 1)
    pod = pods(namespace, "app")[0]
    assert [ref["name"] for ref in pod["spec"].get("imagePullSecrets", [])] == [SECRET], (
        "the Pod got the pull secret from its ServiceAccount, not from its spec")
    assert "imagePullSecrets" not in json.loads(
        kubectl("-n", namespace, "get", "deploy", "app", "-o", "json").stdout)["spec"]["template"]["spec"]
    # The controller, a Pod on the node, asked the registry through the hosts entry: accepted.
    wait_for(lambda: credentials_accepted() == "True", timeout=60,
             what=f"CredentialsAccepted True (now {credentials_accepted()!r})")
    print("\n" + kubectl("get", "ipss", IPS_NAME).stdout)


def credentials_accepted() -> str:
    return kubectl("get", "ipss", IPS_NAME, "-o",
                   'jsonpath={.status.conditions[?(@.type=="CredentialsAccepted")].status}').stdout.strip()


def failed_pulls(namespace: str) -> list[str]:
    """Every pull the kubelet reported failed in ``namespace`` (its Events)."""
    events = json.loads(kubectl("-n", namespace, "get", "events", "-o", "json").stdout)["items"]
    return [e.get("message", "") for e in events
            if e.get("reason") in ("Failed", "ErrImagePull", "BackOff") and "pull" in e.get("message", "").lower()]


def test_a_secret_deleted_by_hand_is_back_before_the_next_pod_pulls(promise: Promise) -> None:
    """Default drift mode ("poll", every 1200 s): the periodic pass does not read this new
    namespace's Secret for 20 minutes; the Pod's admission does, and the Pod pulls first time."""
    image = promise.push("after-delete")  # never on the node: the kubelet must pull it
    namespace = new_namespace("repaired")
    kubectl("-n", namespace, "delete", "secret", SECRET)
    time.sleep(2)
    assert kubectl("-n", namespace, "get", "secret", SECRET, check=False).returncode != 0, (
        "the control: nothing else puts it back in this window")
    created = time.monotonic()
    kubectl("-n", namespace, "apply", "-f", "-", input_text=deployment("app", image))
    wait_for(lambda: ready(namespace, "app"), timeout=180, interval=0.2,
             what=f"the Pod Ready (last pull error: {pull_failure(namespace, 'app')})")
    promise.figures["deleted_secret_to_pod_ready_s"] = round(time.monotonic() - created, 1)
    assert failed_pulls(namespace) == []
    assert kubectl("-n", namespace, "get", "secret", SECRET, "-o", "name").stdout.strip() == f"secret/{SECRET}"


def refused_by_the_registry(message: str) -> bool:
    return "no basic auth credentials" in message or "401" in message or "authorization failed" in message


def test_an_excluded_namespace_is_refused_by_the_registry(promise: Promise) -> None:
    kubectl("create", "namespace", promise.excluded)
    image = promise.push("excluded")  # never on the node: the kubelet must pull it
    kubectl("-n", promise.excluded, "apply", "-f", "-", input_text=deployment("app", image))
    message = wait_for(lambda: pull_failure(promise.excluded, "app"), timeout=120, interval=0.5,
                       what="the kubelet's pull error in the excluded namespace")
    assert refused_by_the_registry(message), message
    assert not ready(promise.excluded, "app")


def test_an_image_already_on_the_node_follows_the_kubelets_rule_for_its_minor(promise: Promise) -> None:
    """The very image the node pulled with our Secret, in the excluded namespace (no Secret there).

    From 1.35 the kubelet checks that a Pod may use an image pulled with credentials
    (KubeletEnsureSecretPulledImages, on by default) and pulls again: the registry refuses. Before
    1.35 any Pod on that node runs a cached image; only the AlwaysPullImages admission plugin (or
    `imagePullPolicy: Always`) closes that, which is Kubernetes' behaviour, not the add-on's.
    """
    image = f"{promise.hostname}/{REPOSITORY}:v1"
    kubectl("-n", promise.excluded, "apply", "-f", "-", input_text=deployment("cached", image))
    if tools.minor_number(promise.cluster.kubernetes) >= 35:
        message = wait_for(lambda: pull_failure(promise.excluded, "cached"), timeout=120, interval=0.5,
                           what="the kubelet's pull error for a cached image without the Secret")
        assert refused_by_the_registry(message), message
        assert not ready(promise.excluded, "cached")
    else:
        wait_for(lambda: ready(promise.excluded, "cached"), timeout=120, interval=0.2,
                 what=f"the cached image's Pod Ready on {promise.cluster.kubernetes} "
                 f"(pull error: {pull_failure(promise.excluded, 'cached')})")


def test_without_the_hosts_line_the_name_does_not_resolve(promise: Promise) -> None:
    promise.upgrade(promise.values(promise.registry.password, hosts_updater=False), "hostsUpdater.enabled=false")
    wait_for(lambda: promise.cluster.hosts_file.read_bytes() == promise.hosts_before, timeout=60,
             what="the hosts line removed from the node")
    # containerd (Go) re-reads /etc/hosts at most every 5 s: let its cached copy expire.
    time.sleep(6)
    image = promise.push("v2")
    namespace = new_namespace("nohosts")
    kubectl("-n", namespace, "apply", "-f", "-", input_text=deployment("app", image))
    message = wait_for(lambda: pull_failure(namespace, "app"), timeout=120, interval=0.5,
                       what="the kubelet's pull error without the hosts line")
    assert promise.hostname in message and ("no such host" in message or "lookup" in message), message
    promise.upgrade(promise.values(promise.registry.password))
    wait_for(lambda: promise.hostname.encode() in promise.cluster.hosts_file.read_bytes(), timeout=60,
             what="the hosts line back on the node")


def test_rotated_password_reaches_new_pulls_after_helm_upgrade(promise: Promise) -> None:
    new_password = secrets.token_urlsafe(18)
    promise.registry.set_password(new_password)
    promise.upgrade(promise.values(new_password))
    namespace = new_namespace("rotated")

    def distributed_password() -> str | None:
        out = kubectl("-n", namespace, "get", "secret", SECRET, "-o", "json", check=False)
        if out.returncode != 0:
            return None
        config = json.loads(base64.b64decode(json.loads(out.stdout)["data"][".dockerconfigjson"]))
        return str(config["auths"][promise.hostname]["password"])

    wait_for(lambda: distributed_password() == new_password, timeout=60, what="the new password distributed")
    wait_for(lambda: credentials_accepted() == "True", timeout=60, what="the new password accepted by the registry")
    image = promise.push("v3")
    kubectl("-n", namespace, "apply", "-f", "-", input_text=deployment("app", image))
    wait_for(lambda: ready(namespace, "app"), timeout=180, interval=0.2,
             what=f"a fresh image pulled with the rotated password (last error: {pull_failure(namespace, 'app')})")


def test_controller_stays_within_its_memory_limit(promise: Promise) -> None:
    pod = json.loads(kubectl("-n", NAMESPACE, "get", "pods", "-l", "app.kubernetes.io/component=controller",
                             "-o", "json").stdout)["items"][0]
    limit = pod["spec"]["containers"][0]["resources"]["limits"]["memory"]
    peak = promise.cluster.container_peak_memory(pod, "manager")
    promise.figures["controller_peak_memory_mib"] = round(peak / 2**20, 1)
    promise.figures["controller_memory_limit"] = limit
    assert limit.endswith("Mi") and peak < int(limit[:-2]) * 2**20, (peak, limit)
    restarts = pod["status"]["containerStatuses"][0]["restartCount"]
    assert restarts == 0, "the controller was never restarted (an OOM kill would restart it)"


def controller_pods() -> list[dict[str, Any]]:
    items = json.loads(kubectl("-n", NAMESPACE, "get", "pods", "-l", "app.kubernetes.io/component=controller",
                               "-o", "json").stdout)["items"]
    return [pod for pod in items if not pod["metadata"].get("deletionTimestamp")]


def test_two_replicas_are_both_ready_and_each_serves_the_webhook(promise: Promise) -> None:
    """The standby is Ready too (caches synced) and answers on the webhook port, so
    `helm upgrade --wait` with two replicas returns, and the API server may call either."""
    values = promise.release.values_files[0]
    promise.upgrade(values, "controller.replicas=2")  # --wait: both Pods must be Ready
    try:
        running = controller_pods()
        assert len(running) == 2
        for pod in running:
            conditions = {c["type"]: c["status"] for c in pod["status"].get("conditions") or []}
            assert conditions.get("Ready") == "True", pod["metadata"]["name"]
            answer = kubectl("-n", NAMESPACE, "exec", pod["metadata"]["name"], "-c", "manager", "--", "python", "-c",
                             "import ssl, urllib.request; print(urllib.request.urlopen("
                             "'https://127.0.0.1:9443/healthz', context=ssl._create_unverified_context()).status)")
            assert answer.stdout.strip() == "200", pod["metadata"]["name"]
        lease = json.loads(kubectl("-n", NAMESPACE, "get", "lease", "tcr-assistant-leader", "-o", "json").stdout)
        holder = lease["spec"]["holderIdentity"]
        assert [p["metadata"]["name"] for p in running if holder.startswith(p["metadata"]["name"] + "_")] != []
    finally:
        promise.upgrade(values)


def test_uninstall_leaves_the_node_hosts_file_as_it_was(promise: Promise) -> None:
    promise.release.uninstall()
    assert promise.cluster.hosts_file.read_bytes() == promise.hosts_before
    leftovers = [s["metadata"]["namespace"] for s in json.loads(kubectl("get", "secrets", "-A", "-o", "json").stdout)
                 ["items"] if s["metadata"]["name"] == SECRET]
    assert leftovers == []
