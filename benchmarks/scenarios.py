"""The scenarios of the suite, in the order they run, and how each becomes a section.

Every scenario is a module with ``run(quick) -> dict``. Modules of this
suite also have ``section(figures) -> Section``; for the others
(``bench_store``, ``bench_fingerprint``, ``bench_redis``) the sections are
built here from their figures. A module that cannot be imported, or whose
figures say ``{"skipped": reason}``, gives a skipped section with the
reason::

    section = measure(SCENARIOS["fingerprint"], quick=True)
    print(render(section))
"""

from __future__ import annotations

import dataclasses
import importlib
import time
import traceback
from collections.abc import Callable
from typing import Any

from benchmarks import _harness as h

__all__ = ["SCENARIOS", "Scenario", "build", "measure"]


@dataclasses.dataclass(frozen=True)
class Scenario:
    """A named benchmark: the module that measures it and, if foreign, its section builder."""

    name: str
    module: str
    title: str
    section: Callable[[dict[str, Any]], h.Section] | None = None
    default: bool = True  #: run without --only (False: slow or needs an outside toolchain)


_STORE_COLUMNS = [
    "size",
    "op",
    "contender",
    "µs (min)",
    "µs (median)",
    "/ floor (min)",
    "/ floor (median)",
    "/ diskcache (median)",
    "/ joblib (median)",
]
_STORE_LIMITS = {"get": 1.3, "set": 1.5}


def _store_row(s: h.Section, size: str, op: str, name: str, rows: dict[str, Any]) -> None:
    r = rows[name]
    disk = rows.get("diskcache", {}).get("median_us")
    job = rows.get("joblib", {}).get("median_us")
    goals = []
    if name == "DirectoryStore" and op in _STORE_LIMITS:  # no goal is set for misses
        goals = [h.at_most(f"{op} / floor", r["ratio_median"], _STORE_LIMITS[op], "x")]
    cells = [size, op, name, h.fmt(r["min_us"]), h.fmt(r["median_us"])]
    cells += [h.ratio(r["ratio_min"]), h.ratio(r["ratio_median"])]
    cells += [h.ratio(r["median_us"] / disk if disk else None)]
    cells += [h.ratio(r["median_us"] / job if job else None)]
    s.add(cells, goals)


def _store_section(figures: dict[str, Any]) -> h.Section:
    s = h.Section("store", "1. get (hit, miss) and set at 1 KB, 10 KB, 1 MB", _STORE_COLUMNS)
    s.notes.append(
        "From bench_store: one call of each contender per round, interleaved; the floor is "
        "open/read/pickle.loads (hit), an open failing with FileNotFoundError (miss) and "
        "pickle.dumps + temp file + os.replace (set). Each miss asks for a different key never "
        "stored. diskcache keeps values under 32 KB inside SQLite. Judged on the median ratio; "
        "no goal is set for misses."
    )
    results = figures["results"]
    series: dict[str, list[float | None]] = {}
    categories = []
    for size, ops in results.items():
        if size == "fresh_process":  # figures saved by earlier versions: now scenario 2
            continue
        for op, rows in ops.items():
            categories.append(f"{op} {size}")
            for name, r in rows.items():
                _store_row(s, size, op, name, rows)
                if name != "floor":
                    series.setdefault(name, []).append(r["ratio_median"])
    refs = {"floor": 1.0, "goal: hit": 1.3, "goal: set": 1.5}
    s.plot = h.Plot("1. Hit, miss and set, ratio to the floor", "x floor (median, log)", categories,
                    series, log=True, refs=refs)  # fmt: skip
    return s


def _fingerprint_section(figures: dict[str, Any]) -> h.Section:
    s = h.Section(
        "fingerprint",
        "7. fingerprint of a 10,000-node IR tree",
        ["measure", "ns/node (min)", "ns/node (median)"],
    )
    s.notes.append(
        f"From bench_fingerprint: {figures['nodes']} nodes, {figures['repeat']} runs each, "
        "interleaved; the floor is xxh3_128(pickle.dumps(tree))."
    )
    s.add(
        [
            "fingerprint",
            h.fmt(figures["fingerprint_ns_per_node_min"]),
            h.fmt(figures["fingerprint_ns_per_node_median"]),
        ]
    )
    s.add(
        [
            "floor",
            h.fmt(figures["floor_ns_per_node_min"]),
            h.fmt(figures["floor_ns_per_node_median"]),
        ]
    )
    s.add(
        ["fingerprint / floor", h.ratio(figures["ratio_min"]), h.ratio(figures["ratio_median"])],
        [h.at_most("fingerprint / floor", figures["ratio_median"], 1.5, "x")],
    )
    return s


def _redis_section(figures: dict[str, Any]) -> h.Section:
    s = h.Section(
        "redis",
        "8. Shared tiers: RedisStore and TieredStore",
        [
            "size",
            "store",
            "set µs (min)",
            "set µs (median)",
            "get µs (min)",
            "get µs (median)",
            "set / dir",
            "get / dir",
        ],
    )
    counts = ", ".join(f"{k}: {v}" for k, v in figures["keys_per_size"].items())
    s.notes.append(
        f"From bench_redis: signed entries, keys per size {counts}; a private redis-server. "
        "No goal is set; dir (DirectoryStore) is the reference."
    )
    for size, rows in figures["results"].items():
        for name, r in rows.items():
            s.add(
                [
                    size,
                    name,
                    h.fmt(r.get("set_us_min")),
                    h.fmt(r.get("set_us_median")),
                    h.fmt(r.get("get_us_min")),
                    h.fmt(r.get("get_us_median")),
                    h.ratio(r.get("set_vs_dir")),
                    h.ratio(r.get("get_vs_dir")),
                ]
            )
    return s


SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in (
        Scenario("store", "benchmarks.bench_store", "1. get (hit, miss) and set", _store_section),
        Scenario("open", "benchmarks.bench_open", "2. Open and read in a fresh process"),
        Scenario("contention", "benchmarks.bench_contention", "3. 12 processes x 15 instances"),
        Scenario("herd", "benchmarks.bench_herd", "4. Thundering herd"),
        Scenario("demo", "benchmarks.bench_demo", "5. The demo toolchain"),
        Scenario("identity", "benchmarks.bench_identity", "6. Code identity and key_for"),
        Scenario(
            "fingerprint", "benchmarks.bench_fingerprint", "7. fingerprint", _fingerprint_section
        ),
        Scenario("redis", "benchmarks.bench_redis", "8. Shared tiers", _redis_section),
        Scenario("miss", "benchmarks.bench_miss", "12. What a miss costs"),
        Scenario("trees", "benchmarks.bench_trees", "11. Checked trees, served and stored"),
        # Last: it leaves 300,000 files being deleted in the background.
        Scenario("scaling", "benchmarks.bench_scaling", "9. Hit latency as the cache fills"),
        Scenario("gt4py", "benchmarks.bench_gt4py", "10. GT4Py with stepcache", default=False),
        Scenario("s3", "benchmarks.bench_s3", "11. Object storage (S3)", default=False),
    )
}


def measure(scenario: Scenario, quick: bool) -> h.Section:
    """Run one scenario and build its section; never raises for a missing module or peer.

    A scenario that fails gives a section whose ``skipped`` starts with ``"failed:"``.
    """
    start = time.perf_counter()
    try:
        module = importlib.import_module(scenario.module)
    except ImportError as exc:
        return _skipped(scenario, f"cannot import {scenario.module}: {exc}")
    try:
        figures = module.run(quick)
        section = build(scenario, figures, module)
    except Exception as exc:
        detail = traceback.format_exception_only(type(exc), exc)[-1].strip()
        return _skipped(scenario, f"failed: {detail}")
    section.seconds = time.perf_counter() - start
    return section


def build(scenario: Scenario, figures: dict[str, Any], module: Any = None) -> h.Section:
    """The section of ``figures`` measured by ``scenario`` (also from a saved JSON file)."""
    if isinstance(figures.get("skipped"), str):
        return _skipped(scenario, figures["skipped"], figures)
    if module is None:
        module = importlib.import_module(scenario.module)
    builder = scenario.section or getattr(module, "section", None)
    section = _text_section(scenario, module, figures) if builder is None else builder(figures)
    section.name = scenario.name  # --only, the JSON and the plot know scenarios by this name
    section.figures = figures
    return section


def _text_section(scenario: Scenario, module: Any, figures: dict[str, Any]) -> h.Section:
    # A module without a section builder: its own table() text, no goals judged here.
    table = getattr(module, "table", None)
    text = table(figures) if callable(table) else "(no table: see the JSON figures)"
    return h.Section(scenario.name, scenario.title, [], notes=[str(text)])


def _skipped(scenario: Scenario, reason: str, figures: dict[str, Any] | None = None) -> h.Section:
    return h.Section(scenario.name, scenario.title, [], figures=figures or {}, skipped=reason)
