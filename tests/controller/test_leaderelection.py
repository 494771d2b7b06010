"""Leader election: its timing decisions alone on a fake clock, its duration checks, and electors
on a fake clock against the real API server's Leases (no waiting out lease durations)."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from controller_support import ADDON_NS, K
from fake_clock import FakeClock

from tcr_assistant.k8s.apiclient import ApiClient
from tcr_assistant.k8s.client import LEASES, Kube
from tcr_assistant.k8s.leaderelection import (
    JITTER_FACTOR,
    LeaderElector,
    LeaseRecord,
    check_durations,
    claimed_spec,
    held_by_another,
    micro_time,
    renew_deadline_passed,
)
from tcr_assistant.reconciler.options import DEFAULTS

# -- the duration checks -------------------------------------------------------------------------


def test_the_controllers_defaults_pass_the_checks() -> None:
    check_durations(DEFAULTS.lease_duration, DEFAULTS.renew_deadline, DEFAULTS.retry_period)
    check_durations(15.0, 10.0, 2.0)  # client-go's and the elector's own defaults


@pytest.mark.parametrize(
    ("lease", "renew", "retry", "problem"),
    [
        (10.0, 10.0, 2.0, "lease duration must be greater than the renew deadline"),
        (8.0, 10.0, 2.0, "lease duration must be greater than the renew deadline"),
        (15.0, 2.4, 2.0, "renew deadline must be greater than 1.2 x the retry period = 2.4s"),
        (15.0, 2.0, 2.0, "renew deadline must be greater than 1.2 x the retry period = 2.4s"),
        (15.0, 10.0, 0.0, "every duration must be greater than zero"),
        (15.0, -1.0, 0.5, "every duration must be greater than zero"),
        (0.0, -1.0, -2.0, "every duration must be greater than zero"),
    ],
)
def test_unusable_durations_are_refused_naming_the_values(
    lease: float, renew: float, retry: float, problem: str
) -> None:
    with pytest.raises(ValueError) as raised:
        check_durations(lease, renew, retry)
    message = str(raised.value)
    assert problem in message
    assert f"lease duration {lease:g}s, renew deadline {renew:g}s, retry period {retry:g}s" in message


def test_just_above_the_jittered_retry_period_passes() -> None:
    check_durations(15.0, JITTER_FACTOR * 2.0 + 0.001, 2.0)
    check_durations(10.001, 10.0, 2.0)


def test_the_elector_checks_its_durations_before_anything_else() -> None:
    never_contacted = Kube(ApiClient.for_server("http://127.0.0.1:9"))
    with pytest.raises(ValueError, match="lease duration must be greater than the renew deadline"):
        LeaderElector(never_contacted, "ns", "lease", "me", lease_duration=10.0, renew_deadline=10.0)


# -- the timing decisions, on a fake clock -------------------------------------------------------


@pytest.mark.parametrize(("record", "default_duration", "held_for"), [
    (LeaseRecord("other", "2026-01-01T00:00:00.000000Z", 15), 60.0, 15.0),  # its own duration
    (LeaseRecord("other", None, None), 30.0, 30.0),  # none given: ours
], ids=["its-duration", "our-duration"])
def test_a_held_lease_is_kept_until_unchanged_for_its_duration_on_our_clock(
        record: LeaseRecord, default_duration: float, held_for: float) -> None:
    clock = FakeClock()
    observed_at = clock.monotonic()
    clock.advance(held_for - 0.001)
    assert held_by_another(record, "me", observed_at, clock.monotonic(), default_duration=default_duration)
    clock.advance(0.001)
    assert not held_by_another(record, "me", observed_at, clock.monotonic(), default_duration=default_duration)


def test_an_empty_or_own_lease_is_never_held_by_another() -> None:
    clock = FakeClock()
    for holder in ("", "me"):
        assert not held_by_another(LeaseRecord(holder, None, 15), "me", clock.monotonic(), clock.monotonic(), 15.0)


def test_a_changed_record_is_a_new_observation() -> None:
    first = LeaseRecord.of({"holderIdentity": "other", "renewTime": "t1", "leaseDurationSeconds": 15})
    renewed = LeaseRecord.of({"holderIdentity": "other", "renewTime": "t2", "leaseDurationSeconds": 15})
    released = LeaseRecord.of({"holderIdentity": None, "renewTime": "t2", "leaseDurationSeconds": 1})
    assert first != renewed
    assert released.holder == ""


def test_the_leader_gives_up_once_the_renew_deadline_passed() -> None:
    clock = FakeClock()
    last_renewed = clock.monotonic()
    clock.advance(9.999)
    assert not renew_deadline_passed(last_renewed, clock.monotonic(), 10.0)
    clock.advance(0.001)
    assert renew_deadline_passed(last_renewed, clock.monotonic(), 10.0)


def test_claimed_spec_creates_renews_and_takes_over() -> None:
    clock = FakeClock()
    created = claimed_spec(None, "a", 15.0, clock.now())
    assert created == {
        "holderIdentity": "a",
        "leaseDurationSeconds": 15,
        "renewTime": micro_time(clock.now()),
        "acquireTime": micro_time(clock.now()),
        "leaseTransitions": 0,
    }
    clock.advance(2)
    renewed = claimed_spec(created, "a", 15.0, clock.now())
    assert renewed["renewTime"] == micro_time(clock.now()) != created["renewTime"]
    assert renewed["acquireTime"] == created["acquireTime"]
    assert renewed["leaseTransitions"] == 0
    clock.advance(20)
    taken = claimed_spec(renewed, "b", 15.0, clock.now())
    assert taken["holderIdentity"] == "b"
    assert taken["acquireTime"] == micro_time(clock.now())
    assert taken["leaseTransitions"] == 1
    released = {**taken, "holderIdentity": None, "leaseDurationSeconds": 1}
    assert claimed_spec(released, "a", 15.0, clock.now())["leaseTransitions"] == 2


def test_micro_time_is_utc_with_microseconds() -> None:
    assert micro_time(1_767_225_600.5) == "2026-01-01T00:00:00.500000Z"


# -- electors on a fake clock against the real API server ----------------------------------------


@pytest.fixture
def lease_name(k: K) -> Iterator[str]:
    name = f"le-unit-{uuid.uuid4().hex[:8]}"
    yield name
    k.kube.delete(LEASES.path(ADDON_NS, name))


def _spec(k: K, lease: str) -> dict[str, Any]:
    return dict(((k.kube.get(LEASES.path(ADDON_NS, lease)) or {}).get("spec")) or {})


def _elector(k: K, lease: str, identity: str, clock: FakeClock) -> LeaderElector:
    return LeaderElector(k.kube, ADDON_NS, lease, identity, 15.0, 10.0, 2.0, clock=clock)


def _in_thread(target: Callable[[], bool]) -> tuple[threading.Thread, list[bool]]:
    result: list[bool] = []
    thread = threading.Thread(target=lambda: result.append(target()), daemon=True)
    thread.start()
    return thread, result


def test_a_standby_takes_over_only_after_the_lease_went_unrenewed_for_its_duration(k: K, lease_name: str) -> None:
    a_clock, b_clock = FakeClock(), FakeClock(monotonic=50.0)  # unrelated monotonic clocks
    a, b = _elector(k, lease_name, "a", a_clock), _elector(k, lease_name, "b", b_clock)
    assert a.try_acquire_or_renew()
    assert _spec(k, lease_name)["holderIdentity"] == "a"
    assert not b.try_acquire_or_renew()  # b starts watching the record
    b_clock.advance(14)
    assert not b.try_acquire_or_renew()
    a_clock.advance(2)
    assert a.try_acquire_or_renew()  # a renews: b's 15 s start again
    b_clock.advance(14)
    assert not b.try_acquire_or_renew()
    b_clock.advance(1)
    assert not b.try_acquire_or_renew()  # 15 s since the renewal b saw, not since it began
    b_clock.advance(14)
    assert b.try_acquire_or_renew()
    spec = _spec(k, lease_name)
    assert spec["holderIdentity"] == "b"
    assert spec["leaseTransitions"] == 1
    assert spec["renewTime"] == spec["acquireTime"] == micro_time(b_clock.now())
    assert not a.try_acquire_or_renew()  # a now sees b's fresh record


def test_the_acquire_loop_retries_every_retry_period_until_the_lease_expires(k: K, lease_name: str) -> None:
    holder, clock = _elector(k, lease_name, "a", FakeClock()), FakeClock()
    assert holder.try_acquire_or_renew()
    standby = _elector(k, lease_name, "b", clock)
    stop = threading.Event()
    thread, acquired = _in_thread(lambda: standby.acquire(stop))
    step = 2.0 * JITTER_FACTOR  # the longest wait between tries
    for _ in range(6):  # 14.4 s: not yet
        clock.await_waiters(1)
        assert not standby.leading.is_set()
        clock.advance(step)
    clock.await_waiters(1)
    assert not standby.leading.is_set()
    clock.advance(step)  # 16.8 s since b first saw the record
    thread.join(10)
    assert acquired == [True]
    assert standby.leading.is_set()
    assert _spec(k, lease_name)["holderIdentity"] == "b"


def test_the_acquire_loop_ends_on_stop(k: K, lease_name: str) -> None:
    holder, clock = _elector(k, lease_name, "a", FakeClock()), FakeClock()
    assert holder.try_acquire_or_renew()
    standby = _elector(k, lease_name, "b", clock)
    stop = threading.Event()
    thread, acquired = _in_thread(lambda: standby.acquire(stop))
    clock.await_waiters(1)
    stop.set()
    thread.join(10)
    assert acquired == [False]
    assert _spec(k, lease_name)["holderIdentity"] == "a"


def test_the_leader_stops_leading_when_it_cannot_renew_within_the_deadline(k: K, lease_name: str) -> None:
    clock = FakeClock()
    leader = _elector(k, lease_name, "a", clock)
    stop = threading.Event()
    assert leader.acquire(stop)
    # another replica takes the Lease over behind the leader's back: the leader's renewals fail
    lease = k.kube.get(LEASES.path(ADDON_NS, lease_name)) or {}
    lease["spec"]["holderIdentity"] = "intruder"
    k.kube.request("PUT", LEASES.path(ADDON_NS, lease_name), body=lease)
    thread, kept = _in_thread(lambda: leader.keep_renewing(stop))
    for _ in range(4):  # failures at 2, 4, 6, 8 s: still within the 10 s deadline
        clock.await_waiters(1)
        clock.advance(2.0)
    clock.await_waiters(1)
    assert leader.leading.is_set() and kept == []
    clock.advance(2.0)  # the failure at 10 s: the deadline passed
    thread.join(10)
    assert kept == [False]
    assert not leader.leading.is_set()
    assert _spec(k, lease_name)["holderIdentity"] == "intruder"


def test_renewing_leader_keeps_the_lease_and_releases_it_on_stop(k: K, lease_name: str) -> None:
    clock = FakeClock()
    leader = _elector(k, lease_name, "a", clock)
    stop = threading.Event()
    assert leader.acquire(stop)
    thread, kept = _in_thread(lambda: leader.keep_renewing(stop))
    for _ in range(3):
        clock.await_waiters(1)
        clock.advance(2.0)
    clock.await_waiters(1)  # three renewals done
    assert _spec(k, lease_name)["renewTime"] == micro_time(clock.now())
    stop.set()
    thread.join(10)
    assert kept == [True]
    leader.release()
    spec = _spec(k, lease_name)
    assert not spec.get("holderIdentity")
    assert spec["leaseDurationSeconds"] == 1
