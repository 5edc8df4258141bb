"""DirectoryStore: the store contract, the on-disk layout, opening, locks and maintenance."""

from __future__ import annotations

import multiprocessing
import os
import shutil
import stat
import time
from pathlib import Path
from typing import Any

import pytest
import store_workers as w

from stepcache import StoreUnavailableError, codec, open_store, reset_registry
from stepcache.stores import _fsutil
from stepcache.stores.directory import TAG, DirectoryStore
from stepcache.stores.directory.eviction import entry_rel
from stepcache.stores.registry import default_directory
from stepcache.testing import StoreContract, damage, key, tree

pytestmark = pytest.mark.timeout(60)


class TestDirectoryStore(StoreContract):
    @pytest.fixture
    def store(self, tmp_path: Path) -> DirectoryStore:
        return DirectoryStore(tmp_path / "cache")

    def reopen(self, store: Any, **options: Any) -> DirectoryStore:
        return DirectoryStore(store.path, **options)

    def corrupt(self, store: Any, k: str, kind: str) -> None:
        # Damage the file in place, as a crash or another program would.
        path = Path(store.backend.path(k))
        path.write_bytes(damage(path.read_bytes(), kind))


def snapshot(root: Path) -> dict[str, tuple[int, int]]:
    """Path -> (mtime_ns, size) of everything under ``root``, the root included."""
    paths = [root, *root.rglob("*")]
    return {str(p): (p.lstat().st_mtime_ns, p.lstat().st_size) for p in paths}


# -- layout and opening ----------------------------------------------------------
def test_new_store_is_a_private_tagged_directory(tmp_path: Path) -> None:
    root = tmp_path / "cache"
    store = DirectoryStore(root)
    store[key(1)] = b"x"
    assert (root / "CACHEDIR.TAG").read_bytes() == TAG
    assert TAG.startswith(b"Signature: 8a477f597d28d172789f06886806bc55\n")
    assert stat.S_IMODE(root.stat().st_mode) == 0o700
    entry = root / entry_rel(key(1))
    assert stat.S_IMODE(entry.stat().st_mode) == 0o600
    assert store.spec == f"dir://{root}"
    assert os.listdir(root / "tmp") == []


def test_opening_an_existing_store_writes_nothing(tmp_path: Path) -> None:
    root = tmp_path / "cache"
    with DirectoryStore(root) as store:
        store[key(1)] = "value"
        store.get_or_compute(key(2), lambda: "computed")
    before = snapshot(root)
    for _ in range(3):
        DirectoryStore(root).close()
        open_store(root).close()
        reset_registry()
    assert snapshot(root) == before


def test_creating_a_store_makes_the_root_with_its_tag_and_nothing_else(tmp_path: Path) -> None:
    root = tmp_path / "a" / "b"
    DirectoryStore(root).close()
    assert sorted(os.listdir(root)) == ["CACHEDIR.TAG", "tmp"]
    assert os.listdir(root / "tmp") == []


def test_read_only_store_of_a_missing_directory_is_empty_and_creates_nothing(
    tmp_path: Path,
) -> None:
    store = DirectoryStore(tmp_path / "absent", read_only=True)
    assert store.get(key(1)) is None
    assert len(store) == 0
    assert store.get_or_compute(key(1), lambda: 5) == 5
    store.close()
    assert not (tmp_path / "absent").exists()


def test_unusable_root_raises_store_unavailable(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("not a directory")
    with pytest.raises(StoreUnavailableError, match="writable path"):
        DirectoryStore(tmp_path / "file" / "cache")


def test_fifteen_open_store_calls_give_one_instance(tmp_path: Path) -> None:
    stores = {id(open_store(tmp_path / "cache")) for _ in range(15)}
    stores |= {id(open_store(f"dir://{tmp_path}/cache")) for _ in range(15)}
    assert len(stores) == 1


def test_open_store_passes_options_and_keeps_them_on_pickling(tmp_path: Path) -> None:
    store = open_store(tmp_path / "cache", max_bytes=10_000, durable=True)
    assert isinstance(store, DirectoryStore)
    assert (store.max_bytes, store.durable) == (10_000, True)
    assert store.options() == {"max_bytes": 10_000, "durable": True}
    assert open_store(tmp_path / "cache") is not store


def _child_uses_inherited_registry(path: str, parent_id: int, queue: Any) -> None:
    store = open_store(path)
    store[key(7)] = "from child"
    queue.put((id(store) != parent_id, store[key(1)]))


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # fork of a threaded pytest process
def test_open_store_after_fork_gives_the_child_its_own_working_instance(tmp_path: Path) -> None:
    parent = open_store(tmp_path / "cache")
    parent[key(1)] = "from parent"
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    child = ctx.Process(
        target=_child_uses_inherited_registry, args=(str(tmp_path / "cache"), id(parent), queue)
    )
    child.start()
    assert queue.get(timeout=30) == (True, "from parent")
    child.join(timeout=30)
    assert child.exitcode == 0
    assert parent[key(7)] == "from child"


def test_zero_length_foreign_and_directory_entries_are_misses(tmp_path: Path) -> None:
    store = DirectoryStore(tmp_path / "cache")
    for n in range(3):
        store[key(n)] = n
    Path(store.backend.path(key(0))).write_bytes(b"")
    Path(store.backend.path(key(1))).write_bytes(b"<html>not an entry</html>")
    os.unlink(store.backend.path(key(2)))
    os.mkdir(store.backend.path(key(2)))
    assert [store.get(key(n)) for n in range(3)] == [None, None, None]
    assert store.stats().errors == 3
    assert not os.path.exists(store.backend.path(key(0)))
    assert not os.path.exists(store.backend.path(key(1)))


def test_header_of_an_entry_with_long_info_reads_all_of_it(tmp_path: Path) -> None:
    store = DirectoryStore(tmp_path / "cache")
    manifest = {f"input.body[{i}]": f"{i:016x}" for i in range(2000)}
    store.set(key(1), b"x" * 100_000, info={"step": "s", "manifest": manifest})
    header = store.header(key(1))
    assert header is not None
    assert header.info["manifest"] == manifest
    assert store.stats().errors == 0


def test_a_hit_marks_an_old_entry_recently_used(tmp_path: Path) -> None:
    store = DirectoryStore(tmp_path / "cache")
    store[key(1)] = 1
    store[key(2)] = 2
    old = time.time() - 3600
    for k in (key(1), key(2)):
        os.utime(store.backend.path(k), (old, old))
    assert store[key(1)] == 1
    assert os.stat(store.backend.path(key(1))).st_mtime > old + 3000
    assert os.stat(store.backend.path(key(2))).st_mtime == pytest.approx(old)


# -- artifact directories --------------------------------------------------------
def test_durable_store_round_trips_entries_and_trees(tmp_path: Path) -> None:
    store = DirectoryStore(tmp_path / "new" / "cache", durable=True)
    (tmp_path / "src" / "sub").mkdir(parents=True)
    (tmp_path / "src" / "sub" / "f").write_bytes(b"data")
    store[key(1)] = {"durable": True}
    stored = store.put_dir(key(2), tmp_path / "src")
    assert DirectoryStore(store.path)[key(1)] == {"durable": True}
    assert tree(stored) == tree(tmp_path / "src")
    assert os.listdir(store.path / "tmp") == []


def test_put_dir_keeps_the_first_published_tree(tmp_path: Path) -> None:
    store = DirectoryStore(tmp_path / "cache")
    first, second = tmp_path / "first", tmp_path / "second"
    first.mkdir()
    second.mkdir()
    (first / "lib.so").write_bytes(b"first")
    (second / "lib.so").write_bytes(b"second")
    assert store.put_dir(key(1), first) == store.put_dir(key(1), second)
    got = store.get_dir(key(1))
    assert got is not None
    assert (got / "lib.so").read_bytes() == b"first"
    assert os.listdir(store.path / "tmp") == []


def test_removing_a_directory_entry_removes_its_tree(tmp_path: Path) -> None:
    store = DirectoryStore(tmp_path / "cache")
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "a").write_text("a")
    path = store.put_dir(key(1), tmp_path / "src")
    del store[key(1)]
    assert not path.exists()
    assert store.get_dir(key(1)) is None


def test_put_dir_refuses_symlinks_and_non_directories(tmp_path: Path) -> None:
    store = DirectoryStore(tmp_path / "cache")
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "link").symlink_to("/")
    with pytest.raises(ValueError, match="symlink"):
        store.put_dir(key(1), tmp_path / "src")
    with pytest.raises(NotADirectoryError):
        store.put_dir(key(1), tmp_path / "missing")
    assert key(1) not in store
    assert os.listdir(store.path / "tmp") == []


def test_get_dir_with_its_tree_gone_is_a_counted_miss(tmp_path: Path) -> None:
    store = DirectoryStore(tmp_path / "cache")
    (tmp_path / "src").mkdir()
    path = store.put_dir(key(1), tmp_path / "src")
    os.rmdir(path)
    assert store.get_dir(key(1)) is None
    stats = store.stats()
    assert (stats.errors, stats.misses) == (1, 1)
    assert key(1) not in store


# -- maintenance -----------------------------------------------------------------
def test_prune_sweeps_leftovers_of_dead_writers(tmp_path: Path) -> None:
    store = DirectoryStore(tmp_path / "cache")
    store[key(1)] = "kept"
    tmp = store.path / "tmp"
    pid = w.dead_pid()
    me = _fsutil.parse_owner(_fsutil.temp_name())
    assert me is not None
    (tmp / f"{_fsutil.host()}-{pid}-{me.start}-00ff.tmp").write_bytes(b"half an entry")
    (tmp / f"{_fsutil.host()}-{pid}-{me.start}-0aff.dir").mkdir()
    # This pid, but another start time: a dead process whose pid was reused.
    (tmp / f"{_fsutil.host()}-{me.pid}-{me.start + 1}-0cff.tmp").write_bytes(b"recycled")
    live = _fsutil.temp_name()
    (tmp / live).write_bytes(b"being written")
    result = store.prune()
    assert result.swept == 3
    assert os.listdir(tmp) == [live]
    assert store[key(1)] == "kept"
    assert (result.removed, result.entries) == (0, 1)


def test_verify_reports_and_repairs_bad_entries(tmp_path: Path) -> None:
    store = DirectoryStore(tmp_path / "cache")
    for n in range(4):
        store[key(n)] = n
    Path(store.backend.path(key(0))).write_bytes(b"junk")
    (tmp_path / "src").mkdir()
    os.rmdir(store.put_dir(key(9), tmp_path / "src"))
    progress: list[int] = []
    result = store.verify(progress=progress.append)
    assert (result.checked, result.ok) == (5, 3)
    assert {k for k, _ in result.corrupt} == {key(0), key(9)}
    assert sum(progress) == 5
    assert store.verify(repair=True).repaired == 2
    assert store.verify().corrupt == ()
    assert len(store) == 3


def test_stats_are_written_only_by_processes_that_used_the_store(tmp_path: Path) -> None:
    root = tmp_path / "cache"
    DirectoryStore(root).close()
    assert not (root / "stats").exists()
    with DirectoryStore(root) as store:
        store.get(key(1))
    assert len(os.listdir(root / "stats")) == 1


def test_stats_sum_instances_without_counting_one_twice(tmp_path: Path) -> None:
    root = tmp_path / "cache"
    with DirectoryStore(root) as first:
        first[key(1)] = 1
        first.get(key(1))
    second = DirectoryStore(root)
    second.get(key(1))
    second.get(key(2))
    assert second._stats_file is not None
    second._stats_file.flush()
    stats = second.stats()
    assert (stats.hits, stats.misses, stats.writes, stats.processes) == (2, 1, 1, 2)
    assert stats.entries == 1


def test_prune_archives_the_stats_of_exited_processes(tmp_path: Path) -> None:
    root = tmp_path / "cache"
    DirectoryStore(root)[key(1)] = 1
    # Children of multiprocessing end with os._exit: their counts still reach disk.
    ctx = w.context()
    for hits in (2, 3):
        proc = ctx.Process(target=w.use_store, args=(str(root), key(1), hits))
        proc.start()
        proc.join(timeout=30)
        assert proc.exitcode == 0
    store = DirectoryStore(root)
    assert store.stats().hits == 5
    assert store.prune().swept == 2
    assert "_archived" in os.listdir(root / "stats")
    assert store.stats().hits == 5


def test_stats_leave_out_an_instance_that_only_opened_the_store(tmp_path: Path) -> None:
    with DirectoryStore(tmp_path / "cache") as used:
        used[key(1)] = 1
    stats = DirectoryStore(tmp_path / "cache").stats()
    assert (stats.opens, stats.processes, stats.writes) == (1, 1, 1)


@pytest.mark.parametrize("where", ["entry-is-a-dir", "fanout-is-a-file", "fanout-unreadable"])
def test_a_damaged_layout_is_a_miss_everywhere_and_never_an_oserror(
    tmp_path: Path, where: str
) -> None:
    store = DirectoryStore(tmp_path / "cache")
    store[key(1)] = "value"
    store.put_dir(key(2), _tree_src(tmp_path))
    entry = Path(store.backend.path(key(1)))
    if where == "entry-is-a-dir":
        entry.unlink()
        entry.mkdir()
    elif where == "fanout-is-a-file":
        shutil.rmtree(entry.parent)
        entry.parent.write_bytes(b"not a directory")
    else:
        entry.parent.chmod(0)
    try:
        # root can read an unreadable directory: there the entry is simply intact
        intact = where == "fanout-unreadable" and os.geteuid() == 0
        assert (key(1) in store) is intact
        assert (store.header(key(1)) is not None) is intact
        assert store.get(key(1)) == ("value" if intact else None)
        assert (key(1) in list(store)) is intact
        assert len(store) == len(list(store))
        assert store.get_dir(key(2)) is not None  # its fanout is elsewhere
    finally:
        if where == "fanout-unreadable":
            entry.parent.chmod(0o700)


def _tree_src(tmp_path: Path) -> Path:
    src = tmp_path / "src"
    src.mkdir()
    (src / "lib.so").write_bytes(b"ELF")
    return src


@pytest.mark.parametrize("xdg", [None, "", "  ", "/somewhere/cache"])
def test_the_default_directory_is_the_one_platformdirs_names(
    monkeypatch: pytest.MonkeyPatch, xdg: str | None
) -> None:
    platformdirs = pytest.importorskip("platformdirs")
    monkeypatch.delenv("STEPCACHE_DIR", raising=False)
    if xdg is None:
        monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    else:
        monkeypatch.setenv("XDG_CACHE_HOME", xdg)
    expected = Path(platformdirs.user_cache_dir("stepcache", appauthor=False))
    assert default_directory() == expected


def test_entries_of_the_earlier_two_level_layout_are_never_read_and_prune_removes_them(
    tmp_path: Path,
) -> None:
    root = tmp_path / "cache"
    DirectoryStore(root)[key(1)] = "kept"
    old = key(2)
    legacy = root / "v1" / old[:2] / old[2:4]  # where earlier versions wrote it
    legacy.mkdir(parents=True)
    (legacy / old).write_bytes(codec.pack_entry(old, "written by an earlier version"))
    (legacy / f"{old}.d").mkdir()
    (legacy / f"{old}.d" / "lib.so").write_bytes(b"ELF")

    store = DirectoryStore(root)  # opens: v1/ is a directory of its own
    assert old not in store
    assert store.get(old) is None  # a miss: the layout changed, the entry was not lost
    assert list(store) == [key(1)]
    assert store.prune(dry_run=True).swept == 2  # its two files, none removed
    assert (legacy / old).is_file()
    assert store.prune().swept == 2
    assert not (root / "v1").exists()
    assert store[key(1)] == "kept"
    assert os.listdir(root / "tmp") == []
    legacy.mkdir(parents=True)
    (legacy / old).write_bytes(b"left by an earlier version")
    store.clear()  # removes every entry, of either layout
    assert not (root / "v1").exists()
    assert len(store) == 0
