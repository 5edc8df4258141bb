"""The hit path of a DirectoryStore: a plain entry is read, verified and decoded in one frame.

``DirectoryStore._read`` reads an unsigned pickle entry itself and checks it
as ``codec.unpack_entry`` does; everything else takes the general path. These
tests pin what it costs (Python frames, opens) and that it decides as the
codec does, whatever the bytes.
"""

from __future__ import annotations

import os
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from types import FrameType
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stepcache import codec
from stepcache.stores.base import MISSING
from stepcache.stores.directory import DirectoryStore
from stepcache.testing import key

pytestmark = pytest.mark.timeout(60)


def frames_of(call: Any) -> Counter[str]:
    """The Python functions ``call()`` runs (C functions left out), by name."""
    seen: Counter[str] = Counter()

    def profile(frame: FrameType, event: str, arg: object) -> None:
        if event == "call":
            seen[frame.f_code.co_name] += 1

    sys.setprofile(profile)
    try:
        call()
    finally:
        sys.setprofile(None)
    return seen


@pytest.fixture
def store(tmp_path: Path) -> Iterator[DirectoryStore]:
    store = DirectoryStore(tmp_path / "cache")
    yield store
    store.close()


def test_a_hit_of_a_plain_entry_runs_get_and_read_and_nothing_else(
    store: DirectoryStore,
) -> None:
    k = key(1)
    store[k] = {"value": 1}
    assert frames_of(lambda: store.get(k)) == {"<lambda>": 1, "get": 1, "_read": 1}
    assert store.get(k) == {"value": 1}
    assert store.stats().hits == 2


def test_a_miss_runs_get_and_read_and_counts_it(store: DirectoryStore) -> None:
    k = key(1)
    assert frames_of(lambda: store.get(k)) == {
        "<lambda>": 1,
        "get": 1,
        "_read": 1,
        "_count_lookup": 1,
        "add": 1,
    }
    assert store.stats().misses == 1


def test_a_tree_entry_is_opened_once_per_lookup(store: DirectoryStore, tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "lib.so").write_bytes(b"ELF")
    store.put_dir(key(1), src)
    entry = store.backend.path(key(1))
    opened: list[str] = []

    def audit(event: str, args: tuple[Any, ...]) -> None:
        if event == "open" and args[0] == entry:
            opened.append(entry)

    sys.addaudithook(audit)  # stays for the process: it only appends to this list
    assert store.get_dir(key(1)) is not None
    assert store.get(key(1)) is None  # a tree is no value
    assert len(opened) == 2


def test_an_entry_that_comes_in_several_reads_is_a_hit(
    store: DirectoryStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    # As any file past 2 GiB does on Linux: one read returns no more than that.
    store[key(1)] = "x" * 10_000
    read = os.read
    monkeypatch.setattr(os, "read", lambda fd, n: read(fd, min(n, 1000)))
    assert store.get(key(1)) == "x" * 10_000
    assert store.stats().errors == 0


def fstats_of(call: Any, monkeypatch: pytest.MonkeyPatch) -> int:
    """How many ``os.fstat`` calls ``call()`` makes."""
    calls = []
    real = os.fstat

    def counted(fd: int) -> os.stat_result:
        calls.append(fd)
        return real(fd)

    with monkeypatch.context() as m:
        m.setattr(os, "fstat", counted)
        call()
    return len(calls)


def test_a_key_hit_again_within_a_minute_is_read_without_an_fstat(
    store: DirectoryStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    store[key(1)] = "v"
    assert fstats_of(lambda: store.get(key(1)), monkeypatch) == 1  # the mtime, once
    assert fstats_of(lambda: [store.get(key(1)) for _ in range(5)], monkeypatch) == 0
    other = DirectoryStore(store.path)  # each instance looks at the mtime once itself
    assert fstats_of(lambda: other.get(key(1)), monkeypatch) == 1
    assert store.stats().hits == 6


def test_an_old_entry_is_marked_used_by_the_first_hit_of_each_process(
    store: DirectoryStore,
) -> None:
    store[key(1)] = "v"
    path = store.backend.path(key(1))
    old = time.time() - 3600
    os.utime(path, (old, old))
    assert store.get(key(1)) == "v"
    assert os.stat(path).st_mtime > old + 3000


def test_an_entry_replaced_since_its_last_hit_is_read_whole_or_is_a_counted_miss(
    store: DirectoryStore,
) -> None:
    store[key(1)] = "small"
    assert store.get(key(1)) == "small"
    big = "x" * 200_000  # larger than at the last hit: read past the size remembered
    store[key(1)] = big
    assert store.get(key(1)) == big
    Path(store.backend.path(key(1))).write_bytes(b"damaged")
    assert store.get(key(1)) is None
    assert store.stats().errors == 1
    assert not os.path.exists(store.backend.path(key(1)))
    store[key(1)] = "again"
    assert store.get(key(1)) == "again"


def test_hits_from_many_threads_are_all_counted(store: DirectoryStore) -> None:
    store[key(1)] = 1

    def hit() -> None:
        for _ in range(500):
            assert store.get(key(1)) == 1

    threads = [threading.Thread(target=hit) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    stats = store.stats()
    assert (stats.hits, stats.misses) == (4000, 0)
    assert store.stats().hits == 4000  # reading the counters counts nothing


def test_hits_make_the_counters_due_for_writing(store: DirectoryStore) -> None:
    store[key(1)] = 1
    store.flush()
    assert store.counters.dirty is False
    store.get(key(1))
    assert store.counters.dirty is True
    store.flush()
    assert store.counters.dirty is False


def test_a_read_only_store_leaves_an_old_entry_untouched(tmp_path: Path) -> None:
    DirectoryStore(tmp_path / "cache")[key(1)] = 1
    reader = DirectoryStore(tmp_path / "cache", read_only=True)
    path = reader.backend.path(key(1))
    old = time.time() - 3600
    os.utime(path, (old, old))
    assert reader[key(1)] == 1
    assert os.stat(path).st_mtime == pytest.approx(old)


@pytest.mark.parametrize(
    "options", [{"secret": b"s"}, {"codec": "safe"}], ids=["signed", "safe-codec"]
)
def test_stores_that_refuse_plain_entries_still_refuse_them(
    tmp_path: Path, options: dict[str, Any]
) -> None:
    DirectoryStore(tmp_path / "cache")[key(1)] = ["a plain", "pickle"]
    strict = DirectoryStore(tmp_path / "cache", **options)
    assert strict.get(key(1)) is None
    assert strict.stats().errors == 1


# -- the hit path decides as the codec does -------------------------------------------------
values = st.one_of(st.binary(max_size=32), st.text(max_size=16), st.integers(), st.none())
edits = st.lists(
    st.tuples(st.sampled_from(["flip", "cut", "insert"]), st.integers(0, 400), st.integers(1, 255)),
    max_size=3,
)


def mutate(blob: bytes, changes: list[tuple[str, int, int]]) -> bytes:
    out = bytearray(blob)
    for kind, at, byte in changes:
        if kind == "flip" and out:
            out[at % len(out)] ^= byte
        elif kind == "cut":
            del out[at:]
        elif kind == "insert":
            out.insert(at, byte)
    return bytes(out)


@settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(value=values, changes=edits, created=st.sampled_from([1.7e9, -1.0, 1e12]))
def test_the_hit_path_gives_what_the_codec_gives(
    tmp_path: Path, value: Any, changes: list[tuple[str, int, int]], created: float
) -> None:
    store = DirectoryStore(tmp_path / uuid.uuid4().hex)
    blob = mutate(codec.pack_entry(key(1), value, info={"step": "s"}, created=created), changes)
    try:
        expected = codec.unpack_entry(blob, key(1))
    except codec.CorruptEntry:
        expected = MISSING
    path = Path(store.backend.path(key(1)))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(blob)
    assert store.get(key(1), MISSING) == expected
    stats = store.stats()
    if expected is MISSING:
        assert (stats.hits, stats.misses, stats.errors) == (0, 1, 1)
        assert not path.exists()
    else:
        assert (stats.hits, stats.misses, stats.errors) == (1, 0, 0)
    store.close()
