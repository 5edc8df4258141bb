"""Child processes in tests: fresh interpreters, and results gathered under one deadline.

:func:`run_python` runs a snippet in a fresh interpreter (what a new test
worker, CLI call or CI job sees: nothing imported, nothing memoised) and
fails the test with the child's stderr if it does not exit cleanly.

Used by the concurrency tests of stores and shared filesystems: each child
puts ``(index, ok, value)`` on a queue (``ok`` false with a traceback as
``value`` when it raised); :func:`gather` returns the values in index order,
fails with the first traceback, and kills whatever still runs at the end.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["gather", "run_python"]


def run_python(
    code: str, *args: str, env: Mapping[str, str] | None = None, timeout: float = 60.0
) -> subprocess.CompletedProcess[str]:
    """``python -c code args...`` in a fresh interpreter; its completed process (text output).

    ``env`` replaces the environment (default: this process's). Raises
    :class:`AssertionError` carrying the child's stderr unless it exits 0,
    and :class:`subprocess.TimeoutExpired` after ``timeout`` seconds.

    >>> run_python("import sys; print(sys.argv[1])", "hello").stdout
    'hello\\n'
    """
    proc = subprocess.run(
        [sys.executable, "-c", code, *args],
        capture_output=True,
        text=True,
        env=None if env is None else dict(env),
        timeout=timeout,
        check=False,
    )
    assert proc.returncode == 0, f"child exited {proc.returncode}:\n{proc.stderr}"
    return proc


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
