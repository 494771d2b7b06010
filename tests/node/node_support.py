"""The node suite's support: what the host looks like from outside the node (compared before,
during and after a node runs), and what a test sets up inside the node."""

from __future__ import annotations

import contextlib
import json
import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from harness import namespaces, node, pki, registry, tools
from harness.hoststate import command
from support import kubectl, pointed_at

NODE_BINARIES = {*node.NODE_TOOLS, *tools.NODE_COMMANDS, "etcd", "dockerd",
                 "docker-registry", "registry"}


def node_processes() -> list[str]:
    """Processes of any local node or image build still alive on the machine."""
    found = []
    cache = str(tools.cache_root())
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if not argv or not argv[0]:
            continue
        program = argv[0].decode(errors="replace")
        if Path(program).name in NODE_BINARIES or (program.startswith(cache) and "pause" in program):
            found.append(f"{entry.name}: {' '.join(a.decode(errors='replace') for a in argv)[:200]}")
    return found


def node_leftovers() -> list[str]:
    """Namespaces, pins and cgroups of local nodes that are still on the machine."""
    left = [f"netns {name}" for name in command("ip", "netns", "list").split() if name.startswith(node.NAME_PREFIX)]
    if node.RUN_ROOT.is_dir():
        left += [f"pin {p}" for p in node.RUN_ROOT.iterdir()]
    left += [f"cgroup {p}" for h in namespaces.cgroup_hierarchies() for p in h.iterdir()
             if p.name.startswith(node.NAME_PREFIX)]
    left += [f"mount {point}" for point in namespaces.mount_points()
             if "tcr-addon" in point or node.NAME_PREFIX in point]
    return left


def admin_kubeconfig_inside(cluster: node.NodeCluster, path: Path) -> Path:
    """The admin kubeconfig with the API address a process inside the node's namespaces reaches."""
    config = yaml.safe_load(cluster.kubeconfig.read_text())
    for entry in config["clusters"]:
        entry["cluster"]["server"] = cluster.internal_server
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    path.chmod(0o600)
    return path


@contextlib.contextmanager
def node_knows_registry(cluster: node.NodeCluster, private: registry.PrivateRegistry) -> Iterator[str]:
    """The node resolves and trusts ``private`` on its own, before anything of the add-on runs.

    A hosts line of our own (the node has no DNS) and containerd's trust of the registry's CA
    (``certs.d/<address>/hosts.toml``). The hosts file is bound over the node's /etc/hosts, so
    it is rewritten in place, never replaced. On exit the line and the trust are taken away
    again; yields the hosts line.
    """
    line = f"{private.listen_host}\t{private.hostname}\n"
    trust = cluster.certs_dir / private.address
    trust.mkdir(parents=True)
    (trust / "hosts.toml").write_text(
        f'server = "https://{private.address}"\n\n[host."https://{private.address}"]\n'
        f'  capabilities = ["pull", "resolve"]\n  ca = "{private.ca_file}"\n')
    with cluster.hosts_file.open("a") as hosts:
        hosts.write(line)
    try:
        yield line
    finally:
        text = cluster.hosts_file.read_text()
        if line in text:
            with cluster.hosts_file.open("r+") as hosts:
                hosts.write(text.replace(line, "", 1))
                hosts.truncate()
        shutil.rmtree(trust, ignore_errors=True)


@contextlib.contextmanager
def tcr_like_registry(cluster: node.NodeCluster, directory: Path, username: str, ca_name: str
                      ) -> Iterator[registry.PrivateRegistry]:
    """A private registry (htpasswd, TLS from its own CA) under a TCR-like name inside the node's
    network, trusted by the node's containerd; the name resolves only through the node's hosts
    file, where the hosts-updater (or a test) writes it. KUBECONFIG points at ``cluster`` meanwhile."""
    hostname = f"tcr-{secrets.token_hex(4)}.tencentcloudcr.com"
    private = registry.PrivateRegistry(
        directory / "registry", hostname=hostname, listen=f"{node.SERVICE_HOST_IP}:443",
        ca=pki.CertificateAuthority(ca_name), username=username, password=secrets.token_urlsafe(18),
        command_prefix=cluster.command_prefix(), tie_to_parent=True)
    with pointed_at(cluster), private:
        trust = cluster.certs_dir / hostname
        trust.mkdir(parents=True)
        (trust / "hosts.toml").write_text(
            f'server = "https://{hostname}"\n\n[host."https://{hostname}"]\n'
            f'  capabilities = ["pull", "resolve"]\n  ca = "{private.ca_file}"\n')
        yield private


def deployment(name: str, image: str) -> str:
    """A Deployment whose Pod spec names no imagePullSecrets (the point of the add-on)."""
    return yaml.safe_dump({
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": name}},
                 "template": {"metadata": {"labels": {"app": name}},
                              "spec": {"terminationGracePeriodSeconds": 0,
                                       "containers": [{"name": "app", "image": image,
                                                       "imagePullPolicy": "IfNotPresent"}]}}},
    })


def pods(namespace: str, app: str) -> list[dict[str, Any]]:
    out = kubectl("-n", namespace, "get", "pods", "-l", f"app={app}", "-o", "json").stdout
    items: list[dict[str, Any]] = json.loads(out)["items"]
    return items


def ready(namespace: str, app: str) -> bool:
    return any(c.get("type") == "Ready" and c.get("status") == "True"
               for pod in pods(namespace, app) for c in (pod.get("status") or {}).get("conditions") or [])


def pull_failure(namespace: str, app: str) -> str | None:
    """The kubelet's message once the Pod's image pull has failed (ErrImagePull / ImagePullBackOff)."""
    for pod in pods(namespace, app):
        for status in (pod.get("status") or {}).get("containerStatuses") or []:
            waiting = (status.get("state") or {}).get("waiting") or {}
            if waiting.get("reason") in ("ErrImagePull", "ImagePullBackOff") and waiting.get("message"):
                return str(waiting["message"])
    events = kubectl("-n", namespace, "get", "events", "--field-selector", "reason=Failed", "-o", "json").stdout
    messages = [e.get("message", "") for e in json.loads(events)["items"]
                if e.get("message", "").startswith("Failed to pull image")]
    return messages[-1] if messages else None
