"""DirectoryStore under real concurrency: many processes, single flight, killed processes."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import store_workers as w

from stepcache.stores.directory import DirectoryStore
from stepcache.stores.directory.eviction import ENTRIES
from stepcache.testing import is_whole, key, lock_files, tree

pytestmark = [pytest.mark.slow, pytest.mark.timeout(90)]


def test_many_processes_create_and_use_a_new_store_at_once(tmp_path: Path) -> None:
    path = str(tmp_path / "new-cache")
    results = w.run_all(w.hammer, [(path, worker, 15, 200) for worker in range(12)], timeout=80)
    assert [r["bad"] for r in results] == [0] * 12
    assert [r["errors"] for r in results] == [0] * 12
    store = DirectoryStore(path)
    for k in store:
        assert is_whole(k, store[k])
    stats = store.stats()
    assert stats.errors == 0
    assert stats.writes == sum(r["writes"] for r in results)
    assert stats.hits + stats.misses == sum(r["lookups"] for r in results) + len(store)
    assert os.listdir(store.path / "tmp") == []


@pytest.mark.parametrize("backend", ["flock", "lease"])
def test_one_missing_key_is_computed_once_by_eight_processes(tmp_path: Path, backend: str) -> None:
    path, markers = str(tmp_path / "cache"), tmp_path / "computed"
    markers.mkdir()
    args = [(path, backend, key(1), str(markers), 0.5)] * 8
    results = w.run_all(w.compute_with_lock, args)
    assert len(os.listdir(markers)) == 1
    assert len({r["by"] for r in results}) == 1
    assert lock_files(tmp_path / "cache" / "leases") == []


@pytest.mark.parametrize("backend", ["flock", "lease"])
def test_distinct_keys_are_computed_in_parallel(tmp_path: Path, backend: str) -> None:
    path, markers = str(tmp_path / "cache"), tmp_path / "computed"
    markers.mkdir()
    args = [(path, backend, key(n), str(markers), 0.5) for n in range(8)]
    results = w.run_all(w.compute_with_lock, args)
    assert len(os.listdir(markers)) == 8
    # Every computation started before any finished: no key waited for another.
    assert max(r["start"] for r in results) < min(r["end"] for r in results)


@pytest.mark.parametrize("backend", ["flock", "lease"])
def test_waiter_takes_over_from_a_holder_killed_mid_compute(tmp_path: Path, backend: str) -> None:
    path, markers = str(tmp_path / "cache"), tmp_path / "computed"
    markers.mkdir()
    ctx = w.context()
    started, ready, out = ctx.Event(), ctx.Event(), ctx.Queue()
    holder = ctx.Process(target=w.hold_until_killed, args=(path, backend, key(1), started))
    holder.start()
    assert started.wait(timeout=30)
    waiter = ctx.Process(
        target=w.wait_then_compute, args=(path, backend, key(1), ready, str(markers), out)
    )
    waiter.start()
    assert ready.wait(timeout=30)
    holder.kill()
    holder.join(timeout=30)
    computed_by = out.get(timeout=30)
    waiter.join(timeout=30)
    assert computed_by == waiter.pid
    assert os.listdir(markers) == [str(waiter.pid)]
    assert DirectoryStore(path)[key(1)] == waiter.pid


def test_writers_killed_at_random_points_leave_whole_entries_or_none(tmp_path: Path) -> None:
    path, src = str(tmp_path / "cache"), tmp_path / "build"
    (src / "include").mkdir(parents=True)
    for n in range(6):
        (src / f"part{n}.o").write_bytes(os.urandom(30_000))
    (src / "include" / "stencil.h").write_text("void run(double *);\n")
    DirectoryStore(path).close()
    (rounds,) = w.run_all(w.kill_writers, [(path, str(src), 200, 7)])
    assert rounds == 200
    store = DirectoryStore(path)
    present = [k for k in map(key, range(12)) if k in store]
    assert all(is_whole(k, store[k]) for k in present)
    for k in map(key, range(100, 104)):
        got = store.get_dir(k)
        assert got is None or tree(got) == tree(src)
    assert store.stats().errors == 0
    assert store.verify().corrupt == ()
    store.prune()
    # No temp work of a killed writer is left. A writer killed between publishing
    # a tree and writing its entry leaves an orphan tree, which prune only
    # records (in this host's seen.<host>) until it stays unchanged for
    # sweep_after; with sweep_after=0, a second prune removes it.
    left = os.listdir(store.path / "tmp")
    records = [name for name in left if name.startswith("seen.")]
    assert left == records
    for name in records:
        for rel in json.loads((store.path / "tmp" / name).read_text()):
            assert rel.startswith(f"{ENTRIES}/"), rel
            assert rel.endswith(".d"), rel
            assert rel.rsplit("/", 1)[1].removesuffix(".d") not in store
    impatient = DirectoryStore(path, sweep_after=0)
    impatient.prune()
    impatient.prune()
    assert os.listdir(store.path / "tmp") == []
    trees = [d.name.removesuffix(".d") for d in (store.path / ENTRIES).glob("*/*.d")]
    assert all(k in store for k in trees)  # every tree left has its entry
    assert present  # the writers got somewhere before being killed
