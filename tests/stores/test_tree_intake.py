"""Trees entering a store: each file read once, and the manifest signed is the published tree's.

A tree moved (or copied) into a store is hashed as it goes in; these tests
check that what the entry records is exactly what :func:`build_manifest`
reads from the published tree, on every way in (moved, copied, copied for a
move across filesystems), that nothing walks the tree a second time, and
that a tree which lost the race to another writer's is signed as theirs.
"""

from __future__ import annotations

import os
import shutil
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from filebackend import FileBackend

import stepcache as sc
from stepcache import codec
from stepcache.stores import _fsutil, artifacts
from stepcache.testing import key

BIG = 5 << 19  # 2.5 MB: more than two read chunks


def build(root: Path) -> Path:
    """A build tree: a big shared object, nested headers, an empty file and an empty directory."""
    (root / "include" / "detail").mkdir(parents=True)
    (root / "empty").mkdir()
    (root / "lib.so").write_bytes(os.urandom(BIG))
    os.chmod(root / "lib.so", 0o755)
    (root / "include" / "api.h").write_text("void run(double *);\n")
    (root / "include" / "detail" / "impl.h").write_text("#pragma once\n")
    (root / "stamp").write_bytes(b"")
    return root


def stored_manifest(store: sc.Store, k: str) -> artifacts.Manifest:
    payload = store._read(k)  # the verified entry
    assert isinstance(payload, codec.TreePayload)
    return artifacts.decode(payload).manifest


def no_second_walk(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: Any, **kwargs: Any) -> artifacts.Manifest:
        raise AssertionError("the published tree was walked again to build its manifest")

    monkeypatch.setattr(artifacts, "build_manifest", refuse)


WAYS: dict[str, Callable[[pytest.MonkeyPatch], bool]] = {
    "moved": lambda mp: True,
    "copied": lambda mp: False,
    # Another filesystem: the rename into tmp/ fails and the tree is copied, then removed.
    "copied for a move": lambda mp: mp.setattr(_fsutil, "_rename_in", lambda *a: False) or True,
}


@pytest.mark.parametrize("secret", [None, "team"], ids=["xxh3", "sha256"])
@pytest.mark.parametrize("way", list(WAYS))
def test_the_signed_manifest_is_the_published_trees_and_the_tree_is_read_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, way: str, secret: str | None
) -> None:
    store = sc.DirectoryStore(tmp_path / "cache", secret=secret)
    src = build(tmp_path / "build")
    move = WAYS[way](monkeypatch)
    with monkeypatch.context() as mp:
        no_second_walk(mp)
        path = store.put_dir(key(1), src, move=move)
    assert src.exists() is not move
    recorded = stored_manifest(store, key(1))
    assert recorded.algo == ("xxh3_128" if secret is None else "sha256")
    assert recorded == artifacts.build_manifest(path, algo=recorded.algo)
    assert [f.path for f in recorded.files] == sorted(f.path for f in recorded.files)
    assert {f.path: f.size for f in recorded.files}["lib.so"] == BIG
    assert recorded.dirs == ("empty", "include", "include/detail")
    assert {f.path: f.mode for f in recorded.files}["lib.so"] == 0o700  # owner's bits, kept x
    assert store.get_dir(key(1)) == path
    assert os.listdir(store.path / "tmp") == []


def test_get_or_compute_dir_signs_the_tree_it_read_on_the_way_in(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = sc.DirectoryStore(tmp_path / "cache")
    with monkeypatch.context() as mp:
        no_second_walk(mp)
        path = store.get_or_compute_dir(key(1), lambda: build(tmp_path / "build"))
    assert stored_manifest(store, key(1)) == artifacts.build_manifest(path)
    assert sc.DirectoryStore(tmp_path / "cache").get_dir(key(1)) == path
    assert (store.stats().misses, store.stats().writes, store.stats().errors) == (1, 1, 0)


def test_a_tree_that_lost_the_race_is_signed_as_the_winners(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another writer publishes its (different) tree first: the entry must describe theirs."""
    store = sc.DirectoryStore(tmp_path / "cache")
    publish_dir = _fsutil.publish_dir

    def theirs_first(tmp: str, dest: str, **kwargs: Any) -> bool:
        other = build(tmp_path / "other")
        (other / "lib.so").write_bytes(b"their build")
        os.makedirs(os.path.dirname(dest), exist_ok=True)
        os.rename(other, dest)
        return publish_dir(tmp, dest, **kwargs)

    monkeypatch.setattr(_fsutil, "publish_dir", theirs_first)
    path = store.put_dir(key(1), build(tmp_path / "mine"), move=True)
    monkeypatch.undo()
    assert (path / "lib.so").read_bytes() == b"their build"
    assert stored_manifest(store, key(1)) == artifacts.build_manifest(path)
    assert store.get_dir(key(1)) == path
    assert not (tmp_path / "mine").exists()  # ours was moved in, lost, and removed
    assert os.listdir(store.path / "tmp") == []


@pytest.mark.parametrize("move", [True, False], ids=["moved", "copied"])
@pytest.mark.parametrize("kind", ["symlink", "fifo"])
def test_a_tree_holding_a_symlink_or_fifo_deep_down_is_refused_and_left_whole(
    tmp_path: Path, move: bool, kind: str
) -> None:
    store = sc.DirectoryStore(tmp_path / "cache")
    src = build(tmp_path / "build")
    bad = src / "include" / "detail" / "bad"
    if kind == "symlink":
        bad.symlink_to(src / "lib.so")
    else:
        os.mkfifo(bad)
    before = sorted(str(p.relative_to(src)) for p in src.rglob("*"))
    with pytest.raises(ValueError, match="symlink" if kind == "symlink" else "not a regular"):
        store.put_dir(key(1), src, move=move)
    assert sorted(str(p.relative_to(src)) for p in src.rglob("*")) == before
    assert key(1) not in store
    assert os.listdir(store.path / "tmp") == []


def test_a_moved_file_its_owner_cannot_read_is_made_readable_and_stored(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Mode 0200: the owner may not open it until it is given the store's modes."""
    store = sc.DirectoryStore(tmp_path / "cache")
    src = build(tmp_path / "build")
    os.chmod(src / "stamp", 0o200)
    real_open = os.open

    def as_its_owner(path: Any, flags: int, *args: Any, **kwargs: Any) -> int:
        # As root the open would succeed whatever the mode: refuse it as the
        # kernel refuses an owner without read permission.
        dir_fd = kwargs.get("dir_fd")
        reading = path == "stamp" and dir_fd is not None and not flags & os.O_CREAT
        if reading and not os.stat(path, dir_fd=dir_fd).st_mode & stat.S_IRUSR:
            raise PermissionError(13, "Permission denied", path)
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", as_its_owner)
    path = store.put_dir(key(1), src, move=True)
    monkeypatch.undo()
    assert stat.S_IMODE(os.stat(path / "stamp").st_mode) == 0o600
    assert store.get_dir(key(1)) == path


class _TreeFileBackend(FileBackend):
    """A third party's backend keeping trees as files, without ``put_tree_hashed``."""

    keeps_files = True

    def put_tree(self, key: str, src: Path, *, move: bool) -> Path:
        dest = self.root / f".{key}.d"
        tmp = self.root / f".tmp-{key}"
        shutil.copytree(src, tmp)
        os.rename(tmp, dest)
        if move:
            shutil.rmtree(src)
        return dest

    def tree_path(self, key: str) -> Path | None:
        dest = self.root / f".{key}.d"
        return dest if dest.is_dir() else None


def test_a_backend_keeping_trees_without_hashing_them_gets_its_trees_read_by_the_store(
    tmp_path: Path,
) -> None:
    store = sc.Store(_TreeFileBackend(f"files://{tmp_path / 'files'}"))
    path = store.put_dir(key(1), build(tmp_path / "build"), move=True)
    assert stored_manifest(store, key(1)) == artifacts.build_manifest(path)
    assert store.get_dir(key(1)) == path
    (path / "stamp").write_bytes(b"changed")
    assert store.get_dir(key(1)) is None
    assert store.stats().errors == 1


def test_tree_values_pickle_and_print_in_field_order(tmp_path: Path) -> None:
    import pickle

    from stepcache.stores.directory.trees import TreeModes

    manifest = artifacts.build_manifest(build(tmp_path / "build"), algo="sha256")
    value = artifacts.TreeValue(manifest, b"archive")
    for thing in (manifest, manifest.files[0], value, TreeModes(5, durable=True)):
        assert pickle.loads(pickle.dumps(thing)) == thing
    record = manifest.files[0]
    assert repr(record).startswith(f"FileRecord(path={record.path!r}, mode=")
    assert repr(TreeModes(5, durable=True)) == "TreeModes(gid=5, durable=True)"
