"""Scenario 5: the reference toolchain (stencil DSL -> C -> cc -> ctypes) without cache, cold, warm.

:func:`stepcache.demo.runner.run_demo` compiles, runs and verifies a suite of
generated stencil programs in 2 worker processes (spawned, like
pytest-xdist workers), three times: without a cache, with an empty cache
(cold) and again (warm). Every run starts its workers afresh, so each wall
time includes interpreter start-up and imports (about a second on a busy
2-core machine), which no cache can remove. Goal: warm <= 15% of cold;
no peer runs this scenario (the pipeline takes a stepcache store).
"""

from __future__ import annotations

from typing import Any

from benchmarks import _harness as h

WORKERS = 2


def run(quick: bool = False) -> dict[str, Any]:
    """``run_demo``'s reports (``stepcache demo --json``), ``repeat`` times, fresh cache each."""
    from stepcache.demo.runner import run_demo

    programs, repeat = (20, 1) if quick else (100, 3)
    reports = [
        run_demo(programs=programs, workers=WORKERS, fresh=True).to_dict() for _ in range(repeat)
    ]
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
]


def _row(s: h.Section, name: str, rs: list[dict[str, Any]], cold: list[dict[str, Any]]) -> None:
    # Each repetition's runs follow each other closely: their ratio is steadier
    # on a shared machine than a ratio of medians taken over all repetitions.
    shares = [r["wall_s"] / c["wall_s"] for r, c in zip(rs, cold, strict=False)]
    share = h.summarize(shares) if shares else None
    wall = h.summarize([r["wall_s"] for r in rs])
    compiles = max(r["compiles"] for r in rs)
    goals = []
    if name == "warm" and share is not None:
        goals = [
            h.at_most("warm / cold", share.median, 0.15, "x"),
            h.exactly("compiles", compiles, 0),
        ]
    cells = [name, h.fmt(wall.min), h.fmt(wall.median), str(compiles)]
    cells += [str(min(r["hits"] for r in rs)), str(max(r["new_keys"] for r in rs))]
    cells += [h.ratio(share.min if share else None), h.ratio(share.median if share else None)]
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
        _row(s, name, rs, by_name.get("cold", []))
    if not verified:
        s.goals.append(h.Goal("results", "match the numpy reference", False, "missed"))
    walls = {n: h.summarize([r["wall_s"] for r in rs]).median for n, rs in by_name.items()}
    s.plot = h.Plot(
        f"5. Demo toolchain ({figures['programs']} programs)",
        "wall s (median)",
        list(walls),
        {"wall": list(walls.values())},
        refs={"goal: warm": 0.15 * walls["cold"]} if "cold" in walls else {},
    )
    return s
