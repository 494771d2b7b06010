"""Unit tests of the work queue and small runtime helpers (no API server)."""

from __future__ import annotations

import threading
import time

from tcr_assistant import cli
from tcr_assistant.runtime.httpserver import parse_bind
from tcr_assistant.runtime.workqueue import WorkQueue


def test_dedup_and_order() -> None:
    q = WorkQueue()
    q.add("a")
    q.add("b")
    q.add("a")
    assert len(q) == 2
    assert q.get(0.1) == "a"
    assert q.get(0.1) == "b"
    assert q.get(0.05) is None


def test_key_never_processed_twice_at_once() -> None:
    q = WorkQueue()
    q.add("k")
    assert q.get(0.1) == "k"
    q.add("k")  # re-added while processing: held back until done()
    assert q.get(0.05) is None
    q.done("k")
    assert q.get(0.1) == "k"
    q.done("k")
    assert q.idle()


def test_per_key_exponential_backoff() -> None:
    q = WorkQueue(base_delay=0.02, max_delay=0.1)
    delays = []
    for _ in range(5):
        start = time.monotonic()
        q.add_rate_limited("k")
        assert q.get(1.0) == "k"
        delays.append(time.monotonic() - start)
        q.done("k")
    assert delays[0] < delays[2]
    assert max(delays) < 0.5  # capped at max_delay
    q.forget("k")
    assert q.failures("k") == 0


def test_overall_bucket_limits_retries() -> None:
    q = WorkQueue(base_delay=0.0001, qps=50, burst=5)
    start = time.monotonic()
    for i in range(15):  # 5 from the burst, 10 more at 50/s -> about 0.2 s
        q.add_rate_limited(f"k{i}")
    got = 0
    while got < 15:
        assert q.get(2.0) is not None
        got += 1
    assert time.monotonic() - start >= 0.15


def test_add_after_and_shutdown() -> None:
    q = WorkQueue()
    q.add_after("x", 0.05)
    assert q.get(0.01) is None
    assert q.get(1.0) == "x"
    got: list[object] = []
    t = threading.Thread(target=lambda: got.append(q.get()))
    t.start()
    q.shutdown()
    t.join(2)
    assert got == [None]


def test_workers_concurrency_unique() -> None:
    q = WorkQueue()
    active: set[str] = set()
    clash = []
    lock = threading.Lock()

    def worker() -> None:
        while True:
            k = q.get(0.3)
            if k is None:
                return
            with lock:
                if k in active:
                    clash.append(k)
                active.add(str(k))
            time.sleep(0.001)
            with lock:
                active.discard(str(k))
            q.done(k)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for i in range(500):
        q.add(f"k{i % 7}")
    for t in threads:
        t.join(5)
    assert clash == []


def test_parse_bind() -> None:
    assert parse_bind(":8081") == ("", 8081)
    assert parse_bind("127.0.0.1:9") == ("127.0.0.1", 9)
    assert parse_bind("0") is None


def test_cli_help_mentions_contract_flags() -> None:
    parser = cli.build_parser()
    run_help = parser._subparsers._group_actions[0].choices["run"].format_help()  # type: ignore[union-attr,index]
    for flag in (
        "--kubeconfig",
        "--namespace",
        "--leader-elect",
        "--lease-name",
        "--health-probe-bind-address",
        "--metrics-bind-address",
        "--webhook-port",
        "--webhook-host",
        "--webhook-cert-dir",
    ):
        assert flag in run_help
    args = parser.parse_args(["check", "--namespace", "n", "a", "b"])
    assert args.service_account == "default" and args.names == ["a", "b"]
    args = parser.parse_args(["cleanup", "--selector", "x=y"])
    assert args.timeout == 120.0


def test_controller_plan_refuses_invalid_spec_and_keeps_entries() -> None:
    """A spec the webhook would reject (if it got past it) is not applied, and the entries the
    controller made earlier are left alone (not "managed") instead of being torn down."""
    from kubernetes import client

    from tcr_assistant.kube import Kube
    from tcr_assistant.manager import Controller, Options

    c = Controller(Kube(client.ApiClient(client.Configuration(host="http://127.0.0.1:9"))), Options(namespace="x"))
    good = {"server": "r.example.com", "username": "u", "password": "p"}
    plan = c._plan({"metadata": {"name": "a"}, "spec": {"namespaces": "a,,b", "docker": good}})
    assert plan.problem is not None and plan.problem[0] == "InvalidSpec"
    assert not plan.active and not plan.managed
    plan = c._plan(
        {
            "metadata": {"name": "a"},
            "spec": {"namespaces": "a", "docker": {**good, "password": None, "passwordSecretRef": {"name": "s"}}},
        }
    )
    assert plan.problem is not None and plan.problem[0] == "CredentialsUnavailable"
    assert not plan.active and not plan.managed  # a missing credential Secret never unlinks anything
    plan = c._plan(
        {
            "metadata": {"name": "a", "deletionTimestamp": "2026-01-01T00:00:00Z"},
            "spec": {"namespaces": "a", "docker": good},
        }
    )
    assert plan.deleting and plan.managed and not plan.active
    plan = c._plan({"metadata": {"name": "a"}, "spec": {"namespaces": "a", "docker": good}})
    assert plan.active and plan.problem is None and plan.fingerprint
