"""Collecting the results of child processes, with one deadline for all of them.

Used by the concurrency tests of stores and shared filesystems: each child
puts ``(index, ok, value)`` on a queue (``ok`` false with a traceback as
``value`` when it raised); :func:`gather` returns the values in index order,
fails with the first traceback, and kills whatever still runs at the end.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

__all__ = ["gather"]


def gather(procs: Sequence[Any], queue: Any, timeout: float) -> list[Any]:
    """Start ``procs``, wait for one result each from ``queue``; kill stragglers at the end.

    Raises :class:`AssertionError` with the child's traceback when one
    failed, and :class:`queue.Empty` when the deadline passes first.
    """
    for proc in procs:
        proc.start()
    deadline = time.monotonic() + timeout
    results: dict[int, Any] = {}
    try:
        while len(results) < len(procs):
            index, ok, value = queue.get(timeout=max(0.1, deadline - time.monotonic()))
            if not ok:
                raise AssertionError(f"child {index} failed:\n{value}")
            results[index] = value
    finally:
        for proc in procs:
            proc.join(timeout=max(0.1, deadline - time.monotonic()))
            if proc.is_alive():
                proc.kill()
                proc.join()
    return [results[i] for i in range(len(procs))]
