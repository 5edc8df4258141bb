"""How fast DirectoryStore reads and writes, as ratios to the floor measured in the same run.

The floor is the least any file cache must do: a hit is ``open`` + ``read`` +
``pickle.loads``; a set is ``pickle.dumps`` + a temp file + ``os.replace``.
DirectoryStore, ``diskcache.Cache`` and ``joblib.Memory`` (a cached function
returning the value) do the same work on the same disk, interleaved with the
floor so that drift in the machine's speed hits all of them alike. Also
measured: opening a store and getting a first hit in a fresh interpreter.

Run ``python benchmarks/bench_store.py [--quick] [--json]``, or call
:func:`run` (``run(quick=True)`` returns the same dict that ``--json`` prints).
Goals: hit <= 1.3x floor, set <= 1.5x floor, open + first hit <= 0.2 ms.
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

SIZES = {"1KB": 1_000, "10KB": 10_000, "1MB": 1_000_000}
KEYS = [f"{n:02x}{n * 7 % 256:02x}" * 8 for n in range(32)]
_VALUES: dict[int, str] = {}
Op = Callable[[int], Any]


def value_of(size: int) -> str:
    """C source of about ``size`` characters (what a translation step returns)."""
    if size not in _VALUES:
        line = "    out[i] = in[i - 1] + in[i + 1] - 2.0 * in[i];  /* laplacian */\n"
        _VALUES[size] = (line * (size // len(line) + 1))[:size]
    return _VALUES[size]


def produce(size: int, n: int) -> str:
    """The function joblib caches: returns the benchmark value (``n`` varies the key)."""
    return value_of(size)


# -- contenders: (get, set) pairs of functions taking a counter ------------------------
def floor_ops(root: Path, value: str) -> tuple[Op, Op]:
    """The floor: plain files, pickle, temp file and rename."""
    (root / "files").mkdir()
    (root / "tmp").mkdir()
    flags = os.O_CREAT | os.O_EXCL | os.O_WRONLY

    def put(i: int) -> None:
        data = pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
        tmp = f"{root}/tmp/{os.getpid()}-{i}"
        fd = os.open(tmp, flags, 0o600)
        try:
            os.write(fd, data)
        finally:
            os.close(fd)
        os.replace(tmp, f"{root}/files/{KEYS[i % len(KEYS)]}")

    def get(i: int) -> Any:
        with open(f"{root}/files/{KEYS[i % len(KEYS)]}", "rb") as f:
            return pickle.loads(f.read())

    return get, put


def directory_ops(root: Path, value: str) -> tuple[Op, Op]:
    """stepcache's DirectoryStore."""
    from stepcache.stores.directory import DirectoryStore

    store = DirectoryStore(root)
    return (lambda i: store.get(KEYS[i % len(KEYS)])), (
        lambda i: store.set(KEYS[i % len(KEYS)], value)
    )


def diskcache_ops(root: Path, value: str) -> tuple[Op, Op]:
    """diskcache.Cache (SQLite, large values in files)."""
    import diskcache

    cache = diskcache.Cache(str(root))
    return (lambda i: cache.get(KEYS[i % len(KEYS)])), (
        lambda i: cache.set(KEYS[i % len(KEYS)], value)
    )


def joblib_ops(root: Path, value: str) -> tuple[Op, Op]:
    """joblib.Memory caching :func:`produce`: a hit calls it again, a set calls it anew."""
    import joblib

    cached = joblib.Memory(str(root), verbose=0).cache(produce)
    size = len(value)
    fresh = iter(range(len(KEYS), 10**9))
    return (lambda i: cached(size, i % len(KEYS))), (lambda i: cached(size, next(fresh)))


CONTENDERS: dict[str, Callable[[Path, str], tuple[Op, Op]]] = {
    "floor": floor_ops,
    "DirectoryStore": directory_ops,
    "diskcache": diskcache_ops,
    "joblib": joblib_ops,
}


def _interleaved(ops: dict[str, Op], repeats: int) -> dict[str, list[int]]:
    """Time one call of each op per round, ``repeats`` rounds; nanoseconds per call.

    A tenth as many rounds run first, untimed, to warm caches and code paths.
    """
    times: dict[str, list[int]] = {name: [] for name in ops}
    for i in range(repeats // 10):
        for op in ops.values():
            op(i)
    for i in range(repeats):
        for name, op in ops.items():
            start = time.perf_counter_ns()
            op(i)
            times[name].append(time.perf_counter_ns() - start)
    return times


def _summary(times: dict[str, list[int]]) -> dict[str, dict[str, float]]:
    floor_min, floor_med = min(times["floor"]), statistics.median(times["floor"])
    out = {}
    for name, ns in times.items():
        low, mid = min(ns), statistics.median(ns)
        out[name] = {
            "min_us": round(low / 1000, 2),
            "median_us": round(mid / 1000, 2),
            "ratio_min": round(low / floor_min, 2),
            "ratio_median": round(mid / floor_med, 2),
        }
    return out


def bench_size(size: int, repeats: int, work: Path) -> dict[str, Any]:
    """Hits and sets of a ``size``-character value for every contender."""
    value = value_of(size)
    gets, sets = {}, {}
    for name, make in CONTENDERS.items():
        root = work / f"{name}-{size}"
        root.mkdir()
        gets[name], sets[name] = make(root, value)
        for i in range(len(KEYS)):  # steady state: every key stored once
            sets[name](i)
            gets[name](i)
    result = {"get": _summary(_interleaved(gets, repeats))}
    result["set"] = _summary(_interleaved(sets, repeats))
    return result


# -- a fresh interpreter -----------------------------------------------------------------
_CHILD = """
import json, time
t0 = time.perf_counter()
import stepcache
t1 = time.perf_counter()
{preimport}
t2 = time.perf_counter()
store = stepcache.open_store({path!r})
value = store.get({key!r})
t3 = time.perf_counter()
assert value is not None
print(json.dumps([t1 - t0, t2 - t1, t3 - t2]))
"""


def _child_env(pycache: Path) -> dict[str, str]:
    # Measure an installed package: bytecode cached (in a private prefix).
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env["PYTHONPYCACHEPREFIX"] = str(pycache)
    return env


def _wall(code: str, env: dict[str, str]) -> tuple[float, str]:
    start = time.perf_counter()
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, check=True, capture_output=True, text=True
    ).stdout
    return time.perf_counter() - start, out


def bench_fresh_process(repeats: int, work: Path) -> dict[str, Any]:
    """Open a store and get a first hit in new interpreters; also their total run time."""
    from stepcache.stores.directory import DirectoryStore

    path = work / "fresh-store"
    DirectoryStore(path).set(KEYS[0], value_of(1000))
    env = _child_env(work / "pycache")
    lazy = _CHILD.format(preimport="", path=str(path), key=KEYS[0])
    eager = _CHILD.format(
        preimport="import stepcache.stores.directory", path=str(path), key=KEYS[0]
    )
    _wall(lazy, env)  # fills the bytecode cache
    runs: dict[str, list[float]] = {"pass": [], "lazy": [], "eager": []}
    phases: dict[str, list[float]] = {
        "import": [],
        "backend_import": [],
        "open_hit": [],
        "open_hit_lazy": [],
    }
    for _ in range(repeats):
        runs["pass"].append(_wall("pass", env)[0])
        wall, out = _wall(lazy, env)
        runs["lazy"].append(wall)
        imp, _, lazy_hit = json.loads(out)
        wall, out = _wall(eager, env)
        runs["eager"].append(wall)
        _, backend, hit = json.loads(out)
        for name, x in zip(phases, (imp, backend, hit, lazy_hit), strict=True):
            phases[name].append(x)
    ms = {name: _ms(xs) for name, xs in phases.items()}
    ms["interpreter_pass"] = _ms(runs["pass"])
    ms["interpreter_open_hit"] = _ms(runs["lazy"])
    ms["extra_over_pass"] = {
        k: round(ms["interpreter_open_hit"][k] - ms["interpreter_pass"][k], 2)
        for k in ("min_ms", "median_ms")
    }
    return ms


def _ms(xs: list[float]) -> dict[str, float]:
    return {"min_ms": round(min(xs) * 1000, 3), "median_ms": round(statistics.median(xs) * 1000, 3)}


# -- entry points ----------------------------------------------------------------------------
def run(quick: bool = False) -> dict[str, Any]:
    """Run every measurement; ``quick`` uses fewer repeats (a smoke test, noisy figures)."""
    repeats = (
        {"1KB": 100, "10KB": 100, "1MB": 10} if quick else {"1KB": 1500, "10KB": 1500, "1MB": 100}
    )
    work = Path(tempfile.mkdtemp(prefix="stepcache-bench-"))
    try:
        results: dict[str, Any] = {
            label: bench_size(size, repeats[label], work) for label, size in SIZES.items()
        }
        results["fresh_process"] = bench_fresh_process(3 if quick else 15, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return {"python": sys.version.split()[0], "quick": quick, "results": results}


def _table(report: dict[str, Any]) -> str:
    lines = ["size  op   contender        min us    median us   x floor (min/median)"]
    for label in SIZES:
        for op in ("get", "set"):
            for name, row in report["results"][label][op].items():
                lines.append(
                    f"{label:5} {op:4} {name:15} {row['min_us']:9.1f} {row['median_us']:11.1f}"
                    f"   {row['ratio_min']:.2f} / {row['ratio_median']:.2f}"
                )
    fresh = report["results"]["fresh_process"]
    lines.append("fresh interpreter (ms, min / median):")
    for name, row in fresh.items():
        values = list(row.values())
        lines.append(f"  {name:22} {values[0]:8.3f} / {values[1]:8.3f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    """Command line: print a table, or JSON with ``--json``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats")
    parser.add_argument("--json", action="store_true", help="print JSON")
    args = parser.parse_args(argv)
    report = run(quick=args.quick)
    print(json.dumps(report, indent=2) if args.json else _table(report))


if __name__ == "__main__":
    main()
