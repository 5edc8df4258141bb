"""A directory in front of S3 (SeaweedFS): contract, sharing, read-only, single flight, outages."""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from s3_workers import rounds_of_one_key
from store_workers import run_all

from stepcache import open_store
from stepcache.demo.programs import suite
from stepcache.demo.runner import run_suite
from stepcache.stores.directory import DirectoryStore
from stepcache.stores.s3 import S3Backend, S3Store
from stepcache.stores.tiered import TieredStore
from stepcache.testing import StoreContract, damage
from stepcache.testing.contract import key
from stepcache.testing.s3_server import S3Server

pytest.importorskip("obstore", reason="the s3 extra is not installed: pip install -e '.[s3]'")
pytestmark = pytest.mark.timeout(180)


@pytest.fixture(autouse=True)
def _secret(s3_credentials: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STEPCACHE_SECRET", "team-secret")


@pytest.fixture
def s3_spec(s3_server: S3Server) -> str:
    return f"s3://{s3_server.bucket}/t{uuid.uuid4().hex[:12]}?endpoint={s3_server.endpoint}"


def tiered(local: Path, remote: str, *flags: str) -> str:
    return f"tiered://dir://{local}+{remote}" + "".join(f"&{f}" for f in flags)


class TestTieredDirectoryAndS3(StoreContract):
    def corrupt(self, store: Any, k: str, kind: str) -> None:
        # A bad entry in the shared tier, which this machine does not have yet.
        blob = store.remote.backend.load(k)
        store.local.backend.remove(k)
        store.remote.backend.save(k, damage(blob, kind))

    @pytest.fixture
    def store(self, tmp_path: Path, s3_spec: str) -> TieredStore:
        return TieredStore(tiered(tmp_path / "local", s3_spec))


def test_joined_spec_opens_a_directory_in_front_of_s3(tmp_path: Path, s3_spec: str) -> None:
    store = open_store(tiered(tmp_path / "local", s3_spec + "&compress=zstd", "remote_backoff=5"))
    assert isinstance(store, TieredStore)
    assert isinstance(store.local, DirectoryStore)
    assert isinstance(store.remote, S3Store)
    assert store.remote.compress == "zstd"
    assert store.remote_backoff == 5.0
    store[key(1)] = "both tiers"
    assert store.remote[key(1)] == "both tiers"


def _s3_objects(spec: str) -> dict[str, tuple[int, float]]:
    return {e.key: (e.size, e.used) for e in S3Backend(spec).entries()}


@pytest.mark.slow
def test_second_machine_runs_the_demo_warm_and_a_read_only_one_writes_nothing(
    tmp_path: Path, s3_spec: str
) -> None:
    first = run_suite(suite(4), workers=2, store_spec=tiered(tmp_path / "a", s3_spec))
    assert first.verified
    assert first.compiles == 4
    stored = _s3_objects(s3_spec)
    assert len(stored) == 8  # a translation and a compiled tree per program
    second = run_suite(suite(4), workers=2, store_spec=tiered(tmp_path / "b", s3_spec))
    assert (second.compiles, second.translations, second.verified) == (0, 0, True)
    pull_request = tiered(tmp_path / "c", s3_spec, "remote_read_only=1")
    third = run_suite(suite(6), workers=2, store_spec=pull_request)
    assert (third.compiles, third.translations, third.verified) == (2, 2, True)
    assert _s3_objects(s3_spec) == stored  # nothing written, nothing touched
    assert len(DirectoryStore(tmp_path / "c")) == 12  # all of it kept locally


@pytest.mark.slow
def test_eight_processes_on_two_directories_compute_each_key_once(
    tmp_path: Path, s3_spec: str, s3_server: S3Server
) -> None:
    calls = tmp_path / "calls"
    calls.mkdir()
    specs = [tiered(tmp_path / f"local{n % 2}", s3_spec) for n in range(8)]
    env = {**s3_server.env, "STEPCACHE_SECRET": "team-secret"}
    results = run_all(
        rounds_of_one_key, [(spec, env, 20, str(calls)) for spec in specs], timeout=150
    )
    assert all(r == [f"round {n}" for n in range(20)] for r in results)
    per_round = [sum(1 for m in calls.iterdir() if m.name.startswith(f"{n}-")) for n in range(20)]
    assert per_round == [1] * 20


@pytest.mark.slow
def test_server_killed_mid_run_loses_no_result_and_writes_resume_after_restart(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(S3Backend, "backoff", 0.3)
    with S3Server() as server:
        for name, value in server.env.items():
            monkeypatch.setenv(name, value)
        remote = f"s3://{server.bucket}/outage?endpoint={server.endpoint}"
        store = open_store(tiered(tmp_path / "local", remote, "remote_backoff=0.3"))
        assert isinstance(store, TieredStore)
        results = [store.get_or_compute(key(n), lambda n=n: n * n) for n in range(10)]
        server.kill()
        results += [store.get_or_compute(key(n), lambda n=n: n * n) for n in range(10, 20)]
        assert results == [n * n for n in range(20)]
        assert all(store.local[key(n)] == n * n for n in range(20))  # 0 lost results
        assert store.stats().remote_errors >= 1
        server.start()
        s3 = S3Store(remote)
        # Bounded: the back-off is 0.3 s; each call is a new key, so it is a write.
        deadline = time.monotonic() + 30
        n = 20
        while time.monotonic() < deadline:
            assert store.get_or_compute(key(n), lambda n=n: n * n) == n * n
            if key(n) in s3:
                break
            n += 1
        assert key(n) in s3  # writes resumed
        assert all(s3[key(k)] == k * k for k in range(10))  # kept across the restart
