"""A control plane with one real node: kube-scheduler, containerd, kubelet and kube-proxy.

Every component runs inside a network namespace and a private mount namespace that this module
creates and removes, so the host's network, routes, hosts file, resolv.conf and sysctls are never
changed (docs/DESIGN.md, "The local node"):

- network: a veth pair with both ends inside the namespace; the node address sits on one end,
  the other end holds a second address for services the tests add (a private registry);
- mount: a fresh tmpfs on /run and /var/log, the node's own hosts file and resolv.conf bound
  over /etc/hosts and /etc/resolv.conf (written in place, never renamed, so the bind stays),
  and files holding the values the kubelet wants bound over the global sysctls it would write;
- cgroups: every Pod lives under one cgroup root of this node's own (`/tcra-<id>`), removed
  on `down`.

The host reaches the API through a loopback port: socat on the host forwards it to a unix
socket, where a socat inside the namespace forwards to kube-apiserver. `kubectl logs` and
`kubectl exec` work because kube-apiserver itself runs inside, next to the kubelet.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import yaml

from harness import namespaces, oci, pki, sysctl_guard, tools
from harness.cluster import STATE_FILE, ClusterError, ControlPlane, binary, kubeconfig_yaml
from harness.polling import wait_for
from harness.processes import kill_until_gone, pid_alive

NODE_NAME = "tcr-node"
NODE_IP = "10.201.0.2"
# The other end of the node's veth pair: an address inside the namespace for test services.
SERVICE_HOST_IP = "10.201.0.1"
NODE_PREFIX_LENGTH = 24
POD_CIDR = "10.244.0.0/24"
SERVICE_CIDR = "10.96.0.0/24"
SERVICE_IP = "10.96.0.1"
API_PORT_INSIDE = 6443
CONTAINERD_SOCKET = "/run/containerd/containerd.sock"
PAUSE_REF = oci.PAUSE_REF
# Namespace pins and ownership records of running nodes (host files only; see `sweep_stale`).
RUN_ROOT = Path("/run/tcr-addon/nodes")
NAME_PREFIX = "tcra-"
CNI_PLUGIN_DIRS = (Path("/usr/lib/cni"), Path("/opt/cni/bin"))
CNI_PLUGINS = ("bridge", "host-local", "portmap", "loopback")
HOST_COMMANDS = ("ip", "nsenter", "unshare", "mount", "umount", "socat", "runc", "iptables",
                 "iptables-restore", "conntrack")
NODE_TOOLS = ("containerd", "ctr", "containerd-shim-runc-v2")  # Kubernetes' own: built per minor by `up`
# Capabilities the node needs (bit numbers from linux/capability.h).
CAPABILITIES = {"CAP_SYS_ADMIN": 21, "CAP_NET_ADMIN": 12, "CAP_SYS_CHROOT": 18, "CAP_SYS_PTRACE": 19,
                "CAP_MKNOD": 27}
SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def log(message: str) -> None:
    print(f"[node] {message}", flush=True)


class ImageArchive(Protocol):
    """An image's reference and the archive that holds it (`images.BuiltImage`, `oci.ImageInfo`)."""

    @property
    def ref(self) -> str: ...

    @property
    def archive(self) -> Path: ...


def run(argv: Sequence[str], *, input_text: str | None = None, timeout: float = 60,
        check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(list(argv), capture_output=True, text=True, input=input_text, timeout=timeout)
    if check and proc.returncode != 0:
        raise ClusterError(f"{' '.join(argv[:6])} … failed ({proc.returncode}): {proc.stderr.strip()[-2000:]}")
    return proc


#: A Unix socket path has at most 107 bytes; the kubelet's longest is
#: <node dir>/kubelet/pod-resources/<10 random digits>.
SOCKET_PATH_MAX = 107
KUBELET_LONGEST_SOCKET = "kubelet/pod-resources/0123456789"


def check_socket_room(node_dir: Path) -> None:
    """Fail now, saying why, rather than with the kubelet's "bind: invalid argument" later."""
    longest = len(str((node_dir / KUBELET_LONGEST_SOCKET).resolve()).encode())
    if longest > SOCKET_PATH_MAX:
        raise ClusterError(f"the node's directory {node_dir} is too deep: the kubelet's sockets under it would be "
                           f"{longest} bytes long, over the {SOCKET_PATH_MAX} a Unix socket path may have; "
                           "give a shorter --dir")


def check_privileges() -> None:
    """Root with the capabilities namespaces, mounts and the kubelet need; else say what is missing."""
    if os.geteuid() != 0:
        raise ClusterError("the local node needs root (it creates network and mount namespaces and runs a "
                           "kubelet): run 'scripts/cluster --node up' as root")
    status = Path("/proc/self/status").read_text()
    effective = int(re.search(r"^CapEff:\s*([0-9a-f]+)$", status, re.M).group(1), 16)  # type: ignore[union-attr]
    missing = [name for name, bit in CAPABILITIES.items() if not effective >> bit & 1]
    if missing:
        raise ClusterError(f"the local node needs the capabilities {', '.join(missing)}, which this process lacks: "
                           "run as root in a machine or container that grants them (e.g. a privileged container)")


def check_installed() -> None:
    missing = [name for name in HOST_COMMANDS if shutil.which(name, path=SYSTEM_PATH) is None]
    missing += [name for name in NODE_TOOLS if not (tools.bin_dir() / name).exists()]
    if cni_dir() is None:
        missing.append("CNI plugins (" + ", ".join(CNI_PLUGINS) + ")")
    if missing:
        raise ClusterError(f"the local node needs {', '.join(missing)}: run 'make setup'")


def cni_dir() -> Path | None:
    for directory in CNI_PLUGIN_DIRS:
        if all((directory / plugin).exists() for plugin in CNI_PLUGINS):
            return directory
    return None


# -- namespaces ------------------------------------------------------------------------------


class NodeNamespaces:
    """A network namespace and a pinned private mount namespace, owned by one node."""

    def __init__(self, name: str) -> None:
        self.name = name

    @property
    def netns(self) -> Path:
        return namespaces.RUN_NETNS / self.name

    @property
    def pin_dir(self) -> Path:
        return RUN_ROOT / self.name

    @property
    def mount_file(self) -> Path:
        return self.pin_dir / "mnt"

    @property
    def record(self) -> Path:
        return self.pin_dir / "owner.json"

    @property
    def cgroup_root(self) -> str:
        return f"/{self.name}"

    def prefix(self) -> list[str]:
        return [shutil.which("nsenter", path=SYSTEM_PATH) or "nsenter",
                f"--mount={self.mount_file}", f"--net={self.netns}"]

    def inside(self, script: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return run([*self.prefix(), "/bin/sh", "-ec", script], timeout=timeout)

    def create(self, node_dir: Path) -> None:
        self.pin_dir.mkdir(parents=True)
        self.write_record([os.getpid()], node_dir)
        namespaces.add_netns(self.name)
        namespaces.pin_mount_namespace(self.mount_file)
        binds = "\n".join(sysctl_guard.bind_commands(str(node_dir / "sysctl")))
        self.inside(f"""
            {namespaces.DROP_FOREIGN_PINS}
            mount --make-rshared /
            mount -t tmpfs -o mode=0755 tcr-node-run /run
            mount -t tmpfs -o mode=0755 tcr-node-log /var/log
            mount --bind {node_dir / 'hosts'} /etc/hosts
            mount --bind {node_dir / 'resolv.conf'} /etc/resolv.conf
            {binds}
            ip link set lo up
            ip link add eth0 type veth peer name eth1
            ip addr add {NODE_IP}/{NODE_PREFIX_LENGTH} dev eth0
            ip addr add {SERVICE_HOST_IP}/{NODE_PREFIX_LENGTH} dev eth1
            ip link set eth0 up
            ip link set eth1 up
            ip route add default dev eth0
        """)
        self.create_cgroup_root()

    def create_cgroup_root(self) -> None:
        for hierarchy in namespaces.cgroup_hierarchies():
            path = hierarchy / self.cgroup_root.lstrip("/")
            path.mkdir(exist_ok=True)
            if (hierarchy / "cpuset.cpus").exists():  # cgroup v1 cpuset starts empty: inherit the parent's
                for name in ("cpuset.cpus", "cpuset.mems"):
                    (path / name).write_text((hierarchy / name).read_text())

    def write_record(self, pids: list[int], node_dir: Path) -> None:
        """Who runs this node: `sweep_stale` removes it once none of them lives."""
        self.record.write_text(json.dumps({"pids": pids, "directory": str(node_dir)}))

    def read_record(self) -> dict[str, Any]:
        try:
            record: dict[str, Any] = json.loads(self.record.read_text())
        except (OSError, ValueError):
            return {}
        return record

    def processes(self) -> list[int]:
        """Every process in this node: in its mount namespace, or in one of its cgroups."""
        mount_ns = namespaces.ns_inode(self.mount_file)
        roots = namespaces.cgroup_dirs(self.cgroup_root.lstrip("/"))
        return sorted(namespaces.processes_in({mount_ns} if mount_ns else set(), roots))

    def cgroup_dirs(self) -> list[Path]:
        """This node's cgroups in every hierarchy, deepest first."""
        found: list[Path] = []
        for root in namespaces.cgroup_dirs(self.cgroup_root.lstrip("/")):
            found += [Path(d) for d, _, _ in os.walk(root)]
        return sorted(found, key=lambda path: len(path.parts), reverse=True)

    def kill_all(self, timeout: float = 20) -> None:
        survivors = kill_until_gone(self.processes, timeout)
        if survivors:
            raise ClusterError(f"processes of node {self.name} survived SIGKILL: {survivors}")

    def destroy(self) -> None:
        """Kill what runs in the node, then remove its cgroups, mounts and namespaces."""
        self.kill_all()
        directories = self.cgroup_dirs()  # deepest first: a cgroup goes once its children have
        stuck: list[Path] = []

        def removed_all() -> bool:
            for directory in directories:
                if directory.exists():
                    try:
                        directory.rmdir()
                    except OSError:  # busy until the kernel has let go of its last process
                        stuck[:] = [directory]
                        return False
            return True

        wait_for(removed_all, 20, 0.1, what=f"the cgroups of node {self.name} removed", error=ClusterError,
                 timeout_message=lambda: f"cannot remove cgroup {stuck[0] if stuck else '?'}")
        namespaces.unpin_mount_namespace(self.mount_file)
        if self.pin_dir.exists():
            self.record.unlink(missing_ok=True)
            self.mount_file.unlink(missing_ok=True)
            self.pin_dir.rmdir()
        namespaces.delete_netns(self.name)
        with contextlib.suppress(OSError):  # the last node leaves no directory behind
            RUN_ROOT.rmdir()
            RUN_ROOT.parent.rmdir()


def sweep_stale() -> list[str]:
    """Remove nodes whose every process is gone (a killed test run, a crashed `up`)."""
    removed: list[str] = []
    if not RUN_ROOT.is_dir():
        return removed
    for pin in sorted(RUN_ROOT.iterdir()):
        if not pin.name.startswith(NAME_PREFIX):
            continue
        stale = NodeNamespaces(pin.name)
        if any(pid_alive(pid) for pid in stale.read_record().get("pids", [])):
            continue
        stale.destroy()
        removed.append(pin.name)
    return removed


# -- the cluster -----------------------------------------------------------------------------


class NodeCluster(ControlPlane):
    """A control plane plus one node, all inside namespaces of its own; `up()` / `down()`."""

    kube_controllers = "*"
    authorization_mode = "Node,RBAC"
    needs_node_commands = True
    service_cidr = SERVICE_CIDR
    service_ip = SERVICE_IP
    extra_apiserver_ips = (NODE_IP,)
    node_name = NODE_NAME
    node_ip = NODE_IP
    service_host_ip = SERVICE_HOST_IP

    def __init__(self, directory: Path, *, tie_to_parent: bool = False, kubernetes: str | None = None) -> None:
        super().__init__(directory, tie_to_parent=tie_to_parent, kubernetes=kubernetes)
        self.namespaces: NodeNamespaces | None = None

    @property
    def internal_server(self) -> str:
        return f"https://127.0.0.1:{API_PORT_INSIDE}"

    @property
    def node_dir(self) -> Path:
        return self.directory / "node"

    @property
    def hosts_file(self) -> Path:
        """The node's /etc/hosts, as the kubelet, containerd and hostPath volumes see it."""
        return self.node_dir / "hosts"

    @property
    def certs_dir(self) -> Path:
        """containerd's registry configuration: `<host>/hosts.toml` (e.g. `ca = …`)."""
        return self.node_dir / "certs.d"

    def command_prefix(self) -> list[str]:
        return self.namespaces.prefix() if self.namespaces else []

    # -- start -------------------------------------------------------------------------------

    def up(self, timeout: float = 180.0) -> None:
        check_privileges()
        check_installed()
        check_socket_room(self.node_dir)
        super().up(timeout)

    def _start(self, timeout: float) -> None:
        for name in sweep_stale():
            log(f"removed the leftovers of stopped node {name}")
        started = time.monotonic()
        self._write_node_files()
        self.namespaces = NodeNamespaces(f"{NAME_PREFIX}{os.getpid()}-{secrets.token_hex(3)}")
        self.namespaces.create(self.node_dir)
        self._write_pki()
        etcd_url = self._start_etcd(timeout)
        self._start_apiserver(etcd_url, timeout)
        log(f"control plane ready in {time.monotonic() - started:.1f} s")
        self._start_controller_manager()
        self._start_scheduler()
        self._start_containerd(timeout)
        self.import_images([oci.pause_image(self.node_dir / "pause.tar")])
        self._start_kubelet()
        self._start_kube_proxy()
        self._write_state()
        self._wait_for_default_service_account(timeout)
        self._wait("kubelet", self.node_ready, timeout)
        log(f"node {self.node_name} Ready in {time.monotonic() - started:.1f} s")

    def _write_node_files(self) -> None:
        node = self.node_dir
        if node.exists():
            shutil.rmtree(node)
        for sub in ("sysctl", "cni/net.d", "cni/networks", "kubelet", "pod-logs", "containerd", "certs.d"):
            (node / sub).mkdir(parents=True)
        # The node's own hosts file: what a fresh Debian node has, plus its own name.
        (node / "hosts").write_text(
            "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n"
            f"{NODE_IP}\t{NODE_NAME}\n"
        )
        # No DNS server runs here: a name not in the hosts file does not resolve.
        (node / "resolv.conf").write_text("nameserver 127.0.0.1\noptions timeout:1 attempts:1\n")
        for path, value in sysctl_guard.KUBELET_SYSCTLS.items():
            (node / "sysctl" / sysctl_guard.file_name(path)).write_text(value + "\n")
        (node / "cni" / "net.d" / "10-tcr-node.conflist").write_text(json.dumps({
            "cniVersion": "1.0.0",
            "name": "tcr-node",
            "plugins": [
                {"type": "bridge", "bridge": "cni0", "isGateway": True, "ipMasq": True, "hairpinMode": True,
                 "ipam": {"type": "host-local", "ranges": [[{"subnet": POD_CIDR}]],
                          "routes": [{"dst": "0.0.0.0/0"}], "dataDir": str(node / "cni" / "networks")}},
                {"type": "portmap", "capabilities": {"portMappings": True}},
                {"type": "loopback"},
            ],
        }, indent=2))

    def _etcd_healthy(self, url: str) -> bool:
        """etcd listens on the namespace's loopback: ask from inside."""
        probe = f"import urllib.request; urllib.request.urlopen({url + '/health'!r}, timeout=2)"
        return run([*self.command_prefix(), sys.executable, "-c", probe], check=False).returncode == 0

    def _write_more_pki(self, authority: pki.CertificateAuthority, pki_dir: Path) -> None:
        authority.issue("kube-apiserver-kubelet-client", organization="system:masters",
                        client=True).write(pki_dir, "kubelet-client")
        users = {
            "kubelet": (f"system:node:{NODE_NAME}", "system:nodes"),
            "kube-proxy": ("system:kube-proxy", None),
            "kube-scheduler": ("system:kube-scheduler", None),
        }
        for stem, (user, group) in users.items():
            pair = authority.issue(user, organization=group, client=True)
            (self.directory / f"{stem}.kubeconfig").write_text(kubeconfig_yaml(
                self.internal_server, authority.cert_pem, cert_pem=pair.cert_pem, key_pem=pair.key_pem, user=stem))

    def apiserver_network_args(self) -> list[str]:
        return ["--bind-address=0.0.0.0",  # inside the node's network namespace only
                f"--advertise-address={NODE_IP}", f"--secure-port={API_PORT_INSIDE}"]

    def extra_apiserver_args(self) -> list[str]:
        pki_dir = self.directory / "pki"
        return [f"--kubelet-client-certificate={pki_dir / 'kubelet-client.crt'}",
                f"--kubelet-client-key={pki_dir / 'kubelet-client.key'}",
                "--kubelet-preferred-address-types=InternalIP"]

    def _after_apiserver_spawned(self) -> None:
        """Bridge the host's loopback port to kube-apiserver inside the namespace, over a unix socket."""
        socket_path = self.directory / "api.sock"
        socket_path.unlink(missing_ok=True)
        socat = shutil.which("socat", path=SYSTEM_PATH) or "socat"
        self._spawn("api-bridge-inside", [socat, f"UNIX-LISTEN:{socket_path},fork,mode=600",
                                          f"TCP:127.0.0.1:{API_PORT_INSIDE}"])
        self._spawn("api-bridge-host", [socat, f"TCP-LISTEN:{self.api_port},bind=127.0.0.1,reuseaddr,fork",
                                        f"UNIX-CONNECT:{socket_path}"], inside=False)

    def _node_env(self) -> dict[str, str]:
        return {**os.environ, "PATH": f"{tools.bin_dir()}:{SYSTEM_PATH}"}

    def _start_controller_manager(self) -> None:
        self.controller_manager_args = (*self.controller_manager_args, "--use-service-account-credentials")
        super()._start_controller_manager()

    def _start_scheduler(self) -> None:
        self._spawn("kube-scheduler", [
            self.binary("kube-scheduler"), f"--kubeconfig={self.directory / 'kube-scheduler.kubeconfig'}",
            "--leader-elect=false", "--secure-port=0", "--v=1",
        ])

    def _start_containerd(self, timeout: float) -> None:
        config = self.node_dir / "containerd" / "config.toml"
        config.write_text(containerd_config(self.node_dir, cni_dir() or CNI_PLUGIN_DIRS[0]))
        self._spawn("containerd", [binary("containerd"), f"--config={config}"], env=self._node_env())
        self._wait("containerd", lambda: self.ctr("version", check=False).returncode == 0, timeout)

    def ctr(self, *args: str, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        """`ctr` against the node's containerd, in the Kubernetes namespace (`k8s.io`)."""
        return run([*self.command_prefix(), binary("ctr"), f"--address={CONTAINERD_SOCKET}", "-n", "k8s.io", *args],
                   check=check, timeout=timeout)

    def import_images(self, images: Sequence[ImageArchive]) -> None:
        """Load image archives (docker save or OCI) into the node, as if pulled; skip those it has."""
        present = set(self.ctr("images", "list", "--quiet").stdout.split())
        for image in images:
            if image.ref not in present:
                self.ctr("images", "import", str(image.archive))

    def _start_kubelet(self) -> None:
        node = self.node_dir
        config = node / "kubelet-config.yaml"
        config.write_text(yaml.safe_dump({
            "apiVersion": "kubelet.config.k8s.io/v1beta1",
            "kind": "KubeletConfiguration",
            # cgroup v1 here: from 1.35 the kubelet refuses it unless told not to (a field since 1.31).
            **({"failCgroupV1": False} if tools.minor_number(self.kubernetes) >= 31 else {}),
            "cgroupDriver": "cgroupfs",
            "cgroupRoot": self.namespaces.cgroup_root if self.namespaces else "/",
            "containerRuntimeEndpoint": f"unix://{CONTAINERD_SOCKET}",
            "authentication": {"anonymous": {"enabled": False}, "webhook": {"enabled": False},
                               "x509": {"clientCAFile": str(self.directory / "pki" / "ca.crt")}},
            "authorization": {"mode": "AlwaysAllow"},
            "address": NODE_IP,
            "readOnlyPort": 0,
            "healthzBindAddress": "127.0.0.1",
            "resolvConf": str(node / "resolv.conf"),
            "podLogsDir": str(node / "pod-logs"),
            "clusterDomain": "cluster.local",
            "failSwapOn": False,
            # Imported images have no registry to come back from: never collect them.
            "imageGCHighThresholdPercent": 100,
            "imageGCLowThresholdPercent": 99,
            "evictionHard": {"memory.available": "100Mi", "nodefs.available": "1%", "imagefs.available": "1%",
                             "nodefs.inodesFree": "1%"},
            "serializeImagePulls": False,
            "maxPods": 110,
        }))
        self._spawn("kubelet", [
            self.binary("kubelet"), f"--config={config}", f"--kubeconfig={self.directory / 'kubelet.kubeconfig'}",
            f"--hostname-override={NODE_NAME}", f"--node-ip={NODE_IP}", f"--root-dir={node / 'kubelet'}", "--v=1",
        ], env=self._node_env())

    def _start_kube_proxy(self) -> None:
        config = self.node_dir / "kube-proxy-config.yaml"
        config.write_text(yaml.safe_dump({
            "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
            "kind": "KubeProxyConfiguration",
            "clientConnection": {"kubeconfig": str(self.directory / "kube-proxy.kubeconfig")},
            "mode": "iptables",
            "clusterCIDR": POD_CIDR,
            "hostnameOverride": NODE_NAME,
            "healthzBindAddress": "127.0.0.1:10256",
            "metricsBindAddress": "127.0.0.1:10249",
            # Zero means "leave the global conntrack settings alone".
            "conntrack": {"maxPerCore": 0, "min": 0, "tcpEstablishedTimeout": "0s", "tcpCloseWaitTimeout": "0s"},
        }))
        self._spawn("kube-proxy", [self.binary("kube-proxy"), f"--config={config}", "--v=1"], env=self._node_env())

    def node_ready(self) -> bool:
        try:
            nodes = json.loads(self.kubectl("get", "node", NODE_NAME, "-o", "json", check=False).stdout or "{}")
        except ValueError:
            return False
        conditions = (nodes.get("status") or {}).get("conditions") or []
        return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)

    def kubectl(self, *args: str, check: bool = True, input_text: str | None = None,
                timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return run([binary("kubectl"), f"--kubeconfig={self.kubeconfig}", *args], check=check,
                   input_text=input_text, timeout=timeout)

    def container_peak_memory(self, pod: dict[str, Any], container: str) -> int:
        """The peak memory (bytes) of a running container, from its cgroup on this node."""
        statuses = {s["name"]: s for s in pod["status"]["containerStatuses"]}
        container_id = statuses[container]["containerID"].split("://", 1)[1]
        for hierarchy in namespaces.cgroup_hierarchies():
            if hierarchy.name not in ("memory", "cgroup"):
                continue
            root = hierarchy / self.namespaces.cgroup_root.lstrip("/") if self.namespaces else hierarchy
            for directory, _, files in os.walk(root):
                if Path(directory).name.endswith(container_id):
                    name = "memory.max_usage_in_bytes" if "memory.max_usage_in_bytes" in files else "memory.peak"
                    return int((Path(directory) / name).read_text())
        raise ClusterError(f"no memory cgroup for container {container} ({container_id}) on node {self.node_name}")

    def _write_state(self) -> None:
        super()._write_state()
        if self.namespaces:
            self.namespaces.write_record([proc.pid for proc in self.processes.values()], self.node_dir)

    def extra_state(self) -> dict[str, object]:
        return {"node": self.namespaces.name if self.namespaces else None}

    # -- stop --------------------------------------------------------------------------------

    def down(self) -> None:
        state_file = self.directory / "state.json"
        if self.namespaces is None and state_file.exists():
            name = json.loads(state_file.read_text()).get("node")
            self.namespaces = NodeNamespaces(name) if name else None
        # The kubelet first, so it restarts nothing; then every container and shim; then the rest.
        if "kubelet" in self.processes:
            self.processes.pop("kubelet").kill()
        if self.namespaces is not None:
            self.namespaces.kill_all()
        super().down()
        if self.namespaces is not None:
            self.namespaces.destroy()
            self.namespaces = None
        for name in ("kubelet", "kube-proxy", "kube-scheduler"):
            (self.directory / f"{name}.kubeconfig").unlink(missing_ok=True)
        (self.directory / "api.sock").unlink(missing_ok=True)
        if self.node_dir.exists():
            shutil.rmtree(self.node_dir / "kubelet", ignore_errors=True)
            shutil.rmtree(self.node_dir / "containerd", ignore_errors=True)

    @classmethod
    def attach(cls, directory: Path) -> NodeCluster:
        plane = super().attach(directory)
        assert isinstance(plane, NodeCluster)
        name = json.loads((directory / "state.json").read_text()).get("node")
        plane.namespaces = NodeNamespaces(name) if name else None
        return plane


def plane_class(directory: Path) -> type[ControlPlane]:
    """The class that runs (or ran) the plane in `directory`: a node cluster records its node."""
    state_file = directory / STATE_FILE
    if state_file.exists() and json.loads(state_file.read_text()).get("node"):
        return NodeCluster
    return ControlPlane


def containerd_config(node: Path, cni_bin: Path) -> str:
    """containerd 2.x configuration: own paths, the local pause image, no OOM-score raise, no NRI."""
    return f"""\
version = 4
root = "{node / 'containerd' / 'root'}"
state = "/run/containerd"
imports = []
disabled_plugins = ["io.containerd.nri.v1.nri"]

[plugins."io.containerd.server.v1.grpc"]
  address = "{CONTAINERD_SOCKET}"

[plugins."io.containerd.cri.v1.images"]
  snapshotter = "overlayfs"
  [plugins."io.containerd.cri.v1.images".pinned_images]
    sandbox = "{PAUSE_REF}"
  [plugins."io.containerd.cri.v1.images".registry]
    config_path = "{node / 'certs.d'}"

[plugins."io.containerd.cri.v1.runtime"]
  # Without CAP_SYS_RESOURCE a sandbox cannot raise its OOM score: only lower it.
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = true
  cdi_spec_dirs = []
  [plugins."io.containerd.cri.v1.runtime".cni]
    bin_dirs = ["{cni_bin}"]
    conf_dir = "{node / 'cni' / 'net.d'}"
  [plugins."io.containerd.cri.v1.runtime".containerd]
    default_runtime_name = "runc"
    [plugins."io.containerd.cri.v1.runtime".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
"""


