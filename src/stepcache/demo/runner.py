"""Running the program suite in worker processes, the way a test runner would.

Each worker (a ``spawn`` process, like a pytest-xdist worker) builds its
own pipelines, one per dtype, and opens the store by spec once per pipeline
variant, as test fixtures do; the store registry makes that one instance
per process. Workers take programs from a shared queue, compile and run
them on deterministic inputs and check them against the numpy reference::

    result = run_suite(suite(20), workers=2, store_spec="/tmp/cache")
    result.verified, result.compiles, result.hits

:func:`run_demo` runs the suite three times (no cache, then twice with the
cache) and reports what each run met and did; the CLI renders it.
"""

from __future__ import annotations

import atexit
import contextlib
import dataclasses
import multiprocessing
import os
import pickle
import queue
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from stepcache.demo.programs import DTYPES, ProgramSpec, suite

__all__ = ["DemoReport", "DemoRun", "RunResult", "met", "run_demo", "run_suite"]


@dataclasses.dataclass(frozen=True)
class RunResult:
    """What one run of the suite did, summed over its workers.

    ``hits`` and ``misses`` come from the workers' store statistics;
    ``compiles`` and ``translations`` count real work (cache hits excluded);
    ``instances`` counts distinct store objects the workers ended up with::

        RunResult(wall_s=1.4, programs=100, compiles=0, translations=0,
                  hits=200, misses=0, instances=2, verified=True)   # a warm run
    """

    wall_s: float
    programs: int
    compiles: int
    translations: int
    hits: int
    misses: int
    instances: int
    verified: bool
    failures: tuple[str, ...] = ()


def _open_variants(store_spec: str | None, build_root: str) -> tuple[dict[str, Any], list[Any]]:
    from stepcache.demo.pipeline import make_pipeline
    from stepcache.stores.registry import open_store

    pipelines: dict[str, Any] = {}
    stores: list[Any] = []
    for dtype in DTYPES:
        # One open per variant, as per-variant test fixtures do; the registry
        # is what turns these into a single instance.
        store = open_store(store_spec) if store_spec is not None else None
        if store is not None and all(store is not s for s in stores):
            stores.append(store)
        pipelines[dtype] = make_pipeline(store, dtype=dtype, build_root=build_root)
    return pipelines, stores


def _own_counts(stores: list[Any]) -> tuple[int, int]:
    # This process's hits and misses: store.stats() of a shared store sums
    # every process that ever used it, other workers and earlier runs included.
    from stepcache.stores.registry import process_stats

    mine = [st for store, st in process_stats() if any(store is s for s in stores)]
    return sum(st.hits for st in mine), sum(st.misses for st in mine)


def _portable(exc: BaseException) -> BaseException:
    try:
        pickle.loads(pickle.dumps(exc))
    except Exception:
        return RuntimeError(f"{type(exc).__name__}: {exc}")
    return exc


def _stop(signum: int, frame: Any) -> None:
    # terminate() unwinds the worker through its finally blocks: locks are
    # released, temp files removed, counters recorded. A second signal must
    # not cut that clean-up short (and SIG_IGN here would make Python report
    # a signal already pending as a race), so later ones do nothing.
    signal.signal(signal.SIGTERM, lambda *_: None)
    raise KeyboardInterrupt


def _worker(store_spec: str | None, tasks: Any, results: Any) -> None:
    from stepcache.demo.pipeline import counters, reset_counters
    from stepcache.demo.programs import verify

    signal.signal(signal.SIGTERM, _stop)
    reset_counters()
    build_root = tempfile.mkdtemp(prefix="stepcache-demo-build-")
    stores: list[Any] = []
    try:
        pipelines, stores = _open_variants(store_spec, build_root)
        start = _own_counts(stores)
        while (spec := tasks.get()) is not None:
            try:
                # Parsed once, like a decorated stencil: the pipeline, the
                # inputs and the reference share the Program (Parse passes it on).
                kernel = pipelines[spec.dtype](spec.program())
                inputs = spec.inputs()
                ok = verify(spec, kernel(**inputs, **spec.scalar_args()), inputs)
            except Exception as exc:
                results.put(("error", spec.name, _portable(exc)))
                return
            results.put(("done", spec.name, ok))
        end = _own_counts(stores)
        summary = {
            **counters(),
            "hits": end[0] - start[0],
            "misses": end[1] - start[1],
            "instances": len(stores),
        }
        results.put(("summary", os.getpid(), summary))
    except KeyboardInterrupt:
        # Interrupted: nobody reads the results any more, so do not wait to send them.
        results.cancel_join_thread()
    finally:
        shutil.rmtree(build_root, ignore_errors=True)
        for store in stores:
            store.flush()
    _leave(results)


def _leave(results: Any) -> None:
    """End a worker whose work is done as forked multiprocessing children end: ``os._exit``.

    The results are in the pipe and exit handlers (multiprocessing's
    finalizers among them) have run; what is skipped is the interpreter's
    teardown of every module, about 20 ms with numpy loaded, which a finished
    worker does not need and which its parent would wait for.
    """
    results.close()
    results.join_thread()
    atexit._run_exitfuncs()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def _collect(
    procs: list[Any],
    results: Any,
    n_programs: int,
    progress: Callable[[int], None] | None,
    timeout: float,
) -> tuple[list[str], list[dict[str, int]]]:
    failures: list[str] = []
    summaries: list[dict[str, int]] = []
    done = 0
    idle_deadline = time.monotonic() + timeout
    while done < n_programs or len(summaries) < len(procs):
        try:
            kind, who, payload = results.get(timeout=0.5)
        except queue.Empty:
            dead = [p for p in procs if p.exitcode not in (None, 0)]
            if dead:
                raise RuntimeError(f"a demo worker died (exit code {dead[0].exitcode})") from None
            if time.monotonic() > idle_deadline:
                raise TimeoutError(f"no demo worker reported for {timeout:g} s") from None
            continue
        idle_deadline = time.monotonic() + timeout
        if kind == "error":
            raise payload
        if kind == "summary":
            summaries.append(payload)
            continue
        done += 1
        if not payload:
            failures.append(who)
        if progress is not None:
            progress(done)
    return failures, summaries


def _start_workers(
    workers: int, store_spec: str | None, programs: Sequence[ProgramSpec]
) -> tuple[list[Any], Any, Any]:
    ctx = multiprocessing.get_context("spawn")
    tasks, results = ctx.Queue(), ctx.Queue()
    for spec in programs:
        tasks.put(spec)
    for _ in range(workers):
        tasks.put(None)
    # Daemons: workers never outlive a parent that was interrupted.
    procs = [
        ctx.Process(target=_worker, args=(store_spec, tasks, results), daemon=True)
        for _ in range(workers)
    ]
    with _sigint_ignored():
        for p in procs:
            p.start()
    return procs, tasks, results


@contextlib.contextmanager
def _sigint_ignored() -> Iterator[None]:
    """Start workers that never see Ctrl-C: the parent stops them, with time to clean up.

    Ctrl-C reaches every process of the terminal's process group; a worker
    interrupted anywhere (importing, in the middle of publishing an entry)
    could not promise a whole store. Workers are started while SIGINT is
    blocked in this thread: they inherit the mask (through exec too), so a
    Ctrl-C stays pending in them for good, and the parent's terminate() runs
    :func:`_stop`. A Ctrl-C meanwhile reaches the parent once they are
    started: from its mask, or recorded by the handler here if another thread
    (a queue's feeder, a progress bar) took it. Ignoring SIGINT instead
    (``SIG_IGN``) lost such a Ctrl-C, and the run went on to its end.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: caught.append(signum))
    blocked = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        signal.pthread_sigmask(signal.SIG_SETMASK, blocked)  # one pending here arrives now
    if caught:
        signal.raise_signal(signal.SIGINT)  # handled as it would have been


def run_suite(
    programs: Sequence[ProgramSpec],
    *,
    workers: int,
    store_spec: str | None,
    progress: Callable[[int], None] | None = None,
    timeout: float = 300.0,
) -> RunResult:
    """Compile, run and verify ``programs`` in ``workers`` spawned processes.

    ``store_spec`` None runs without a cache. ``progress(n)`` is called in
    this process after each finished program. An exception in a worker
    (a :class:`~stepcache.errors.CompilerError`, say) is re-raised here; a
    worker silent for ``timeout`` seconds raises :class:`TimeoutError`.
    Call it under ``if __name__ == "__main__":`` in scripts (spawn re-imports
    the main module)::

        result = run_suite(suite(100), workers=2, store_spec="/tmp/demo-cache")
        assert result.verified and result.instances == 2
    """
    if workers < 1:
        raise ValueError(f"workers must be >= 1, not {workers}")
    start = time.perf_counter()
    procs, tasks, results = _start_workers(workers, store_spec, programs)
    try:
        failures, summaries = _collect(procs, results, len(programs), progress, timeout)
    except BaseException:
        # The run is lost: stop the other workers now instead of letting them finish.
        tasks.cancel_join_thread()
        for p in procs:
            p.terminate()
        raise
    finally:
        for p in procs:
            p.join(timeout=10)
            if p.is_alive():
                p.kill()
                p.join()
    wall = time.perf_counter() - start
    total = {k: sum(s[k] for s in summaries) for k in ("compiles", "translations", "hits")}
    return RunResult(
        wall_s=wall,
        programs=len(programs),
        compiles=total["compiles"],
        translations=total["translations"],
        hits=total["hits"],
        misses=sum(s["misses"] for s in summaries),
        instances=sum(s["instances"] for s in summaries),
        verified=not failures,
        failures=tuple(sorted(failures)),
    )


@dataclasses.dataclass(frozen=True)
class DemoRun:
    """One run of :func:`run_demo`, with what the store held afterwards.

    ``entries`` counts keys in the store after the run, ``new_keys`` those the
    run added; a warm run of a working cache adds none (see :meth:`to_dict`).
    """

    name: str
    result: RunResult
    entries: int
    new_keys: int

    def to_dict(self) -> dict[str, Any]:
        """The JSON form of one run."""
        r = self.result
        return {
            "name": self.name,
            "wall_s": round(r.wall_s, 3),
            "compiles": r.compiles,
            "translations": r.translations,
            "hits": r.hits,
            "misses": r.misses,
            "instances": r.instances,
            "entries": self.entries,
            "new_keys": self.new_keys,
        }


@dataclasses.dataclass(frozen=True)
class DemoReport:
    """The three runs of :func:`run_demo`; :meth:`to_dict` is the ``--json`` form::

    {"runs": [{"name": "no-cache", "wall_s": 5.3, "compiles": 100, ...},
              {"name": "cold", ...}, {"name": "warm", ...}],
     "verified": true, "programs": 100, "store": "dir:///...", "kept": true}
    """

    runs: tuple[DemoRun, ...]
    programs: int
    store: str = ""
    kept: bool = True

    @property
    def verified(self) -> bool:
        """True when every program of every run matched its reference."""
        return all(run.result.verified for run in self.runs)

    def to_dict(self) -> dict[str, Any]:
        """``{"runs": [...], "verified": bool, "programs": N, "store": spec, "kept": bool}``."""
        return {
            "runs": [run.to_dict() for run in self.runs],
            "verified": self.verified,
            "programs": self.programs,
            "store": self.store,
            "kept": self.kept,
        }


def _keys(store_spec: str | None) -> set[str]:
    if store_spec is None:
        return set()
    from stepcache.stores.registry import open_store

    return set(open_store(store_spec))


def met(result: RunResult) -> str:
    """What a run with a cache met: ``cold`` (no hit), ``warm`` (no miss) or ``partly warm``.

    >>> met(RunResult(1.0, 2, 0, 0, hits=4, misses=0, instances=1, verified=True))
    'warm'
    """
    if result.hits == 0:
        return "cold"
    return "warm" if result.misses == 0 else "partly warm"


def run_demo(
    programs: int = 100,
    workers: int | None = None,
    store: str | None = None,
    progress: Callable[[str, int, int], None] | None = None,
    *,
    fresh: bool = False,
) -> DemoReport:
    """Run the suite without a cache, then twice with one; report what each run met.

    The cache is ``store`` (a spec; ``None``: ``$STEPCACHE_DIR`` or the user
    cache directory, like :func:`~stepcache.open_store`), and it is kept:
    nothing is cleared, so on a store that already holds the suite the first
    cached run is warm too. Each cached run is named by what it met
    (:func:`met`). ``fresh=True`` uses a temporary directory instead,
    removed afterwards. ``progress(run_name, done, total)`` is called after
    each program, with the run names ``no-cache``, ``first`` and ``second``::

        report = run_demo(programs=100, workers=2, fresh=True)
        print(json.dumps(report.to_dict()))
    """
    from stepcache.stores.registry import resolve_spec

    specs = suite(programs)
    n_workers = workers or os.cpu_count() or 1
    runs: list[DemoRun] = []
    with tempfile.TemporaryDirectory(prefix="stepcache-demo-store-") as tmp:
        spec = resolve_spec(os.path.join(tmp, "cache") if fresh else store)[1]
        for name, run_spec in (("no-cache", None), ("first", spec), ("second", spec)):
            before = _keys(run_spec)

            def report(done: int, name: str = name) -> None:
                if progress is not None:
                    progress(name, done, len(specs))

            result = run_suite(specs, workers=n_workers, store_spec=run_spec, progress=report)
            after = _keys(run_spec)
            shown = name if run_spec is None else met(result)
            runs.append(DemoRun(shown, result, len(after), len(after - before)))
        if fresh:
            from stepcache.stores.registry import open_store

            open_store(spec).close()
    return DemoReport(tuple(runs), len(specs), spec, kept=not fresh)
