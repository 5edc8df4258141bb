"""A Redis outage under a multi-process TieredStore workload: nothing lost, nothing raised."""

from __future__ import annotations

import json
import multiprocessing
import time
from multiprocessing.synchronize import Barrier
from pathlib import Path
from typing import Any

import pytest

import stepcache as sc
from stepcache.stores.directory import DirectoryStore
from stepcache.testing.contract import key
from stepcache.testing.redis_server import NO_SERVER_REASON, RedisServer, find_redis_server

pytestmark = [
    pytest.mark.timeout(120),
    pytest.mark.slow,
    pytest.mark.skipif(find_redis_server() is None, reason=NO_SERVER_REASON),
]

ctx = multiprocessing.get_context("spawn")
PHASES = (range(0, 40), range(40, 120))  # before the outage; while it starts and lasts


def expected(n: int) -> dict[str, int]:
    return {"n": n, "square": n * n}


def _workload(spec: str, barrier: Barrier, out: str) -> None:
    store = sc.open_store(spec)
    wrong = 0
    for phase in PHASES:
        for n in phase:
            wrong += store.get_or_compute(key(n), lambda n=n: expected(n)) != expected(n)
        barrier.wait(60)  # after phase 1 the server is killed, after phase 2 restarted
    barrier.wait(60)
    # After the back-off the remote is tried again: new results reach it again.
    reached, n, deadline = False, 1000, time.monotonic() + 30
    while not reached and time.monotonic() < deadline:
        n += 1
        wrong += store.get_or_compute(key(n), lambda n=n: expected(n)) != expected(n)
        reached = key(n) in store.remote  # type: ignore[attr-defined]
        time.sleep(0.01)  # pacing, not synchronisation: the loop ends on the condition
    stats = store.stats()
    result = {"wrong": wrong, "reached": reached, "remote_errors": stats.remote_errors}
    Path(out).write_text(json.dumps(result))


def test_redis_killed_mid_workload_loses_no_result_and_recovers(tmp_path: Path) -> None:
    server = RedisServer()
    try:
        barrier = ctx.Barrier(5)
        procs = []
        for i in range(4):  # two machines, two processes each
            local = tmp_path / f"machine{i % 2}"
            spec = f"tiered://?local={local}&remote={server.url}&remote_backoff=0.1"
            out = str(tmp_path / f"result{i}.json")
            procs.append(ctx.Process(target=_workload, args=(spec, barrier, out)))
        for proc in procs:
            proc.start()
        barrier.wait(60)
        server.kill()  # while the workers are already on to the next keys
        barrier.wait(60)
        server.restart()
        barrier.wait(60)
        for proc in procs:
            proc.join(60)
    finally:
        server.close()
    assert [proc.exitcode for proc in procs] == [0] * 4
    results: list[dict[str, Any]] = [
        json.loads((tmp_path / f"result{i}.json").read_text()) for i in range(4)
    ]
    assert [r["wrong"] for r in results] == [0] * 4
    assert [r["reached"] for r in results] == [True] * 4
    assert sum(r["remote_errors"] for r in results) > 0  # the outage was seen
    for machine in ("machine0", "machine1"):
        kept = DirectoryStore(tmp_path / machine, read_only=True)
        assert all(key(n) in kept for phase in PHASES for n in phase)
