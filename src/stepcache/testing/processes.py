"""Child processes in tests: fresh interpreters, and results gathered under one deadline.

:func:`run_python` runs a snippet in a fresh interpreter (what a new test
worker, CLI call or CI job sees: nothing imported, nothing memoised) and
fails the test with the child's stderr if it does not exit cleanly.

Used by the concurrency tests of stores and shared filesystems: each child
puts ``(index, ok, value)`` on a queue (``ok`` false with a traceback as
``value`` when it raised); :func:`gather` returns the values in index order,
fails with the first traceback, and kills whatever still runs at the end.

:func:`wait_stopped` makes pausing a test server (``SIGSTOP``) take
effect before the test goes on: the signal is delivered to each thread on
its own, and a request sent in the meantime may still be answered.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["gather", "run_python", "wait_stopped"]


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


def wait_stopped(pid: int, timeout: float = 10.0) -> None:
    """Return once every thread of process ``pid`` is stopped (after ``SIGSTOP``).

    Returns at once where ``/proc`` cannot tell (no such directory, or the
    process is gone); raises :class:`TimeoutError` after ``timeout`` seconds.
    """
    deadline = time.monotonic() + timeout
    while True:
        try:
            states = []
            for task in os.listdir(f"/proc/{pid}/task"):
                with open(f"/proc/{pid}/task/{task}/stat", "rb") as f:
                    states.append(f.read().rpartition(b")")[2].split()[0])
        except (FileNotFoundError, ProcessLookupError):
            return
        if all(state in (b"T", b"t") for state in states):
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"process {pid} did not stop within {timeout} s")
        time.sleep(0.001)
