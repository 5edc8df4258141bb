"""Artifact trees of a DirectoryStore: what a copied or moved-in tree looks like once stored."""

from __future__ import annotations

import os
import stat
import time
from pathlib import Path

import pytest

from stepcache.stores.directory import DirectoryStore
from stepcache.testing import key

HOURS_AGO = time.time() - 7200


def mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


def old_build(src: Path) -> Path:
    """A build tree finished two hours ago: a shared object, a header, a subdirectory."""
    (src / "include").mkdir(parents=True)
    (src / "include" / "api.h").write_text("int f(void);")
    (src / "lib.so").write_bytes(b"ELF" * 1000)
    (src / "lib.so").chmod(0o755)
    for made in [src / "include" / "api.h", src / "lib.so", src / "include", src]:
        os.utime(made, (HOURS_AGO, HOURS_AGO))
    return src


@pytest.mark.parametrize("durable", [False, True], ids=["plain", "durable"])
@pytest.mark.parametrize("move", [False, True], ids=["copy", "move"])
def test_a_stored_tree_is_private_keeps_its_files_times_and_executable_bits(
    tmp_path: Path, move: bool, durable: bool
) -> None:
    store = DirectoryStore(tmp_path / "cache", durable=durable)
    stored = store.put_dir(key(1), old_build(tmp_path / "build"), move=move)
    assert (tmp_path / "build").exists() is not move
    assert (stored / "lib.so").read_bytes() == b"ELF" * 1000
    assert {mode(d) for d in [stored, stored / "include"]} == {0o700}
    assert (mode(stored / "lib.so"), mode(stored / "include" / "api.h")) == (0o700, 0o600)
    assert (stored / "lib.so").stat().st_mtime == pytest.approx(HOURS_AGO)
    assert os.listdir(store.path / "tmp") == []


@pytest.mark.parametrize("move", [False, True], ids=["copy", "move"])
def test_a_tree_of_an_old_build_is_not_taken_for_an_orphan(tmp_path: Path, move: bool) -> None:
    store = DirectoryStore(tmp_path / "cache")
    stored = store.put_dir(key(1), old_build(tmp_path / "build"), move=move)
    # Between publishing a tree and writing its entry, only the tree's age tells a
    # put_dir in progress from a leftover: a fresh tree must not be swept meanwhile.
    assert stored.stat().st_mtime > HOURS_AGO + 3600
    os.unlink(store.backend.path(key(1)))
    assert store.prune().swept == 0
    assert (stored / "lib.so").exists()
    assert store.verify().corrupt == ()


def test_a_tree_entry_is_no_value_and_says_it_is_a_tree(tmp_path: Path) -> None:
    store = DirectoryStore(tmp_path / "cache")
    store.put_dir(key(1), old_build(tmp_path / "build"), info={"label": "lap"})
    assert store.get(key(1)) is None  # a miss, never the manifest
    header = store.header(key(1))
    assert header is not None
    assert (header.codec, header.info["kind"], header.label) == ("tree", "tree", "lap")


def test_write_atomic_creates_a_missing_destination_that_is_also_the_temp_dir(
    tmp_path: Path,
) -> None:
    from stepcache.stores import _fsutil

    target = tmp_path / "new" / "memo"
    _fsutil.write_atomic(str(target / "x.json"), b"{}", str(target))
    assert (target / "x.json").read_bytes() == b"{}"
    assert [p.name for p in target.iterdir()] == ["x.json"]
