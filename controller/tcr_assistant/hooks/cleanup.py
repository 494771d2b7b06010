"""`tcr-assistant cleanup` (the chart's pre-delete hook): the hosts lines, then every ImagePullSecret
of the release, each removed by the controller through its finalizer."""

from __future__ import annotations

import argparse
import sys
import time

from tcr_assistant.hooks.hosts import remove_hosts_lines
from tcr_assistant.k8s.client import KubeError, connect
from tcr_assistant.reconciler import writes
from tcr_assistant.reconciler.options import user_agent


def run(args: argparse.Namespace) -> int:
    started = time.monotonic()
    kube = connect(args.kubeconfig, user_agent=user_agent())
    if args.hosts_daemonset:
        namespace, _, name = args.hosts_daemonset.partition("/")
        if not namespace or not name:
            print(f"error: --hosts-daemonset must be NS/NAME, got {args.hosts_daemonset!r}", file=sys.stderr)
            return 2
        # At most half of the overall --timeout, so the ImagePullSecret cleanup keeps its share.
        remove_hosts_lines(kube, namespace, name, args.timeout / 2, say=print)
    path = writes.IMAGEPULLSECRETS.path()
    try:
        items = kube.list_all(path, {"labelSelector": args.selector})["items"]
    except KubeError as exc:
        if exc.not_found:  # CRD already gone
            print("no ImagePullSecret resource type; nothing to clean up")
            return 0
        raise
    names = [i["metadata"]["name"] for i in items]
    for name in names:
        kube.delete(writes.IMAGEPULLSECRETS.path(name=name))
        print(f"deleting ImagePullSecret {name}")
    deadline = started + args.timeout
    remaining = list(names)
    while remaining and time.monotonic() < deadline:
        remaining = [n for n in remaining if kube.get(writes.IMAGEPULLSECRETS.path(name=n)) is not None]
        if remaining:
            time.sleep(0.5)
    if remaining:
        print(
            f"FAIL: still present after {args.timeout:.0f}s (is the controller running?): " + ", ".join(remaining),
            file=sys.stderr,
        )
        return 1
    print(f"cleaned up {len(names)} ImagePullSecret(s)")
    return 0
