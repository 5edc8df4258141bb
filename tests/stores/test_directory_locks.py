"""Per-key locks of DirectoryStore: flock, lease files, takeover, timeouts, cleanup."""

from __future__ import annotations

import errno
import fcntl
import multiprocessing
import os
import time
from pathlib import Path
from typing import Any

import pytest
import store_workers as w

from stepcache.stores._identity import host_id
from stepcache.stores._lease import record
from stepcache.stores._locks import KeyLocks
from stepcache.stores.directory import DirectoryStore
from stepcache.testing import key, lock_files

pytestmark = pytest.mark.timeout(60)


def test_get_or_compute_leaves_no_lock_files(tmp_path: Path) -> None:
    store = DirectoryStore(tmp_path / "cache")
    for n in range(5):
        store.get_or_compute(key(n), lambda: "v")
    assert lock_files(store.path / "leases") == []


@pytest.mark.parametrize("backend", ["flock", "lease"])
def test_waiter_past_its_timeout_computes_itself(tmp_path: Path, backend: str) -> None:
    holder = DirectoryStore(tmp_path / "cache", lock_backend=backend)
    waiter = DirectoryStore(tmp_path / "cache", lock_backend=backend)
    with holder.backend.locks.hold(key(1), time.monotonic() + 10) as held:
        assert held
        assert waiter.get_or_compute(key(1), lambda: "own", timeout=0.2) == "own"
    assert waiter.stats().misses == 1


@pytest.mark.timeout(20)
@pytest.mark.parametrize("backend", ["flock", "lease"])
def test_a_held_key_does_not_block_other_keys(tmp_path: Path, backend: str) -> None:
    holder = DirectoryStore(tmp_path / "cache", lock_backend=backend)
    other = DirectoryStore(tmp_path / "cache", lock_backend=backend)
    with holder.backend.locks.hold(key(1), time.monotonic() + 60):
        # A wait on key(1)'s lock would outlast the test's deadline.
        assert other.get_or_compute(key(2), lambda: "free", timeout=60) == "free"


def refuse_range_locks(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make the kernel refuse byte-range locks, as one without OFD locks would."""
    real = fcntl.fcntl

    def no_ranges(fd: int, cmd: int, arg: object = 0) -> object:
        if cmd == getattr(fcntl, "F_OFD_SETLK", None):
            raise OSError(errno.EINVAL, "Invalid argument")
        return real(fd, cmd, arg)  # type: ignore[call-overload]

    monkeypatch.setattr(fcntl, "fcntl", no_ranges)


def test_range_locks_refused_fall_back_to_a_lock_file_per_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    refuse_range_locks(monkeypatch)
    store = DirectoryStore(tmp_path / "cache", lock="flock")
    holder = DirectoryStore(tmp_path / "cache", lock="flock")
    with holder.backend.locks.hold(key(1), time.monotonic() + 10) as held:
        assert held
        assert lock_files(store.path / "leases") == [f"{key(1)}.lock"]
        assert store.get_or_compute(key(1), lambda: "own", timeout=0.2) == "own"
    assert store.get_or_compute(key(2), lambda: 2) == 2
    assert (store.backend.locks.backend, store.backend.locks.file_of(key(2))) == (
        "flock",
        f"{key(2)}.lock",
    )
    assert lock_files(store.path / "leases") == []


def test_range_locks_exclude_other_instances_and_threads_but_not_other_keys(
    tmp_path: Path,
) -> None:
    one, two = KeyLocks(str(tmp_path), backend="flock"), KeyLocks(str(tmp_path), backend="flock")
    with one.hold(key(1), time.monotonic() + 5) as held:
        assert held
        with two.hold(key(1), time.monotonic() + 0.05) as other:
            assert not other
        with one.hold(key(1), time.monotonic() + 0.05) as same_instance:  # another thread's try
            assert not same_instance
        with two.hold(key(2), time.monotonic() + 0.05) as other_key:
            assert other_key
    with two.hold(key(1), time.monotonic() + 0.05) as after:
        assert after
    assert os.listdir(tmp_path) == [one.file_of(key(1))]
    one.close()
    two.close()


def test_flock_unsupported_falls_back_to_lease_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_flock(fd: int, op: int) -> None:
        raise OSError(errno.ENOLCK, "No locks available")

    refuse_range_locks(monkeypatch)
    monkeypatch.setattr(fcntl, "flock", no_flock)
    store = DirectoryStore(tmp_path / "cache")
    assert store.get_or_compute(key(1), lambda: 1) == 1
    assert store.backend.locks.backend == "lease"
    assert store.get_or_compute(key(2), lambda: 2) == 2
    assert lock_files(store.path / "leases") == []


@pytest.mark.timeout(30)
@pytest.mark.parametrize("owner", ["dead-process", "silent-other-host"])
def test_abandoned_lease_is_taken_over(tmp_path: Path, owner: str) -> None:
    store = DirectoryStore(tmp_path / "cache", lock="lease", lease_stale=1.0)
    leases = store.path / "leases"
    leases.mkdir()
    lease = leases / f"{key(1)}.lease"
    if owner == "dead-process":
        pid = w.dead_pid()
        lease.write_bytes(record(f"{host_id()}:{pid}:1", "0" * 16, 7))
    else:  # a record that never changes: its heartbeat stopped
        lease.write_bytes(record("elsewhere:1:1", "0" * 16, 7))
    # A waiter that could not take over would time out and leave the lease behind.
    assert store.get_or_compute(key(1), lambda: "taken over", timeout=15) == "taken over"
    assert os.listdir(leases) == []


def test_live_lease_of_this_process_is_waited_for(tmp_path: Path) -> None:
    holder = DirectoryStore(tmp_path / "cache", lock_backend="lease")
    waiter = DirectoryStore(tmp_path / "cache", lock_backend="lease")
    with holder.backend.locks.hold(key(1), time.monotonic() + 10):
        assert waiter.get_or_compute(key(1), lambda: "own", timeout=0.2) == "own"
        assert os.listdir(holder.path / "leases") == [f"{key(1)}.lease"]
    assert os.listdir(holder.path / "leases") == []


def test_lease_heartbeat_keeps_a_long_computation_from_being_taken_over(tmp_path: Path) -> None:
    holder = KeyLocks(str(tmp_path), backend="lease", stale_after=1.0)
    waiter = KeyLocks(str(tmp_path), backend="lease", stale_after=1.0)
    with holder.hold("name", time.monotonic() + 10) as held:
        assert held
        # Waiting well past stale_after: only the heartbeat keeps the lease fresh.
        with waiter.hold("name", time.monotonic() + 2.5) as taken:
            assert not taken
    assert os.listdir(tmp_path) == []


def test_sweep_removes_unheld_lock_files_and_keeps_held_ones(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    refuse_range_locks(monkeypatch)  # lock files of their own, as where OFD locks do not exist
    locks = KeyLocks(str(tmp_path), backend="flock")
    (tmp_path / "left-by-a-killed-holder.lock").write_bytes(b"")
    with locks.hold("busy", time.monotonic() + 5):
        assert locks.sweep() == 1
        assert lock_files(tmp_path) == ["busy.lock"]
    assert lock_files(tmp_path) == []


def test_unknown_lock_backend_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="lock must be one of"):
        DirectoryStore(tmp_path / "cache", lock_backend="posix")
    with pytest.raises(ValueError, match="heartbeat"):
        DirectoryStore(tmp_path / "cache", lease_stale=1.0, lease_heartbeat=0.9)
    assert not (tmp_path / "cache").exists()


def test_sweep_removes_dead_owners_leases_and_useless_claims_and_keeps_live_ones(
    tmp_path: Path,
) -> None:
    locks = KeyLocks(str(tmp_path), backend="lease", stale_after=30.0)
    dead = f"{host_id()}:{w.dead_pid()}:1"
    (tmp_path / "dead.lease").write_bytes(record(dead, "1" * 16, 4))
    # A claim on a record the lease no longer holds can never be used again.
    (tmp_path / "gone.0123456789abcdef01234567.claim").write_bytes(
        b"stepcache-lease 1 " + dead.encode() + b" 2222 gone.lease\n"
    )
    # Another host's lease: only watching it for the stale period could tell.
    (tmp_path / "remote.lease").write_bytes(record("elsewhere:1:1", "3" * 16, 9))
    with locks.hold("live", time.monotonic() + 5) as held:
        assert held
        assert locks.sweep() == 2
        assert sorted(os.listdir(tmp_path)) == ["live.lease", "remote.lease"]
    assert os.listdir(tmp_path) == ["remote.lease"]


@pytest.mark.parametrize("lock", ["flock", "lease"])
def test_waiters_return_a_published_value_while_its_holder_still_holds_the_key(
    tmp_path: Path, lock: str
) -> None:
    # Waiters read the store between attempts at the lock: once a value is
    # published they return it, without queueing for the lock one after another.
    ctx = w.context()
    results, root = ctx.Queue(), str(tmp_path / "cache")
    ready, go, release = ctx.Event(), ctx.Event(), ctx.Event()
    holder_args = (root, key(1), lock, ready, go, release)
    holder = ctx.Process(
        target=w._report, args=(results, 0, w.hold_after_publishing, holder_args), daemon=True
    )
    holder.start()
    waiters, started = [], [ctx.Event() for _ in range(7)]
    try:
        assert ready.wait(timeout=60)
        for i, event in enumerate(started, 1):
            args = (results, i, w.wait_for_key, (root, key(1), lock, event))
            waiters.append(ctx.Process(target=w._report, args=args, daemon=True))
            waiters[-1].start()
        assert all(event.wait(timeout=60) for event in started)
        go.set()
        got = {}
        while len(got) < len(waiters):
            index, ok, value = results.get(timeout=60)
            assert ok, value
            got[index] = value
        assert holder.is_alive()  # every waiter returned while the key was still held
        assert set(got.values()) == {"published"}
    finally:
        release.set()
        for proc in [holder, *waiters]:
            proc.join(timeout=60)
            if proc.is_alive():
                proc.kill()


def _lock_in_forked_child(locks: KeyLocks, queue: Any, release: Any) -> None:
    with locks.hold(key(2), time.monotonic() + 5) as held:
        queue.put(held)
        release.wait(timeout=30)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # fork of a threaded pytest process
def test_a_forked_child_does_not_share_its_parents_range_locks(tmp_path: Path) -> None:
    locks = KeyLocks(str(tmp_path), backend="flock")
    with locks.hold(key(1), time.monotonic() + 5) as held:  # the lock file is open when forking
        assert held
        ctx = multiprocessing.get_context("fork")
        queue, release = ctx.Queue(), ctx.Event()
        child = ctx.Process(target=_lock_in_forked_child, args=(locks, queue, release))
        child.start()
        try:
            assert queue.get(timeout=30) is True
            # Had the child locked through the inherited descriptor, the lock would be ours too.
            with locks.hold(key(2), time.monotonic() + 0.1) as also:
                assert not also
        finally:
            release.set()
            child.join(timeout=30)
    assert child.exitcode == 0
    with locks.hold(key(2), time.monotonic() + 5) as after:
        assert after
    locks.close()
