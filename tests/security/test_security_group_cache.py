"""A group cache (``shared=True``) gives the group what it makes: locks, leases, artifact trees.

Lock and lease files are 0660 and artifact trees 2770/0660 (0770 for
executables) whatever the umask, so members can lock each other's keys and
read each other's builds; the command line opens such a cache with
``--shared``. (Tests with two real members of a group, which need root to
switch users, are in ``tests/stores/test_directory_group_members.py``.)
"""

from __future__ import annotations

import contextlib
import json
import os
import stat
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from stepcache.cli import main
from stepcache.stores.directory import DirectoryStore
from stepcache.testing import key, lock_files

NOBODY = 65534


@contextlib.contextmanager
def umask(mask: int) -> Iterator[None]:
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


def build_tree(src: Path) -> Path:
    """A build directory as a compiler leaves it under umask 022: 0755 dirs, 0644 and 0755 files."""
    (src / "include").mkdir(parents=True)
    (src / "include" / "api.h").write_text("int f(void);")
    (src / "lib.so").write_bytes(b"ELF")
    (src / "lib.so").chmod(0o755)
    return src


@pytest.mark.parametrize("backend", ["flock", "lease"])
def test_lock_and_lease_files_of_a_group_cache_are_group_writable(
    tmp_path: Path, backend: str
) -> None:
    with umask(0o022):
        store = DirectoryStore(tmp_path / "team", shared=True, secret="team", lock_backend=backend)
        locks = store.backend.locks
        with locks.hold(key(1), time.monotonic() + 5) as held:
            leases = store.path / "leases"
            (made,) = leases.iterdir()
            assert held
            assert made.name == locks.file_of(key(1))
            assert mode(made) == 0o660
    assert mode(leases) == 0o2770
    assert lock_files(leases) == []


@pytest.mark.parametrize("move", [False, True], ids=["copy", "move"])
def test_a_tree_stored_in_a_group_cache_is_the_groups_whatever_the_umask(
    tmp_path: Path, move: bool
) -> None:
    with umask(0o022):
        src = build_tree(tmp_path / "build")
        store = DirectoryStore(tmp_path / "team", shared=True, secret="team")
        stored = store.put_dir(key(1), src, move=move)
    assert src.exists() is not move
    assert (stored / "include" / "api.h").read_text() == "int f(void);"
    assert {mode(d) for d in [stored, stored / "include"]} == {0o2770}
    assert (mode(stored / "include" / "api.h"), mode(stored / "lib.so")) == (0o660, 0o770)
    assert store.get_dir(key(1)) == stored


@pytest.mark.skipif(os.geteuid() != 0, reason="giving a directory to another group needs root")
def test_a_tree_moved_into_a_group_cache_is_given_to_the_group(tmp_path: Path) -> None:
    team = tmp_path / "team"
    DirectoryStore(team, shared=True, secret="team")
    os.chown(team, -1, NOBODY)  # the team's group, which the build below does not have
    for made in team.rglob("*"):
        os.chown(made, -1, NOBODY)
    src = build_tree(tmp_path / "build")
    stored = DirectoryStore(team, shared=True, secret="team").put_dir(key(1), src, move=True)
    assert {p.lstat().st_gid for p in [stored, *stored.rglob("*")]} == {NOBODY}


# -- the command line ------------------------------------------------------------------------
@pytest.fixture
def group_cache(tmp_path: Path) -> Path:
    """A group-writable cache with one entry, as a private store would refuse it."""
    root = tmp_path / "team"
    store = DirectoryStore(root, shared=True, secret="team")
    store[key(1)] = "entry"
    store.close()
    root.chmod(0o2770)
    return root


def test_the_cli_refuses_a_group_cache_without_shared(
    group_cache: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--store", str(group_cache), "stats"]) == 3
    err = capsys.readouterr().err
    assert "pass --shared" in err
    assert "shared=True" not in err


@pytest.mark.parametrize("how", ["flag", "env"])
def test_the_cli_opens_a_group_cache_with_shared(
    group_cache: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, how: str
) -> None:
    monkeypatch.setenv("STEPCACHE_SECRET", "team")
    if how == "env":
        monkeypatch.setenv("STEPCACHE_SHARED", "1")
    flag = ["--shared"] if how == "flag" else []
    assert main(["--store", str(group_cache), *flag, "stats", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["entries"] == 1
    assert main(["--store", str(group_cache), *flag, "ls", "--json"]) == 0
    assert [e["key"] for e in json.loads(capsys.readouterr().out)] == [key(1)]


def test_stepcache_shared_0_keeps_the_check(
    group_cache: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("STEPCACHE_SHARED", "0")
    assert main(["--store", str(group_cache), "stats"]) == 3
    assert "writable by its group" in capsys.readouterr().err
