"""Scenario 1: DirectoryStore's hits, misses and sets, as ratios to the floor measured in one run.

The floor is the least any file cache must do: a hit is ``open`` + ``read``
+ ``pickle.loads``, a miss is an ``open`` failing with ``FileNotFoundError``,
a set is ``pickle.dumps`` + a temp file + ``os.replace``. DirectoryStore,
``diskcache.Cache`` and ``joblib.Memory`` (a cached function returning the
value) do the same work on the same disk, one call of each per round, so
that drift in the machine's speed hits all of them alike.

Hits and sets cycle over 32 stored keys, with values of 1 KB, 10 KB and
1 MB. Every miss asks for a key never stored, a different one each time;
misses are measured among the 1 KB values only, as a miss reads no value.
joblib's miss is ``check_call_in_cache`` returning false. Opening a store
in a fresh process is scenario 2 (``bench_open``).

Run ``python benchmarks/bench_store.py [--quick] [--json]``, or call
:func:`run` (``run(quick=True)`` returns the same dict that ``--json`` prints).
Goals: hit <= 1.3x floor, set <= 1.5x floor.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import pickle
import shutil
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

if not __package__:  # run as a script: the checkout is not on sys.path
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks import _harness as h

SIZES = {"1KB": 1_000, "10KB": 10_000, "1MB": 1_000_000}
MISS_SIZE = "1KB"  #: the values among which misses are measured
REPEATS = {"1KB": 600, "10KB": 600, "1MB": 100}
QUICK_REPEATS = {"1KB": 100, "10KB": 100, "1MB": 10}
KEYS = [f"{n:02x}{n * 7 % 256:02x}" * 8 for n in range(32)]
_VALUES: dict[int, str] = {}
Op = Callable[[int], Any]


def value_of(size: int) -> str:
    """C source of about ``size`` characters (what a translation step returns)."""
    if size not in _VALUES:
        line = "    out[i] = in[i - 1] + in[i + 1] - 2.0 * in[i];  /* laplacian */\n"
        _VALUES[size] = (line * (size // len(line) + 1))[:size]
    return _VALUES[size]


def absent_keys(n: int) -> list[str]:
    """``n`` distinct store keys that are never stored, spread as fingerprints are.

    >>> len(absent_keys(3)), len(set(absent_keys(3)))
    (3, 3)
    """
    return [hashlib.blake2b(b"absent %d" % i, digest_size=16).hexdigest() for i in range(n)]


def produce(size: int, n: int) -> str:
    """The function joblib caches: returns the benchmark value (``n`` varies the key)."""
    return value_of(size)


# -- contenders: their operations as functions of the round ----------------------------
@dataclasses.dataclass(frozen=True)
class Ops:
    """What one contender does, each a function of the round ``i``.

    ``get`` hits ``KEYS[i % 32]``; ``set`` writes it (joblib: makes a call it
    has never made); ``miss`` asks for ``absent[i]`` and returns ``None``;
    ``close`` releases the cache before its directory is deleted.
    """

    get: Op
    set: Op
    miss: Op
    close: Callable[[], None] = lambda: None


def floor_ops(root: Path, value: str, absent: Sequence[str]) -> Ops:
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

    def miss(i: int) -> Any:
        try:
            with open(f"{root}/files/{absent[i]}", "rb") as f:
                return pickle.loads(f.read())
        except FileNotFoundError:
            return None

    return Ops(get, put, miss)


def directory_ops(root: Path, value: str, absent: Sequence[str]) -> Ops:
    """stepcache's DirectoryStore."""
    from stepcache.stores.directory import DirectoryStore

    return _mapping_ops(DirectoryStore(root), value, absent)


def diskcache_ops(root: Path, value: str, absent: Sequence[str]) -> Ops:
    """diskcache.Cache (SQLite, large values in files)."""
    import diskcache

    return _mapping_ops(diskcache.Cache(str(root)), value, absent)


def _mapping_ops(cache: Any, value: str, absent: Sequence[str]) -> Ops:
    return Ops(
        get=lambda i: cache.get(KEYS[i % len(KEYS)]),
        set=lambda i: cache.set(KEYS[i % len(KEYS)], value),
        miss=lambda i: cache.get(absent[i]),
        close=cache.close,
    )


def joblib_ops(root: Path, value: str, absent: Sequence[str]) -> Ops:
    """joblib.Memory caching :func:`produce`: a hit calls it again, a set calls it anew."""
    import joblib

    cached = joblib.Memory(str(root), verbose=0).cache(produce)
    size = len(value)
    fresh = iter(range(len(KEYS), 10**9))
    return Ops(
        get=lambda i: cached(size, i % len(KEYS)),
        set=lambda i: cached(size, next(fresh)),
        miss=lambda i: cached.check_call_in_cache(size, -1 - i) or None,  # never called
    )


CONTENDERS: dict[str, Callable[[Path, str, Sequence[str]], Ops]] = {
    "floor": floor_ops,
    "DirectoryStore": directory_ops,
    "diskcache": diskcache_ops,
    "joblib": joblib_ops,
}


def _timed(funcs: dict[str, Op], repeats: int) -> dict[str, dict[str, float]]:
    """µs per call (min, median) and ratios to the floor's, ``repeats`` interleaved rounds.

    A tenth as many rounds run first, untimed, to warm caches and code paths.
    """
    times = h.interleaved(funcs, repeats, warmup=repeats // 10)
    us = {name: h.summarize(seconds, 1e6) for name, seconds in times.items()}
    floor = us["floor"]
    return {
        name: {
            "min_us": round(t.min, 2),
            "median_us": round(t.median, 2),
            "ratio_min": round(t.min / floor.min, 2),
            "ratio_median": round(t.median / floor.median, 2),
        }
        for name, t in us.items()
    }


def bench_size(size: int, repeats: int, work: Path, misses: bool = False) -> dict[str, Any]:
    """Hits and sets, and misses if ``misses``, of every contender with a ``size``-char value."""
    value = value_of(size)
    absent = absent_keys(repeats + repeats // 10) if misses else []
    contenders: dict[str, Ops] = {}
    try:
        for name, make in CONTENDERS.items():
            root = work / f"{name}-{size}"
            root.mkdir()
            ops = contenders[name] = make(root, value, absent)
            for i in range(len(KEYS)):  # steady state: every key stored once
                ops.set(i)
                ops.get(i)
        result = {"get": _timed({n: ops.get for n, ops in contenders.items()}, repeats)}
        if misses:
            result["miss"] = _timed({n: ops.miss for n, ops in contenders.items()}, repeats)
            found = [n for n, ops in contenders.items() if ops.miss(0) is not None]
            if found:
                raise AssertionError(f"an absent key was found by {', '.join(found)}")
        result["set"] = _timed({n: ops.set for n, ops in contenders.items()}, repeats)
    finally:
        for ops in contenders.values():
            ops.close()
    return result


# -- entry points ----------------------------------------------------------------------------
def run(quick: bool = False) -> dict[str, Any]:
    """Run every measurement; ``quick`` uses fewer repeats (a smoke test, noisy figures)."""
    repeats = QUICK_REPEATS if quick else REPEATS
    work = Path(tempfile.mkdtemp(prefix="stepcache-bench-store-"))
    try:
        results = {
            label: bench_size(size, repeats[label], work, misses=label == MISS_SIZE)
            for label, size in SIZES.items()
        }
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return {"python": sys.version.split()[0], "quick": quick, "results": results}


def table(report: dict[str, Any]) -> str:
    """The figures as plain text: µs per call and the ratios to the floor."""
    lines = ["size  op   contender        min us    median us   x floor (min/median)"]
    for label, ops in report["results"].items():
        for op, rows in ops.items():
            for name, row in rows.items():
                lines.append(
                    f"{label:5} {op:4} {name:15} {row['min_us']:9.1f} {row['median_us']:11.1f}"
                    f"   {row['ratio_min']:.2f} / {row['ratio_median']:.2f}"
                )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    """Command line: print a table, or JSON with ``--json``."""
    h.standalone(run, table, "DirectoryStore's hits, misses and sets against the floor.", argv)


if __name__ == "__main__":
    main()
