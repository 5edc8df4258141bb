"""A store's own directories (``leases/``, ``stats/``, ``tmp/``) are never followed when symlinked.

Through a symlinked ``leases/`` no lock file is made and none is swept (the
computation runs unlocked, said once); through a symlinked ``stats/`` no
counters are read or archived, and a symlink among the stats files is not
read; into a symlinked ``tmp/`` no artifact tree is copied or moved. Each
test checks that the ``outside`` directory the link points to is unchanged.
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path

import pytest

import stepcache as sc
from stepcache.stores import _fsutil
from stepcache.stores._locks import RANGES_FILE, KeyLocks
from stepcache.stores.directory import DirectoryStore, statsfiles
from stepcache.testing import key

MONTHS_AGO = time.time() - 90 * 86400
DEAD = f"{_fsutil.host()}-999999-1-0"  # the stats file name of an exited process
COUNTERS = {"hits": 1000, "misses": 0, "writes": 0, "errors": 0, "evictions": 0}


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """Files the cache must never read, change or remove: lock-like, stats-like, old ones."""
    out = tmp_path / "outside"
    out.mkdir()
    (out / "poetry.lock").write_text("pinned")
    (out / f"{key(1)}.lock").write_text("named like a lock file")
    (out / f"{key(2)}.lease").write_text(json.dumps({"host": "elsewhere", "pid": 1}))
    (out / DEAD).write_text(json.dumps(COUNTERS))
    for made in out.iterdir():
        os.utime(made, (MONTHS_AGO, MONTHS_AGO))
    return out


def snapshot(root: Path) -> dict[str, tuple[bytes, int]]:
    """Every file with its content and mtime, and the directory's mtime (which any file made
    and removed again would change)."""
    files = {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in root.rglob("*")}
    return {**files, ".": (b"", root.stat().st_mtime_ns)}


def link(path: Path, target: Path) -> None:
    """Put a symlink to ``target`` where the store's directory ``path`` is (or would be)."""
    if path.is_dir():
        for child in path.iterdir():
            child.unlink()
        path.rmdir()
    path.symlink_to(target)


@pytest.fixture
def store(tmp_path: Path) -> DirectoryStore:
    store = DirectoryStore(tmp_path / "cache")
    store[key(9)] = "makes tmp/ and the fanout"
    return store


# -- leases/ ---------------------------------------------------------------------------------
def test_a_symlinked_lease_dir_means_computing_without_the_lock_said_once(
    store: DirectoryStore, outside: Path, caplog: pytest.LogCaptureFixture
) -> None:
    before = snapshot(outside)
    link(store.path / "leases", outside)
    with caplog.at_level(logging.WARNING, logger="stepcache"):
        assert store.get_or_compute(key(3), lambda: 3) == 3
        assert store.get_or_compute(key(4), lambda: 4) == 4
    said = [r.getMessage() for r in caplog.records if "cannot lock" in r.getMessage()]
    assert len(said) == 1
    assert "symlink" in said[0]
    assert store[key(3)] == 3  # the values were stored all the same
    assert snapshot(outside) == before


def test_a_symlink_planted_as_the_range_lock_file_is_never_followed(
    store: DirectoryStore, outside: Path, caplog: pytest.LogCaptureFixture
) -> None:
    before = snapshot(outside)
    (store.path / "leases").mkdir()
    (store.path / "leases" / RANGES_FILE).symlink_to(outside / "poetry.lock")
    with caplog.at_level(logging.WARNING, logger="stepcache"):
        assert store.get_or_compute(key(3), lambda: 3) == 3
    assert any("cannot lock" in r.getMessage() for r in caplog.records)
    assert store[key(3)] == 3
    assert snapshot(outside) == before  # not opened for writing, not locked, not changed


@pytest.mark.parametrize("backend", ["flock", "lease"])
def test_sweeping_locks_never_follows_a_symlinked_lease_dir(
    tmp_path: Path, outside: Path, backend: str
) -> None:
    before = snapshot(outside)
    (tmp_path / "leases").symlink_to(outside)
    locks = KeyLocks(str(tmp_path / "leases"), backend=backend)
    with pytest.raises(OSError, match="symlink"):
        locks.sweep()
    assert snapshot(outside) == before  # poetry.lock and the old lease are still there


# -- stats/ ----------------------------------------------------------------------------------
def test_counters_are_not_read_through_a_symlinked_stats_dir(
    store: DirectoryStore, outside: Path
) -> None:
    store.close()
    link(store.path / "stats", outside)
    assert DirectoryStore(store.path).stats().hits == 0  # the 1000 hits outside are not counted


def test_a_symlink_among_the_stats_files_is_not_read(store: DirectoryStore, outside: Path) -> None:
    assert store[key(9)] == "makes tmp/ and the fanout"
    store.close()
    (store.path / "stats" / DEAD).symlink_to(outside / DEAD)
    assert DirectoryStore(store.path).stats().hits == 1


def test_archiving_stats_never_follows_a_symlinked_stats_dir(
    store: DirectoryStore, outside: Path
) -> None:
    before = snapshot(outside)
    link(store.path / "stats", outside)
    with pytest.raises(OSError, match="symlink"):
        statsfiles.archive_stats(
            str(store.path / "stats"), str(store.path / "tmp"), store.backend.locks
        )
    assert snapshot(outside) == before  # the dead process's file was neither merged nor removed


# -- tmp/ ------------------------------------------------------------------------------------
@pytest.mark.parametrize("move", [False, True], ids=["copy", "move"])
def test_a_tree_is_never_put_into_a_symlinked_temp_dir(
    store: DirectoryStore, outside: Path, tmp_path: Path, move: bool
) -> None:
    src = tmp_path / "build"
    src.mkdir()
    (src / "lib.so").write_bytes(b"ELF")
    before = snapshot(outside)
    link(store.path / "tmp", outside)
    with pytest.raises(sc.StoreWriteError, match="cannot store") as raised:
        store.put_dir(key(1), src, move=move)  # not stored, and it says so
    assert raised.value.filename == str(src)  # and the tree is still there
    assert (src / "lib.so").read_bytes() == b"ELF"
    assert store.stats().errors == 1
    assert snapshot(outside) == before


@pytest.mark.timeout(20)
def test_a_fifo_in_a_tree_is_refused_like_a_symlink(store: DirectoryStore, tmp_path: Path) -> None:
    src = tmp_path / "build"
    src.mkdir()
    os.mkfifo(src / "pipe")
    with pytest.raises(ValueError, match="'pipe' is not a regular file"):
        store.put_dir(key(1), src)
    assert os.listdir(store.path / "tmp") == []
    assert key(1) not in store
