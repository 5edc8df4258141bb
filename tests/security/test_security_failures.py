"""A disk that is full, read-only or not ours: writes fail quietly, computations return.

Where this machine allows it, the faults are real: a 1 MiB tmpfs that fills
up, a tmpfs remounted read-only, a process without write permission. Each
also runs injected (``OSError`` with the same errno at the same place), so
the behaviour is tested where mounting is not permitted too.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import shutil
import subprocess
import tempfile
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import stepcache as sc
from stepcache.stores import _fsutil
from stepcache.stores.directory import DirectoryStore
from stepcache.stores.directory.eviction import entry_rel
from stepcache.testing import failing_writes, key
from stepcache.testing.processes import run_python

BIG = 2_000_000  # bytes: more than the 1 MiB tmpfs holds
NOBODY = 65534


def big_build(n: int) -> bytes:
    """A pipeline step whose result does not fit on the small disk."""
    return bytes([n % 256]) * BIG


def make_src(where: Path, size: int) -> Path:
    where.mkdir(parents=True)
    (where / "lib.so").write_bytes(b"\x7fELF" + bytes(size))
    return where


def run_mount(*args: str) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(
            ["mount", *args], capture_output=True, text=True, timeout=30, check=False
        )
    except FileNotFoundError as exc:
        return subprocess.CompletedProcess(["mount"], 127, "", str(exc))


@contextlib.contextmanager
def tmpfs(where: Path, size: str = "1m") -> Iterator[Path]:
    """A fresh tmpfs of ``size`` mounted at ``where``; skips where mounting is not allowed."""
    where.mkdir()
    done = run_mount("-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(where))
    if done.returncode != 0:
        pytest.skip(
            f"cannot mount a tmpfs here ({done.stderr.strip() or done.returncode}): mounting "
            "needs root or CAP_SYS_ADMIN; the injected-fault tests cover the same code"
        )
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], capture_output=True, timeout=30, check=False)


def write_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if "cannot write" in r.getMessage()]


def exercise_writes(store: DirectoryStore, tmp_path: Path) -> None:
    """Every way a pipeline writes, each failing; each must return normally."""
    assert store.set(key(1), bytes(BIG)) is False
    assert store.get_or_compute(key(2), lambda: big_build(2)) == big_build(2)
    cached = sc.CachedStep(sc.step(big_build), store)
    assert cached(3) == big_build(3)
    assert cached(3) == big_build(3)  # computed again: nothing could be stored
    src = make_src(tmp_path / "build", BIG)
    with pytest.raises(sc.StoreWriteError, match="cannot store") as raised:
        store.put_dir(key(4), src)  # not stored, and it says so: never src as if stored
    assert raised.value.filename == str(src)
    moved = make_src(tmp_path / "moved", BIG)
    with pytest.raises(sc.StoreWriteError):
        store.put_dir(key(5), moved, move=True)
    assert (moved / "lib.so").stat().st_size == BIG + 4  # a failed move leaves the tree there

    def build() -> Path:
        return make_src(tmp_path / "built", BIG)

    built = store.get_or_compute_dir(key(6), build)  # the step's result, though not stored
    assert built == tmp_path / "built"
    assert (built / "lib.so").stat().st_size == BIG + 4
    assert (src / "lib.so").stat().st_size == BIG + 4


# -- disk full ---------------------------------------------------------------------------
def test_a_full_disk_fails_every_write_quietly(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with tmpfs(tmp_path / "small") as disk:
        store = DirectoryStore(disk / "cache")
        store[key(9)] = "a small entry still fits"
        free = os.statvfs(disk).f_bavail
        with caplog.at_level(logging.WARNING, logger="stepcache"):
            exercise_writes(store, tmp_path)
        assert store[key(9)] == "a small entry still fits"
        assert store.stats().errors == 7  # set, get_or_compute, the step twice, 3 trees
        assert len(write_warnings(caplog)) == 1
        assert "No space left" in write_warnings(caplog)[0]
        assert os.listdir(disk / "cache" / "tmp") == []  # partial temp files were removed
        assert os.statvfs(disk).f_bavail == free  # and their space given back
        store.close()


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EROFS, errno.EACCES, errno.EDQUOT])
def test_an_injected_write_failure_is_counted_and_logged_once(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    code: int,
) -> None:
    store = DirectoryStore(tmp_path / "cache")

    def fail(*args: Any, **kwargs: Any) -> Any:
        raise OSError(code, os.strerror(code))

    # The data write of every entry, and the copy of every artifact tree.
    monkeypatch.setattr(_fsutil, "_write_all", fail)
    monkeypatch.setattr(_fsutil, "copy_tree", fail)
    with caplog.at_level(logging.WARNING, logger="stepcache"):
        exercise_writes(store, tmp_path)
    assert store.stats().errors == 7  # set, get_or_compute, the step twice, 3 trees
    assert store.stats().writes == 0
    assert len(write_warnings(caplog)) == 1
    assert os.listdir(store.path / "tmp") == []  # no temp file left behind


def test_failing_writes_helper_covers_every_backend_write_path(tmp_path: Path) -> None:
    store = DirectoryStore(tmp_path / "cache")
    with failing_writes(store, errno.ENOSPC):
        assert store.set(key(1), "x") is False
        assert store.get_or_compute(key(2), lambda: "y") == "y"
    assert store.stats().errors == 2
    assert store.set(key(1), "x") is True  # the disk has room again


# -- read-only filesystem -------------------------------------------------------------------
def test_a_read_only_filesystem_serves_hits_and_fails_writes_quietly(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with tmpfs(tmp_path / "disk", size="16m") as disk:
        DirectoryStore(disk / "cache")[key(9)] = "written before"
        done = run_mount("-o", "remount,ro", str(disk))
        if done.returncode != 0:
            pytest.skip(f"cannot remount read-only here ({done.stderr.strip()})")
        store = DirectoryStore(disk / "cache")  # opening writes nothing, so it works
        with caplog.at_level(logging.WARNING, logger="stepcache"):
            assert store[key(9)] == "written before"
            exercise_writes(store, tmp_path)
            assert store.stats().hits >= 1
            store.close()  # its counters cannot be written either: no error
        assert len(write_warnings(caplog)) == 1
        assert "Read-only file system" in write_warnings(caplog)[0]


# -- permission denied ----------------------------------------------------------------------
CHILD = textwrap.dedent(
    """
    import json, os, sys
    from pathlib import Path
    import stepcache as sc
    from stepcache.stores.directory import DirectoryStore
    from stepcache.testing import key
    import stepcache.cached, stepcache.fingerprint, stepcache.stores.artifacts  # before setuid
    import fcntl, logging, pickle, shutil  # stepcache imports them on first use

    root, src = sys.argv[1], Path(sys.argv[2])
    os.setgid(int(sys.argv[3]))
    os.setuid(int(sys.argv[3]))  # from here on, the cache is not ours to write
    store = DirectoryStore(root)
    out = {
        "hit": store[key(9)],
        "set": store.set(key(1), "x"),
        "computed": store.get_or_compute(key(2), lambda: "y"),
        "put_dir": str(store.get_or_compute_dir(key(3), lambda: src)),
    }
    out["errors"] = store.stats().errors
    print(json.dumps(out))
    """
)


@pytest.fixture
def public_dir() -> Iterator[Path]:
    """A directory every user can reach (pytest's own temp dirs are private to root)."""
    path = Path(tempfile.mkdtemp(prefix="stepcache-public-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_a_process_without_write_permission_computes_uncached(
    tmp_path: Path, public_dir: Path
) -> None:
    root = public_dir / "cache"
    DirectoryStore(root)[key(9)] = "readable by all"
    src = make_src(public_dir / "src", 10)
    if os.geteuid() == 0:
        # A system cache: root's, readable by all, writable by root only.
        for path in [root, *root.rglob("*")]:
            path.chmod(0o755 if path.is_dir() else 0o644)
        env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
        out = json.loads(run_python(CHILD, str(root), str(src), str(NOBODY), env=env).stdout)
    else:  # our own cache, made read-only for us
        for path in [root, *root.rglob("*")]:
            if path.is_dir():
                path.chmod(0o500)
        store = DirectoryStore(root)
        out = {
            "hit": store[key(9)],
            "set": store.set(key(1), "x"),
            "computed": store.get_or_compute(key(2), lambda: "y"),
            "put_dir": str(store.get_or_compute_dir(key(3), lambda: src)),
            "errors": store.stats().errors,
        }
        for path in [root, *root.rglob("*")]:
            if path.is_dir():
                path.chmod(0o700)  # so that the fixture can remove it
    assert out == {
        "hit": "readable by all",
        "set": False,
        "computed": "y",
        "put_dir": str(src),
        "errors": 3,
    }
    assert not (root / entry_rel(key(1))).exists()
