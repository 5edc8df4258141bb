"""Edge cases found in review: each once returned a wrong answer or hung."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

import stepcache as sc
from stepcache.codec import pack_entry
from stepcache.stores.directory.eviction import ENTRIES

KEY = "ab" * 16


def test_tiered_store_never_writes_into_a_read_only_local_tier(tmp_path: Path) -> None:
    sc.DirectoryStore(tmp_path / "local")
    tiered = sc.TieredStore(
        [sc.DirectoryStore(tmp_path / "local", read_only=True), sc.MemoryStore()]
    )
    assert tiered.get_or_compute(KEY, lambda: 1) == 1
    assert [p for p in (tmp_path / "local").rglob("*") if p.is_file() and ENTRIES in p.parts] == []
    built = tmp_path / "build"

    def build() -> Path:
        built.mkdir()
        (built / "lib.so").write_bytes(b"ELF")
        return built

    got = tiered.get_or_compute_dir("cd" * 16, build)
    assert (got / "lib.so").read_bytes() == b"ELF"


def test_explain_does_not_call_a_damaged_entry_a_hit(tmp_path: Path) -> None:
    store = sc.DirectoryStore(tmp_path / "c")
    cached = sc.CachedStep(sc.step(str.upper), store)
    cached("lap")
    entry = next(p for p in (tmp_path / "c").rglob(cached.key_for("lap")) if p.is_file())
    entry.write_bytes(entry.read_bytes()[:-2])
    assert not cached.explain("lap").hit


@pytest.mark.parametrize("value", [(1, 2), {1: "a"}, [1, (2,)], {"x": {3, 4}}, math.nan])
def test_safe_codec_refuses_values_json_would_change(value: object) -> None:
    with pytest.raises(TypeError, match="safe"):
        pack_entry(KEY, value, codec="safe")


def test_safe_store_returns_the_same_value_on_hit_and_miss(tmp_path: Path) -> None:
    store = sc.DirectoryStore(tmp_path / "c", codec="safe")
    cached = sc.CachedStep(sc.step(lambda n: {str(n): [n, n]}), store)
    assert cached(1) == cached(1) == {"1": [1, 1]}
    tupled = sc.CachedStep(sc.step(lambda n: (n, n)), store)
    assert tupled(2) == tupled(2) == (2, 2)  # not storable safely: computed, never changed
    assert store.stats().errors == 2  # each of the two misses failed to store, counted


def test_open_store_accepts_mapping_options(tmp_path: Path) -> None:
    spec = f"tiered://?local={tmp_path / 'a'}&remote={tmp_path / 'b'}"
    first = sc.open_store(spec, local_options={"max_bytes": 10**9})
    assert first is sc.open_store(spec, local_options={"max_bytes": 10**9})


def test_an_infinite_timeout_waits_rather_than_overflowing() -> None:
    assert sc.MemoryStore().get_or_compute(KEY, lambda: 1, timeout=math.inf) == 1
