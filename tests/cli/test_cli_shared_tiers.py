"""stats, ls and clear work the same on Redis and tiered stores as on a directory."""

from __future__ import annotations

import uuid
from pathlib import Path
from urllib.parse import quote

import pytest
from cli_run import run_cli, run_json

import stepcache as sc
from stepcache.testing.redis_server import RedisServer


@pytest.fixture(params=["redis", "tiered"])
def spec(
    request: pytest.FixtureRequest,
    redis_server: RedisServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> str:
    """A populated, signed store's spec: one entry per label for two steps."""
    monkeypatch.setenv("STEPCACHE_SECRET", "team-secret")  # the CLI inherits it
    url = f"{redis_server.url}?prefix=cli{uuid.uuid4().hex[:10]}:"
    if request.param == "redis":
        out = url
    else:
        out = f"tiered://?local={quote(str(tmp_path / 'local'))}&remote={quote(url)}"
    store = sc.open_store(out)
    for name in ("lap", "laplap", "skewedlap"):
        sc.CachedStep(sc.step(str.upper), store, label=lambda s: s)(name)
        sc.CachedStep(sc.step(str.lower), store, label=lambda s: s)(name)
    store.close()
    return out


def test_stats_counts_entries_and_steps(spec: str) -> None:
    st = run_json("stats", store=spec)
    assert st["entries"] == 6
    if spec.startswith("tiered://"):  # counters live in the local tier's stats files
        assert (st["writes"], st["misses"]) == (6, 6)
        assert set(st["steps"]) == {"str.upper", "str.lower"}


def test_ls_and_clear_by_label(spec: str) -> None:
    assert {e["label"] for e in run_json("ls", "--label", "lap", store=spec)} == {"lap"}
    assert len(run_json("ls", "--label", "*lap", store=spec)) == 6
    proc = run_cli("clear", "--label", "lap", "--yes", store=spec)
    assert proc.returncode == 0, proc.stderr
    left = sorted(str(e["label"]) for e in run_json("ls", store=spec))
    assert left == ["laplap", "laplap", "skewedlap", "skewedlap"]
