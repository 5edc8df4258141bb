"""Single flight through Redis across real processes: one computation, no hang on a dead holder."""

from __future__ import annotations

import multiprocessing
import os
import signal
import time
import uuid
from multiprocessing.synchronize import Barrier, Event
from pathlib import Path

import pytest

import stepcache as sc
from stepcache.errors import StoreUnavailableError
from stepcache.stores.redis import RedisStore
from stepcache.testing.contract import key
from stepcache.testing.redis_server import RedisServer, redis_server_fixture

pytestmark = pytest.mark.timeout(90)

redis_server = redis_server_fixture()
ctx = multiprocessing.get_context("spawn")


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    return f"{redis_server.url}?prefix=t{uuid.uuid4().hex[:12]}:"


def _compute_once(url: str, markers: str, start: Barrier, results: str) -> None:
    store = sc.open_store(url)

    def compute() -> str:
        # O_EXCL: a second computation anywhere would find the marker and fail.
        fd = os.open(f"{markers}/computed", os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        os.write(fd, str(os.getpid()).encode())
        os.close(fd)
        time.sleep(0.3)  # work: the other processes arrive while it runs
        return "value"

    start.wait(60)  # all eight ask at once, each after its own start-up
    value = store.get_or_compute(key(1), compute, timeout=60)
    Path(results, str(os.getpid())).write_text(value)


def test_eight_processes_compute_a_missing_key_once(redis_url: str, tmp_path: Path) -> None:
    markers, results = tmp_path / "markers", tmp_path / "results"
    markers.mkdir()
    results.mkdir()
    start = ctx.Barrier(8)
    procs = [
        ctx.Process(target=_compute_once, args=(redis_url, str(markers), start, str(results)))
        for _ in range(8)
    ]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(60)
    assert [proc.exitcode for proc in procs] == [0] * 8
    assert os.listdir(markers) == ["computed"]
    assert sorted(p.read_text() for p in results.iterdir()) == ["value"] * 8


def _hold_forever(url: str, holding: Event) -> None:
    store = RedisStore(url, lock_lease=1.0)

    def compute() -> str:
        holding.set()
        time.sleep(600)  # killed long before
        return "never"

    store.get_or_compute(key(1), compute)


def test_live_holder_keeps_the_lock_and_a_killed_one_loses_it(redis_url: str) -> None:
    holding = ctx.Event()
    holder = ctx.Process(target=_hold_forever, args=(redis_url, holding))
    holder.start()
    try:
        assert holding.wait(60)
        store = RedisStore(redis_url, lock_lease=1.0)
        # Three leases long: only the holder's heartbeat keeps the lock that long.
        with store.backend.lock(key(1), time.monotonic() + 3.0) as held:
            assert held is False
    finally:
        os.kill(holder.pid, signal.SIGKILL)  # type: ignore[arg-type]
        holder.join(30)
    with store.backend.lock(key(1), time.monotonic() + 60) as held:
        assert held is True
    assert store.get_or_compute(key(1), lambda: "taken over", timeout=60) == "taken over"
    store.close()


def test_lock_is_released_for_the_next_holder(redis_url: str) -> None:
    store = RedisStore(redis_url)
    other = RedisStore(redis_url)
    with store.backend.lock(key(1), time.monotonic() + 5) as held:
        assert held is True
        with other.backend.lock(key(1), time.monotonic()) as waiting:
            assert waiting is False
    with other.backend.lock(key(1), time.monotonic()) as held_next:
        assert held_next is True
    assert store.backend.client.exists(f"{store.prefix}l:{key(1)}") == 0
    store.close()
    other.close()


def test_lock_on_a_dead_server_computes_at_once_and_counts_it(tmp_path: Path) -> None:
    store = RedisStore(f"unix://{tmp_path}/none.sock", backoff=0)
    with pytest.raises(StoreUnavailableError, match="Redis lock"):  # the backend says why
        store.backend.__class__.lock(store.backend, key(1), time.monotonic() + 5).__enter__()
    assert store.get_or_compute(key(1), lambda: "computed", timeout=600) == "computed"
    assert store.stats().remote_errors >= 2  # the read and the lock; no wait for a lock
    store.close()


def test_read_only_store_takes_no_lock(redis_url: str) -> None:
    writer = RedisStore(redis_url)
    reader = RedisStore(redis_url, read_only=True)
    with writer.backend.lock(key(1), time.monotonic() + 5) as held:
        assert held is True
        assert reader.get_or_compute(key(1), lambda: "own", timeout=30) == "own"
    writer.close()
    reader.close()
