"""Who may write the cache: private by default, a root others could write is refused.

Whoever can write entries can run code in every process that reads them, so
a DirectoryStore is created 0700 (files 0600), refuses a root owned by
another user or writable by group or others, and accepts a group's cache
only when opened ``shared=True`` (setgid 2770 directories, 0660 files).
"""

from __future__ import annotations

import contextlib
import os
import pickle
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

import stepcache as sc
from stepcache.cli import main
from stepcache.errors import StoreUnavailableError, UnsafeStoreError
from stepcache.stores.directory import DirectoryStore
from stepcache.testing import key

NOBODY = 65534
IS_ROOT = os.geteuid() == 0
needs_root = pytest.mark.skipif(
    not IS_ROOT, reason="giving a directory to another user (chown) needs root"
)


@contextlib.contextmanager
def umask(mask: int) -> Iterator[None]:
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


def snapshot(root: Path) -> dict[str, tuple[int, int]]:
    """Every path under ``root`` with its mtime and size: what "writes nothing" compares."""
    return {
        str(p.relative_to(root)): (p.lstat().st_mtime_ns, p.lstat().st_size)
        for p in [root, *root.rglob("*")]
    }


def populated(root: Path) -> Path:
    store = DirectoryStore(root)
    store[key(1)] = "entry"
    store.close()
    return root


# -- a private cache ----------------------------------------------------------------------
@pytest.mark.parametrize("mask", [0o000, 0o022, 0o077])
def test_a_new_store_is_private_whatever_the_umask(tmp_path: Path, mask: int) -> None:
    with umask(mask):
        store = DirectoryStore(tmp_path / "cache")
        store[key(1)] = "entry"
        locks = store.backend.locks
        with locks.hold(key(2), 0.0):  # a lock file exists while held
            lock_mode = mode(tmp_path / "cache" / "leases" / locks.file_of(key(2)))
        store.close()  # writes the stats file
    root = tmp_path / "cache"
    dirs = [p for p in [root, *root.rglob("*")] if p.is_dir()]
    files = [p for p in root.rglob("*") if p.is_file()]
    assert {mode(d) for d in dirs} == {0o700}
    assert {mode(f) for f in files} == {0o600}
    assert lock_mode == 0o600
    assert {p.name for p in files} >= {"CACHEDIR.TAG", key(1)}
    assert any(p.parent.name == "stats" for p in files)


def test_opening_an_existing_store_writes_nothing(tmp_path: Path) -> None:
    root = populated(tmp_path / "cache")
    before = snapshot(root)
    DirectoryStore(root)
    DirectoryStore(root, read_only=True)
    assert snapshot(root) == before


# -- roots others could write ---------------------------------------------------------------
@needs_root
@pytest.mark.parametrize("read_only", [False, True])
def test_a_root_owned_by_another_user_is_refused(tmp_path: Path, read_only: bool) -> None:
    root = populated(tmp_path / "cache")
    os.chown(root, NOBODY, NOBODY)
    before = snapshot(root)
    with pytest.raises(UnsafeStoreError, match="belongs to another user") as info:
        DirectoryStore(root, read_only=read_only)
    assert isinstance(info.value, StoreUnavailableError)
    assert isinstance(info.value, PermissionError)
    assert "shared=True" in str(info.value)  # says what to do
    assert snapshot(root) == before  # refused before writing anything


@needs_root
def test_a_symlinked_root_is_judged_by_the_directory_it_points_to(tmp_path: Path) -> None:
    target = populated(tmp_path / "theirs")
    os.chown(target, NOBODY, NOBODY)
    (tmp_path / "link").symlink_to(target)
    with pytest.raises(UnsafeStoreError, match="another user"):
        DirectoryStore(tmp_path / "link")
    (tmp_path / "mine").symlink_to(populated(tmp_path / "own"))
    assert DirectoryStore(tmp_path / "mine")[key(1)] == "entry"


@needs_root
def test_a_foreign_root_opens_when_shared_is_asked_for(tmp_path: Path) -> None:
    root = populated(tmp_path / "cache")
    os.chown(root, NOBODY, NOBODY)
    assert DirectoryStore(root, shared=True, read_only=True)[key(1)] == "entry"


def test_a_group_writable_root_is_refused_unless_shared(tmp_path: Path) -> None:
    root = populated(tmp_path / "cache")
    root.chmod(0o770)
    before = snapshot(root)
    with pytest.raises(UnsafeStoreError, match="writable by its group") as info:
        DirectoryStore(root)
    assert "chmod g-w" in str(info.value)
    assert snapshot(root) == before
    assert DirectoryStore(root, shared=True)[key(1)] == "entry"


@pytest.mark.parametrize("perm", [0o777, 0o1777, 0o2777, 0o702])
@pytest.mark.parametrize("shared", [False, True])
def test_a_root_writable_by_everyone_is_refused_even_when_shared(
    tmp_path: Path, perm: int, shared: bool
) -> None:
    root = populated(tmp_path / "cache")
    root.chmod(perm)
    with pytest.raises(UnsafeStoreError, match="writable by every user") as info:
        DirectoryStore(root, shared=shared)
    assert "chmod o-w" in str(info.value)


def test_a_root_that_is_a_file_is_unavailable(tmp_path: Path) -> None:
    (tmp_path / "cache").write_text("not a directory")
    with pytest.raises(StoreUnavailableError, match="not a directory"):
        DirectoryStore(tmp_path / "cache")


def test_the_refusal_survives_pickling_for_worker_processes() -> None:
    error = UnsafeStoreError("/x belongs to another user")
    again = pickle.loads(pickle.dumps(error))
    assert type(again) is UnsafeStoreError
    assert str(again) == str(error)


@needs_root
def test_the_cli_reports_a_foreign_root_as_unavailable(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = populated(tmp_path / "cache")
    os.chown(root, NOBODY, NOBODY)
    assert main(["--store", str(root), "ls"]) == 3
    err = capsys.readouterr().err
    assert err.startswith("stepcache: error:")
    assert "belongs to another user" in err


# -- a group cache -------------------------------------------------------------------------
def test_a_shared_store_is_created_as_a_setgid_group_cache(tmp_path: Path) -> None:
    with umask(0o022):  # a common umask, which would take the group's write access away
        store = DirectoryStore(tmp_path / "team", shared=True, secret="team")
        store[key(1)] = "entry"
        store.close()  # writes the stats file
    root = tmp_path / "team"
    dirs = [p for p in [root, *root.rglob("*")] if p.is_dir()]
    files = [p for p in root.rglob("*") if p.is_file()]
    assert {mode(d) for d in dirs} == {0o2770}
    assert {mode(f) for f in files} == {0o660}
    assert {p.name for p in files} >= {"CACHEDIR.TAG", key(1)}


@needs_root
def test_a_group_cache_gives_everything_it_creates_to_the_group(tmp_path: Path) -> None:
    projects = tmp_path / "projects"  # the team's setgid directory
    projects.mkdir()
    os.chown(projects, -1, NOBODY)
    projects.chmod(0o2770)
    with umask(0o022):
        store = DirectoryStore(projects / "cache", shared=True, secret="team")
        store[key(1)] = "entry"
        store.close()
    made = [projects / "cache", *(projects / "cache").rglob("*")]
    assert {p.lstat().st_gid for p in made} == {NOBODY}


def test_shared_travels_with_the_store_options_and_pickles(tmp_path: Path) -> None:
    store = sc.open_store(tmp_path / "team", shared=True)
    assert isinstance(store, DirectoryStore)
    assert store.shared
    assert store.options()["shared"] is True
    assert pickle.loads(pickle.dumps(store)) is store  # reopened through the registry
    assert "shared" not in sc.open_store(tmp_path / "mine").options()
    assert sc.open_store(f"dir://{tmp_path / 'team'}", shared=True) is store


def test_a_private_store_cannot_open_a_shared_one_by_accident(tmp_path: Path) -> None:
    DirectoryStore(tmp_path / "team", shared=True)
    with pytest.raises(UnsafeStoreError, match="group"):
        DirectoryStore(tmp_path / "team")
