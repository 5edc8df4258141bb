"""Scenario 1, misses: ``get`` of a key that is not there, against the floor.

Hits and sets are measured by ``bench_store`` (scenario 1); this module adds
the one operation it does not cover. Each contender holds 200 entries of
1 KB; every call asks for a different absent key, contenders interleaved.
The floor is a plain ``open`` of the entry's path that fails with
``FileNotFoundError``; joblib's miss is ``check_call_in_cache`` returning
false. The cost of a miss does not depend on the size of the values.
"""

from __future__ import annotations

import tempfile
from typing import Any

from benchmarks import _harness as h
from benchmarks import _peers

NAMES = ["floor", "stepcache", "diskcache", "joblib"]
ENTRIES = 200


def run(quick: bool = False) -> dict[str, Any]:
    """Seconds per miss for each contender: min, median and the raw count."""
    names, skipped = _peers.usable(NAMES)
    repeat, entries = (300, 50) if quick else (3000, ENTRIES)
    with tempfile.TemporaryDirectory(prefix="stepcache-bench-miss-") as root:
        handles = {n: _peers.CONTENDERS[n].open(f"{root}/{n}") for n in names}
        for handle in handles.values():
            for i in range(entries):
                key = _peers.key_of(i)
                handle.set(key, _peers.value_for(key))
        absent = [_peers.key_of(10**6 + i) for i in range(repeat)]

        def miss(handle: _peers.Handle) -> Any:
            def call(i: int) -> None:
                if handle.get(absent[i]) is not None:
                    raise AssertionError("an absent key was found")

            return call

        times = h.interleaved({n: miss(hd) for n, hd in handles.items()}, repeat)
        for handle in handles.values():
            handle.close()
    return {
        "entries": entries,
        "repeat": repeat,
        "us": {n: h.summarize(t, 1e6).to_dict() for n, t in times.items()},
        "skipped": skipped,
    }


def section(figures: dict[str, Any]) -> h.Section:
    """The table: µs per miss and ratios to the floor and to diskcache."""
    s = h.Section(
        "miss",
        "1b. get of an absent key (miss)",
        ["contender", "µs (min)", "µs (median)", "/ floor (median)", "/ diskcache (median)"],
    )
    s.notes.append(
        f"{figures['repeat']} misses per contender, interleaved; {figures['entries']} "
        "entries of 1 KB in each store. No goal is set for misses."
    )
    us = figures["us"]
    floor = us.get("floor", {}).get("median")
    disk = us.get("diskcache", {}).get("median")
    for name, t in us.items():
        s.add(
            [
                name,
                h.fmt(t["min"]),
                h.fmt(t["median"]),
                h.ratio(t["median"] / floor if floor else None),
                h.ratio(t["median"] / disk if disk else None),
            ],
        )
    for name, reason in figures["skipped"].items():
        s.notes.append(f"{name} skipped: {reason}")
    s.plot = h.Plot(
        "1b. Miss",
        "µs per miss (median)",
        list(us),
        {"miss": [t["median"] for t in us.values()]},
    )
    return s
