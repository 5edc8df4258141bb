"""Artifact trees: one format everywhere, never served when their files differ from the manifest."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

import stepcache as sc
from stepcache.testing import key, tree
from stepcache.testing.processes import run_python

SO = bytes(range(256)) * 600  # a 150 KB "shared object"
DAMAGES = ["flip", "truncate", "missing", "extra", "symlink"]


def build(root: Path) -> Path:
    (root / "include").mkdir(parents=True)
    (root / "lib.so").write_bytes(SO)
    (root / "include" / "api.h").write_text("void run(double *);\n")
    return root


def damage(tree_root: Path, kind: str, outside: Path) -> None:
    """Damage a stored tree as a disk fault, a careless user or an attacker might."""
    lib = tree_root / "lib.so"
    if kind == "flip":  # same size, same mtime: only the contents tell
        st = lib.stat()
        data = bytearray(lib.read_bytes())
        data[len(data) // 2] ^= 0x40
        lib.write_bytes(bytes(data))
        os.utime(lib, ns=(st.st_atime_ns, st.st_mtime_ns))
    elif kind == "truncate":
        with open(lib, "r+b") as f:
            f.truncate(10)
    elif kind == "missing":
        lib.unlink()
    elif kind == "extra":
        (tree_root / "include" / "planted.h").write_text("#error planted\n")
    elif kind == "symlink":
        outside.write_bytes(SO)
        lib.unlink()
        lib.symlink_to(outside)
    else:
        raise AssertionError(kind)


def stored_tree(store: sc.Store, k: str) -> Path:
    """Where the store keeps the files of ``k``'s tree (the local tier's for a tiered store)."""
    local = store.local if isinstance(store, sc.TieredStore) else store
    path = local.backend.tree_path(k)
    assert path is not None
    return path


@pytest.mark.parametrize("kind", DAMAGES)
def test_a_damaged_stored_tree_is_a_counted_miss_and_a_new_put_publishes_a_good_one(
    store_factory: Callable[[], sc.Store], tmp_path: Path, kind: str
) -> None:
    store = store_factory()
    src = build(tmp_path / "build")
    store.put_dir(key(1), src)
    if store.backend.keeps_files or isinstance(store, sc.TieredStore):
        damage(stored_tree(store, key(1)), kind, tmp_path / "outside.so")
    else:  # the archive lives inside the entry: damage its bytes where they are stored
        blob = bytearray(store.backend.load(key(1)) or b"")
        blob[-len(SO) // 2] ^= 0x40
        store.backend.save(key(1), bytes(blob))
    got = store.get_dir(key(1))
    stats = store.stats()
    if isinstance(store, sc.TieredStore):
        # The local copy is dropped; the intact remote one is served and copied back.
        assert got is not None
        assert tree(got) == tree(src)
        assert (stats.errors, stats.backfills) == (1, 1)
    else:
        assert got is None
        assert (stats.errors, stats.hits, stats.misses) == (1, 0, 1)
        again = store.put_dir(key(1), src)
        assert tree(again) == tree(src)
        found = store.get_dir(key(1))
        assert found is not None
        assert tree(found) == tree(src)
    store.close()


@pytest.mark.parametrize("kind", DAMAGES)
def test_a_damaged_unpacked_copy_is_never_served_again(
    store_factory: Callable[[], sc.Store], tmp_path: Path, kind: str
) -> None:
    store = store_factory()
    src = build(tmp_path / "build")
    store.put_dir(key(1), src)
    first = store.get_dir(key(1))
    assert first is not None
    damage(first, kind, tmp_path / "outside.so")
    again = store.get_dir(key(1))  # the copy a previous get_dir returned was damaged
    if isinstance(store, sc.TieredStore):
        assert again is not None  # the local tree was dropped, the remote one copied back
        assert tree(again) == tree(src)
    else:
        assert again is None
    assert store.stats().errors == 1
    fresh = store.get_dir(key(1))
    if fresh is not None:  # an archive was unpacked afresh; a directory tree was dropped
        assert tree(fresh) == tree(src)
    store.close()


@pytest.mark.parametrize("kind", DAMAGES)
def test_verify_finds_each_damaged_tree_and_repair_removes_it(tmp_path: Path, kind: str) -> None:
    spec = str(tmp_path / "cache")
    store = sc.DirectoryStore(spec)
    store.put_dir(key(1), build(tmp_path / "build"))
    store[key(2)] = "an intact value"
    damage(stored_tree(store, key(1)), kind, tmp_path / "outside.so")
    found = cli(spec, "verify")
    assert found.returncode == 1
    assert key(1) in found.stdout
    assert cli(spec, "verify", "--repair").returncode == 0
    assert cli(spec, "verify").returncode == 0
    assert store.get_dir(key(1)) is None
    assert store[key(2)] == "an intact value"


def test_verify_checks_archived_trees_in_redis(redis_server: object, tmp_path: Path) -> None:
    url = f"{redis_server.url}?prefix=verify:"  # type: ignore[attr-defined]
    store = sc.RedisStore(url)
    store.put_dir(key(1), build(tmp_path / "build"))
    blob = bytearray(store.backend.load(key(1)) or b"")
    blob[-100] ^= 1
    store.backend.save(key(1), bytes(blob))
    assert cli(url, "verify").returncode == 1
    assert cli(url, "verify", "--repair").returncode == 0
    assert cli(url, "verify").returncode == 0
    store.close()


def cli(spec: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "stepcache.cli", "--store", spec, *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_a_signed_tree_changed_by_someone_without_the_secret_is_never_served(
    tmp_path: Path,
) -> None:
    store = sc.DirectoryStore(tmp_path / "cache", secret="team")
    src = build(tmp_path / "build")
    stored = store.put_dir(key(1), src)
    # A file replaced (sha256 over the contents: a crafted collision would not do)...
    (stored / "include" / "api.h").write_text("void run(double *); /* evil */\n")
    assert store.get_dir(key(1)) is None
    # ...or a manifest rewritten to bless a planted file: the entry is then unsigned.
    stored = store.put_dir(key(1), src)
    (stored / "lib.so").write_bytes(b"planted")
    forged = sc.DirectoryStore(tmp_path / "cache")  # no secret: signs nothing
    forged.put_dir(key(2), stored)
    os.replace(forged.backend.path(key(2)), store.backend.path(key(1)))
    assert store.get_dir(key(1)) is None
    assert store.stats().errors == 2


def test_trees_move_between_tiers_both_ways_and_serve_a_fresh_process(
    redis_server: object, tmp_path: Path
) -> None:
    url = f"{redis_server.url}?prefix=move:"  # type: ignore[attr-defined]
    src = build(tmp_path / "build")
    # directory -> Redis: written through by a tiered store
    a = sc.TieredStore([sc.DirectoryStore(tmp_path / "a"), sc.RedisStore(url)])
    a.put_dir(key(1), src)
    # Redis -> directory: a tree put in Redis only is backfilled as files
    sc.RedisStore(url).put_dir(key(2), src)
    probe = (
        "import sys, stepcache as sc\n"
        "from stepcache.testing import key, tree\n"
        "s = sc.TieredStore([sc.DirectoryStore(sys.argv[1]), sc.RedisStore(sys.argv[2])])\n"
        "got = [s.get_dir(key(n)) for n in (1, 2)]\n"
        "print([str(p).startswith(sys.argv[1]) for p in got], s.stats().backfills)\n"
        "print(all(tree(p) == tree(__import__('pathlib').Path(sys.argv[3])) for p in got))\n"
    )
    out = run_python(probe, str(tmp_path / "b"), url, str(src)).stdout.split("\n")
    assert out[:2] == ["[True, True] 2", "True"]
    redis_only = sc.RedisStore(url).get_dir(key(1))
    assert redis_only is not None
    assert tree(redis_only) == tree(src)
    a.close()


def test_reading_trees_leaves_no_unpacked_copy_after_the_process_exits(
    redis_server: object, tmp_path: Path
) -> None:
    url = f"{redis_server.url}?prefix=scratch:"  # type: ignore[attr-defined]
    sc.RedisStore(url).put_dir(key(1), build(tmp_path / "build"))
    probe = (
        "import sys, stepcache as sc\n"
        "from stepcache.testing import key\n"
        "print(sc.RedisStore(sys.argv[1]).get_dir(key(1)))\n"
    )
    env = {**os.environ, "TMPDIR": str(tmp_path / "tmp")}
    (tmp_path / "tmp").mkdir()
    for _ in range(3):
        out = run_python(probe, url, env=env).stdout.strip()
        assert out.startswith(str(tmp_path / "tmp"))
        assert not Path(out).exists()
    assert os.listdir(tmp_path / "tmp") == []


def test_put_dir_refuses_symlinks_and_special_files(tmp_path: Path) -> None:
    store = sc.MemoryStore()
    src = build(tmp_path / "build")
    (src / "link").symlink_to(src / "lib.so")
    with pytest.raises(ValueError, match="symlink"):
        store.put_dir(key(1), src)
    os.unlink(src / "link")
    os.mkfifo(src / "fifo")
    with pytest.raises(ValueError, match="not a regular file"):
        store.put_dir(key(1), src)
    shutil.rmtree(src)


@pytest.mark.parametrize("size", [0, 1, 4096, (1 << 20) - 1, 1 << 20, (5 << 20) // 2])
def test_file_digests_cover_every_byte_whatever_the_size(tmp_path: Path, size: int) -> None:
    import hashlib

    from stepcache.stores import artifacts

    src = tmp_path / "src"
    src.mkdir()
    data = os.urandom(size)
    (src / "lib.so").write_bytes(data)
    (record,) = artifacts.build_manifest(src, algo="sha256").files
    assert (record.size, record.digest) == (size, hashlib.sha256(data).hexdigest())
    assert artifacts.check_tree(src, artifacts.build_manifest(src)) is None
    (src / "lib.so").write_bytes(data[:-1] + bytes([data[-1] ^ 1]) if size else b"x")
    assert artifacts.check_tree(src, artifacts.build_manifest(src, algo="sha256")) is None
    assert artifacts.check_tree(src, artifacts.Manifest((record,), (), "sha256"))


def test_a_file_replaced_after_it_was_listed_is_not_digested_as_the_listed_one(
    tmp_path: Path,
) -> None:
    from stepcache.stores import artifacts

    path = tmp_path / "lib.so"
    path.write_bytes(b"listed")
    listed = os.lstat(path)
    (tmp_path / "new.so").write_bytes(b"listed")
    os.replace(tmp_path / "new.so", path)  # same bytes, another file
    assert artifacts._digest(str(path), listed, "xxh3_128") is None
    assert artifacts._digest(str(path), os.lstat(path), "xxh3_128") is not None
