"""Reads that never destroy: on a shared filesystem a damaged read removes nothing.

There a reader cannot tell a torn read of a file being replaced from another
machine from damage, so it reads once more from a fresh open, and if that
fails too, counts a miss and leaves the file for the next publish,
``verify --repair`` or ``prune``. On a local filesystem a damaged entry is
removed, as always.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from stepcache.stores.directory import DirectoryStore
from stepcache.testing import key

pytestmark = pytest.mark.timeout(60)


def on_shared_fs(store: DirectoryStore) -> DirectoryStore:
    """Treat ``store`` as being on a network filesystem (its local tmp_path is not)."""
    store.backend.on_shared_fs = True
    return store


def torn_once(store: DirectoryStore, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Make the entry of ``key(1)`` read torn, as sshfs serves one after a replace: half as
    long, until a fresh open (``load_fresh``) sees it whole. Returns the keys read fresh."""
    path = Path(store.backend.path(key(1)))
    whole = path.read_bytes()
    path.write_bytes(whole[: len(whole) // 2])
    fresh: list[str] = []
    load_fresh = store.backend.load_fresh

    def whole_again(k: str) -> bytes | None:
        fresh.append(k)
        path.write_bytes(whole)
        return load_fresh(k)

    monkeypatch.setattr(store.backend, "load_fresh", whole_again)
    return fresh


def test_a_store_on_a_local_directory_is_not_on_a_shared_filesystem(tmp_path: Path) -> None:
    assert DirectoryStore(tmp_path / "cache").on_shared_fs is False


def test_a_torn_read_on_a_shared_filesystem_is_read_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = on_shared_fs(DirectoryStore(tmp_path / "cache"))
    store[key(1)] = "published from the other mount"
    fresh = torn_once(store, monkeypatch)
    assert store[key(1)] == "published from the other mount"
    assert fresh == [key(1)]  # read again from a fresh open
    stats = store.stats()
    assert (stats.hits, stats.errors) == (1, 0)


def test_a_torn_read_on_a_local_filesystem_is_damage(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = DirectoryStore(tmp_path / "cache")
    store[key(1)] = "value"
    torn_once(store, monkeypatch)
    assert store.get(key(1)) is None
    assert store.stats().errors == 1
    assert not Path(store.backend.path(key(1))).exists()


@pytest.mark.parametrize("where", ["value", "header", "dir"])
def test_a_damaged_entry_on_a_shared_filesystem_is_counted_but_not_removed(
    tmp_path: Path, where: str
) -> None:
    store = on_shared_fs(DirectoryStore(tmp_path / "cache"))
    src = tmp_path / "src"
    src.mkdir()
    (src / "lib.so").write_bytes(b"ELF")
    store.put_dir(key(1), src)
    path = Path(store.backend.path(key(1)))
    if where == "dir":
        (path.with_name(path.name + ".d") / "lib.so").unlink()
        path.with_name(path.name + ".d").rmdir()
        found: Any = store.get_dir(key(1))
    else:
        path.write_bytes(path.read_bytes()[:20] if where == "header" else b"x" * 100)
        found = store.header(key(1)) if where == "header" else store.get(key(1))
    assert found is None
    assert store.stats().errors == 1
    assert path.exists()  # left for the next publish, verify --repair or prune
    assert store.verify(repair=True).repaired == 1
    assert not path.exists()


def test_prune_removes_what_readers_found_damaged_once_checked_again(tmp_path: Path) -> None:
    store = on_shared_fs(DirectoryStore(tmp_path / "cache"))
    for n in range(3):
        store[key(n)] = n
    for n in (0, 1):
        Path(store.backend.path(key(n))).write_bytes(b"damaged")
        assert store.get(key(n)) is None
    store[key(1)] = "published again since"  # no longer damaged: must stay
    assert store.stats().errors == 2
    assert store.prune().swept == 1
    assert sorted(store) == sorted([key(1), key(2)])
    assert store[key(1)] == "published again since"
    assert store.prune().swept == 0  # checked once, then forgotten
    assert list((store.path / "tmp").iterdir()) == []


def test_the_next_publish_replaces_a_damaged_entry_on_a_shared_filesystem(
    tmp_path: Path,
) -> None:
    store = on_shared_fs(DirectoryStore(tmp_path / "cache"))
    store[key(1)] = "first"
    Path(store.backend.path(key(1))).write_bytes(b"damaged")
    assert store.get_or_compute(key(1), lambda: "again") == "again"
    assert store[key(1)] == "again"
    # Read twice: before, and once the key's lock is held (no thread waited in between).
    assert store.stats().errors == 2
