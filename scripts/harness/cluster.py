"""A real Kubernetes control plane on loopback: etcd, kube-apiserver, kube-controller-manager.

What controller-runtime's envtest does, plus a controller-manager so that namespaces get their
`default` ServiceAccount, deleted namespaces go away and ownerReferences are collected.
No kubelet runs: Pods are stored but never start.
"""

from __future__ import annotations

import base64
import contextlib
import json
import shutil
import socket
import ssl
import subprocess
import tempfile
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import yaml

from harness import pki, tools
from harness.polling import wait_for
from harness.processes import die_with_parent, terminate

DEFAULT_DIR = Path(__file__).resolve().parents[2] / ".local" / "cluster"
STATE_FILE = "state.json"
KUBE_CONTROLLERS = (
    "serviceaccount,serviceaccount-token,namespace,garbagecollector,root-ca-cert-publisher,clusterrole-aggregation"
)


class ClusterError(RuntimeError):
    pass


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


KUBERNETES_COMMANDS = frozenset(tools.KUBERNETES_COMMANDS)


def binary(name: str, kubernetes: str | None = None) -> str:
    """A tool's binary; a Kubernetes command of minor `kubernetes` (default: the harness's minor)."""
    path = tools.kubernetes_binary(name, kubernetes) if name in KUBERNETES_COMMANDS else tools.bin_dir() / name
    if not path.exists():
        raise ClusterError(f"{name} is not installed: run 'make setup' (or 'scripts/tools install')")
    return str(path)


def kubeconfig_yaml(server: str, ca_pem: bytes, *, cert_pem: bytes | None = None, key_pem: bytes | None = None,
                    token: str | None = None, user: str = "admin") -> str:
    credentials: dict[str, str] = {}
    if cert_pem is not None and key_pem is not None:
        credentials["client-certificate-data"] = base64.b64encode(cert_pem).decode()
        credentials["client-key-data"] = base64.b64encode(key_pem).decode()
    if token is not None:
        credentials["token"] = token
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "local", "cluster": {
            "server": server, "certificate-authority-data": base64.b64encode(ca_pem).decode()}}],
        "users": [{"name": user, "user": credentials}],
        "contexts": [{"name": f"{user}@local", "context": {"cluster": "local", "user": user}}],
        "current-context": f"{user}@local",
    }
    return yaml.safe_dump(config, sort_keys=False)


class ControlPlane:
    """Start with `up()`, stop with `down()`. State, PKI, kubeconfig and logs live in `directory`."""

    controller_manager_args: tuple[str, ...] = ()  # extra kube-controller-manager flags (benchmarks)
    kube_controllers = KUBE_CONTROLLERS
    authorization_mode = "RBAC"
    service_cidr = "10.0.0.0/24"
    service_ip = "10.0.0.1"  # the `kubernetes` Service: first address of service_cidr
    extra_apiserver_ips: tuple[str, ...] = ()

    def __init__(self, directory: Path, *, tie_to_parent: bool = False, kubernetes: str | None = None) -> None:
        self.directory = directory.resolve()
        self.tie_to_parent = tie_to_parent
        try:  # the minor this plane runs: "1.30" … "1.37" (default: $TCR_ADDON_KUBERNETES, else the newest)
            self.kubernetes = kubernetes or tools.kubernetes_minor()
        except tools.ToolError as error:
            raise ClusterError(str(error)) from None
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        self.etcd_data: Path | None = None
        self.api_port = 0

    @property
    def kubeconfig(self) -> Path:
        return self.directory / "kubeconfig"

    @property
    def server(self) -> str:
        return f"https://127.0.0.1:{self.api_port}"

    @property
    def internal_server(self) -> str:
        """The API address as the components see it (a node's live in their own network namespace)."""
        return self.server

    @property
    def ca_pem(self) -> bytes:
        return (self.directory / "pki" / "ca.crt").read_bytes()

    # -- start -------------------------------------------------------------------------------

    needs_node_commands = False

    def binary(self, name: str) -> str:
        return binary(name, self.kubernetes)

    def up(self, timeout: float = 120.0) -> None:
        if (self.directory / STATE_FILE).exists():
            raise ClusterError(f"a control plane already runs from {self.directory}: 'scripts/cluster down' first")
        try:  # a minor not built yet is built now (minutes, once; cached by version)
            tools.ensure_kubernetes(self.kubernetes, node=self.needs_node_commands)
        except tools.ToolError as error:
            raise ClusterError(str(error)) from None
        self.directory.mkdir(parents=True, exist_ok=True)
        try:
            self._start(timeout)
        except BaseException:
            self.down()
            raise

    def _start(self, timeout: float) -> None:
        self._write_pki()
        etcd_url = self._start_etcd(timeout)
        self._start_apiserver(etcd_url, timeout)
        self._start_controller_manager()
        self._write_state()
        self._wait_for_default_service_account(timeout)

    def _write_pki(self) -> None:
        pki_dir = self.directory / "pki"
        pki_dir.mkdir(exist_ok=True)
        authority = pki.CertificateAuthority()
        (pki_dir / "ca.crt").write_bytes(authority.cert_pem)
        authority.issue(
            "kube-apiserver",
            dns_names=("localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc",
                       "kubernetes.default.svc.cluster.local"),
            ip_addresses=("127.0.0.1", self.service_ip, *self.extra_apiserver_ips),
            server=True,
        ).write(pki_dir, "apiserver")
        admin = authority.issue("admin", organization="system:masters", client=True)
        admin.write(pki_dir, "admin")
        manager = authority.issue("system:kube-controller-manager", organization="system:masters", client=True)
        manager.write(pki_dir, "controller-manager")
        signing = pki.service_account_signing_key()
        (pki_dir / "sa.pub").write_bytes(signing.cert_pem)
        (pki_dir / "sa.key").write_bytes(signing.key_pem)
        self._write_more_pki(authority, pki_dir)
        self.api_port = free_port()
        self.kubeconfig.write_text(
            kubeconfig_yaml(self.server, authority.cert_pem, cert_pem=admin.cert_pem, key_pem=admin.key_pem)
        )
        (self.directory / "controller-manager.kubeconfig").write_text(
            kubeconfig_yaml(self.internal_server, authority.cert_pem, cert_pem=manager.cert_pem,
                            key_pem=manager.key_pem, user="kube-controller-manager")
        )

    def _write_more_pki(self, authority: pki.CertificateAuthority, pki_dir: Path) -> None:
        """Extra certificates a subclass needs (the node's); none for a bare control plane."""

    def command_prefix(self) -> list[str]:
        """What every component's command line starts with (a node enters its namespaces)."""
        return []

    def _spawn(self, name: str, argv: list[str], *, inside: bool = True,
               env: dict[str, str] | None = None) -> None:
        log = (self.directory / f"{name}.log").open("ab")
        self.processes[name] = subprocess.Popen(
            [*(self.command_prefix() if inside else []), *argv], env=env,
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
            preexec_fn=die_with_parent if self.tie_to_parent else None,
        )
        log.close()

    def _start_etcd(self, timeout: float) -> str:
        shm = Path("/dev/shm")
        self.etcd_data = Path(tempfile.mkdtemp(prefix="tcr-addon-etcd-", dir=shm if shm.is_dir() else None))
        client, peer = free_port(), free_port()
        url = f"http://127.0.0.1:{client}"
        self._spawn("etcd", [
            binary("etcd"), "--name=local", f"--data-dir={self.etcd_data}",
            f"--listen-client-urls={url}", f"--advertise-client-urls={url}",
            f"--listen-peer-urls=http://127.0.0.1:{peer}", f"--initial-advertise-peer-urls=http://127.0.0.1:{peer}",
            f"--initial-cluster=local=http://127.0.0.1:{peer}", "--unsafe-no-fsync", "--log-level=warn",
            "--quota-backend-bytes=8589934592",
        ])
        self._wait("etcd", lambda: self._etcd_healthy(url), timeout)
        return url

    def _etcd_healthy(self, url: str) -> bool:
        return _http_ok(f"{url}/health")

    def _start_apiserver(self, etcd_url: str, timeout: float) -> None:
        pki_dir = self.directory / "pki"
        self._spawn("kube-apiserver", [
            self.binary("kube-apiserver"),
            f"--etcd-servers={etcd_url}",
            *self.apiserver_network_args(),
            f"--cert-dir={pki_dir}",
            f"--tls-cert-file={pki_dir / 'apiserver.crt'}", f"--tls-private-key-file={pki_dir / 'apiserver.key'}",
            f"--client-ca-file={pki_dir / 'ca.crt'}",
            f"--authorization-mode={self.authorization_mode}",
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
            f"--service-account-key-file={pki_dir / 'sa.pub'}",
            f"--service-account-signing-key-file={pki_dir / 'sa.key'}",
            f"--service-cluster-ip-range={self.service_cidr}",
            "--allow-privileged=true",
            # The benchmarks drive thousands of requests from one client; keep fairness from queueing them.
            "--max-requests-inflight=1000", "--max-mutating-requests-inflight=500",
            "--v=1",
            *self.extra_apiserver_args(),
        ])
        self._after_apiserver_spawned()
        context = self._admin_ssl_context()
        self._wait("kube-apiserver", lambda: _http_ok(f"{self.server}/readyz", context), timeout)

    def apiserver_network_args(self) -> list[str]:
        return [
            "--bind-address=127.0.0.1", "--advertise-address=127.0.0.1", f"--secure-port={self.api_port}",
            # Endpoints reject loopback addresses; nothing reaches the API through its Service here.
            "--endpoint-reconciler-type=none",
        ]

    def extra_apiserver_args(self) -> list[str]:
        return []

    def _after_apiserver_spawned(self) -> None:
        """Hook between starting kube-apiserver and waiting for it (a node bridges its port here)."""

    def _start_controller_manager(self) -> None:
        pki_dir = self.directory / "pki"
        self._spawn("kube-controller-manager", [
            self.binary("kube-controller-manager"),
            f"--kubeconfig={self.directory / 'controller-manager.kubeconfig'}",
            f"--controllers={self.kube_controllers}",
            f"--service-account-private-key-file={pki_dir / 'sa.key'}",
            f"--root-ca-file={pki_dir / 'ca.crt'}",
            "--leader-elect=false", "--secure-port=0", "--v=1",
            *self.controller_manager_args,
        ])

    def crash_and_restart(self, name: str) -> None:
        """SIGKILL one component (a crash: no graceful drain) and start it again with the same flags."""
        proc = self.processes[name]
        argv = [str(arg) for arg in proc.args]  # type: ignore[union-attr]
        proc.kill()
        proc.wait(30)
        self._spawn(name, argv, inside=False)  # argv already holds any namespace prefix

    def _admin_ssl_context(self) -> ssl.SSLContext:
        pki_dir = self.directory / "pki"
        context = ssl.create_default_context(cafile=str(pki_dir / "ca.crt"))
        context.load_cert_chain(str(pki_dir / "admin.crt"), str(pki_dir / "admin.key"))
        return context

    def _wait(self, name: str, ready: Callable[[], bool], timeout: float) -> None:
        """Until `ready()`; fails at once (with the log's tail) when component `name` exits."""
        log = self.directory / f"{name}.log"
        wait_for(ready, timeout, 0.1, what=f"{name} to be ready", process=self.processes[name], name=name,
                 log=log, error=ClusterError, timeout_message=f"{name} was not ready within {timeout:.0f} s; see {log}")

    def _wait_for_default_service_account(self, timeout: float) -> None:
        context = self._admin_ssl_context()
        url = f"{self.server}/api/v1/namespaces/default/serviceaccounts/default"
        self._wait("kube-controller-manager", lambda: _http_ok(url, context), timeout)

    def _write_state(self) -> None:
        state = {
            **self.extra_state(),
            "pids": {name: proc.pid for name, proc in self.processes.items()},
            "etcd_data": str(self.etcd_data),
            "api_port": self.api_port,
            "kubeconfig": str(self.kubeconfig),
            "kubernetes": self.kubernetes,
        }
        (self.directory / STATE_FILE).write_text(json.dumps(state, indent=2))

    def extra_state(self) -> dict[str, object]:
        return {}

    # -- stop --------------------------------------------------------------------------------

    def down(self) -> None:
        """Stop every process (newest first) and remove the state; logs stay for debugging."""
        pids = {name: proc.pid for name, proc in self.processes.items()}
        state_file = self.directory / STATE_FILE
        if state_file.exists():
            state = json.loads(state_file.read_text())
            pids = {**state.get("pids", {}), **pids}
            if state.get("etcd_data"):
                self.etcd_data = Path(state["etcd_data"])
        for name in reversed(list(pids)):  # newest first: clients before the servers they talk to
            terminate(pids[name], self.processes.get(name))
        self.processes.clear()
        if self.etcd_data is not None:
            shutil.rmtree(self.etcd_data, ignore_errors=True)
        state_file.unlink(missing_ok=True)
        for name in ("pki", "kubeconfig", "controller-manager.kubeconfig"):
            target = self.directory / name
            if target.is_dir():
                shutil.rmtree(target, ignore_errors=True)
            else:
                target.unlink(missing_ok=True)

    @classmethod
    def attach(cls, directory: Path) -> ControlPlane:
        """The control plane that `scripts/cluster up` left running in `directory`."""
        state_file = directory / STATE_FILE
        if not state_file.exists():
            raise ClusterError(f"no control plane runs from {directory}: 'scripts/cluster up --dir {directory}'")
        state = json.loads(state_file.read_text())
        plane = cls(directory, kubernetes=state.get("kubernetes", tools.KUBERNETES_NEWEST))
        plane.api_port = int(state["api_port"])
        return plane


def _http_ok(url: str, context: ssl.SSLContext | None = None) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2, context=context) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


@contextlib.contextmanager
def running(directory: Path, kind: type[ControlPlane] = ControlPlane) -> Iterator[ControlPlane]:
    """A control plane (of `kind`) for the duration of a `with` block; its processes die with this one."""
    plane = kind(directory, tie_to_parent=True)
    plane.up()
    try:
        yield plane
    finally:
        plane.down()
