"""Helpers for the controller's integration tests: the chart's CRD, an in-process controller,
a raw JSON API helper, and a TCP proxy that can stall or cut the controller's connections."""

from __future__ import annotations

import contextlib
import re
import select
import socket
import subprocess
import threading
import urllib.request
import uuid
from typing import Any

from support import load_crd, seed_sample, wait_for
from tcr_assistant.k8s.client import NAMESPACES, SECRETS, SERVICEACCOUNTS, Kube
from tcr_assistant.reconciler.controller import Controller
from tcr_assistant.reconciler.options import Options
from tcr_assistant.reconciler.writes import IMAGEPULLSECRETS
from tcr_assistant.spec import api

ADDON_NS = "tcr-test-controller"  # not the chart's namespace: chart tests install there
SAMPLE: dict[str, Any] = seed_sample()


class K:
    """Admin helper speaking raw JSON (the same transport the controller uses)."""

    def __init__(self, kube: Kube) -> None:
        self.kube = kube
        self.created: list[str] = []  # namespaces to delete after the test

    # namespaces / service accounts / secrets
    def create_namespace(self, name: str | None = None, annotations: dict[str, str] | None = None,
                         labels: dict[str, str] | None = None) -> str:
        name = name or f"c-{uuid.uuid4().hex[:10]}"
        meta: dict[str, Any] = {"name": name}
        if annotations:
            meta["annotations"] = annotations
        if labels:
            meta["labels"] = labels
        self.kube.request("POST", NAMESPACES.path(), body={"apiVersion": "v1", "kind": "Namespace", "metadata": meta})
        self.created.append(name)
        return name

    def label_namespace(self, name: str, labels: dict[str, str | None]) -> None:
        """Set (or, with None, remove) labels on a namespace."""
        self.kube.request("PATCH", NAMESPACES.path(name=name), body={"metadata": {"labels": labels}},
                          content_type="application/merge-patch+json")

    def delete_namespace(self, name: str) -> None:
        self.kube.delete(NAMESPACES.path(name=name))

    def sa(self, ns: str, name: str = "default") -> dict[str, Any] | None:
        return self.kube.get(SERVICEACCOUNTS.path(ns, name))

    def pull_secrets(self, ns: str, name: str = "default") -> list[str]:
        obj = self.sa(ns, name) or {}
        return [str((e or {}).get("name")) for e in obj.get("imagePullSecrets") or []]

    def create_sa(self, ns: str, name: str, pull: list[str] | None = None, annotations: dict[str, str] | None = None
    ) -> dict[str, Any]:
        body: dict[str, Any] = {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": name}}
        if pull:
            body["imagePullSecrets"] = [{"name": n} for n in pull]
        if annotations:
            body["metadata"]["annotations"] = annotations
        return self.kube.request("POST", SERVICEACCOUNTS.path(ns), body=body)

    def patch_sa(self, ns: str, name: str, patch: dict[str, Any]) -> dict[str, Any]:
        return self.kube.request(
            "PATCH", SERVICEACCOUNTS.path(ns, name), body=patch, content_type="application/merge-patch+json"
        )

    def secret(self, ns: str, name: str) -> dict[str, Any] | None:
        return self.kube.get(SECRETS.path(ns, name))

    def create_credential_secret(self, name: str, string_data: dict[str, str], *, marked: bool = True,
                                 ns: str = ADDON_NS, secret_type: str = "Opaque") -> None:
        """A Secret a passwordSecretRef may read (``marked``: with the credential-source label)."""
        meta: dict[str, Any] = {"name": name}
        if marked:
            meta["labels"] = {api.LABEL_CREDENTIAL_SOURCE: "true"}
        self.kube.request("POST", SECRETS.path(ns), body={
            "apiVersion": "v1", "kind": "Secret", "type": secret_type, "metadata": meta, "stringData": string_data})

    def wait_default_sa(self, ns: str, timeout: float = 30) -> None:
        wait_for(lambda: self.sa(ns) is not None, timeout, what=f"ServiceAccount {ns}/default")

    # ImagePullSecrets
    def create_ips(self, name: str, spec: dict[str, Any], labels: dict[str, str] | None = None) -> dict[str, Any]:
        meta: dict[str, Any] = {"name": name}
        if labels:
            meta["labels"] = labels
        body = {"apiVersion": api.API_VERSION, "kind": api.KIND, "metadata": meta, "spec": spec}
        return self.kube.request("POST", IMAGEPULLSECRETS.path(), body=body)

    def ips(self, name: str) -> dict[str, Any] | None:
        return self.kube.get(IMAGEPULLSECRETS.path(name=name))

    def patch_ips(self, name: str, patch: dict[str, Any]) -> dict[str, Any]:
        return self.kube.request(
            "PATCH", IMAGEPULLSECRETS.path(name=name), body=patch, content_type="application/merge-patch+json"
        )

    def delete_ips(self, name: str, wait: bool = True, timeout: float = 60) -> None:
        self.kube.delete(IMAGEPULLSECRETS.path(name=name))
        if wait:
            wait_for(lambda: self.ips(name) is None, timeout, what=f"ImagePullSecret {name} gone")

    def events_for(self, name: str) -> list[dict[str, Any]]:
        doc = self.kube.request(
            "GET",
            "/api/v1/namespaces/default/events",
            query={"fieldSelector": f"involvedObject.name={name},involvedObject.kind={api.KIND}"},
        )
        return list(doc.get("items") or [])


def apply_crd(kube: Kube) -> None:
    crd = load_crd()
    path = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions"
    existing = kube.get(f"{path}/{api.CRD_NAME}")
    if existing is None:
        kube.request("POST", path, body=crd)

    def established() -> bool:
        obj = kube.get(f"{path}/{api.CRD_NAME}") or {}
        conds = (obj.get("status") or {}).get("conditions") or []
        return any(c.get("type") == "Established" and c.get("status") == "True" for c in conds)

    wait_for(established, 30, what="CRD established")
    # the API discovery may lag a moment behind Established
    wait_for(lambda: _lists(kube), 30, what="ImagePullSecret list served")


def _lists(kube: Kube) -> bool:
    try:
        kube.request("GET", IMAGEPULLSECRETS.path())
        return True
    except Exception:
        return False


class RunningController:
    def __init__(self, controller: Controller) -> None:
        self.controller = controller
        self.thread = threading.Thread(target=self._run, name="controller-under-test", daemon=True)
        self.exit_code: int | None = None

    def _run(self) -> None:
        self.exit_code = self.controller.manager.run()

    def start(self, wait_leading: bool = True) -> RunningController:
        self.thread.start()
        wait_for(self.controller.manager.synced, 30, what="controller caches synced")
        if wait_leading:
            wait_for(self.controller.manager.leading.is_set, 30, what="controller leading")
        return self

    def stop(self) -> None:
        self.controller.manager.stop()
        self.thread.join(30)

    def settle(self, timeout: float = 30.0) -> None:
        """Wait until the controller is quiescent: nothing queued, running or delayed."""
        wait_for(self.controller.manager.quiescent, timeout, interval=0.02, what="the controller to be quiescent")

    def settle_after_service_accounts(self, k: K, namespace: str, timeout: float = 30.0) -> None:
        """Settle once the controller has seen every ServiceAccount change made so far: a watch
        delivers events in order, so when a new barrier account (opted out: never written)
        is in the controller's cache, so is every change before it."""
        barrier = f"barrier-{uuid.uuid4().hex[:8]}"
        k.create_sa(namespace, barrier, annotations={api.OPT_OUT_ANNOTATION: "true"})

        def seen() -> bool:
            with self.controller.state.lock:
                return self.controller.state.account(namespace, barrier) is not None

        wait_for(seen, timeout, interval=0.02, what=f"the controller to see ServiceAccount {namespace}/{barrier}")
        self.settle(timeout)


def fast_options(**over: Any) -> Options:
    opts = Options(
        namespace=ADDON_NS,
        workers=4,
        drift_period=1.0,
        sa_drift_delay=0.2,
        status_delay=0.2,
        watch_timeout=60,
        read_timeout=90.0,
        # The registries of these tests' objects do not exist: asking them would add Events and
        # status writes to every test. tests/controller/test_registry_check.py turns it on.
        registry_check=False,
    )
    for key, value in over.items():
        setattr(opts, key, value)
    return opts


# -- a TCP proxy between the controller and the API server -----------------------------------------


class Proxy:
    """Forwards 127.0.0.1:port to the API server. ``stall()`` stops forwarding on existing
    connections (a half-open/stalled connection); ``outage(True)`` also drops every connection
    and refuses new ones (API server down)."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.stalled: set[int] = set()
        self.generation = 0
        self.down = False
        self.conns: list[tuple[socket.socket, socket.socket]] = []
        self.lock = threading.Lock()
        self.closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self.closed:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            if self.down:
                c.close()
                continue
            try:
                u = socket.create_connection(self.target)
            except OSError:
                c.close()
                continue
            with self.lock:
                self.conns.append((c, u))
                gen = self.generation
            threading.Thread(target=self._pump, args=(c, u, gen), daemon=True).start()

    def _pump(self, c: socket.socket, u: socket.socket, gen: int) -> None:
        try:
            while not self.closed:
                r, _, _ = select.select([c, u], [], [], 0.2)
                if gen in self.stalled:
                    continue  # hold the bytes: the peer sees a silent connection
                for s in r:
                    data = s.recv(65536)
                    if not data:
                        return
                    (u if s is c else c).sendall(data)
        except OSError:
            return
        finally:
            for s in (c, u):
                with contextlib.suppress(OSError):
                    s.close()

    def stall(self) -> None:
        """Freeze every connection open now; new connections work."""
        with self.lock:
            self.stalled.add(self.generation)
            self.generation += 1

    def outage(self, on: bool) -> None:
        self.down = on
        if on:
            with self.lock:
                conns, self.conns = self.conns, []
            for c, u in conns:
                for s in (c, u):
                    with contextlib.suppress(OSError):
                        s.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self.closed = True
        self.outage(True)
        self.sock.close()


def metrics_text(metrics_url: str) -> str:
    """What a running controller's /metrics serves."""
    with urllib.request.urlopen(metrics_url, timeout=10) as response:
        return str(response.read().decode())


def admission_checks(metrics_url: str) -> dict[str, float]:
    """A running controller's count of namespace reads asked for by admitted Pods, by outcome."""
    text = metrics_text(metrics_url)
    found = re.findall(r'^tcr_assistant_admission_checks_total\{outcome="(\w+)"\} (\S+)$', text, re.MULTILINE)
    return {outcome: float(value) for outcome, value in found}


def host_address() -> str:
    """An address of this machine that is not loopback: what a registry in the cluster's network
    looks like to the controller, which refuses to send credentials to loopback."""
    out = subprocess.run(["ip", "-4", "-o", "addr", "show", "scope", "global"], capture_output=True, text=True,
                         check=True).stdout
    addresses = [line.split()[3].split("/")[0] for line in out.splitlines()]
    assert addresses, f"no global IPv4 address on this machine to serve a test registry on:\n{out}"
    return addresses[0]


def free_port(address: str) -> int:
    with socket.socket() as sock:
        sock.bind((address, 0))
        return int(sock.getsockname()[1])
