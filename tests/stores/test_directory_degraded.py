"""Degrade, never stop: a store that cannot be created opens degraded and the step still runs.

The faults are real where this machine allows mounting: a 1 MiB tmpfs filled
to the last byte, and a bind mount remounted read-only, each before the
store is first opened. Permission denied is injected (root may write anywhere).
"""

from __future__ import annotations

import contextlib
import errno
import logging
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import stepcache as sc
from stepcache.stores import _fsutil
from stepcache.stores.directory import DirectoryStore
from stepcache.testing import key

pytestmark = pytest.mark.timeout(60)


def mount(*args: str) -> None:
    try:
        done = subprocess.run(
            ["mount", *args], capture_output=True, text=True, timeout=30, check=False
        )
    except FileNotFoundError as exc:
        pytest.skip(f"no mount command here ({exc})")
    if done.returncode != 0:
        pytest.skip(
            f"cannot mount here ({done.stderr.strip() or done.returncode}): mounting needs "
            "root or CAP_SYS_ADMIN; test_permission_denied_at_open_degrades covers the code"
        )


@contextlib.contextmanager
def mounted(where: Path, *args: str) -> Iterator[Path]:
    where.mkdir(exist_ok=True)
    mount(*args, str(where))
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], capture_output=True, timeout=30, check=False)


def fill(disk: Path) -> None:
    """Write to ``disk`` until it is full."""
    with (disk / "filler").open("wb") as f, contextlib.suppress(OSError):
        while True:
            f.write(bytes(65536))
            f.flush()
    assert (disk / "filler").stat().st_size > 0


def run_pipeline(store: sc.Store) -> None:
    """A step through every write path; each result must come back, none can be stored."""
    assert store.get_or_compute(key(1), lambda: "computed") == "computed"
    step = sc.CachedStep(sc.step(str.upper), store)
    assert step("abc") == "ABC"
    assert step("abc") == "ABC"  # computed again: nothing was stored
    assert store.set(key(2), "x") is False
    assert store.get(key(1)) is None


def warnings_of(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "stepcache"]


def test_a_full_disk_at_open_degrades(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with mounted(tmp_path / "small", "-t", "tmpfs", "-o", "size=1m,mode=0700", "tmpfs") as disk:
        fill(disk)
        with caplog.at_level(logging.WARNING, logger="stepcache"):
            store = sc.open_store(disk / "cache")
            assert isinstance(store, DirectoryStore)
            assert store.degraded
            run_pipeline(store)
            store.close()
        assert store.stats().errors == 4  # get_or_compute, the step twice, set
        assert store.stats().writes == 0
        said = warnings_of(caplog)
        assert sum("cannot create the cache" in m for m in said) == 1
        assert "No space left" in said[0]
        assert not any("cannot write" in m for m in said)  # one warning, not one per write
        sc.reset_registry()


def test_a_read_only_mount_at_open_degrades(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "disk").mkdir()
    with mounted(tmp_path / "ro", "--bind", str(tmp_path / "disk")) as ro:
        mount("-o", "remount,ro,bind", str(ro))
        with caplog.at_level(logging.WARNING, logger="stepcache"):
            store = DirectoryStore(ro / "cache")
            assert store.degraded
            run_pipeline(store)
            store.close()
        assert (store.stats().errors, store.stats().hits) == (4, 0)
        said = warnings_of(caplog)
        assert sum("Read-only file system" in m for m in said) == 1
        assert not (tmp_path / "disk" / "cache").exists()


def test_permission_denied_at_open_degrades(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def denied(*args: Any, **kwargs: Any) -> None:
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(_fsutil, "make_dirs", denied)
    store = DirectoryStore(tmp_path / "cache")
    assert store.degraded
    monkeypatch.setattr(_fsutil, "_write_all", denied)  # the writes fail the same way
    run_pipeline(store)
    assert store.stats().errors == 4


def test_an_existing_store_that_turned_read_only_is_not_degraded_and_serves_hits(
    tmp_path: Path,
) -> None:
    (tmp_path / "disk").mkdir()
    DirectoryStore(tmp_path / "disk" / "cache")[key(1)] = "written before"
    with mounted(tmp_path / "ro", "--bind", str(tmp_path / "disk")) as ro:
        mount("-o", "remount,ro,bind", str(ro))
        store = DirectoryStore(ro / "cache")
        assert not store.degraded  # opening an existing store writes nothing
        assert store.get_or_compute(key(1), lambda: "recomputed") == "written before"
        assert store.set(key(2), "x") is False
        assert (store.stats().hits, store.stats().errors) == (1, 1)
