"""Scenario 9: does a hit get slower as the cache fills? Get latency at 1k, 10k, 100k entries.

Each contender's store is filled with 1 KB entries up to each level in turn
(diskcache in transactions of 1,000, which only speeds up the filling), and
at each level random stored keys are read, contenders interleaved. All
entries are in the page cache: this measures lookup structure (directory
fan-out, B-tree, metadata checks), not the disk. joblib stops at 10k
entries (1k with ``--quick``, whose levels are 1k and 5k): filling it costs about a millisecond per
entry. Deleting the stores takes longer than filling them; it runs in the
background after the scenario (which the suite runs last).
"""

from __future__ import annotations

import random
import tempfile
import time
from typing import Any

from benchmarks import _harness as h
from benchmarks import _peers

NAMES = ["floor", "stepcache", "diskcache", "joblib"]
SIZE = 1000


def _fill(name: str, handle: _peers.Handle, start: int, stop: int) -> None:
    if name.startswith("diskcache"):
        cache = handle.cache  # type: ignore[attr-defined]
        for lo in range(start, stop, 1000):
            with cache.transact():
                for i in range(lo, min(stop, lo + 1000)):
                    key = _peers.key_of(i, SIZE)
                    cache.set(key, _peers.value_for(key))
        return
    for i in range(start, stop):
        key = _peers.key_of(i, SIZE)
        handle.set(key, _peers.value_for(key))


def _measure(handles: dict[str, _peers.Handle], level: int, samples: int) -> dict[str, Any]:
    rng = random.Random(level)
    picks = [_peers.key_of(rng.randrange(level), SIZE) for _ in range(samples)]

    def getter(handle: _peers.Handle) -> Any:
        read = getattr(handle, "hit", handle.get)  # joblib: the memoised call itself

        def call(i: int) -> None:
            if read(picks[i]) is None:
                raise AssertionError("a stored key was not found")

        return call

    times = h.interleaved({n: getter(hd) for n, hd in handles.items()}, samples)
    return {n: h.summarize(t, 1e6).to_dict() for n, t in times.items()}


def run(quick: bool = False) -> dict[str, Any]:
    """Latency (µs, min and median) of hits per contender and level, and fill times."""
    names, skipped = _peers.usable(NAMES)
    levels = [1_000, 5_000] if quick else [1_000, 10_000, 100_000]
    joblib_max = 1_000 if quick else 10_000
    samples = 500 if quick else 2000
    results: dict[str, dict[str, Any]] = {}
    fill_s: dict[str, float] = dict.fromkeys(names, 0.0)
    root = tempfile.mkdtemp(prefix="stepcache-bench-scaling-")
    try:
        handles = {n: _peers.CONTENDERS[n].open(f"{root}/{n}") for n in names}
        filled = 0
        for level in levels:
            active = {n: hd for n, hd in handles.items() if n != "joblib" or level <= joblib_max}
            for name, handle in active.items():
                start = time.perf_counter()
                _fill(name, handle, filled, level)
                fill_s[name] += time.perf_counter() - start
            filled = level
            results[str(level)] = _measure(active, level, samples)
        for handle in handles.values():
            handle.close()
    finally:
        cleanup = h.discard_tree(root)
    return {
        "levels": levels,
        "samples": samples,
        "value_bytes": SIZE,
        "us": results,
        "fill_s": fill_s,
        "cleanup": cleanup,
        "skipped": skipped,
    }


_COLUMNS = [
    "entries",
    "contender",
    "µs (min)",
    "µs (median)",
    "/ smallest level (median)",
    "/ floor (median)",
]


def _goals(name: str, level: str, figures: dict[str, Any], growth: float) -> list[h.Goal]:
    if name != "stepcache":
        return []
    by_name = figures["us"][level]
    peers = {n: x["median"] for n, x in by_name.items() if n not in ("floor", name)}
    goals = [h.ahead_of("hit (median)", by_name[name]["median"], peers)]
    smallest, largest = (str(x) for x in (figures["levels"][0], figures["levels"][-1]))
    if level == largest != smallest:
        goals.append(h.at_most(f"{level} / {smallest}", growth, 1.2, "x"))
    return goals


def section(figures: dict[str, Any]) -> h.Section:
    """The table: per level and contender, µs per hit, growth since the first level, / floor."""
    s = h.Section("scaling", "9. Hit latency as the cache fills", _COLUMNS)
    s.notes.append(
        f"{figures['samples']} random hits per level and contender, interleaved; "
        f"{figures['value_bytes']}-byte values; fill time (s): "
        + ", ".join(f"{n} {h.fmt(t)}" for n, t in figures["fill_s"].items())
        + ". The floor's growth is the filesystem's own."
    )
    us = figures["us"]
    first = us[str(figures["levels"][0])]
    for level, by_name in us.items():
        floor = by_name.get("floor", {}).get("median")
        for name, t in by_name.items():
            growth = t["median"] / first[name]["median"]
            cells = [level, name, h.fmt(t["min"]), h.fmt(t["median"]), h.ratio(growth)]
            cells.append(h.ratio(t["median"] / floor if floor else None))
            s.add(cells, _goals(name, level, figures, growth))
    for name, reason in figures["skipped"].items():
        s.notes.append(f"{name} skipped: {reason}")
    s.plot = h.Plot(
        "9. Hit latency vs entries",
        "µs per hit (median, log)",
        list(us),
        {n: [us[lv].get(n, {}).get("median") for lv in us] for n in first},
        kind="line",
        log=True,
    )
    return s
