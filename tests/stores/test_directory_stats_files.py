"""Stats files are JSON written without importing :mod:`json` when the counters are plain."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from stepcache.stores.directory import DirectoryStore
from stepcache.stores.directory.statsfiles import dumps
from stepcache.testing import key

_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.tuples(inner, inner)
        | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)


@given(_JSON)
def test_dumps_writes_what_json_writes(value: Any) -> None:
    assert dumps(value) == json.dumps(value, separators=(",", ":"))


def test_escapes_and_other_types_are_left_to_json() -> None:
    for value in ['say "hi"', "a\\b", "tab\there", "\x7f", "café", "\udc80", float("nan"), True]:
        assert dumps({"label": [value]}) == json.dumps({"label": [value]}, separators=(",", ":"))


def test_counters_with_any_label_round_trip(tmp_path: Path) -> None:
    store = DirectoryStore(tmp_path)
    labels = ["plain", 'quote"d', "naïve", "new\nline"]
    for n, label in enumerate(labels):
        store.get(key(n), info={"step": "Parse", "label": label})
    store.flush()
    fresh = DirectoryStore(tmp_path, read_only=True)
    stats = fresh.stats()
    assert stats.misses == len(labels)
    assert [m.label for m in stats.recent_misses] == labels
    assert stats.steps["Parse"].misses == len(labels)


def test_a_flush_started_by_the_garbage_collector_inside_a_flush_returns(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A process leaving ran a store's exit flush; the garbage collector, run by
    # an allocation while the counters' lock was held, called the same store's
    # finalizer, a second flush, which waited for that lock for ever.
    from stepcache.stores._stats import Counters

    store = DirectoryStore(tmp_path)
    store.get(key(1))  # a miss: counters to write
    stats_file = store._stats_file
    assert stats_file is not None
    snapshot = Counters.snapshot
    nested: list[str] = []

    def collected_inside(self: Counters) -> Any:
        with self._lock:
            stats_file.flush()  # what the finalizer runs, in this thread
            _ = self.dirty  # another finalizer reading these counters
            nested.append("returned")
        return snapshot(self)

    monkeypatch.setattr(Counters, "snapshot", collected_inside)
    flushing = threading.Thread(target=stats_file.flush, daemon=True)
    flushing.start()
    flushing.join(timeout=10)
    assert not flushing.is_alive(), "a nested flush deadlocked"
    assert nested == ["returned"]
    monkeypatch.undo()
    assert DirectoryStore(tmp_path, read_only=True).stats().misses == 1
