"""Scenario 4, the thundering herd: 8 processes miss at once on a 0.5 s computation.

Eight workers are released together on an empty cache and each asks for a
value whose computation burns 0.5 s of CPU (a compiler run). With one key,
a cache with single-flight computes once and the other seven wait for the
result; without it, all eight compute, which on a 2-core machine costs four
times the CPU. With eight distinct keys every process must compute its
own, and a lock must not serialise them.

Contenders: stepcache ``get_or_compute``; ``diskcache`` ``memoize`` (no
lock: get, compute, set); ``diskcache+Lock``, the per-key
``diskcache.Lock`` recipe around get-then-set; ``joblib.Memory.cache``
(no lock). Measured: computations performed, wall time from release to
the last worker's result, errors (exceptions and wrong values), and with
one key how long after the computing worker had its value the last of the
others returned it (clock times of one machine; the publish comes just
before the computing worker returns). Goal for stepcache: within one poll
interval of its waiters (25 ms). ``--quick`` burns 0.2 s instead of 0.5 s.
"""

from __future__ import annotations

import shutil
import statistics
import tempfile
import time
from typing import Any

from benchmarks import _harness as h
from benchmarks import _peers
from benchmarks._workers import Failed, shared
from stepcache.stores._flight import MAX_POLL

PROCS, SECONDS, QUICK_SECONDS = 8, 0.5, 0.2
NAMES = ["stepcache", "diskcache", "diskcache+Lock", "joblib"]
VARIANTS = {"one key": 1, "8 keys": PROCS}


def work(index: int, contender: str, path: str, keys: int, seconds: float) -> dict[str, Any]:
    """A worker task: open the cache, get or compute one value; how many computations ran."""
    cpu = time.process_time()
    handle = _peers.CONTENDERS[contender].open(path)
    key = _peers.key_of(index % keys)
    before = _peers.computations()
    value = handle.get_or_burn(key, seconds)
    done_at = time.time()
    handle.close()
    return {
        "done_at": done_at,
        "computed": _peers.computations() - before,
        "ok": value == _peers.value_for(key),
        "cpu_s": time.process_time() - cpu,
    }


def run(quick: bool = False) -> dict[str, Any]:
    """Both variants for each contender, ``repeat`` rounds (interleaved)."""
    names, skipped = _peers.usable(NAMES)
    repeat, seconds = (1, QUICK_SECONDS) if quick else (3, SECONDS)
    rounds: dict[str, dict[str, list[dict[str, Any]]]] = {
        v: {n: [] for n in names} for v in VARIANTS
    }
    pool = shared(PROCS)
    pool.run(_peers.preload, names)
    for _ in range(repeat):
        for variant, keys in VARIANTS.items():
            for name in names:
                root = tempfile.mkdtemp(prefix="stepcache-bench-herd-")
                try:
                    rnd = pool.run(work, name, f"{root}/cache", keys, seconds, active=PROCS)
                finally:
                    shutil.rmtree(root, ignore_errors=True)
                failed = [r for r in rnd.results if isinstance(r, Failed)]
                done = [r for r in rnd.results if not isinstance(r, Failed)]
                rounds[variant][name].append(
                    {
                        "wall_s": rnd.wall_s,
                        "computations": sum(r["computed"] for r in done),
                        "cpu_s": sum(r["cpu_s"] for r in done),
                        "errors": len(failed) + sum(not r["ok"] for r in done),
                        "lag_s": _lag(done),
                        "failures": sorted({f"{f.kind}: {f.message}" for f in failed}),
                    }
                )
    return {
        "procs": PROCS,
        "seconds": seconds,
        "repeat": repeat,
        "rounds": rounds,
        "skipped": skipped,
    }


def _lag(done: list[dict[str, Any]]) -> float | None:
    """Seconds from the first computing worker's return to the last waiter's, with one computer."""
    computers = [r["done_at"] for r in done if r["computed"]]
    waiters = [r["done_at"] for r in done if not r["computed"]]
    if len(computers) != 1 or not waiters:
        return None
    return max(0.0, max(waiters) - computers[0])


_COLUMNS = [
    "keys",
    "contender",
    "wall s (min)",
    "wall s (median)",
    "CPU s (median)",
    "computations (max)",
    "errors",
    "last waiter after the result ms (max)",
]


def _rows(s: h.Section, variant: str, by_name: dict[str, list[dict[str, Any]]]) -> list[float]:
    """Add one variant's rows; return the median walls in contender order (for the plot)."""
    keys = VARIANTS.get(variant, 1)
    walls = {n: h.summarize([r["wall_s"] for r in rs]) for n, rs in by_name.items()}
    for name, rounds in by_name.items():
        computed = max(r["computations"] for r in rounds)
        errors = sum(r["errors"] for r in rounds)
        lags = [r["lag_s"] for r in rounds if r.get("lag_s") is not None]
        lag = max(lags) * 1e3 if lags else None
        goals = []
        if name == "stepcache":
            peers = {n: w.median for n, w in walls.items() if n != name}
            goals = [
                h.exactly("computations", computed, keys),
                h.exactly("errors", errors, 0),
                h.ahead_of("wall (median)", walls[name].median, peers),
            ]
            if keys == 1 and lag is not None:
                goals.append(h.at_most("last waiter after the result", lag, MAX_POLL * 1e3, "ms"))
        cpu = statistics.median(r.get("cpu_s", 0.0) for r in rounds)
        cells = [variant, name, h.fmt(walls[name].min), h.fmt(walls[name].median), h.fmt(cpu)]
        s.add([*cells, str(computed), str(errors), "—" if lag is None else h.fmt(lag)], goals)
        for failure in sorted({f for r in rounds for f in r["failures"]}):
            s.notes.append(f"{variant}, {name}: {failure}")
    return [w.median for w in walls.values()]


def section(figures: dict[str, Any]) -> h.Section:
    """The table: per variant and contender, wall and CPU time, computations and errors."""
    s = h.Section("herd", "4. Thundering herd: 8 processes, one slow computation", _COLUMNS)
    s.notes.append(
        f"{figures['procs']} processes released at once on an empty cache; "
        f"{figures['seconds']} s of CPU per computation; {figures['repeat']} round(s); "
        "CPU: user + system time summed over the processes; computations: the most any "
        "round performed; errors summed over rounds."
    )
    plot: dict[str, list[float | None]] = {}
    for variant, by_name in figures["rounds"].items():
        for name, wall in zip(by_name, _rows(s, variant, by_name), strict=True):
            plot.setdefault(name, []).append(wall)
    for name, reason in figures["skipped"].items():
        s.notes.append(f"{name} skipped: {reason}")
    s.plot = h.Plot(
        "4. Thundering herd (8 processes)", "wall s (median)", list(figures["rounds"]), plot
    )
    return s
