"""`make e2e-kind`: the e2e journey on a real kind cluster.

One command, two kinds of machine (`--engine`, default `auto`):

- **docker**: a machine whose Docker engine answers (`docker info`) and that reaches the
  registries. kind runs as anywhere else: it pulls its own node image; both images are built
  with `docker build` from our Dockerfiles.
- **offline**: this machine (root, Debian's dockerd installed, no engine running, no registry).
  The Docker engine is `harness.engine`'s, for kind: its own network and mount namespaces,
  /proc/sys read-only to it, runc through `harness.capwrapper`, torn down by a watcher if this
  process dies, swept by the next run. The node image is `make kind-image`'s (built if missing);
  the cluster config is `harness.kind_image.cluster_config`. kind publishes the API server on
  127.0.0.1 of the engine's network namespace, so kubectl, helm and the journey run inside it
  (`nsenter --net`). The host's network, sysctls (every one under /proc/sys that is a setting),
  kernel modules, mounts and cgroups are recorded before and compared after; any difference fails.

Steps: create the cluster (`--wait`), show `kubectl get nodes` and check the node is Ready at the
pinned version, `kind load` both images, wait for kube-system's Pods (coredns too), run tests/e2e
in cluster mode (install `--wait` from wizard values, `helm test --logs`, the seed's sample, new
namespaces and ServiceAccounts, a password change, an upgrade, a bad object refused through the
webhook Service, uninstall with the pre-delete Job), delete the cluster.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from harness import REPO_ROOT, VENV, hoststate, tools

CLUSTER_NAME = "tcr-addon-e2e"
IMAGE_TAG = "e2e"
DOCKERFILES = {
    "controller": ("tcr-addon/tcr-assistant", REPO_ROOT / "controller"),
    "hostsUpdater": ("tcr-addon/hosts-updater", REPO_ROOT / "hosts-updater"),
}


class KindRunError(RuntimeError):
    pass


def log(message: str) -> None:
    print(f"[e2e-kind] {message}", flush=True)


def run(argv: Sequence[str], env: dict[str, str] | None = None, *, what: str, timeout: float = 1800,
        capture: bool = False) -> subprocess.CompletedProcess[str]:
    log(f"{what}: {' '.join(argv)}")
    proc = subprocess.run(list(argv), env=env, text=True, timeout=timeout, stdin=subprocess.DEVNULL,
                          capture_output=capture)
    if proc.returncode != 0:
        detail = f":\n{proc.stdout}{proc.stderr}" if capture else ""
        raise KindRunError(f"{what} failed ({proc.returncode}){detail}")
    return proc


def node_summary(nodes: dict[str, Any]) -> list[tuple[str, bool, str]]:
    """(name, Ready, kubelet version) of each node in a `kubectl get nodes -o json` answer."""
    found = []
    for item in nodes.get("items", []):
        conditions = {c["type"]: c["status"] for c in item["status"].get("conditions", [])}
        found.append((item["metadata"]["name"], conditions.get("Ready") == "True",
                      item["status"]["nodeInfo"]["kubeletVersion"]))
    return found


def check_nodes(nodes: dict[str, Any], version: str | None) -> None:
    summary = node_summary(nodes)
    if not summary or not all(ready for _, ready, _ in summary):
        raise KindRunError(f"not every node is Ready: {summary}")
    if version is not None and any(kubelet != version for _, _, kubelet in summary):
        raise KindRunError(f"a node does not run Kubernetes {version}: {summary}")


def api_port(kubeconfig_text: str) -> int:
    """The port of the first cluster's server in a kubeconfig."""
    match = re.search(r"server:\s*https://127\.0\.0\.1:(\d+)", kubeconfig_text)
    if match is None:
        raise KindRunError("the kubeconfig names no server on 127.0.0.1")
    return int(match.group(1))


def unreachable_from_host(port: int) -> bool:
    """True if nothing answers on 127.0.0.1:port in this process's (the host's) network namespace."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.settimeout(2)
        return probe.connect_ex(("127.0.0.1", port)) != 0


def journey_env(kubeconfig: Path, helm_args: Sequence[str]) -> dict[str, str]:
    path = os.pathsep.join([*map(str, tools.path_dirs()), "/usr/sbin", "/usr/bin", "/sbin", "/bin"])
    return {**os.environ, "KUBECONFIG": str(kubeconfig), "PATH": path, "TCR_E2E_MODE": "cluster",
            "TCR_E2E_HELM_ARGS": " ".join(helm_args)}


def journey_argv() -> list[str]:
    return [str(VENV / "bin" / "python"), "-m", "pytest", "tests/e2e", "-v", "-p", "no:cacheprovider"]


# -- offline: our own engine and node image ------------------------------------------------------


def host_snapshot() -> dict[str, object]:
    state = hoststate.host_state(every_sysctl=True)
    modules = Path("/proc/modules")  # absent where the kernel has no loadable modules
    state["modules"] = sorted(line.split()[0] for line in modules.read_text().splitlines()) if modules.exists() else []
    return state


@contextlib.contextmanager
def host_unchanged() -> Iterator[None]:
    """Record the host before; after (also after a failure), fail if anything differs."""
    before = host_snapshot()
    failed = False
    try:
        yield
    except BaseException:
        failed = True
        raise
    finally:
        changed = hoststate.differences(before, host_snapshot())
        if changed:
            message = "the host changed:\n  " + "\n  ".join(changed)
            if not failed:
                raise KindRunError(message)
            log(message)
        else:
            log("the host is as it was: network, routes, sysctls, kernel modules, mounts, cgroups, netns")


def run_offline(name: str, keep: bool) -> None:
    from harness import addon, images, kind_image
    from harness.engine import DockerEngine

    node_image = kind_image.ensure()
    built = images.build_images()  # its own engine, before kind's: one engine at a time
    helm_args = [arg for value in addon.NodeRelease.image_values(built) for arg in ("--set", value)]
    workdir = REPO_ROOT / ".local" / "kind"
    workdir.mkdir(parents=True, exist_ok=True)
    kubeconfig, config = workdir / "kubeconfig", workdir / "cluster.yaml"
    config.write_text(kind_image.cluster_config(name))
    kind = str(tools.bin_dir() / "kind")
    with host_unchanged(), DockerEngine(for_kind=True) as engine:
        env = kind_image.kind_env(engine)
        inside = ["nsenter", f"--net={engine.netns}", "--"]
        started = time.monotonic()
        engine.docker("load", "--input", str(node_image.archive), timeout=900)
        log(f"node image {node_image.ref} loaded in {time.monotonic() - started:.0f} s")
        # IPv4 only: the engine cannot enable IPv6 (its /proc/sys is read-only); kind reuses this network.
        engine.docker("network", "create", "--driver", "bridge", "kind")
        started = time.monotonic()
        run([kind, "create", "cluster", "--name", name, "--image", node_image.ref, "--config", str(config),
             "--kubeconfig", str(kubeconfig), "--wait", "5m"], env, what="create cluster")
        log(f"cluster {name} created in {time.monotonic() - started:.0f} s")
        try:
            # The API server is published on the engine's loopback, never on the host's.
            port = api_port(kubeconfig.read_text())
            if not unreachable_from_host(port):
                raise KindRunError(f"the API server's port {port} answers on the host's 127.0.0.1")
            log(f"the API server's port {port} answers inside the engine's network namespace only")
            kubectl = [*inside, str(tools.kubernetes_binary("kubectl")), f"--kubeconfig={kubeconfig}"]
            run([*kubectl, "get", "nodes", "-o", "wide"], what="kind's nodes")
            nodes = json.loads(run([*kubectl, "get", "nodes", "-o", "json"], what="node check", capture=True).stdout)
            check_nodes(nodes, tools.KUBERNETES_VERSION)
            for image in built:
                run([kind, "load", "image-archive", str(image.archive), "--name", name], env, what="kind load")
            run([*kubectl, "wait", "--for=condition=Ready", "pods", "--all", "-n", "kube-system", "--timeout=300s"],
                what="kube-system Ready (coredns, kube-proxy, the control plane)")
            run([*kubectl, "get", "pods", "-A", "-o", "wide"], what="the cluster's Pods")
            run([*inside, *journey_argv()], journey_env(kubeconfig, helm_args), what="e2e journey")
        finally:
            if not keep:
                run([kind, "delete", "cluster", "--name", name, "--kubeconfig", str(kubeconfig)], env,
                    what="delete cluster")
    log("engine stopped; nothing of it is left (processes, mounts, network namespace, cgroups, state)")


# -- a machine with Docker: kind as usual --------------------------------------------------------


def docker_answers() -> bool:
    docker = shutil.which("docker")
    return docker is not None and subprocess.run([docker, "info"], capture_output=True).returncode == 0


def run_with_docker(name: str, keep: bool) -> None:
    kind = str(tools.bin_dir() / "kind")
    kubeconfig = REPO_ROOT / ".local" / "kind.kubeconfig"
    kubeconfig.parent.mkdir(parents=True, exist_ok=True)
    run([kind, "create", "cluster", "--name", name, "--kubeconfig", str(kubeconfig), "--wait", "5m"],
        what="create cluster")
    try:
        kubectl = [str(tools.kubernetes_binary("kubectl")), f"--kubeconfig={kubeconfig}"]
        run([*kubectl, "get", "nodes", "-o", "wide"], what="kind's nodes")
        check_nodes(json.loads(run([*kubectl, "get", "nodes", "-o", "json"], what="node check",
                                   capture=True).stdout), None)
        helm_args: list[str] = []
        for key, (repository, context) in DOCKERFILES.items():
            image = f"localhost/{repository}:{IMAGE_TAG}"
            run(["docker", "build", "-t", image, str(context)], what="build image")
            run([kind, "load", "docker-image", image, "--name", name], what="kind load")
            helm_args += [f"--set={key}.image.registry=localhost", f"--set={key}.image.repository={repository}",
                          f"--set={key}.image.tag={IMAGE_TAG}", f"--set={key}.image.pullPolicy=Never"]
        run(journey_argv(), journey_env(kubeconfig, helm_args), what="e2e journey")
    finally:
        if not keep:
            run([kind, "delete", "cluster", "--name", name], what="delete cluster")


def choose_engine(wanted: str) -> str:
    if wanted != "auto":
        return wanted
    if docker_answers():
        return "docker"
    if os.geteuid() == 0 and Path("/usr/sbin/dockerd").exists():
        return "offline"
    raise KindRunError("no Docker engine answers, and the offline way needs root and Debian's dockerd "
                       "(apt-get install docker.io; make setup installs it)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="make e2e-kind",
        description="The e2e journey on a real kind cluster: create it, kind load both images, run tests/e2e in "
        "cluster mode (install --wait, helm test --logs, the seed sample, a refused bad object, upgrade, "
        "uninstall), delete it. With a Docker engine that answers, kind as usual (it pulls its node image); "
        "otherwise, as root, offline: a throw-away engine in namespaces of its own and the node image of "
        "`make kind-image`, the host checked unchanged afterwards.",
    )
    parser.add_argument("--engine", choices=("auto", "docker", "offline"), default="auto",
                        help="auto (default): docker if `docker info` answers, else offline")
    parser.add_argument("--cluster-name", default=CLUSTER_NAME)
    parser.add_argument("--keep", action="store_true", help="keep the kind cluster (docker engine only: the "
                        "offline engine goes when the run ends)")
    args = parser.parse_args(argv)
    started = time.monotonic()
    try:
        engine = choose_engine(args.engine)
        log(f"engine: {engine}")
        (run_offline if engine == "offline" else run_with_docker)(args.cluster_name, args.keep)
    except KindRunError as error:
        print(f"make e2e-kind: error: {error}", file=sys.stderr)
        return 1
    log(f"passed in {time.monotonic() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
