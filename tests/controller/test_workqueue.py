"""Unit tests of the work queue and small runtime helpers (no API server)."""

from __future__ import annotations

import threading
import time
from collections import Counter

import pytest

from tcr_assistant import cli
from tcr_assistant.runtime.httpserver import parse_bind
from tcr_assistant.runtime.workqueue import WorkQueue


def test_dedup_and_order() -> None:
    q: WorkQueue[str] = WorkQueue()
    q.add("a")
    q.add("b")
    q.add("a")
    assert len(q) == 2
    assert q.get(0.1) == "a"
    assert q.get(0.1) == "b"
    assert q.get(0.05) is None


def test_key_never_processed_twice_at_once() -> None:
    q: WorkQueue[str] = WorkQueue()
    q.add("k")
    assert q.get(0.1) == "k"
    q.add("k")  # re-added while processing: held back until done()
    assert q.get(0.05) is None
    q.done("k")
    assert q.get(0.1) == "k"
    q.done("k")
    assert q.pending() == (0, 0, 0)


def test_per_key_exponential_backoff() -> None:
    q: WorkQueue[str] = WorkQueue(base_delay=0.02, max_delay=0.1)
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
    q: WorkQueue[str] = WorkQueue(base_delay=0.0001, qps=50, burst=5)
    start = time.monotonic()
    for i in range(15):  # 5 from the burst, 10 more at 50/s -> about 0.2 s
        q.add_rate_limited(f"k{i}")
    got = 0
    while got < 15:
        assert q.get(2.0) is not None
        got += 1
    assert time.monotonic() - start >= 0.15


def test_add_after_and_shutdown() -> None:
    q: WorkQueue[str] = WorkQueue()
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
    """Four workers, seven keys added 500 times: every key is handed out, never to two workers
    at once, and the queue ends quiescent."""
    q: WorkQueue[str] = WorkQueue()
    active: set[str] = set()
    clash: list[str] = []
    handed_out: Counter[str] = Counter()
    lock = threading.Lock()

    def worker() -> None:
        while True:
            k = q.get(0.3)
            if k is None:
                return
            with lock:
                if k in active:
                    clash.append(k)
                active.add(k)
                handed_out[k] += 1
            time.sleep(0.001)
            with lock:
                active.discard(k)
            q.done(k)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for i in range(500):
        q.add(f"k{i % 7}")
    for t in threads:
        t.join(5)
    assert clash == []
    assert set(handed_out) == {f"k{i}" for i in range(7)}
    assert q.pending() == (0, 0, 0)


def test_first_keys_go_ahead_of_waiting_ones() -> None:
    q: WorkQueue[str] = WorkQueue()
    for key in ("a", "b", "c"):
        q.add(key)
    q.add("new", first=True)
    q.add("newer", first=True)
    q.add("c", first=True)  # already waiting: moves ahead, behind the earlier first keys
    assert len(q) == 5
    assert [q.get(0.1) for _ in range(3)] == ["new", "newer", "c"]
    q.add("c", first=True)  # re-added while processing: ahead again once done
    q.done("c")
    assert [q.get(0.1) for _ in range(3)] == ["c", "a", "b"]


def test_pending_counts_queued_processing_and_delayed() -> None:
    q: WorkQueue[str] = WorkQueue()
    q.add("a")
    q.add("b")
    q.add_after("c", 60)
    assert q.pending() == (2, 0, 1)
    assert q.get(0.1) == "a"
    assert q.pending() == (1, 1, 1)
    q.done("a")
    assert q.pending() == (1, 0, 1)


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


def test_unknown_key_is_an_error_and_never_retried() -> None:
    from tcr_assistant.apiclient import ApiClient
    from tcr_assistant.controller import Controller
    from tcr_assistant.kube import Kube
    from tcr_assistant.options import Options
    from tcr_assistant.work import UnknownKey

    c = Controller(Kube(ApiClient.for_server("http://127.0.0.1:9")), Options(namespace="x"))
    with pytest.raises(UnknownKey, match="unknown work key"):
        c.process(("ns", "default"))  # type: ignore[arg-type]  # the old string-tagged tuples
    c.queue.add(("ns", "default"))  # type: ignore[arg-type]
    key = c.queue.get(0.1)
    assert key is not None
    c._process_one(key)
    c.queue.done(key)
    assert c.pending() == (0, 0, 0)  # dropped, not retried with backoff
    assert c.queue.failures(key) == 0
    assert c.metrics.errors.labels("unknown")._value.get() == 1
