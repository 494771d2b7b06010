"""Unit tests of the work queue (on a fake clock) and small runtime helpers (no API server)."""

from __future__ import annotations

import threading
import time
from collections import Counter

import pytest
from fake_clock import FakeClock

from support import wait_for
from tcr_assistant import cli
from tcr_assistant.k8s.httpserver import parse_bind
from tcr_assistant.k8s.reflector import FIRST_BACKOFF, next_backoff
from tcr_assistant.k8s.workqueue import WorkQueue


def test_dedup_and_order() -> None:
    q: WorkQueue[str] = WorkQueue(clock=FakeClock())
    q.add("a")
    q.add("b")
    q.add("a")
    assert len(q) == 2
    assert q.get(0) == "a"
    assert q.get(0) == "b"
    assert q.get(0) is None


def test_key_never_processed_twice_at_once() -> None:
    q: WorkQueue[str] = WorkQueue(clock=FakeClock())
    q.add("k")
    assert q.get(0) == "k"
    q.add("k")  # re-added while processing: held back until done()
    assert q.get(0) is None
    q.done("k")
    assert q.get(0) == "k"
    q.done("k")
    assert q.pending() == (0, 0, 0)


def retry_delay(q: WorkQueue[str], clock: FakeClock, key: str, step: float) -> float:
    """Add ``key`` rate-limited and advance the fake clock by ``step`` until it is handed out:
    the delay it got (to within ``step``)."""
    start = clock.monotonic()
    q.add_rate_limited(key)
    while (got := q.get(0)) is None:
        clock.advance(step)
    assert got == key
    q.done(key)
    return clock.monotonic() - start


def test_per_key_exponential_backoff() -> None:
    clock = FakeClock()
    q: WorkQueue[str] = WorkQueue(base_delay=0.02, max_delay=0.1, clock=clock)
    delays = [retry_delay(q, clock, "k", 0.001) for _ in range(5)]
    assert delays == pytest.approx([0.02, 0.04, 0.08, 0.1, 0.1], abs=0.0015)  # doubled, capped at max_delay
    assert q.failures("k") == 5
    assert retry_delay(q, clock, "other", 0.001) == pytest.approx(0.02, abs=0.0015)  # per key
    q.forget("k")
    assert q.failures("k") == 0
    assert retry_delay(q, clock, "k", 0.001) == pytest.approx(0.02, abs=0.0015)  # forgotten: base again


def test_overall_bucket_limits_retries() -> None:
    clock = FakeClock()
    q: WorkQueue[str] = WorkQueue(base_delay=0.0001, qps=50, burst=5, clock=clock)
    start = clock.monotonic()
    for i in range(15):  # 5 from the burst, 10 more at 50/s: the last one 0.2 s later
        q.add_rate_limited(f"k{i}")
    handed_out: list[tuple[str, float]] = []
    while len(handed_out) < 15:
        key = q.get(0)
        if key is None:
            clock.advance(0.001)
        else:
            handed_out.append((key, clock.monotonic() - start))
    times = dict(handed_out)
    assert all(times[f"k{i}"] < 0.0015 for i in range(5))  # the burst: at once
    assert times["k14"] == pytest.approx(0.2, abs=0.0015)
    assert sorted(times, key=times.__getitem__) == [f"k{i}" for i in range(15)]  # 20 ms apart, in order


def test_add_after_and_shutdown() -> None:
    clock = FakeClock()
    q: WorkQueue[str] = WorkQueue(clock=clock)
    q.add_after("x", 0.05)
    q.add_after("x", 0.08)  # already due sooner: the earlier time stands
    assert q.get(0) is None
    clock.advance(0.049)
    assert q.get(0) is None
    clock.advance(0.001)
    assert q.get(0) == "x"
    q.done("x")
    assert q.pending() == (0, 0, 0)
    got: list[object] = []
    t = threading.Thread(target=lambda: got.append(q.get()))
    t.start()
    clock.await_waiters(1)
    q.shutdown()
    t.join(2)
    assert got == [None]


def test_blocked_get_wakes_when_the_clock_reaches_a_delayed_key() -> None:
    clock = FakeClock()
    q: WorkQueue[str] = WorkQueue(clock=clock)
    q.add_after("later", 30)
    got: list[str | None] = []
    t = threading.Thread(target=lambda: got.append(q.get(60)))
    t.start()
    clock.await_waiters(1)
    clock.advance(29.9)
    clock.await_waiters(1)  # woke, found nothing due, waits again
    assert got == []
    clock.advance(0.1)
    t.join(2)
    assert got == ["later"]


def test_get_times_out_on_the_clock() -> None:
    clock = FakeClock()
    q: WorkQueue[str] = WorkQueue(clock=clock)
    got: list[str | None] = ["not returned"]
    t = threading.Thread(target=lambda: got.__setitem__(0, q.get(5)))
    t.start()
    clock.await_waiters(1)
    clock.advance(4.9)
    clock.await_waiters(1)
    assert t.is_alive()
    clock.advance(0.1)
    t.join(2)
    assert got == [None]


def test_workers_concurrency_unique() -> None:
    """Four workers, seven keys added 500 times: every key is handed out, never to two workers
    at once, and the queue ends quiescent."""
    q: WorkQueue[str] = WorkQueue(clock=FakeClock())
    active: set[str] = set()
    clash: list[str] = []
    handed_out: Counter[str] = Counter()
    lock = threading.Lock()

    def worker() -> None:
        while (k := q.get()) is not None:
            with lock:
                if k in active:
                    clash.append(k)
                active.add(k)
                handed_out[k] += 1
            time.sleep(0.001)  # real work takes a while: keys get re-added while processed
            with lock:
                active.discard(k)
            q.done(k)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for i in range(500):
        q.add(f"k{i % 7}")
    wait_for(lambda: q.pending() == (0, 0, 0), timeout=5, interval=0.005, what="queue drained")
    q.shutdown()
    for t in threads:
        t.join(5)
    assert clash == []
    assert set(handed_out) == {f"k{i}" for i in range(7)}
    assert not any(t.is_alive() for t in threads)


def test_first_keys_go_ahead_of_waiting_ones() -> None:
    q: WorkQueue[str] = WorkQueue(clock=FakeClock())
    for key in ("a", "b", "c"):
        q.add(key)
    q.add("new", first=True)
    q.add("newer", first=True)
    q.add("c", first=True)  # already waiting: moves ahead, behind the earlier first keys
    assert len(q) == 5
    assert [q.get(0) for _ in range(3)] == ["new", "newer", "c"]
    q.add("c", first=True)  # re-added while processing: ahead again once done
    q.done("c")
    assert [q.get(0) for _ in range(3)] == ["c", "a", "b"]


def test_pending_counts_queued_processing_and_delayed() -> None:
    q: WorkQueue[str] = WorkQueue(clock=FakeClock())
    q.add("a")
    q.add("b")
    q.add_after("c", 60)
    assert q.pending() == (2, 0, 1)
    assert q.get(0) == "a"
    assert q.pending() == (1, 1, 1)
    q.done("a")
    assert q.pending() == (1, 0, 1)


def test_real_clock_waits_in_real_time() -> None:
    """The default clock is the real one: a delayed key comes out after its delay, not before."""
    q: WorkQueue[str] = WorkQueue()
    start = time.monotonic()
    assert q.get(0.02) is None
    assert time.monotonic() - start >= 0.02
    start = time.monotonic()
    q.add_after("x", 0.05)
    assert q.get(1.0) == "x"
    assert time.monotonic() - start >= 0.05


def test_reflector_backoff_doubles_up_to_its_cap() -> None:
    backoffs = [FIRST_BACKOFF]
    for _ in range(8):
        backoffs.append(next_backoff(backoffs[-1]))
    assert backoffs == [0.8, 1.6, 3.2, 6.4, 12.8, 25.6, 30.0, 30.0, 30.0]


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
    from tcr_assistant.k8s.apiclient import ApiClient
    from tcr_assistant.k8s.client import Kube
    from tcr_assistant.reconciler.controller import Controller
    from tcr_assistant.reconciler.keys import UnknownKey
    from tcr_assistant.reconciler.options import Options

    c = Controller(Kube(ApiClient.for_server("http://127.0.0.1:9")), Options(namespace="x"))
    with pytest.raises(UnknownKey, match="unknown work key"):
        c.process(("ns", "default"))  # type: ignore[arg-type]  # the old string-tagged tuples
    c.queue.add(("ns", "default"))  # type: ignore[arg-type]
    key = c.queue.get(0.1)
    assert key is not None
    c.manager.workers.process_one(key)
    c.queue.done(key)
    assert c.manager.pending() == (0, 0, 0)  # dropped, not retried with backoff
    assert c.queue.failures(key) == 0
    assert c.metrics.errors.labels("unknown")._value.get() == 1


def test_a_new_namespace_is_queued_after_a_moment_and_others_at_once() -> None:
    from tcr_assistant.k8s.apiclient import ApiClient
    from tcr_assistant.k8s.client import Kube
    from tcr_assistant.reconciler.controller import NEW_NAMESPACE_DELAY, Controller
    from tcr_assistant.reconciler.keys import NamespaceKey
    from tcr_assistant.reconciler.observed import namespace_info
    from tcr_assistant.reconciler.options import Options

    c = Controller(Kube(ApiClient.for_server("http://127.0.0.1:9")), Options(namespace="x"))
    fresh = namespace_info({"metadata": {"name": "fresh"}})
    c._on_namespace("ADDED", None, fresh)  # during start-up: the initial list, at once
    assert c.queue.pending() == (1, 0, 0)
    assert c.queue.get(0) == NamespaceKey("fresh")
    c.queue.done(NamespaceKey("fresh"))
    for reflector in c.manager.reflectors:
        reflector.synced.set()
    # Created while we run: the API server's own namespace cache may not have it yet.
    c._on_namespace("ADDED", None, namespace_info({"metadata": {"name": "new"}}))
    c.queue.add(NamespaceKey("other"))
    assert c.queue.pending() == (1, 0, 1)
    started = time.monotonic()
    assert c.queue.get(0) == NamespaceKey("other")
    c.queue.done(NamespaceKey("other"))
    assert c.queue.get(1) == NamespaceKey("new")
    assert time.monotonic() - started >= NEW_NAMESPACE_DELAY * 0.9  # (the queue's clock is monotonic)
    c.queue.done(NamespaceKey("new"))
    c._on_namespace("MODIFIED", fresh, namespace_info({"metadata": {"name": "fresh", "labels": {"a": "b"}}}))
    assert c.queue.pending() == (1, 0, 0)
