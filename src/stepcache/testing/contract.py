"""``StoreContract``: the behaviour every store must have, as a reusable pytest class.

A backend's tests subclass it and provide a ``store`` fixture returning a
fresh, empty, writable store::

    import pytest
    from stepcache.testing import StoreContract

    class TestMyStore(StoreContract):
        persistent = True          # a reopened store sees the entries

        @pytest.fixture
        def store(self, tmp_path):
            return MyStore(tmp_path)

Hooks a subclass may override: :meth:`StoreContract.reopen` (another
instance on the same data, with other options) and
:meth:`StoreContract.corrupt` (damage an entry where it is stored; the
default rewrites it through ``store.backend.save``).
"""

from __future__ import annotations

import multiprocessing
import pickle
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import pytest

from stepcache.errors import InvalidKeyError, ReadOnlyStoreError
from stepcache.stores.base import Store
from stepcache.stores.registry import open_store, reset_registry
from stepcache.testing.faults import DAMAGES, Unloadable, damage, failing_writes
from stepcache.testing.values import key, tree

__all__ = ["StoreContract", "key", "tree"]


_VALUES: dict[str, Any] = {
    "bytes": b"\x00\x01 raw bytes \xff",
    "empty-bytes": b"",
    "str": "naïve text ∂",
    "nested": {"a": [1, 2.5, None, True], "b": ("t", frozenset({1, 2})), "c": {"d": b"x"}},
    "big-int": 2**200,
    "large-bytes": bytes(range(256)) * 4096,
}
_BAD_KEYS: list[Any] = [
    "../" + "a" * 32,
    "/" + "a" * 32,
    "a" * 31 + "\0",
    "a" * 65,
    "A" * 32,
    "abc",
    "g" * 32,
    123,
    None,
]


class StoreContract:
    """Behaviour every :class:`~stepcache.Store` must have; subclass it to test a backend."""

    #: whether :meth:`reopen` sees the entries of the original store
    persistent: ClassVar[bool] = True

    def reopen(self, store: Store, **options: Any) -> Store:
        """Another instance on the same data as ``store``, with ``options`` changed."""
        return open_store(store.spec, **{**store.options(), **options})

    def corrupt(self, store: Store, k: str, kind: str) -> None:
        """Damage the entry under ``k`` as :func:`stepcache.testing.damage` ``kind`` says."""
        blob = store.backend.load(k)
        assert blob is not None
        store.backend.save(k, damage(blob, kind))

    @pytest.fixture(autouse=True)
    def _isolated_registry(self) -> Any:
        yield
        reset_registry()

    # -- mapping semantics ---------------------------------------------------
    def test_set_then_get_returns_the_value(self, store: Store) -> None:
        store[key(1)] = {"answer": 42}
        assert store[key(1)] == {"answer": 42}
        assert store.get(key(1)) == {"answer": 42}

    def test_missing_key_raises_key_error_and_get_returns_default(self, store: Store) -> None:
        with pytest.raises(KeyError):
            store[key(1)]
        assert store.get(key(1)) is None
        assert store.get(key(1), "default") == "default"

    def test_delete_removes_the_entry_and_a_missing_one_raises(self, store: Store) -> None:
        store[key(1)] = 1
        del store[key(1)]
        assert key(1) not in store
        with pytest.raises(KeyError):
            del store[key(1)]

    def test_contains_len_and_iter_reflect_the_entries(self, store: Store) -> None:
        keys = {key(n) for n in range(5)}
        for k in keys:
            store[k] = k
        assert len(store) == 5
        assert set(store) == keys
        assert all(k in store for k in keys)
        assert key(99) not in store

    def test_clear_removes_every_entry(self, store: Store) -> None:
        for n in range(3):
            store[key(n)] = n
        store.clear()
        assert len(store) == 0
        assert list(store) == []

    def test_overwrite_replaces_the_value(self, store: Store) -> None:
        store[key(1)] = "old"
        store[key(1)] = "new"
        assert store[key(1)] == "new"
        assert len(store) == 1

    @pytest.mark.parametrize("bad", _BAD_KEYS, ids=repr)
    def test_invalid_keys_are_rejected(self, store: Store, bad: Any) -> None:
        with pytest.raises(InvalidKeyError):
            store[bad] = 1
        with pytest.raises(InvalidKeyError):
            store.get(bad)
        with pytest.raises(InvalidKeyError):
            del store[bad]
        with pytest.raises(InvalidKeyError):
            store.get_or_compute(bad, lambda: 1)
        assert bad not in store
        assert len(store) == 0

    @pytest.mark.parametrize("name", sorted(_VALUES))
    def test_values_round_trip(self, store: Store, name: str) -> None:
        store[key(1)] = _VALUES[name]
        assert store[key(1)] == _VALUES[name]
        assert type(store[key(1)]) is type(_VALUES[name])

    def test_bytes_are_stored_raw(self, store: Store) -> None:
        store[key(1)] = b"payload"
        header = store.header(key(1))
        assert header is not None
        assert (header.codec, header.payload_bytes) == ("raw", len(b"payload"))

    # -- get_or_compute and counting -------------------------------------------
    def test_get_or_compute_computes_once_and_counts(self, store: Store) -> None:
        calls: list[int] = []

        def compute() -> str:
            calls.append(1)
            return "value"

        assert store.get_or_compute(key(1), compute) == "value"
        assert store.get_or_compute(key(1), compute) == "value"
        assert len(calls) == 1
        stats = store.stats()
        assert (stats.hits, stats.misses, stats.writes) == (1, 1, 1)

    def test_get_or_compute_runs_once_for_concurrent_threads(self, store: Store) -> None:
        calls: list[int] = []
        start = threading.Barrier(8)

        def compute() -> int:
            calls.append(1)
            time.sleep(0.05)  # work: keeps the other threads arriving while it runs
            return 7

        results: list[Any] = []

        def worker() -> None:
            start.wait(timeout=10)
            results.append(store.get_or_compute(key(1), compute))

        threads = [threading.Thread(target=worker) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=30)
        assert results == [7] * 8
        assert len(calls) == 1

    def test_failed_computation_propagates_and_stores_nothing(self, store: Store) -> None:
        def compute() -> None:
            raise ZeroDivisionError("step failed")

        with pytest.raises(ZeroDivisionError):
            store.get_or_compute(key(1), compute)
        assert key(1) not in store
        assert store.get_or_compute(key(1), lambda: "second try") == "second try"

    def test_unstorable_result_is_returned_and_counted_as_error(self, store: Store) -> None:
        value = threading.Lock()  # cannot be pickled
        assert store.get_or_compute(key(1), lambda: value) is value
        assert key(1) not in store
        assert store.stats().errors == 1

    def test_failing_write_is_counted_not_raised(self, store: Store) -> None:
        with failing_writes(store):
            assert store.get_or_compute(key(1), lambda: 7) == 7
            assert store.set(key(2), 1) is False
        assert store.stats().errors == 2
        assert key(1) not in store

    def test_stats_count_hits_misses_writes_and_entries(self, store: Store) -> None:
        store.get(key(1))
        store[key(1)] = 1
        store.get(key(1))
        store[key(1)]
        stats = store.stats()
        assert (stats.hits, stats.misses, stats.writes, stats.errors) == (2, 1, 1, 0)
        assert stats.entries == 1
        assert stats.bytes > 0

    @pytest.mark.parametrize("kind", DAMAGES)
    def test_damaged_entry_is_a_counted_miss_and_removed(self, store: Store, kind: str) -> None:
        store[key(1)] = {"value": 1}
        self.corrupt(store, key(1), kind)
        assert store.get(key(1), "default") == "default"
        stats = store.stats()
        assert (stats.errors, stats.misses, stats.hits) == (1, 1, 0)
        assert key(1) not in store
        assert store.get_or_compute(key(1), lambda: "again") == "again"
        assert store[key(1)] == "again"

    # -- headers -----------------------------------------------------------------
    def test_header_reads_info_without_decoding_the_value(self, store: Store) -> None:
        store.set(key(1), Unloadable(), info={"step": "translate", "label": "laplacian"})
        header = store.header(key(1))
        assert header is not None
        assert (header.key, header.step, header.label, header.codec) == (
            key(1),
            "translate",
            "laplacian",
            "pickle",
        )
        assert [h.key for h in store.headers()] == [key(1)]
        assert store.header(key(2)) is None
        assert store.stats().errors == 0
        assert store.get(key(1)) is None  # decoding fails: a counted miss
        assert store.stats().errors == 1

    # -- artifact directories ------------------------------------------------
    def test_put_dir_and_get_dir_round_trip_a_tree(self, store: Store, tmp_path: Path) -> None:
        src = tmp_path / "build"
        (src / "include").mkdir(parents=True)
        (src / "libstencil.so").write_bytes(b"\x7fELF" + bytes(range(256)) * 40)
        (src / "include" / "stencil.h").write_text("void run(double *);\n")
        (src / "empty").mkdir()
        stored = store.put_dir(key(1), src)
        assert tree(stored) == tree(src)
        got = store.get_dir(key(1))
        assert got is not None
        assert tree(got) == tree(src)
        assert store.get_dir(key(2)) is None
        stats = store.stats()
        assert (stats.hits, stats.misses) == (1, 1)

    def test_get_or_compute_dir_builds_once_and_takes_the_tree_over(
        self, store: Store, tmp_path: Path
    ) -> None:
        builds: list[Path] = []

        def build() -> Path:
            out = tmp_path / f"build{len(builds)}"
            out.mkdir()
            (out / "libp.so").write_bytes(b"\x7fELF" * 100)
            builds.append(out)
            return out

        info = {"step": "Compile", "label": "lap"}
        first = store.get_or_compute_dir(key(1), build, info=info)
        again = store.get_or_compute_dir(key(1), build, info=info)
        assert len(builds) == 1
        assert not builds[0].exists()  # handed over to the store
        assert tree(first) == tree(again) == {"libp.so": b"\x7fELF" * 100}
        header = store.header(key(1))
        assert header is not None
        assert (header.step, header.label) == ("Compile", "lap")
        steps = store.stats().steps["Compile"]
        assert (steps.hits, steps.misses, steps.writes) == (1, 1, 1)

    # -- options, read-only, pickling ------------------------------------------
    def test_read_only_store_refuses_writes(self, store: Store, tmp_path: Path) -> None:
        store[key(1)] = "kept"
        ro = self.reopen(store, read_only=True)
        writes: dict[str, Callable[[], object]] = {
            "set": lambda: ro.set(key(1), 2),
            "setitem": lambda: ro.__setitem__(key(1), 2),
            "delitem": lambda: ro.__delitem__(key(1)),
            "clear": ro.clear,
            "put_dir": lambda: ro.put_dir(key(1), tmp_path),
        }
        for write in writes.values():
            with pytest.raises(ReadOnlyStoreError):
                write()
        assert ro.get_or_compute(key(2), lambda: "computed") == "computed"
        assert key(2) not in store
        if self.persistent:
            assert ro[key(1)] == "kept"
        assert store[key(1)] == "kept"

    def test_pickle_round_trip_gives_a_usable_store_with_the_same_spec(self, store: Store) -> None:
        store[key(1)] = "before"
        clone = pickle.loads(pickle.dumps(store))
        assert clone.spec == store.spec
        clone[key(2)] = "after"
        assert clone[key(2)] == "after"
        if self.persistent:
            assert clone[key(1)] == "before"
        opened = open_store(store.spec, **store.options())
        assert pickle.loads(pickle.dumps(opened)) is opened

    def test_store_pickled_into_a_spawned_process_works_there(self, store: Store) -> None:
        store[key(1)] = "from the parent"
        ctx = multiprocessing.get_context("spawn")  # a fresh interpreter: nothing registered
        with ctx.Pool(1) as pool:
            seen = pool.apply_async(_use_in_child, (pickle.dumps(store),)).get(timeout=90)
        assert seen == ("from the parent" if self.persistent else None)
        if self.persistent:
            assert store[key(2)] == "from the child"

    def test_reopened_store_sees_the_entries(self, store: Store) -> None:
        if not self.persistent:
            pytest.skip("this backend keeps entries in one instance only")
        store[key(1)] = [1, 2, 3]
        assert self.reopen(store)[key(1)] == [1, 2, 3]

    def test_context_manager_closes_the_store(self, store: Store) -> None:
        with store as entered:
            entered[key(1)] = 1
        assert store.closed


def _use_in_child(blob: bytes) -> Any:
    """In a spawned process: unpickle a store, read key 1, write key 2."""
    store = pickle.loads(blob)
    seen = store.get(key(1))
    store[key(2)] = "from the child"
    store.flush()
    return seen
