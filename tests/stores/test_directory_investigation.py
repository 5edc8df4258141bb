"""The three findings that started stepcache, against DirectoryStore and fresh processes.

A CachedStep fills the store; a new, identical CachedStep built in a fresh
process (new objects, same configuration) leaves the entries alone; and it
reuses them: the wrapped step runs zero times.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import store_workers as w

from stepcache import CachedStep, open_store

pytestmark = [pytest.mark.slow, pytest.mark.timeout(90)]

PROGRAMS = ["laplacian", "hdiff", "vadv", "copy", "fvtp2d"]


@pytest.fixture
def filled(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[str, Path, dict[str, str]]:
    """A store filled by a CachedStep in this process: (store path, calls dir, key -> output)."""
    store_path, calls = str(tmp_path / "cache"), tmp_path / "calls"
    calls.mkdir()
    monkeypatch.setenv(w.CALLS_ENV, str(calls))
    cached = CachedStep(w.CountingTranslate(opt_level=2), open_store(store_path), version="1")
    outputs = {cached.key_for(p): cached(p) for p in PROGRAMS}
    return store_path, calls, outputs


def test_cached_step_fills_the_store(filled: tuple[str, Path, dict[str, str]]) -> None:
    store_path, calls, outputs = filled
    store = open_store(store_path)
    assert w.calls_made(calls) == len(PROGRAMS)
    assert sorted(store) == sorted(outputs)
    assert {k: store[k] for k in store} == outputs


def test_new_identical_cached_step_in_a_fresh_process_keeps_the_entries(
    filled: tuple[str, Path, dict[str, str]],
) -> None:
    store_path, calls, outputs = filled
    (fresh,) = w.run_all(w.run_pipeline, [(store_path, str(calls), PROGRAMS, False)], fresh=True)
    assert fresh["entries"] == sorted(outputs)
    store = open_store(store_path)
    assert {k: store[k] for k in store} == outputs


def test_new_identical_cached_step_in_a_fresh_process_reuses_the_cache(
    filled: tuple[str, Path, dict[str, str]],
) -> None:
    store_path, calls, outputs = filled
    (fresh,) = w.run_all(w.run_pipeline, [(store_path, str(calls), PROGRAMS, True)], fresh=True)
    assert fresh["keys"] == list(outputs)
    assert fresh["outputs"] == list(outputs.values())
    assert (fresh["hits"], fresh["misses"]) == (len(PROGRAMS), 0)
    assert w.calls_made(calls) == len(PROGRAMS)  # the inner step ran zero more times
