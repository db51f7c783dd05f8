"""The run lock's lease logic on both stores: a local folder and S3 (a moto server on
127.0.0.1). Time is a fake clock, so expiry needs no waiting."""

from __future__ import annotations

import json
import logging
import threading
import time
from pathlib import Path

import pytest

from skillmix import settings
from skillmix.errors import SkillmixError
from skillmix.store.base import ArtifactStore, KeyExists
from skillmix.store.layout import RunLayout
from skillmix.store.local import LocalStore
from skillmix.store.lock import Lease, LockLost, RunLock, RunLocked, hold_run, lease_seconds
from skillmix.store.runs import RunStore
from skillmix.store.uri import open_store


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture(params=["local", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> ArtifactStore:
    if request.param == "local":
        return LocalStore(tmp_path / "store").child("run-1")
    uri = request.getfixturevalue("s3_env")
    return open_store(uri).child("run-1")


def lock(store: ArtifactStore, clock: Clock, host: str, pid: int) -> RunLock:
    return RunLock(
        store, run_name="run-1", duration=30, host=host, pid=pid, clock=clock, sleep=clock.sleep
    )


def test_take_refuse_naming_the_holder_release(store: ArtifactStore) -> None:
    clock = Clock()
    first = lock(store, clock, "alpha", 101)
    first.acquire()
    try:
        held = first.current()
        assert held is not None and (held.host, held.pid, held.token) == ("alpha", 101, first.token)
        assert held.expires == clock.now + 30
        assert store.list_keys() == [RunLayout.lease_key(1)]
        # a run holding only its lock is not run content
        assert RunStore(store).is_empty()

        second = lock(store, clock, "beta", 202)
        with pytest.raises(RunLocked) as refused:
            second.acquire()
        line = str(refused.value)
        assert refused.value.exit_code == 2 and "\n" not in line
        assert "host alpha" in line and "pid 101" in line and f"since {held.since}" in line
        assert "--wait-for-lock" in line
        assert second.lease is None
    finally:
        first.release()
    assert store.list_keys() == []
    # released: the next process takes it at once
    third = lock(store, clock, "gamma", 303)
    third.acquire()
    third.release()


def test_expired_lease_is_taken_over_and_the_stale_holder_notices(store: ArtifactStore) -> None:
    clock = Clock()
    killed = lock(store, clock, "alpha", 101)
    killed.acquire()
    killed._stop.set()  # a SIGKILLed holder renews nothing
    clock.now += 29
    with pytest.raises(RunLocked):
        lock(store, clock, "beta", 202).acquire()
    clock.now += 2  # past the 30 s lease
    taker = lock(store, clock, "beta", 202)
    taker.acquire()
    try:
        current = taker.current()
        assert current is not None and (current.epoch, current.host) == (2, "beta")
        assert store.list_keys() == [RunLayout.lease_key(2)]  # the old lease is history
        # the stalled holder wakes up: its renewal finds the new lease, it has lost the run
        assert killed.renew() is False
        assert killed.lost is not None and killed.lost.host == "beta"
        with pytest.raises(LockLost, match="host beta"):
            killed.check()
        killed.release()  # must not remove the new holder's lease
        assert store.list_keys() == [RunLayout.lease_key(2)]
    finally:
        taker.release()
    assert store.list_keys() == []


def test_heartbeat_renews_the_lease(store: ArtifactStore) -> None:
    held = RunLock(store, run_name="run-1", duration=0.6, host="alpha", pid=101)
    held.acquire()
    try:
        first = held.current()
        assert first is not None
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            now = held.current()
            if now is not None and now.expires > first.expires:
                break
            time.sleep(0.05)
        assert now is not None and now.expires > first.expires, "the lease was never renewed"
        assert (now.epoch, now.token, now.since) == (first.epoch, first.token, first.since)
        time.sleep(1.0)  # longer than the lease: still held thanks to the heartbeat
        with pytest.raises(RunLocked, match="pid 101"):
            RunLock(store, run_name="run-1", duration=0.6, host="beta", pid=202).acquire()
    finally:
        held.release()
    assert held.lost is None and store.list_keys() == []


def test_wait_for_lock_waits_for_the_holder(store: ArtifactStore) -> None:
    clock = Clock()
    first = lock(store, clock, "alpha", 101)
    first.acquire()
    first._stop.set()
    waiter = lock(store, clock, "beta", 202)
    with pytest.raises(RunLocked, match="after waiting 5s: host alpha"):
        waiter.acquire(wait=5)  # the fake sleep advances the clock: bounded
    assert clock.now >= 1_800_000_005.0
    # a real holder that finishes while the other waits
    first.release()
    holder = RunLock(store, run_name="run-1", duration=30, host="alpha", pid=101)
    holder.acquire()
    timer = threading.Timer(0.7, holder.release)
    timer.start()
    try:
        started = time.monotonic()
        with hold_run(store, run_name="run-1", wait=20) as got:
            assert got.lease is not None and time.monotonic() - started >= 0.5
    finally:
        timer.join()
    assert store.list_keys() == []


def test_two_takers_at_once_one_wins(store: ArtifactStore) -> None:
    clock = Clock()
    takers = [lock(store, clock, f"h{i}", i) for i in range(4)]
    errors: list[BaseException] = []

    def take(one: RunLock) -> None:
        try:
            one.acquire()
        except RunLocked as exc:
            errors.append(exc)

    threads = [threading.Thread(target=take, args=(t,)) for t in takers]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    winners = [t for t in takers if t.lease is not None]
    assert len(winners) == 1 and len(errors) == 3
    winners[0].release()


def test_released_on_error_and_damaged_lease_is_taken(store: ArtifactStore) -> None:
    with pytest.raises(KeyboardInterrupt), hold_run(store, run_name="run-1"):
        assert store.list_keys() == [RunLayout.lease_key(1)]
        raise KeyboardInterrupt
    assert store.list_keys() == []
    store.write_bytes(RunLayout.lease_key(4), b"{not json")
    with hold_run(store, run_name="run-1") as held:
        assert held.lease is not None and held.lease.epoch == 5
    assert Lease.from_bytes(1, b"[]").released


def test_lease_seconds_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SKILLMIX_LOCK_SECONDS", raising=False)
    assert lease_seconds() == 60
    monkeypatch.setenv("SKILLMIX_LOCK_SECONDS", "2.5")
    assert lease_seconds() == 2.5
    for bad in ("0", "-1", "soon", "inf", "nan"):
        monkeypatch.setenv("SKILLMIX_LOCK_SECONDS", bad)
        with pytest.raises(SkillmixError, match="SKILLMIX_LOCK_SECONDS"):
            lease_seconds()


def test_a_far_future_lease_is_capped_when_read(store: ArtifactStore) -> None:
    """A lease claiming to last until the year 33658 (or nan) lasts at most the longest lease
    length after it was last written, then is taken over; the refusal before says so."""
    clock = Clock()
    since = "2027-01-15T08:00:00Z"  # == Clock().now
    for expires in (1e12, float("nan")):
        raw = {"host": "h", "pid": 7, "token": "t", "since": since, "expires": expires}
        store.write_bytes(RunLayout.lease_key(1), json.dumps(raw).encode())
        lease = Lease.from_bytes(1, store.read_bytes(RunLayout.lease_key(1)))
        assert lease.expires == clock.now + settings.MAX_LOCK_SECONDS
        assert lease.claimed is not None and not lease.damaged
        taker = lock(store, clock, "beta", 202)
        with pytest.raises(RunLocked, match="capped: it claimed to last until"):
            taker.acquire()
        store.delete_prefix(RunLayout.LOCK)
    store.write_bytes(
        RunLayout.lease_key(1),
        json.dumps({"host": "h", "pid": 7, "token": "t", "since": since, "expires": 1e12}).encode(),
    )
    clock.now += settings.MAX_LOCK_SECONDS + 1
    taker = lock(store, clock, "beta", 202)
    taker.acquire()
    assert taker.lease is not None and taker.lease.epoch == 2
    taker.release()


def test_a_renewed_lease_is_capped_from_its_last_renewal(store: ArtifactStore) -> None:
    """A run held for longer than the cap by renewals keeps its lock: the cap counts from the
    last renewal, not from when the run was taken."""
    clock = Clock()
    holder = lock(store, clock, "alpha", 101)
    holder._attempt()
    clock.now += settings.MAX_LOCK_SECONDS * 2
    assert holder.renew()
    with pytest.raises(RunLocked):
        lock(store, clock, "beta", 202).acquire()
    holder.release()


def test_a_damaged_lease_is_taken_over_aloud(
    store: ArtifactStore, caplog: pytest.LogCaptureFixture
) -> None:
    store.write_bytes(RunLayout.lease_key(3), b"\x00garbage")
    with (
        caplog.at_level(logging.WARNING, logger="skillmix.store.lock"),
        hold_run(store, run_name="run-1") as held,
    ):
        assert held.lease is not None and held.lease.epoch == 4
    assert any(
        "lease-000000003.json could not be read (damaged)" in r.getMessage() for r in caplog.records
    )


def test_the_refusal_quotes_the_holders_lease_length(store: ArtifactStore) -> None:
    clock = Clock()
    holder = lock(store, clock, "alpha", 101)
    holder.acquire()
    try:
        reader = RunLock(store, run_name="run-1", duration=999, clock=clock, sleep=clock.sleep)
        with pytest.raises(RunLocked) as refused:
            reader.acquire()
        text = f"{refused.value} {refused.value.hint}"
        assert "a lease of 30s" in text and "its lease of 30s" in text
        assert "999" not in text
        assert "skillmix unlock" in text
    finally:
        holder.release()


def test_breaking_a_lease_frees_the_run_and_the_holder_finds_out(store: ArtifactStore) -> None:
    clock = Clock()
    holder = lock(store, clock, "alpha", 101)
    holder._attempt()  # held, without the heartbeat thread (renewals by hand)
    breaker = lock(store, clock, "ops", 9)
    current = breaker.current()
    assert current is not None and current.live(clock.now)
    breaker.break_lease(current)
    with pytest.raises(KeyExists):  # the lock changed since `current` was read
        breaker.break_lease(current)
    taker = lock(store, clock, "beta", 202)
    taker._attempt()
    assert taker.lease is not None and taker.lease.epoch == 3
    assert not holder.renew()
    with pytest.raises(LockLost):
        holder.check()
    taker.release()
