"""Scenario 5: the reference toolchain (stencil DSL -> C -> cc -> ctypes) without cache, cold, warm.

:func:`stepcache.demo.runner.run_demo` compiles, runs and verifies a suite of
generated stencil programs in 2 worker processes (spawned, like
pytest-xdist workers), three times: without a cache, with an empty cache
(cold) and again (warm). Every run starts its workers afresh, so each wall
time includes interpreter start-up and imports (about a second on a busy
2-core machine), which no cache can remove. Goals: cold at most 5% over
no cache (filling the cache costs about nothing) and warm <= 10% of cold,
each judged on the median over repetitions of the ratio within one
repetition (its three runs follow each other, so drift in the machine's
load hits them alike; one run varies by +-10%). No peer runs this scenario
(the pipeline takes a stepcache store). Each run's CPU seconds (its workers
and their compilers) are judged the same way: on a shared machine they
depend far less on the neighbours than wall time does.
"""

from __future__ import annotations

import resource
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from benchmarks import _harness as h

WORKERS = 2
WARM_GOAL = 0.10  # warm / cold


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


@contextmanager
def _cpu_per_run(cpu: list[float]) -> Iterator[None]:
    """Append the CPU seconds of each ``run_suite`` call (its workers and their compilers).

    Wall time on a shared machine is mostly the neighbours; CPU time of the
    workers, collected when they exit, is what the runs themselves spent.
    """
    from stepcache.demo import runner

    original: Callable[..., Any] = runner.run_suite

    def counted(*args: Any, **kwargs: Any) -> Any:
        start = _children_cpu()
        try:
            return original(*args, **kwargs)
        finally:
            cpu.append(_children_cpu() - start)

    runner.run_suite = counted  # run_demo calls it by its module name
    try:
        yield
    finally:
        runner.run_suite = original


def run(quick: bool = False) -> dict[str, Any]:
    """``run_demo``'s reports (``stepcache demo --json``), ``repeat`` times, fresh cache each.

    Each run also records ``cpu_s``: CPU seconds of its workers and compilers.
    """
    from stepcache.demo.runner import run_demo

    programs, repeat = (20, 1) if quick else (100, 7)
    reports = []
    for _ in range(repeat):
        cpu: list[float] = []
        with _cpu_per_run(cpu):
            report = run_demo(programs=programs, workers=WORKERS, fresh=True).to_dict()
        for r, seconds in zip(report["runs"], cpu, strict=True):
            r["cpu_s"] = round(seconds, 3)
        reports.append(report)
    return {"workers": WORKERS, "programs": programs, "repeat": repeat, "reports": reports}


_COLUMNS = [
    "run",
    "wall s (min)",
    "wall s (median)",
    "compiles (max)",
    "hits (min)",
    "new keys (max)",
    "/ cold (min)",
    "/ cold (median)",
    "/ no cache (median)",
    "CPU / no cache (median)",
]


def _row(
    s: h.Section,
    name: str,
    rs: list[dict[str, Any]],
    cold: list[dict[str, Any]],
    plain: list[dict[str, Any]],
) -> None:
    # Each repetition's runs follow each other closely: their ratio is steadier
    # on a shared machine than a ratio of medians taken over all repetitions.
    shares = [r["wall_s"] / c["wall_s"] for r, c in zip(rs, cold, strict=False)]
    share = h.summarize(shares) if shares else None
    over = [r["wall_s"] / p["wall_s"] for r, p in zip(rs, plain, strict=False)]
    over_plain = h.summarize(over) if over else None
    cpu = [r["cpu_s"] / p["cpu_s"] for r, p in zip(rs, plain, strict=False) if "cpu_s" in r]
    cpu_plain = h.summarize(cpu) if cpu else None
    wall = h.summarize([r["wall_s"] for r in rs])
    compiles = max(r["compiles"] for r in rs)
    goals = []
    if name == "warm" and share is not None:
        goals = [
            h.at_most("warm / cold", share.median, WARM_GOAL, "x"),
            h.exactly("compiles", compiles, 0),
        ]
    if name == "cold" and over_plain is not None:
        goals = [h.at_most("cold / no cache", over_plain.median, 1.05, "x")]
        if cpu_plain is not None:
            goals.append(h.at_most("cold CPU / no cache CPU", cpu_plain.median, 1.05, "x"))
    cells = [name, h.fmt(wall.min), h.fmt(wall.median), str(compiles)]
    cells += [str(min(r["hits"] for r in rs)), str(max(r["new_keys"] for r in rs))]
    cells += [h.ratio(share.min if share else None), h.ratio(share.median if share else None)]
    cells += [h.ratio(over_plain.median if over_plain else None)]
    cells += [h.ratio(cpu_plain.median if cpu_plain else None)]
    s.add(cells, goals)


def section(figures: dict[str, Any]) -> h.Section:
    """The table: per run, wall time, compilations, hits, new keys; warm / cold judged."""
    s = h.Section("demo", "5. The demo toolchain: no cache, cold, warm", _COLUMNS)
    reports = figures["reports"]
    verified = all(r["verified"] for r in reports)
    s.notes.append(
        f"{figures['programs']} programs, {figures['workers']} worker processes, "
        f"{figures['repeat']} repetition(s), each with a fresh cache; / cold: per repetition; "
        f"all results verified: {verified}."
    )
    by_name: dict[str, list[dict[str, Any]]] = {}
    for report in reports:
        for r in report["runs"]:
            by_name.setdefault(r["name"], []).append(r)
    for name, rs in by_name.items():
        _row(s, name, rs, by_name.get("cold", []), by_name.get("no-cache", []))
    if not verified:
        s.goals.append(h.Goal("results", "match the numpy reference", False, "missed"))
    walls = {n: h.summarize([r["wall_s"] for r in rs]).median for n, rs in by_name.items()}
    s.plot = h.Plot(
        f"5. Demo toolchain ({figures['programs']} programs)",
        "wall s (median)",
        list(walls),
        {"wall": list(walls.values())},
        refs={"goal: warm": WARM_GOAL * walls["cold"]} if "cold" in walls else {},
    )
    return s
