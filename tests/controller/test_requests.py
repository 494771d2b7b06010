"""What the controller asks of the API server: two requests per namespace for a new
ImagePullSecret, no 409 it caused itself, a restart in watch mode that reads nothing, and a
hand-deleted Secret repaired in each drift mode."""

from __future__ import annotations

import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest
from controller_support import K, RunningController
from recording_kube import recorded

from support import wait_for
from tcr_assistant.k8s.client import SECRETS, Kube
from tcr_assistant.spec import api

OURS = ("secrets", "serviceaccounts")


def spec(namespaces: list[str]) -> dict[str, object]:
    return {"namespaces": ",".join(namespaces), "serviceAccounts": "default",
            "docker": {"server": "demo.tencentcloudcr.com", "username": "u", "password": "p"}}


def linked(k: K, ns: str, secret: str) -> bool:
    return secret in k.pull_secrets(ns)


@contextmanager
def counted(kube: Kube) -> Iterator[Counter[str]]:
    """Requests ("POST secrets") and 409 retries ("serviceaccounts conflict") on Secrets and
    ServiceAccounts made inside the block."""
    before = Counter(recorded(kube).requests) + Counter(recorded(kube).retries)
    delta: Counter[str] = Counter()
    yield delta
    after = Counter(recorded(kube).requests) + Counter(recorded(kube).retries)
    delta.update({key: n - before[key] for key, n in after.items()
                  if any(word in OURS for word in key.split()) and n != before[key]})


def existing_namespaces(k: K, n: int) -> list[str]:
    names = [k.create_namespace() for _ in range(n)]
    for ns in names:
        k.wait_default_sa(ns)
    return names


def test_a_new_image_pull_secret_costs_two_requests_per_namespace(
    k: K, start_controller: Callable[..., RunningController], ips_cleanup: list[str]
) -> None:
    """Over existing namespaces: create the Secret (no read first), then one ServiceAccount
    write; no 409 Conflict of our own making."""
    rc = start_controller(drift_period=3600.0)
    namespaces = existing_namespaces(k, 12)
    rc.settle()
    name = f"two-{uuid.uuid4().hex[:6]}"
    ips_cleanup.append(name)
    secret = api.secret_name(name)
    with counted(rc.controller.kube) as delta:
        k.create_ips(name, spec(namespaces))
        wait_for(lambda: all(linked(k, ns, secret) for ns in namespaces), what="every namespace linked")
        rc.settle()
    print(f"\nrequests for one ImagePullSecret over {len(namespaces)} namespaces: {dict(delta)}")
    assert delta == {"POST secrets": 12, "PATCH serviceaccounts": 12}


def test_new_namespaces_and_their_accounts_make_no_conflicts(
    k: K, start_controller: Callable[..., RunningController], ips_cleanup: list[str]
) -> None:
    """A namespace key and the `default` ServiceAccount's key arrive together for each new
    namespace: they must not write the same account at once."""
    rc = start_controller(drift_period=3600.0, workers=16)
    name = f"burst-{uuid.uuid4().hex[:6]}"
    ips_cleanup.append(name)
    secret = api.secret_name(name)
    prefix = f"b{uuid.uuid4().hex[:5]}-"
    k.create_ips(name, {**spec([]), "namespaces": "*"})
    wait_for(lambda: name in rc.controller.state.plans, what="the plan")
    rc.settle()
    with counted(rc.controller.kube) as delta:
        namespaces = [k.create_namespace(f"{prefix}{i:02d}") for i in range(30)]
        wait_for(lambda: all(linked(k, ns, secret) for ns in namespaces), timeout=60, what="all linked")
        rc.settle()
    print(f"\nrequests for 30 new namespaces: {dict(delta)}")
    assert delta["serviceaccounts conflict"] == 0
    assert delta["PATCH serviceaccounts"] == 30
    assert delta["POST secrets"] == 30 and delta["GET secrets"] == 0


@pytest.mark.parametrize("mode", ["poll", "watch"])
def test_a_hand_deleted_secret_comes_back(
    mode: str, k: K, start_controller: Callable[..., RunningController], ips_cleanup: list[str]
) -> None:
    # watch mode never polls; a poll period of 2 s keeps the poll test short
    rc = start_controller(drift_mode=mode, drift_period=2.0 if mode == "poll" else 3600.0)
    (ns,) = existing_namespaces(k, 1)
    name = f"gone-{mode}-{uuid.uuid4().hex[:6]}"
    ips_cleanup.append(name)
    secret = api.secret_name(name)
    k.create_ips(name, spec([ns]))
    wait_for(lambda: linked(k, ns, secret), what="linked")
    rc.settle()
    k.kube.delete(SECRETS.path(ns, secret))
    deleted = time.monotonic()
    wait_for(lambda: k.secret(ns, secret), timeout=30, interval=0.01, what="the deleted Secret restored")
    print(f"\n{mode} mode: Secret back {time.monotonic() - deleted:.3f} s after its deletion")
    wait_for(lambda: any(e["reason"] == "SecretRepaired" for e in k.events_for(name)), what="SecretRepaired event")
    if mode == "watch":
        assert recorded(rc.controller.kube).requests["GET secrets"] == 0  # the watch told it what exists


def test_a_restart_in_watch_mode_reads_and_writes_nothing(
    k: K, start_controller: Callable[..., RunningController], ips_cleanup: list[str]
) -> None:
    first = start_controller(drift_mode="watch")
    namespaces = existing_namespaces(k, 5)
    name = f"rw-{uuid.uuid4().hex[:6]}"
    ips_cleanup.append(name)
    k.create_ips(name, spec(namespaces))
    secret = api.secret_name(name)
    wait_for(lambda: all(linked(k, ns, secret) for ns in namespaces), what="linked")
    first.settle()
    first.stop()
    second = start_controller(drift_mode="watch")
    second.settle()
    ours = {key: n for key, n in recorded(second.controller.kube).requests.items()
            if key.split()[1] in OURS and key.split()[0] not in ("LIST", "WATCH")}
    assert ours == {}, f"a restart in watch mode made {ours}"
