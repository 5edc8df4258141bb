"""Symlinks planted in a cache tree are never followed for writes, renames or removals.

A symlink in the tree is how someone who can write the cache would make this
process write or delete *outside* it, with this process's rights. Each test
plants one pointing at an ``outside`` directory full of files worth keeping
(old ones, ``*.lock`` ones, ones named like keys) and checks that the store
degrades -- a counted, logged failure or a clear error -- and that
``outside`` is byte for byte as it was.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import pytest

import stepcache as sc
from stepcache.errors import UnsafeStoreError
from stepcache.stores import _fsutil
from stepcache.stores.directory import DirectoryStore, sweep
from stepcache.stores.directory.eviction import ENTRIES
from stepcache.testing import key

K = key(1)
MONTHS_AGO = time.time() - 90 * 86400


def fanout(store: DirectoryStore, k: str, level: int) -> Path:
    """``v2/`` (level 0) or the fanout directory ``v2/ab`` of ``k`` (level 1)."""
    return store.path.joinpath(ENTRIES, *[k[:2]][:level])


def entry_path(store: DirectoryStore, k: str) -> Path:
    return fanout(store, k, 1) / k


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A directory the cache must never change: old files, lock files, key-named files."""
    out = tmp_path / "outside"
    out.mkdir()
    files = {
        "precious.txt": b"keep me",
        "poetry.lock": b"pinned",
        "old-notes.md": b"written long ago",
        f"{_fsutil.host()}-999999-1-00ff.tmp": b"looks like a stale temp file",
        K: b"looks like an entry",
        f"{K}.d/lib.so": b"looks like an artifact",
    }
    for name, data in files.items():
        (out / name).parent.mkdir(parents=True, exist_ok=True)
        (out / name).write_bytes(data)
        os.utime(out / name, (MONTHS_AGO, MONTHS_AGO))
    return out


def snapshot(root: Path) -> dict[str, tuple[bytes, int]]:
    return {
        str(p.relative_to(root)): (p.read_bytes() if p.is_file() else b"", p.stat().st_mtime_ns)
        for p in [root, *root.rglob("*")]
    }


def replace_with_link(path: Path, target: Path) -> None:
    """Swap ``path`` (made if missing) for a symlink to ``target``, as an intruder would."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.is_dir():
        for child in sorted(path.rglob("*"), reverse=True):
            child.rmdir() if child.is_dir() else child.unlink()
        path.rmdir()
    elif path.exists():
        path.unlink()
    path.symlink_to(target)


@pytest.fixture
def store(tmp_path: Path) -> DirectoryStore:
    return DirectoryStore(tmp_path / "cache")


# -- writes through a symlinked directory ---------------------------------------------------
@pytest.mark.parametrize("level", [0, 1], ids=["v2", "v2/ab"])
def test_a_write_through_a_symlinked_fanout_fails_quietly_and_lands_nowhere(
    store: DirectoryStore,
    outside: Path,
    tmp_path: Path,
    level: int,
    caplog: pytest.LogCaptureFixture,
) -> None:
    store[key(2)] = "elsewhere in the tree"  # the tree exists before it is tampered with
    # Point the directory at a copy of the layout the write expects, inside outside/.
    target = outside / "deep"
    (target / K[:2]).mkdir(parents=True)
    before = snapshot(outside)
    replace_with_link(fanout(store, K, level), target)
    src = tmp_path / "build"
    src.mkdir()
    (src / "lib.so").write_bytes(b"ELF")

    with caplog.at_level(logging.WARNING, logger="stepcache"):
        assert store.set(K, "value") is False
        assert store.get_or_compute(K, lambda: "computed") == "computed"
        with pytest.raises(sc.StoreWriteError, match="cannot store"):
            store.put_dir(K, src)  # not stored, and it says so
    assert snapshot(outside) == before
    assert store.stats().errors == 3  # set, get_or_compute, put_dir
    writes = [r.getMessage() for r in caplog.records if "cannot write" in r.getMessage()]
    assert len(writes) == 1  # logged once, not once per write
    assert "symlink" in writes[0]


def test_a_symlinked_temp_dir_gets_no_temp_files_and_no_sweep(
    store: DirectoryStore, outside: Path
) -> None:
    before = snapshot(outside)
    replace_with_link(store.path / "tmp", outside)
    assert store.set(K, "value") is False
    assert store.stats().errors == 1
    tmp = str(store.path / "tmp")
    with pytest.raises(OSError, match="symlink"):
        sweep.sweep_temp(tmp, sweep.Observer(tmp, stale_after=0))
    with pytest.raises(UnsafeStoreError, match="tmp is a symlink"):
        store.prune()
    assert snapshot(outside) == before


@pytest.mark.parametrize("name", ["leases", "stats"])
def test_prune_refuses_a_tree_whose_own_directories_are_symlinks(
    store: DirectoryStore, outside: Path, name: str
) -> None:
    store[K] = "value"
    before = snapshot(outside)
    replace_with_link(store.path / name, outside)
    with pytest.raises(UnsafeStoreError, match=f"{name} is a symlink") as info:
        store.prune()
    assert "remove it" in str(info.value)
    assert snapshot(outside) == before  # poetry.lock and the month-old files are still there


def test_no_lock_file_is_made_through_a_symlinked_lease_dir(
    store: DirectoryStore, outside: Path
) -> None:
    before = snapshot(outside)
    replace_with_link(store.path / "leases", outside)
    assert store.get_or_compute(K, lambda: "computed") == "computed"
    assert store[K] == "computed"
    assert snapshot(outside) == before


def test_counters_are_not_written_through_a_symlinked_stats_dir(
    store: DirectoryStore, outside: Path
) -> None:
    before = snapshot(outside)
    replace_with_link(store.path / "stats", outside)
    store[K] = "value"
    store.close()  # flushes the counters, or fails to, quietly
    assert snapshot(outside) == before


# -- symlinks where entries belong ------------------------------------------------------------
def test_a_symlink_at_an_entry_path_is_a_counted_miss_and_is_removed(
    store: DirectoryStore, outside: Path
) -> None:
    before = snapshot(outside)
    link = entry_path(store, K)
    replace_with_link(link, outside / K[2:4] / K)
    assert store.header(K) is None
    replace_with_link(link, outside / K[2:4] / K)
    assert store.get(K) is None
    assert not link.is_symlink()
    assert not link.exists()
    assert store.stats().errors == 2
    assert snapshot(outside) == before


def test_a_write_replaces_a_symlink_at_the_entry_path_not_its_target(
    store: DirectoryStore, outside: Path
) -> None:
    before = snapshot(outside)
    link = entry_path(store, K)
    replace_with_link(link, outside / "precious.txt")
    store[K] = "value"
    assert not link.is_symlink()
    assert store[K] == "value"
    assert snapshot(outside) == before


@pytest.mark.timeout(20)
def test_a_fifo_at_an_entry_path_is_a_miss_not_a_hang(store: DirectoryStore) -> None:
    path = entry_path(store, K)
    path.parent.mkdir(parents=True, exist_ok=True)
    os.mkfifo(path)
    assert store.get(K) is None
    assert not path.exists()
    assert store.stats().errors == 1
    os.mkfifo(path)
    assert K not in store


def test_removing_an_entry_whose_artifact_dir_is_a_symlink_keeps_the_target(
    store: DirectoryStore, outside: Path
) -> None:
    store[K] = "value"
    before = snapshot(outside)
    replace_with_link(Path(f"{entry_path(store, K)}.d"), outside)
    del store[K]
    assert K not in store
    assert not Path(f"{entry_path(store, K)}.d").is_symlink()  # the link went, not its target
    assert snapshot(outside) == before


# -- removals through a symlinked fanout ----------------------------------------------------
def test_eviction_and_removal_never_delete_through_a_symlinked_fanout(
    store: DirectoryStore, outside: Path
) -> None:
    other = key(2)
    assert other[:2] != K[:2]  # it lives outside the fanout that is replaced
    store[other] = "elsewhere"
    before = snapshot(outside)
    replace_with_link(fanout(store, K, 1), outside)  # outside/<K> now looks like an entry
    assert K in set(store)  # listing and reading may look; writing may not
    assert store.get(K) is None  # read, fails to verify: a miss that touches nothing
    assert snapshot(outside) == before  # not even the mtime of what was read

    store.prune(max_bytes=1)  # wants to evict everything
    assert set(store) == {K}  # the real entry went; the one outside stayed
    assert snapshot(outside) == before
    with pytest.raises(OSError, match="symlink"):
        del store[K]
    with pytest.raises(OSError, match="symlink"):
        store.clear()
    assert snapshot(outside) == before


def test_a_symlinked_store_root_is_followed_like_any_path_to_a_directory(
    tmp_path: Path,
) -> None:
    (tmp_path / "scratch").mkdir(mode=0o700)
    (tmp_path / "cache").symlink_to(tmp_path / "scratch")  # ~/.cache -> /scratch is normal
    store = DirectoryStore(tmp_path / "cache")
    store[K] = "value"
    assert DirectoryStore(tmp_path / "scratch")[K] == "value"
