"""Anyone with network access to the add-on's Pods: slow clients and switched-off routes.

The attacker opens connections to the webhook, health or metrics server and trickles a byte a
second into a request that never ends (slowloris), from one or a few addresses, to hold every
connection slot or a thread per connection. Each test asserts what the servers promise:

- the kube-apiserver (another address) still gets its admission call in, within the webhook's
  timeout; a normal /healthz and /metrics request still answers;
- connections over the per-address cap are closed at once, and counted in the metric
  ``tcr_assistant_http_connections_dropped_total``;
- trickling connections are cut at the request deadline (10 s), however steadily they send;
- the Pod route is not served (404, saying why) when the Pod webhook is switched off.

One attacker program (``ATTACKER``, standard library only) runs as a local process bound to
127.0.0.x source addresses (Linux routes all of 127/8 to lo) and, on the real node, inside a Pod
of the controller's own image.
"""

from __future__ import annotations

import base64
import contextlib
import http.client
import json
import os
import signal
import ssl
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from controller_support import ADDON_NS
from webhook_support import (
    kubectl_json,
    labelled,
    loopback_pair,
    registered_webhook,
    sample,
    wait_until_consulted,
    write_pair,
)

from harness import addon, node
from harness.cluster import ControlPlane, free_port
from harness.pki import CertificateAuthority
from support import kubectl, pointed_at, wait_for
from tcr_assistant.admission.server import WebhookServer
from tcr_assistant.k8s.connections import ServerLimits
from tcr_assistant.spec import api

# The servers' default limits, what the chart runs (ServerLimits(); test 1 checks they are these).
DEADLINE = 10.0  # request_timeout
CONNECTIONS = 64  # max_connections: the attacker opens as many
PER_ADDRESS = 16  # max_connections_per_client
WEBHOOK_TIMEOUT = 5  # the chart's webhook.timeoutSeconds: the API server's wait for an answer
SLACK = 2.0  # scheduling slack on a loaded 2-core machine, added to the deadline when checking cuts

# The attacker: argv[1] is a JSON object (host, port, tls, sources, per_source, seconds, reconnect,
# head). It opens per_source connections from each source address, sends `head` (a request that
# never ends), prints {"event": "holding", ...}, then trickles one byte a second into every open
# connection for `seconds`, reopening closed ones when `reconnect`. A connection closed within
# REFUSED_WITHIN seconds of opening counts as refused at once; the others' lifetimes are reported.
ATTACKER = r'''
import json, select, socket, ssl, sys, time
REFUSED_WITHIN = 0.5
SETTLE = 1.5
cfg = json.loads(sys.argv[1])
context = None
if cfg["tls"]:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
head = cfg["head"].encode()
result = {"connects": 0, "refused": 0, "lifetimes": [], "answered": 0}
live = {}  # socket -> (source, opened)

def open_one(source):
    opened = time.monotonic()
    result["connects"] += 1
    try:
        sock = socket.create_connection((cfg["host"], cfg["port"]), timeout=5,
                                        source_address=(source, 0) if source else None)
        if context is not None:
            sock = context.wrap_socket(sock, server_hostname=cfg["host"])
        sock.sendall(head)
        sock.setblocking(False)
    except (OSError, ssl.SSLError):
        result["refused"] += 1  # closed during the handshake
        return
    live[sock] = (source, opened)

def on_readable(sock, now):
    try:
        data = sock.recv(1024)
    except (ssl.SSLWantReadError, BlockingIOError):
        return  # TLS bookkeeping (session tickets), not a close
    except (OSError, ssl.SSLError):
        data = b""
    closed(sock, now, bool(data))

def closed(sock, now, with_answer=False):
    source, opened = live.pop(sock)
    sock.close()
    result["answered"] += with_answer
    if now - opened < REFUSED_WITHIN and not with_answer:
        result["refused"] += 1
    else:
        result["lifetimes"].append(round(now - opened, 2))
    if cfg["reconnect"]:
        open_one(source)

def watch(seconds):
    end = time.monotonic() + seconds
    while live and time.monotonic() < end:
        readable, _, _ = select.select(list(live), [], [], max(0.0, min(0.2, end - time.monotonic())))
        for sock in readable:
            if sock in live:
                on_readable(sock, time.monotonic())

for source in cfg["sources"]:
    for _ in range(cfg["per_source"]):
        open_one(source)
watch(SETTLE)
print(json.dumps({"event": "holding", "open": len(live), **result}), flush=True)
stop = time.monotonic() + cfg["seconds"]
while time.monotonic() < stop:
    for sock in list(live):
        try:
            sock.send(b"a")
        except (OSError, ssl.SSLError):
            closed(sock, time.monotonic())
    watch(1.0)
    if not live and not cfg["reconnect"]:
        break
result["still_open"] = len(live)
print(json.dumps({"event": "done", **result}), flush=True)
'''


def attacker_config(host: str, port: int, *, tls: bool, sources: list[str], per_source: int, seconds: float,
                    head: str, reconnect: bool = False) -> str:
    return json.dumps({"host": host, "port": port, "tls": tls, "sources": sources, "per_source": per_source,
                       "seconds": seconds, "reconnect": reconnect, "head": head})


def request_head(method: str, path: str) -> str:
    """The start of a request whose header line never ends (the attacker trickles into it)."""
    return f"{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\nX-Slow: "


@dataclass
class Attack:
    """A running local attacker process."""

    process: subprocess.Popen[str]
    holding: dict[str, Any]

    def result(self, timeout: float) -> dict[str, Any]:
        out, err = self.process.communicate(timeout=timeout)
        lines = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
        assert lines and lines[-1]["event"] == "done", f"attacker failed: {err[-2000:]}"
        done: dict[str, Any] = lines[-1]
        return done


@contextlib.contextmanager
def local_attack(port: int, *, tls: bool, sources: list[str], per_source: int, seconds: float,
                 head: str) -> Iterator[Attack]:
    """The attacker as a local process; yields once its first connections are open (or refused)."""
    process = subprocess.Popen(
        [sys.executable, "-c", ATTACKER, attacker_config("127.0.0.1", port, tls=tls, sources=sources,
                                                         per_source=per_source, seconds=seconds, head=head)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        assert process.stdout is not None
        first = process.stdout.readline()
        errors = process.stderr.read() if process.stderr and not first else ""
        assert first.startswith("{"), f"attacker did not start: {first!r} {errors}"
        yield Attack(process, json.loads(first))
    finally:
        if process.poll() is None:
            process.kill()
        process.wait()


def assert_cut_at_the_deadline(result: dict[str, Any], accepted: int, deadline: float) -> None:
    lifetimes = result["lifetimes"]
    print(f"[servers] {result['connects']} connects, {result['refused']} refused at once; lifetimes of the "
          f"accepted (s): min {min(lifetimes, default=0):.1f}, max {max(lifetimes, default=0):.1f}; "
          f"still open: {result['still_open']}")
    assert result["still_open"] == 0, "trickling connections outlived the request deadline"
    assert len(lifetimes) == accepted
    assert max(lifetimes) <= deadline + SLACK, f"a trickling connection was held {max(lifetimes)} s"
    assert result["answered"] == 0  # cut, not answered: the request never completed


# --------------------------------------------------------------------------------------------
# 1. The webhook, called by the real API server, under a slowloris from four addresses
# --------------------------------------------------------------------------------------------


def test_slowloris_on_the_webhook_does_not_keep_the_api_server_out(crd: None, tmp_path: Path) -> None:
    ca = CertificateAuthority("tcr-addon-security-servers-ca")
    write_pair(tmp_path / "certs", loopback_pair(ca))
    server = WebhookServer("127.0.0.1", 0, tmp_path / "certs")
    name = f"tcr-webhook-slowloris-{uuid.uuid4().hex[:6]}"
    with server, registered_webhook(name, server.port, ca.cert_pem):
        wait_until_consulted(server, labelled(sample(f"probe-{uuid.uuid4().hex[:6]}")))
        server.close_connections()  # the API server's kept-alive connection: it must win a new slot
        per_address = PER_ADDRESS
        sources = ["127.0.0.2"] * 2 + ["127.0.0.3", "127.0.0.4", "127.0.0.5"]  # 127.0.0.2 tries twice its cap
        with local_attack(server.port, tls=True, sources=sources, per_source=per_address,
                          seconds=DEADLINE + 3 * SLACK,
                          head=request_head("POST", api.WEBHOOK_PATH)) as attack:
            holding = attack.holding
            print(f"\n[servers] webhook: {holding['open']} trickling connections held, {holding['refused']} "
                  f"closed at once")
            assert holding["open"] == CONNECTIONS  # every slot taken
            assert holding["refused"] == per_address  # 127.0.0.2's second batch: over its cap, closed at once

            started = time.monotonic()
            created = kubectl_json("create", obj=labelled(sample(f"slowloris-{uuid.uuid4().hex[:6]}")))
            took = time.monotonic() - started
            print(f"[servers] ImagePullSecret created during the attack in {took:.2f} s "
                  f"(webhook timeout {WEBHOOK_TIMEOUT} s)")
            assert created.returncode == 0, f"the API server could not call the webhook: {created.stderr}"
            assert took < WEBHOOK_TIMEOUT
            assert server.drops["client_limit"] == per_address
            assert server.drops["evicted"] >= 1  # the API server's connection took an attacker's slot

            result = attack.result(timeout=DEADLINE + 6 * SLACK)
        assert_cut_at_the_deadline(result, accepted=CONNECTIONS, deadline=DEADLINE)
        assert server.drops["deadline"] >= CONNECTIONS - server.drops["evicted"]
        assert server.limits == ServerLimits(request_timeout=DEADLINE, max_connections=CONNECTIONS,
                                             max_connections_per_client=PER_ADDRESS)
        kubectl("delete", "imagepullsecrets", "-l", "tcr-addon.test/owner", "--ignore-not-found", check=False)


# --------------------------------------------------------------------------------------------
# 2. and 3. The controller process: health and metrics servers, and the Pod route
# --------------------------------------------------------------------------------------------


@dataclass
class ControllerProcess:
    health: int
    metrics: int
    webhook: int
    ca: CertificateAuthority
    log: Path

    def get(self, port: int, path: str) -> tuple[int, str]:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
            return int(response.status), response.read().decode()

    def post_webhook(self, path: str, body: bytes) -> tuple[int, dict[str, Any]]:
        context = ssl.create_default_context(cadata=self.ca.cert_pem.decode())
        conn = http.client.HTTPSConnection("127.0.0.1", self.webhook, context=context, timeout=10)
        try:
            conn.request("POST", path, body=body, headers={"Content-Type": "application/json"})
            response = conn.getresponse()
            doc: dict[str, Any] = json.loads(response.read())
            return response.status, doc
        finally:
            conn.close()


@contextlib.contextmanager
def controller_process(plane: ControlPlane, directory: Path, *extra: str) -> Iterator[ControllerProcess]:
    """`tcr-assistant run` as the chart runs it (servers on loopback, certificate files given)."""
    ca = CertificateAuthority("tcr-addon-security-cli-ca")
    write_pair(directory / "certs", loopback_pair(ca))
    running = ControllerProcess(free_port(), free_port(), free_port(), ca, directory / "controller.log")
    exe = Path(sys.executable).parent / "tcr-assistant"
    argv = [
        str(exe), "run", f"--kubeconfig={plane.kubeconfig}", f"--namespace={ADDON_NS}",
        f"--health-probe-bind-address=127.0.0.1:{running.health}",
        f"--metrics-bind-address=127.0.0.1:{running.metrics}",
        "--webhook-host=127.0.0.1", f"--webhook-port={running.webhook}",
        f"--webhook-cert-dir={directory / 'certs'}", *extra,
    ]
    with running.log.open("wb") as log:
        process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT,
                                   env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        def ready() -> bool:
            assert process.poll() is None, running.log.read_text()[-3000:]
            with contextlib.suppress(OSError):
                return running.get(running.health, "/readyz")[0] == 200
            return False

        wait_for(ready, timeout=60, interval=0.2, what="tcr-assistant ready")
        yield running
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def test_slowloris_on_the_health_and_metrics_servers(control_plane: ControlPlane, crd: None,
                                                    tmp_path: Path) -> None:
    with controller_process(control_plane, tmp_path) as running:
        per_address = PER_ADDRESS
        sources = ["127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.5"]
        attacks = [
            local_attack(port, tls=False, sources=sources, per_source=CONNECTIONS // len(sources) + per_address,
                         seconds=DEADLINE + 3 * SLACK, head=request_head("GET", path))
            for port, path in ((running.health, "/healthz"), (running.metrics, "/metrics"))
        ]
        with attacks[0] as on_health, attacks[1] as on_metrics:
            for which, attack in (("health", on_health), ("metrics", on_metrics)):
                print(f"\n[servers] {which}: {attack.holding['open']} trickling connections held, "
                      f"{attack.holding['refused']} closed at once")
                assert attack.holding["open"] == CONNECTIONS  # every slot: 16 from each of four addresses
                assert attack.holding["refused"] == len(sources) * per_address  # over each address's cap
            started = time.monotonic()
            assert running.get(running.health, "/healthz") == (200, "ok\n")
            status, exposition = running.get(running.metrics, "/metrics")
            print(f"[servers] /healthz and /metrics answered during the attack in {time.monotonic() - started:.2f} s")
            assert status == 200
            for which in ("health", "metrics"):
                assert (f'tcr_assistant_http_connections_dropped_total{{reason="client_limit",server="{which}"}} '
                        f'{len(sources) * per_address}.0') in exposition
            results = [attack.result(timeout=DEADLINE + 6 * SLACK) for attack in (on_health, on_metrics)]
        for result in results:
            assert_cut_at_the_deadline(result, accepted=CONNECTIONS, deadline=DEADLINE)
        exposition = running.get(running.metrics, "/metrics")[1]
        assert 'tcr_assistant_http_connections_dropped_total{reason="deadline",server="health"} ' in exposition
    assert b"Traceback" not in running.log.read_bytes()


def pod_review() -> bytes:
    return json.dumps({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {
        "uid": "pod-1", "kind": {"group": "", "version": "v1", "kind": "Pod"}, "operation": "CREATE",
        "namespace": "team-a", "object": {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
                                          "spec": {"containers": [{"name": "c", "image": "x"}]}},
        "userInfo": {"username": "alice"}}}).encode()


@pytest.mark.parametrize("flags", [[], ["--no-pod-webhook"]], ids=["default", "no-pod-webhook"])
def test_the_pod_route_is_not_served_when_the_pod_webhook_is_off(control_plane: ControlPlane, crd: None,
                                                                tmp_path: Path, flags: list[str]) -> None:
    with controller_process(control_plane, tmp_path, *flags) as running:
        status, doc = running.post_webhook(api.POD_WEBHOOK_PATH + "?timeout=2s", pod_review())
        print(f"\n[servers] POST {api.POD_WEBHOOK_PATH} with the Pod webhook off ({flags}): {status}")
        assert status == 404, f"the Pod route was served while the Pod webhook is off: {doc}"
        message = doc["response"]["status"]["message"]
        assert "Pod webhook is switched off" in message and "podWebhook.enabled" in message
        assert doc["response"]["allowed"] is False
        status, _ = running.post_webhook(api.WEBHOOK_PATH, json.dumps({"apiVersion": "admission.k8s.io/v1",
                                                                      "kind": "AdmissionReview"}).encode())
        assert status == 400  # the ImagePullSecret route is still served (and refuses a review without request)


def test_the_pod_route_is_served_when_the_pod_webhook_is_on(control_plane: ControlPlane, crd: None,
                                                           tmp_path: Path) -> None:
    with controller_process(control_plane, tmp_path, "--pod-webhook") as running:
        status, doc = running.post_webhook(api.POD_WEBHOOK_PATH + "?timeout=2s", pod_review())
        assert status == 200, doc
        assert doc["response"]["uid"] == "pod-1" and doc["response"]["allowed"] is True


# --------------------------------------------------------------------------------------------
# 4. On the real node: the attacker is a Pod, the webhook is the chart's Service
# --------------------------------------------------------------------------------------------

NODE_ATTACK_SECONDS = 45
PROBE_NAME = "slowloris-probe"


def attacker_pod(namespace: str, image: str, config: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "slowloris", "namespace": namespace},
            "spec": {"restartPolicy": "Never", "terminationGracePeriodSeconds": 0,
                     "automountServiceAccountToken": False,
                     "containers": [{"name": "attacker", "image": image, "imagePullPolicy": "Never",
                                     "command": ["python", "-c", ATTACKER, config]}]}}


def probe_ips(name: str) -> dict[str, Any]:
    return {"apiVersion": "tcr.tencentcloudcr.com/v1", "kind": "ImagePullSecret", "metadata": {"name": name},
            "spec": {"namespaces": "none-such", "serviceAccounts": "default",
                     "docker": {"server": "probe.tencentcloudcr.com", "username": "1",
                                "password": base64.b64encode(os.urandom(9)).decode()}}}


@pytest.fixture(scope="module")
def node_release(node_cluster: node.NodeCluster) -> Iterator[addon.NodeRelease]:
    with pointed_at(node_cluster):
        release = addon.NodeRelease(node_cluster)
        release.install()
        try:
            yield release
        finally:
            release.uninstall()


def test_slowloris_from_a_pod_does_not_keep_the_api_server_out(node_release: addon.NodeRelease,
                                                               node_cluster: node.NodeCluster) -> None:
    # The image the controller runs (built from our Dockerfile at install): the attacker needs only Python.
    controller_image = kubectl("-n", addon.NAMESPACE, "get", "deployment", "tcr-assistant-controller-manager", "-o",
                               "jsonpath={.spec.template.spec.containers[0].image}").stdout
    webhook_service = json.loads(kubectl("-n", addon.NAMESPACE, "get", "service", api.WEBHOOK_SERVICE, "-o",
                                         "json").stdout)
    cluster_ip = webhook_service["spec"]["clusterIP"]
    port = webhook_service["spec"]["ports"][0]["port"]
    namespace = f"attacker-{uuid.uuid4().hex[:6]}"
    kubectl("create", "namespace", namespace)
    try:
        # One address (the Pod's) holds its cap the whole time: closed connections are reopened.
        config = attacker_config(cluster_ip, port, tls=True, sources=[""], per_source=CONNECTIONS,
                                 seconds=NODE_ATTACK_SECONDS, head=request_head("POST", api.WEBHOOK_PATH),
                                 reconnect=True)
        kubectl("apply", "-f", "-", input_text=yaml.safe_dump(attacker_pod(namespace, controller_image, config)))
        try:
            wait_for(lambda: "holding" in kubectl("-n", namespace, "logs", "slowloris", check=False).stdout,
                     timeout=120, what="the attacker holding its connections")
        except TimeoutError as exc:
            state = kubectl("-n", namespace, "get", "pod", "slowloris", "-o", "jsonpath={.status}", check=False)
            logs = kubectl("-n", namespace, "logs", "slowloris", check=False)
            raise AssertionError(f"{exc}; Pod status: {state.stdout} {state.stderr}; log: {logs.stdout[-2000:]} "
                                 f"{logs.stderr[-2000:]}") from None
        holding = json.loads(kubectl("-n", namespace, "logs", "slowloris").stdout.splitlines()[0])
        print(f"\n[node] attacker Pod: {holding['open']} trickling connections held, {holding['refused']} closed "
              f"at once")
        assert holding["open"] == PER_ADDRESS
        assert holding["refused"] == CONNECTIONS - PER_ADDRESS
        # The API server's kept-alive connection from the install is cut at its deadline meanwhile:
        # the create below needs a new connection while the attacker holds (and reopens) its slots.
        time.sleep(DEADLINE + SLACK)
        started = time.monotonic()
        created = kubectl("create", "-f", "-", input_text=json.dumps(probe_ips(PROBE_NAME)), check=False)
        took = time.monotonic() - started
        print(f"[node] ImagePullSecret created during the attack in {took:.2f} s (webhook timeout "
              f"{WEBHOOK_TIMEOUT} s)")
        assert created.returncode == 0, f"the API server could not call the webhook: {created.stderr}"
        assert took < WEBHOOK_TIMEOUT
        wait_for(lambda: kubectl("-n", namespace, "get", "pod", "slowloris", "-o",
                                 "jsonpath={.status.phase}").stdout in ("Succeeded", "Failed"),
                 timeout=NODE_ATTACK_SECONDS + 60, what="the attacker Pod to finish")
        lines = kubectl("-n", namespace, "logs", "slowloris").stdout.splitlines()
        result = json.loads(lines[-1])
        assert result["event"] == "done"
        lifetimes = result["lifetimes"]
        print(f"[node] attacker: {result['connects']} connects, {result['refused']} refused at once; lifetimes "
              f"(s): max {max(lifetimes, default=0):.1f}")
        assert lifetimes and max(lifetimes) <= DEADLINE + SLACK
        assert result["answered"] == 0
        pod = json.loads(kubectl("-n", addon.NAMESPACE, "get", "pods", "-l",
                                 "app.kubernetes.io/component=controller", "-o", "json").stdout)["items"][0]
        exposition = kubectl("get", "--raw", f"/api/v1/namespaces/{addon.NAMESPACE}/pods/"
                                             f"{pod['metadata']['name']}:8080/proxy/metrics").stdout
        dropped = [line for line in exposition.splitlines()
                   if line.startswith("tcr_assistant_http_connections_dropped_total") and 'server="webhook"' in line]
        print("[node] " + "; ".join(dropped))
        assert any('reason="client_limit"' in line and float(line.split()[-1]) >= holding["refused"]
                   for line in dropped)
    finally:
        kubectl("delete", "namespace", namespace, "--ignore-not-found", "--wait=false", check=False)
        kubectl("delete", "imagepullsecret", PROBE_NAME, "--ignore-not-found", check=False)
