"""DirectoryStore eviction: size and age limits, LRU order, readers racing eviction."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
import store_workers as w

from stepcache.stores.directory import DirectoryStore, eviction
from stepcache.testing import key

pytestmark = pytest.mark.timeout(60)


def backdate(store: DirectoryStore, keys: list[str], seconds: float) -> None:
    then = time.time() - seconds
    for k in keys:
        os.utime(store.backend.path(k), (then, then))


@pytest.mark.parametrize(
    ("value_size", "max_bytes", "writes", "units"),
    [(5000, 100_000, 100, 1), (3000, 200_000, 150, 16), (3000, 1_700_000, 1200, 256)],
    ids=["whole-store", "16-parts", "256-parts"],
)
def test_max_bytes_holds_within_ten_percent_after_a_burst(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    value_size: int,
    max_bytes: int,
    writes: int,
    units: int,
) -> None:
    # Parts this small (2 entries) keep the test fast; real parts hold about 32.
    monkeypatch.setattr(eviction.Cleaner, "unit_entries", 2)
    store = DirectoryStore(tmp_path / "cache", max_bytes=max_bytes)
    payload = os.urandom(value_size)
    for n in range(writes):
        store[key(n)] = payload
    stats = store.stats()
    assert store.backend.cleaner is not None
    assert store.backend.cleaner.units == units
    assert 0.5 * max_bytes <= stats.bytes <= 1.1 * max_bytes, stats.bytes / max_bytes
    assert stats.evictions + stats.entries == writes


def test_recently_read_entries_survive_eviction(tmp_path: Path) -> None:
    store = DirectoryStore(tmp_path / "cache", max_bytes=200_000)
    old = [key(n) for n in range(80)]
    for k in old:
        store[k] = os.urandom(2000)
    backdate(store, old, 7200)
    read = old[::8]
    for k in read:
        assert store[k] is not None
    for n in range(80, 140):
        store[key(n)] = os.urandom(2000)
    assert store.stats().evictions > 0
    assert all(k in store for k in read)
    assert all(key(n) in store for n in range(80, 140))


def test_prune_evicts_least_recently_used_down_to_the_budget(tmp_path: Path) -> None:
    store = DirectoryStore(tmp_path / "cache")
    keys = [key(n) for n in range(20)]
    for age, k in enumerate(reversed(keys)):
        store[k] = bytes(1000)
        backdate(store, [k], 100 + age)
    size = os.path.getsize(store.backend.path(keys[0]))
    progress: list[int] = []
    result = store.prune(max_bytes=int(size * 10.5), progress=progress.append)
    assert (result.removed, result.entries, result.freed) == (10, 10, 10 * size)
    assert sorted(store) == sorted(keys[10:])
    assert sum(progress) == 20
    assert store.stats().evictions == 10


def test_max_age_expires_entries_unused_for_longer(tmp_path: Path) -> None:
    store = DirectoryStore(tmp_path / "cache", max_age=3600)
    keys = [key(n) for n in range(10)]
    for k in keys:
        store[k] = "value"
    backdate(store, keys[:4], 7200)
    assert store.prune().removed == 4
    assert sorted(store) == sorted(keys[4:])


def test_writes_expire_old_entries_of_their_part_of_the_tree(tmp_path: Path) -> None:
    store = DirectoryStore(tmp_path / "cache", max_age=3600, max_bytes=10**9)
    fresh = "ab" + key(0)[2:]
    neighbours = ["ab" + key(n)[2:] for n in range(1, 5)]
    for k in neighbours:
        store[k] = "old"
    backdate(store, neighbours, 7200)
    other = DirectoryStore(tmp_path / "cache", max_age=3600, max_bytes=10**9)
    other[fresh] = "new"
    assert sorted(other) == [fresh]
    assert other.stats().evictions == 4


def test_eviction_removes_artifact_directories(tmp_path: Path) -> None:
    src = tmp_path / "build"
    src.mkdir()
    (src / "lib.so").write_bytes(os.urandom(50_000))
    store = DirectoryStore(tmp_path / "cache", max_bytes=120_000)
    first = store.put_dir(key(1), src)
    backdate(store, [key(1)], 600)
    store.put_dir(key(2), src)
    store.put_dir(key(3), src)
    assert not first.exists()
    assert store.get_dir(key(1)) is None
    assert store.get_dir(key(3)) is not None
    assert store.stats().bytes <= 120_000


@pytest.mark.slow
def test_readers_racing_eviction_get_whole_values_or_misses(tmp_path: Path) -> None:
    path = str(tmp_path / "cache")
    args = [("writer", path, 600, 0), ("reader", path, 500, 1), ("reader", path, 500, 2)]
    evictions, *readers = w.run_all(w.race_eviction, args)
    assert evictions > 0
    assert [r["bad"] for r in readers] == [0, 0]
    assert [r["errors"] for r in readers] == [0, 0]
    assert [r["lookups"] for r in readers] == [500, 500]


def test_prune_dry_run_reports_and_removes_nothing(tmp_path: Path) -> None:
    store = DirectoryStore(tmp_path / "cache")
    keys = [key(n) for n in range(6)]
    for k in keys:
        store[k] = bytes(1000)
    backdate(store, keys[:2], 7200)
    before = sorted(store)
    planned = store.prune(max_age=3600, dry_run=True)
    assert (planned.removed, planned.entries) == (2, 4)
    assert sorted(store) == before
    done = store.prune(max_age=3600)
    assert (done.removed, done.freed, done.entries) == (2, planned.freed, 4)
