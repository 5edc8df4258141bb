"""prune, ls, stats, clear --label and verify on an S3 store through the CLI (SeaweedFS)."""

from __future__ import annotations

import time
import uuid

import pytest
from cli_run import run_cli, run_json

import stepcache as sc
from stepcache.codec import pack_entry
from stepcache.stores.s3 import S3Store
from stepcache.testing.contract import key
from stepcache.testing.s3_server import S3Server

pytest.importorskip("obstore", reason="the s3 extra is not installed: pip install -e '.[s3]'")
pytestmark = pytest.mark.timeout(120)


@pytest.fixture(autouse=True)
def _secret(s3_credentials: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STEPCACHE_SECRET", "team-secret")


@pytest.fixture
def spec(s3_server: S3Server) -> str:
    """A populated, signed S3 store: one entry per label for two steps."""
    out = f"s3://{s3_server.bucket}/cli{uuid.uuid4().hex[:10]}?endpoint={s3_server.endpoint}"
    store = sc.open_store(out)
    for name in ("lap", "laplap", "skewedlap"):
        sc.CachedStep(sc.step(str.upper), store, label=lambda s: s)(name)
        sc.CachedStep(sc.step(str.lower), store, label=lambda s: s)(name)
    return out


def test_stats_ls_and_clear_by_label(spec: str) -> None:
    assert run_json("stats", store=spec)["entries"] == 6
    assert {e["label"] for e in run_json("ls", "--label", "lap", store=spec)} == {"lap"}
    proc = run_cli("clear", "--label", "lap", "--yes", store=spec)
    assert proc.returncode == 0, proc.stderr
    assert len(run_json("ls", store=spec)) == 4


def test_verify_finds_a_tampered_object_and_repair_removes_it(spec: str) -> None:
    store = S3Store(spec)
    victim = next(iter(store))
    store.backend.save(victim, pack_entry(victim, "forged", secret=b"not-ours"))
    proc = run_cli("verify", "--json", store=spec)
    assert proc.returncode == 1
    assert run_json("verify", "--repair", store=spec)["repaired"] == 1
    assert victim not in store
    assert run_json("verify", store=spec)["checked"] == 5


def test_prune_max_age_removes_old_objects_and_keeps_recent_ones(spec: str) -> None:
    store = S3Store(spec)
    old = {e.key: e.used for e in store.entries()}
    # Age the six entries by the server's clock (its LastModified), not ours: write
    # probes until one is stamped 5 s after the newest of them (bounded).
    deadline = time.monotonic() + 30
    probe = key(9999)
    while time.monotonic() < deadline:
        store[probe] = "probe"
        if next(e.used for e in store.entries() if e.key == probe) >= max(old.values()) + 5:
            break
    fresh = key(1)
    store[fresh] = "recent"
    doc = run_json("prune", "--max-age", "3s", store=spec)
    assert doc["removed"] == 6
    assert set(store) == {probe, fresh}


def test_prune_max_size_evicts_least_recently_used_first(spec: str) -> None:
    store = S3Store(spec)
    total = sum(e.size for e in store.entries())
    doc = run_json("prune", "--max-size", str(total - 1), store=spec)
    assert doc["removed"] >= 1
    assert doc["bytes"] <= total - 1
    assert len(store) == 6 - doc["removed"]


def test_wrong_credentials_are_one_line_and_exit_3(
    spec: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wrong")
    for command in (["stats"], ["ls"], ["prune", "--max-age", "30d"]):
        proc = run_cli(*command, store=spec)
        assert proc.returncode == 3, (command, proc.stderr)
        assert "credentials" in proc.stderr
        assert "Traceback" not in proc.stderr


def test_missing_bucket_is_one_line_and_exit_3(s3_server: S3Server) -> None:
    proc = run_cli("ls", store=f"s3://no-such-bucket/x?endpoint={s3_server.endpoint}")
    assert proc.returncode == 3
    assert "does not exist" in proc.stderr
    assert "Traceback" not in proc.stderr
