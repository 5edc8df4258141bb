"""Code the store tests run in child processes, and a runner with deadlines.

Importable by spawned children (its directory is on the parent's
``sys.path``, which ``spawn`` passes on); it imports no pytest.
"""

from __future__ import annotations

import dataclasses
import multiprocessing
import os
import random
import signal
import threading
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from stepcache import CachedStep, StepBase, open_store, reset_registry
from stepcache.stores.directory import DirectoryStore
from stepcache.testing.processes import gather
from stepcache.testing.values import checked_value, is_whole, key

CALLS_ENV = "STEPCACHE_TEST_CALLS_DIR"


# -- running children ------------------------------------------------------------
def context() -> multiprocessing.context.BaseContext:
    """The multiprocessing context of the tests: children forked from a clean server.

    The fork server is a fresh interpreter (like ``spawn``) that imports
    stepcache once; each child is forked from it, single-threaded, in
    milliseconds instead of the half second a spawned interpreter needs to
    import stepcache on a small machine. (This module itself is not
    preloaded: the server does not get the tests' ``sys.path`` before 3.12.)
    """
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["stepcache", "stepcache.stores.directory", "stepcache.testing"])
    return ctx


def _report(queue: Any, index: int, target: Callable[..., Any], args: tuple[Any, ...]) -> None:
    try:
        queue.put((index, True, target(*args)))
    except BaseException:
        queue.put((index, False, traceback.format_exc()))


def run_all(
    target: Callable[..., Any],
    args: list[tuple[Any, ...]],
    timeout: float = 60,
    fresh: bool = False,
) -> list[Any]:
    """Run ``target(start, *a)`` for each ``a`` in a child process; return their results.

    ``start`` is a barrier for all of them (call ``start.wait(timeout=...)``).
    ``fresh=True`` spawns new interpreters instead of forking the server
    (for tests about what a new interpreter computes, such as keys).
    A child that raises fails the call with its traceback; children still
    running at the deadline are killed.
    """
    ctx = multiprocessing.get_context("spawn") if fresh else context()
    queue = ctx.Queue()
    start = ctx.Barrier(len(args))
    procs = [
        ctx.Process(target=_report, args=(queue, i, target, (start, *a)), daemon=True)
        for i, a in enumerate(args)
    ]
    return gather(procs, queue, timeout)


def dead_pid() -> int:
    """The pid of a child process that has exited (and been reaped)."""
    proc = context().Process(target=os.getpid)
    proc.start()
    proc.join(timeout=30)
    assert proc.pid is not None
    return proc.pid


# -- workers -----------------------------------------------------------------------
def use_store(path: str, k: str, hits: int) -> None:
    """Look ``k`` up ``hits`` times in a store of this process, then return (and exit)."""
    store = DirectoryStore(path)
    for _ in range(hits):
        store.get(k)


def hammer(start: Any, path: str, worker: int, instances: int, ops: int) -> dict[str, int]:
    """Open ``instances`` stores on a new directory at once, then mix gets and sets."""
    start.wait(timeout=60)
    stores: list[DirectoryStore] = []
    for i in range(instances):
        if i % 2:
            stores.append(DirectoryStore(path))
        else:
            reset_registry()
            store = open_store(path)
            assert isinstance(store, DirectoryStore)
            stores.append(store)
    rng = random.Random(worker)
    keys = [key(n) for n in range(6)]
    bad = 0
    for op in range(ops):
        store, k = stores[op % instances], rng.choice(keys)
        if rng.random() < 0.5:
            store[k] = checked_value(k, (worker, op), rng.randrange(100, 30_000))
        else:
            value = store.get(k)
            bad += value is not None and not is_whole(k, value)
    snaps = [s.counters.snapshot() for s in stores]
    return {
        "bad": bad,
        "errors": sum(s.errors for s in snaps),
        "writes": sum(s.writes for s in snaps),
        "lookups": sum(s.hits + s.misses for s in snaps),
    }


def compute_with_lock(
    start: Any, path: str, backend: str, k: str, marker_dir: str, work: float
) -> dict[str, Any]:
    """``get_or_compute`` of ``k``; the computation leaves a file and takes ``work`` seconds."""
    store = DirectoryStore(path, lock_backend=backend)

    def compute() -> dict[str, Any]:
        began = time.time()
        os.close(os.open(f"{marker_dir}/{os.getpid()}", os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        time.sleep(work)  # the work being deduplicated
        return {"by": os.getpid(), "start": began, "end": time.time()}

    start.wait(timeout=60)
    return store.get_or_compute(k, compute, timeout=60)


def hold_until_killed(path: str, backend: str, k: str, started: Any) -> None:
    """Take ``k``'s lock in ``get_or_compute`` and never finish (the parent kills us)."""
    store = DirectoryStore(path, lock_backend=backend)

    def compute() -> None:
        started.set()
        threading.Event().wait(120)

    store.get_or_compute(k, compute, timeout=60)


def wait_then_compute(
    path: str, backend: str, k: str, ready: Any, marker_dir: str, out: Any
) -> None:
    """Ask for ``k`` while another process holds it; report who computed the value."""
    store = DirectoryStore(path, lock_backend=backend)

    def compute() -> int:
        os.close(os.open(f"{marker_dir}/{os.getpid()}", os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        return os.getpid()

    ready.set()
    out.put(store.get_or_compute(k, compute, timeout=60))


def _write_forever(path: str, src: str, seed: int) -> None:
    store = DirectoryStore(path)
    rng = random.Random(seed)
    for seq in range(10**9):
        k = key(rng.randrange(12))
        if rng.random() < 0.15:
            store.put_dir(key(100 + rng.randrange(4)), src)
        else:
            store[k] = checked_value(k, (seed, seq), rng.randrange(1000, 200_000))


def kill_writers(start: Any, path: str, src: str, rounds: int, seed: int) -> int:
    """Fork a writer ``rounds`` times, killing each with SIGKILL after a random short delay."""
    start.wait(timeout=60)
    rng = random.Random(seed)
    for r in range(rounds):
        pid = os.fork()
        if pid == 0:
            try:
                _write_forever(path, src, seed * 1000 + r)
            finally:
                os._exit(0)
        time.sleep(rng.uniform(0, 0.012))  # where the kill lands is what is being tested
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    return rounds


def race_eviction(start: Any, role: str, path: str, n: int, seed: int) -> Any:
    """One writer evicting while readers read: ``role`` is "writer" or "reader"."""
    if role == "writer":
        return evicting_writer(start, path, 100_000, n)
    return racing_reader(start, path, n, seed)


def evicting_writer(start: Any, path: str, max_bytes: int, writes: int) -> int:
    """Rewrite 40 keys round-robin into a store too small for them; return evictions."""
    store = DirectoryStore(path, max_bytes=max_bytes)
    start.wait(timeout=60)
    for i in range(writes):
        k = key(i % 40)
        store[k] = checked_value(k, i, 5000)
    return store.counters.snapshot().evictions


def racing_reader(start: Any, path: str, reads: int, seed: int) -> dict[str, int]:
    """Read random keys while they are rewritten and evicted; count whole and bad reads."""
    store = DirectoryStore(path)
    rng = random.Random(seed)
    start.wait(timeout=60)
    bad = 0
    for _ in range(reads):
        k = key(rng.randrange(40))
        value = store.get(k)
        bad += value is not None and not is_whole(k, value)
    snap = store.counters.snapshot()
    return {"bad": bad, "errors": snap.errors, "lookups": snap.hits + snap.misses}


# -- the investigation's pipeline ----------------------------------------------------
@dataclasses.dataclass(frozen=True)
class CountingTranslate(StepBase):
    """A translation step that records every call as a file in ``$STEPCACHE_TEST_CALLS_DIR``."""

    opt_level: int = 2
    enable_itir_transforms: bool = True

    def __call__(self, program: str) -> str:
        calls = os.environ[CALLS_ENV]
        name = f"{calls}/{os.getpid()}-{os.urandom(6).hex()}"
        os.close(os.open(name, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        return f"/* O{self.opt_level} */ void {program}(double *field) {{ }}\n"


def run_pipeline(
    start: Any, store_path: str, calls_dir: str, programs: list[str], run: bool
) -> dict[str, Any]:
    """Build a new CachedStep over the store; with ``run``, translate ``programs``."""
    os.environ[CALLS_ENV] = calls_dir
    cached = CachedStep(CountingTranslate(opt_level=2), open_store(store_path), version="1")
    start.wait(timeout=60)
    outputs = [cached(p) for p in programs] if run else []
    snap = cached.store.counters.snapshot()
    return {
        "keys": [cached.key_for(p) for p in programs],
        "outputs": outputs,
        "hits": snap.hits,
        "misses": snap.misses,
        "entries": sorted(cached.store),
    }


def calls_made(calls_dir: str | Path) -> int:
    """How many times :class:`CountingTranslate` ran."""
    return len(os.listdir(calls_dir))


def hold_after_publishing(root: str, k: str, lock: str, ready: Any, go: Any, release: Any) -> str:
    """Take ``k``'s lock, publish its value through another handle, keep holding until released."""
    store, other = DirectoryStore(root, lock=lock), DirectoryStore(root, lock=lock)

    def compute() -> str:
        ready.set()
        if not go.wait(timeout=60):
            raise TimeoutError("the waiters never started")
        other[k] = "published"
        if not release.wait(timeout=60):
            raise TimeoutError("never released")
        return "holder"

    return store.get_or_compute(k, compute)


def wait_for_key(root: str, k: str, lock: str, started: Any) -> str:
    """Ask for ``k`` while another process holds it; return what this process got."""
    store = DirectoryStore(root, lock=lock)
    started.set()
    return store.get_or_compute(k, lambda: "computed by a waiter", timeout=120)
