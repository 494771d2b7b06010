"""`scripts/cluster up|down|env`: the command line of the local control plane (harness.cluster) and
of the control plane with a node (harness.node, with `--node`).

It lives apart from both so that the base module, harness.cluster, knows nothing of its subclass.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from harness import tools
from harness.cluster import DEFAULT_DIR, ClusterError, ControlPlane
from harness.node import NodeCluster, plane_class


def main(argv: list[str] | None = None) -> int:
    # Options are accepted before and after the subcommand (`--dir D up` and `up --dir D`).
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--dir", type=Path, default=argparse.SUPPRESS,
                        help=f"state, kubeconfig and component logs (default: {DEFAULT_DIR})")
    common.add_argument("--node", action="store_true", default=argparse.SUPPRESS,
                        help="with 'up': also run a real node (kube-scheduler, containerd, kubelet, kube-proxy) "
                        "inside a network and mount namespace of its own, so Pods run; needs root")
    common.add_argument("--kubernetes", metavar="MINOR", default=argparse.SUPPRESS,
                        choices=list(tools.KUBERNETES_RELEASES),
                        help="with 'up': the Kubernetes minor to run, one of "
                        f"{', '.join(tools.KUBERNETES_RELEASES)} (default: $TCR_ADDON_KUBERNETES, else "
                        f"{tools.KUBERNETES_NEWEST}); a minor not built yet is built first (minutes, once)")
    parser = argparse.ArgumentParser(
        prog="scripts/cluster", parents=[common],
        description="A real local Kubernetes control plane (etcd, kube-apiserver, kube-controller-manager) on "
        "loopback, with its own PKI. Without --node, Pods are stored but never run; with --node, one real "
        "node runs them, and the host reaches the API through a loopback port.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("up", parents=[common], help="start the control plane (and with --node the node); returns "
                   "once the API is ready, namespace 'default' has its 'default' ServiceAccount and the node "
                   "is Ready")
    sub.add_parser("down", parents=[common], help="stop every process 'up' started and remove its state, and a "
                   "node's namespaces, mounts, cgroups and containers (logs stay)")
    sub.add_parser("env", parents=[common], help="print 'export KUBECONFIG=…' and PATH for the running plane")
    args = parser.parse_args(argv)
    directory: Path = getattr(args, "dir", DEFAULT_DIR)
    node: bool = getattr(args, "node", False)
    kubernetes: str | None = getattr(args, "kubernetes", None)
    try:
        if args.command == "up":
            started = time.monotonic()
            plane = (NodeCluster if node else ControlPlane)(directory, kubernetes=kubernetes)
            plane.up()
            what = "control plane and node" if node else "control plane"
            print(f"Kubernetes {tools.kubernetes_release(plane.kubernetes)}: {what} "
                  f"ready at {plane.server} "
                  f"in {time.monotonic() - started:.1f} s")
            print(f"export KUBECONFIG={plane.kubeconfig}")
            print(f"logs: {directory}/*.log")
        elif args.command == "down":
            plane_class(directory)(directory).down()
            print("control plane stopped")
        else:
            plane = plane_class(directory).attach(directory)
            print(f"export KUBECONFIG={plane.kubeconfig}")
            print(f'export PATH="{":".join(map(str, tools.path_dirs()))}:$PATH"')
    except ClusterError as error:
        print(f"scripts/cluster: error: {error}", file=sys.stderr)
        return 1
    return 0
