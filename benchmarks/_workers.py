"""A pool of spawned worker processes that start every task at the same instant.

Process start-up (an interpreter, imports) would swamp what the process
scenarios measure, so workers are started once per scenario and reused: for
each round every worker receives the task, gets ready, and all are released
together by a barrier. The wall time of a round runs from that release to
the last worker's finish (``time.monotonic`` is system-wide on Linux)::

    with Lockstep(8) as pool:
        pool.run(preload, ["stepcache"])                # untimed: imports
        rnd = pool.run(task, "/tmp/c", 0.5)             # task(index, "/tmp/c", 0.5) in each
        rnd.wall_s, rnd.results

A task is a module-level function (pickled by reference); it receives the
worker's index first. An exception in a task is returned as its result
(``Failed``), never lost; a worker silent past the deadline fails the round.
Scenarios in one run share a pool through :func:`shared` (starting twelve
interpreters costs more than some scenarios measure); a round may use only
the first ``active`` workers, the others idle through it.
"""

from __future__ import annotations

import atexit
import dataclasses
import multiprocessing
import queue
import threading
import time
from collections.abc import Callable
from typing import Any

__all__ = ["Failed", "Lockstep", "Round", "shared"]


@dataclasses.dataclass(frozen=True)
class Failed:
    """A task that raised: the exception's type name and message."""

    kind: str
    message: str


@dataclasses.dataclass(frozen=True)
class Round:
    """One task run by every worker: wall time from release to the last finish, and results."""

    wall_s: float
    results: list[Any]


def _idle(index: int) -> None:
    return None


def _serve(index: int, tasks: Any, barrier: Any, results: Any) -> None:
    while (task := tasks.get()) is not None:
        fn, args = task
        try:
            barrier.wait(timeout=600)
        except threading.BrokenBarrierError:
            return
        try:
            out: Any = fn(index, *args)
        except Exception as exc:
            out = Failed(type(exc).__name__, str(exc)[:200])
        results.put((index, time.monotonic(), out))


class Lockstep:
    """``n`` spawned workers running tasks in lockstep; a context manager that stops them."""

    def __init__(self, n: int, *, timeout: float = 300.0) -> None:
        ctx = multiprocessing.get_context("spawn")
        self.n, self.timeout = n, timeout
        self.broken = False  #: a round failed: results of later rounds could be mixed up
        self._barrier = ctx.Barrier(n + 1)
        self._tasks = [ctx.Queue() for _ in range(n)]
        self._results = ctx.Queue()
        # Daemons: workers never outlive an interrupted benchmark.
        self._procs = [
            ctx.Process(target=_serve, args=(i, q, self._barrier, self._results), daemon=True)
            for i, q in enumerate(self._tasks)
        ]
        for p in self._procs:
            p.start()

    def run(self, fn: Callable[..., Any], *args: Any, active: int | None = None) -> Round:
        """Run ``fn(index, *args)`` in the first ``active`` workers (default all) at once.

        Returns the wall time and their results in index order. A round that
        times out or loses a worker breaks the pool (see :attr:`broken`).
        """
        active = self.n if active is None else active
        if not 0 < active <= self.n:
            raise ValueError(f"active must be in 1..{self.n}, not {active}")
        try:
            return self._round(fn, args, active)
        except BaseException:
            self.broken = True
            raise

    def _round(self, fn: Callable[..., Any], args: tuple[Any, ...], active: int) -> Round:
        for i, q in enumerate(self._tasks):
            q.put((fn, args) if i < active else (_idle, ()))
        self._barrier.wait(timeout=self.timeout)
        start = time.monotonic()
        deadline = start + self.timeout
        results: list[Any] = [None] * self.n
        ends: list[float] = []
        for _ in range(self.n):
            try:
                index, end, out = self._results.get(timeout=max(0.1, deadline - time.monotonic()))
            except queue.Empty:
                raise TimeoutError(f"a benchmark worker ran past {self.timeout:g} s") from None
            results[index] = out
            if index < active:
                ends.append(end)
        return Round(max(ends) - start, results[:active])

    def close(self) -> None:
        """Stop the workers (politely, then by force)."""
        for q in self._tasks:
            q.put(None)
        self._barrier.abort()
        for p in self._procs:
            p.join(timeout=10)
            if p.is_alive():
                p.kill()
                p.join()

    def __enter__(self) -> Lockstep:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


_shared: list[Lockstep] = []


def shared(n: int) -> Lockstep:
    """A pool of at least ``n`` workers, kept for later scenarios and stopped at exit."""
    if _shared and _shared[0].n >= n and not _shared[0].broken:
        return _shared[0]
    close_shared()
    _shared.append(Lockstep(n))
    return _shared[0]


def close_shared() -> None:
    """Stop the shared pool, if any."""
    while _shared:
        _shared.pop().close()


atexit.register(close_shared)
