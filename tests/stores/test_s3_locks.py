"""Leases on S3 across real processes: one holder, liveness by seen heartbeat, one take-over."""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from s3_workers import compute_marked, hold_key
from store_workers import run_all

from stepcache.stores import _s3lease
from stepcache.stores.s3 import S3Store
from stepcache.testing.contract import key
from stepcache.testing.s3_server import S3Server

pytest.importorskip("obstore", reason="the s3 extra is not installed: pip install -e '.[s3]'")
pytestmark = [pytest.mark.timeout(120), pytest.mark.usefixtures("s3_credentials")]
ctx = multiprocessing.get_context("spawn")
LEASE = 1.0


@pytest.fixture
def s3_spec(s3_server: S3Server) -> str:
    return f"s3://{s3_server.bucket}/t{uuid.uuid4().hex[:12]}?endpoint={s3_server.endpoint}"


@pytest.fixture
def holder(s3_spec: str, s3_server: S3Server) -> Iterator[tuple[Any, Any]]:
    """A process holding the lease of key(1) until released, stopped or killed."""
    holding, release = ctx.Event(), ctx.Event()
    proc = ctx.Process(
        target=hold_key, args=(s3_spec, s3_server.env, key(1), holding, release, LEASE)
    )
    proc.start()
    assert holding.wait(60)
    yield proc, release
    if proc.is_alive():
        # SIGCONT first: Event.set() waits for a stopped waiter to wake. A killed
        # holder is never signalled: set() would wait for it forever.
        if proc.pid is not None:
            with_signal(proc.pid, signal.SIGCONT)
        release.set()
    proc.join(30)
    if proc.is_alive():
        proc.kill()
        proc.join()


def with_signal(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)


def test_a_live_holder_keeps_its_lease_past_the_lease_time(
    s3_spec: str, holder: tuple[Any, Any]
) -> None:
    store = S3Store(s3_spec, lease=LEASE)
    ops = store.backend._ops
    with _s3lease.hold(ops, f"leases/{key(1)}", time.monotonic() + 4 * LEASE) as held:
        assert held is False  # its heartbeat was seen changing the whole time
    proc, release = holder
    release.set()
    proc.join(30)
    assert proc.exitcode == 0
    assert store[key(1)] == "from the holder"


def test_a_killed_holder_is_taken_over(s3_spec: str, holder: tuple[Any, Any]) -> None:
    proc, _ = holder
    proc.kill()
    proc.join(30)
    store = S3Store(s3_spec, lease=LEASE)
    assert store.get_or_compute(key(1), lambda: "taken over", timeout=60) == "taken over"
    assert store.stats().remote_errors == 0


def test_a_frozen_holder_is_taken_over_by_exactly_one_waiter(
    s3_spec: str, s3_server: S3Server, holder: tuple[Any, Any], tmp_path: Path
) -> None:
    proc, _ = holder
    assert proc.pid is not None
    os.kill(proc.pid, signal.SIGSTOP)  # alive, but its heartbeat stops
    calls = tmp_path / "calls"
    calls.mkdir()
    args = [(s3_spec, s3_server.env, key(1), str(calls), LEASE)] * 4
    assert run_all(compute_marked, args, timeout=90) == ["from a waiter"] * 4
    assert len(list(calls.iterdir())) == 1


def test_a_released_lease_is_removed(s3_spec: str) -> None:
    store = S3Store(s3_spec, lease=LEASE)
    assert store.get_or_compute(key(2), lambda: 2) == 2
    assert store.backend._read_with_etag(f"leases/{key(2)}") is None
