"""Code the S3 tests run in child processes (importable by them; imports no pytest)."""

from __future__ import annotations

import os
import time
from typing import Any

from stepcache import open_store
from stepcache.testing.values import key


def rounds_of_one_key(
    start: Any, spec: str, env: dict[str, str], rounds: int, calls: str
) -> list[str]:
    """Ask for a new missing key in each of ``rounds`` rounds, all processes at once."""
    os.environ.update(env)  # a forked server's environment predates the test's
    store = open_store(spec)
    results = []
    for r in range(rounds):
        start.wait(timeout=60)

        def compute(r: int = r) -> str:
            # One marker per computation: the test counts them per round.
            with open(os.path.join(calls, f"{r}-{os.getpid()}"), "x"):
                pass
            time.sleep(0.1)  # work: the other processes ask while it runs
            return f"round {r}"

        results.append(store.get_or_compute(key(1000 + r), compute, timeout=60))
    return results


def hold_key(
    spec: str, env: dict[str, str], k: str, holding: Any, release: Any, lease: float
) -> None:
    """Compute ``k`` and, while holding its lease, wait for ``release`` (or to be killed)."""
    os.environ.update(env)
    store = open_store(spec, lease=lease)

    def compute() -> str:
        holding.set()
        release.wait(60)
        return "from the holder"

    store.get_or_compute(k, compute, timeout=60)


def compute_marked(
    start: Any, spec: str, env: dict[str, str], k: str, calls: str, lease: float
) -> str:
    """``get_or_compute(k)``, leaving a marker file per computation."""
    os.environ.update(env)
    store = open_store(spec, lease=lease)

    def compute() -> str:
        with open(os.path.join(calls, str(os.getpid())), "x"):
            pass
        return "from a waiter"

    start.wait(timeout=60)
    value: str = store.get_or_compute(k, compute, timeout=60)
    return value
