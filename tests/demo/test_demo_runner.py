"""The suite run in spawned worker processes: no cache, cold, warm."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import stepcache as sc
from stepcache.demo.programs import suite
from stepcache.demo.runner import run_demo, run_suite

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]

WORKERS = 2
PROGRAMS = 6


@pytest.fixture(autouse=True)
def _isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # Workers inherit the environment: keep identity memos out of the user's cache.
    monkeypatch.setenv("STEPCACHE_MEMO_DIR", str(tmp_path / "memo"))


def test_demo_runs_no_cache_cold_and_warm_with_the_counts_of_a_working_cache(
    tmp_path: Path,
) -> None:
    spec = str(tmp_path / "cache")
    sc.open_store(spec)[("ab" * 16)] = "an entry the demo must not clear"
    seen: list[tuple[str, int, int]] = []
    report = run_demo(
        programs=PROGRAMS, workers=WORKERS, store=spec, progress=lambda *a: seen.append(a)
    )
    no_cache, cold, warm = (run.to_dict() for run in report.runs)
    n, steps = PROGRAMS, 2 * PROGRAMS  # two cached steps per program: translate, compile

    assert report.verified
    assert [r["name"] for r in (no_cache, cold, warm)] == ["no-cache", "cold", "warm"]
    assert (no_cache["compiles"], no_cache["translations"]) == (n, n)
    assert (no_cache["hits"], no_cache["misses"], no_cache["instances"]) == (0, 0, 0)
    assert (cold["compiles"], cold["translations"]) == (n, n)
    assert (cold["hits"], cold["misses"]) == (0, steps)
    assert (warm["compiles"], warm["translations"]) == (0, 0)
    assert (warm["hits"], warm["misses"]) == (steps, 0)
    # each worker opened the store once per pipeline variant, and got one instance
    assert cold["instances"] == warm["instances"] == WORKERS
    assert (cold["new_keys"], warm["new_keys"]) == (steps, 0)
    assert cold["entries"] == warm["entries"] == steps + 1
    assert len(sc.open_store(spec)) == steps + 1

    assert seen == [
        (name, i, n) for name in ("no-cache", "first", "second") for i in range(1, n + 1)
    ]


def test_demo_report_has_the_documented_json_form() -> None:
    report = run_demo(programs=2, workers=1, fresh=True)
    data = report.to_dict()
    assert set(data) == {"runs", "verified", "programs", "store", "kept"}
    assert data["kept"] is False
    assert not os.path.exists(data["store"].removeprefix("dir://"))
    assert data["programs"] == 2
    assert data["verified"] is True
    keys = {
        "name",
        "wall_s",
        "compiles",
        "translations",
        "hits",
        "misses",
        "instances",
        "entries",
        "new_keys",
    }
    for run in data["runs"]:
        assert set(run) == keys
        assert isinstance(run["wall_s"], float)
        assert all(isinstance(run[k], int) for k in keys - {"name", "wall_s"})
    assert [r["compiles"] for r in data["runs"]] == [2, 2, 0]
    assert data["runs"][1]["entries"] == 4


def test_worker_errors_reach_the_caller(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CC", "/nonexistent/cc")
    with pytest.raises(sc.CompilerError, match="/nonexistent/cc"):
        run_suite(suite(3), workers=1, store_spec=None)


def test_run_suite_rejects_zero_workers() -> None:
    with pytest.raises(ValueError, match="workers"):
        run_suite(suite(1), workers=0, store_spec=None)


def test_workers_leave_no_temp_files_and_every_result_arrives(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Workers end with os._exit once their results are sent: the results must
    # still all arrive, and their exit handlers still remove what they made.
    temp = tmp_path / "temp"
    temp.mkdir()
    monkeypatch.setenv("TMPDIR", str(temp))
    spec = str(tmp_path / "cache")
    for expected_hits in (0, 2 * PROGRAMS):
        result = run_suite(suite(PROGRAMS), workers=WORKERS, store_spec=spec)
        assert result.verified
        assert (result.programs, result.hits, result.instances) == (
            PROGRAMS,
            expected_hits,
            WORKERS,
        )
    assert sorted(os.listdir(temp)) == []
