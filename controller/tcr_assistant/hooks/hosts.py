"""Uninstall step for hosts-updater: take our lines off every node before the DaemonSet goes.

hosts-updater keeps its lines on SIGTERM (a rolling update must not flap name resolution), so
deleting the DaemonSet would leave them on every node. The chart's pre-delete hook therefore
switches the DaemonSet to `--remove` mode and waits until every node's Pod is Ready again: in
remove mode a Pod reports ready (its `--ready-file`) only once its node's hosts file is clean.
The decisions are pure functions; `remove_hosts_lines` is the thin API part.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Mapping
from typing import Any

from tcr_assistant.k8s.client import Kube, KubeError

CONTAINER = "hosts-updater"
REMOVE_FLAG = "--remove"


def daemonset_path(namespace: str, name: str) -> str:
    return f"/apis/apps/v1/namespaces/{namespace}/daemonsets/{name}"


def remove_mode(daemonset: Mapping[str, Any]) -> dict[str, Any] | None:
    """The DaemonSet switched to remove mode on every node at once, or None when it already is.

    `--remove` is added to the hosts-updater container (other arguments kept), and
    `maxUnavailable: 100%` replaces all Pods at once (`maxSurge: 0` stays: never two writers).
    """
    updated = copy.deepcopy(dict(daemonset))
    spec = updated.setdefault("spec", {})
    containers = spec.setdefault("template", {}).setdefault("spec", {}).get("containers") or []
    container = next((c for c in containers if c.get("name") == CONTAINER), None)
    if container is None:
        raise ValueError(f"DaemonSet has no container named {CONTAINER!r}")
    args = list(container.get("args") or [])
    strategy = spec.setdefault("updateStrategy", {"type": "RollingUpdate"})
    rolling = strategy.setdefault("rollingUpdate", {})
    if REMOVE_FLAG in args and rolling.get("maxUnavailable") == "100%":
        return None
    if REMOVE_FLAG not in args:
        container["args"] = [*args, REMOVE_FLAG]
    strategy["type"] = "RollingUpdate"
    rolling["maxUnavailable"] = "100%"
    rolling["maxSurge"] = 0
    return updated


def rollout_state(daemonset: Mapping[str, Any]) -> tuple[bool, str]:
    """(every node runs the current template and is Ready, a one-line summary)."""
    generation = int((daemonset.get("metadata") or {}).get("generation") or 0)
    status = daemonset.get("status") or {}
    observed = int(status.get("observedGeneration") or 0)
    desired = int(status.get("desiredNumberScheduled") or 0)
    updated = int(status.get("updatedNumberScheduled") or 0)
    ready = int(status.get("numberReady") or 0)
    done = observed >= generation and updated == desired and ready == desired
    summary = f"{ready}/{desired} nodes clean ({updated} updated, generation {observed}/{generation})"
    return done, summary


def remove_hosts_lines(
    kube: Kube,
    namespace: str,
    name: str,
    timeout: float,
    say: Callable[[str], None],
    poll: float = 1.0,
) -> bool:
    """Switch DaemonSet `namespace/name` to remove mode and wait; True when every node is clean.

    A missing DaemonSet means there is nothing to remove. Conflicts are retried with a fresh read.
    """
    path = daemonset_path(namespace, name)
    for _ in range(5):
        daemonset = kube.get(path)
        if daemonset is None:
            say(f"DaemonSet {namespace}/{name} not found: no hosts lines to remove")
            return True
        updated = remove_mode(daemonset)
        if updated is None:
            break
        try:
            kube.request("PUT", path, body=updated)
            say(f"DaemonSet {namespace}/{name} switched to --remove on every node")
            break
        except KubeError as error:
            if not error.conflict:
                raise
    deadline = time.monotonic() + timeout
    while True:
        daemonset = kube.get(path)
        if daemonset is None:
            return True
        done, summary = rollout_state(daemonset)
        if done:
            say(f"hosts lines removed: {summary}")
            return True
        if time.monotonic() > deadline:
            say(f"WARNING: hosts lines not confirmed removed after {timeout:.0f}s: {summary}; "
                "nodes that are not Ready keep their lines until hosts-updater runs there with --remove")
            return False
        time.sleep(poll)
