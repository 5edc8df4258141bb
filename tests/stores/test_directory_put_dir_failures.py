"""``put_dir`` publishes or says so: a tree it could not store is never returned as stored."""

from __future__ import annotations

import errno
from pathlib import Path
from typing import Any

import pytest

import stepcache as sc
from stepcache.stores import _fsutil
from stepcache.stores.directory import DirectoryStore
from stepcache.testing import key, tree

pytestmark = pytest.mark.timeout(60)


def build_in(where: Path) -> Path:
    (where / "sub").mkdir(parents=True)
    (where / "sub" / "lib.so").write_bytes(b"\x7fELF")
    return where


@pytest.fixture
def failing_publish(monkeypatch: pytest.MonkeyPatch) -> None:
    """The rename that publishes a tree fails, after the tree was copied or moved to tmp/."""

    def fail(*args: Any, **kwargs: Any) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(_fsutil, "rename_beneath", fail)


@pytest.mark.usefixtures("failing_publish")
@pytest.mark.parametrize("move", [False, True], ids=["copy", "move"])
def test_a_failed_publish_raises_and_leaves_the_tree_where_it_was(
    tmp_path: Path, move: bool
) -> None:
    store = DirectoryStore(tmp_path / "cache")
    src = build_in(tmp_path / "build")
    before = tree(src)
    with pytest.raises(sc.StoreWriteError, match="nothing was stored") as raised:
        store.put_dir(key(1), src, move=move)
    assert raised.value.filename == str(src)
    assert tree(src) == before  # moved back after a failed move
    assert store.get_dir(key(1)) is None
    assert list((store.path / "tmp").iterdir()) == []
    assert store.stats().errors == 1


@pytest.mark.usefixtures("failing_publish")
def test_get_or_compute_dir_returns_the_built_tree_when_it_cannot_be_stored(
    tmp_path: Path,
) -> None:
    store = DirectoryStore(tmp_path / "cache")
    built = store.get_or_compute_dir(key(1), lambda: build_in(tmp_path / "build"))
    assert built == tmp_path / "build"
    assert (built / "sub" / "lib.so").read_bytes() == b"\x7fELF"
    stats = store.stats()
    assert (stats.misses, stats.writes, stats.errors) == (1, 0, 1)


def test_a_tree_whose_entry_cannot_be_written_is_not_claimed_as_stored(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = DirectoryStore(tmp_path / "cache")

    def fail(*args: Any, **kwargs: Any) -> None:
        raise OSError(errno.EDQUOT, "Disk quota exceeded")

    monkeypatch.setattr(_fsutil, "_write_all", fail)  # entries fail, trees do not
    built = store.get_or_compute_dir(key(1), lambda: build_in(tmp_path / "build"))
    assert (built / "sub" / "lib.so").read_bytes() == b"\x7fELF"
    assert store.get_dir(key(1)) is None
    assert store.stats().errors == 1


@pytest.mark.usefixtures("failing_publish")
def test_a_tiered_store_still_shares_a_tree_its_local_tier_cannot_keep(tmp_path: Path) -> None:
    remote = sc.MemoryStore()
    store = sc.TieredStore([DirectoryStore(tmp_path / "cache"), remote])
    src = build_in(tmp_path / "build")
    with pytest.raises(sc.StoreWriteError):
        store.put_dir(key(1), src)
    shared = remote.get_dir(key(1))
    assert shared is not None
    assert tree(shared) == tree(src)
