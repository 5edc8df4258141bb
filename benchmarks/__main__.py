"""``python -m benchmarks``: run the scenarios, print markdown tables, write JSON and a plot.

Usage::

    python -m benchmarks [--quick] [--json [FILE]] [--plot FILE] [--only NAME,...] [--list]

Tables (one per scenario, with the goal and verdict of each judged row) go
to stdout, progress to stderr. ``--json FILE`` writes every figure to FILE;
``--json`` alone prints the JSON to stdout instead of the tables.
``stepcache bench`` calls :func:`main`. Exit status: 0, or 1 if a scenario
failed (a missed goal is a result, not a failure), 2 on bad arguments.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Mapping, Sequence
from typing import Any

from benchmarks import _harness as h
from benchmarks._plot import save_plot
from benchmarks.scenarios import SCENARIOS, Scenario, build, measure


def _parser(names: Sequence[str]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks", description="stepcache benchmarks against peers and floors."
    )
    parser.add_argument("--quick", action="store_true", help="fewer repeats, smaller sizes")
    parser.add_argument(
        "--json",
        nargs="?",
        const="-",
        metavar="FILE",
        help="write all figures as JSON to FILE (to stdout, instead of tables, without FILE)",
    )
    parser.add_argument("--plot", metavar="FILE", help="save a PNG chart (needs matplotlib)")
    parser.add_argument(
        "--only", metavar="NAME,...", help=f"run only these scenarios: {', '.join(names)}"
    )
    parser.add_argument("--list", action="store_true", help="list the scenarios and exit")
    parser.add_argument(
        "--from",
        dest="source",
        metavar="FILE",
        help="measure nothing: rebuild tables and plot from the JSON of an earlier run",
    )
    return parser


def _select(
    parser: argparse.ArgumentParser, only: str | None, registry: Mapping[str, Scenario]
) -> list[Scenario]:
    if only is None:
        return [s for s in registry.values() if s.default]
    wanted = [n.strip() for n in only.split(",") if n.strip()]
    unknown = [n for n in wanted if n not in registry]
    if unknown or not wanted:
        parser.error(
            f"unknown scenario(s) {', '.join(unknown) or '(none given)'}; "
            f"choose from {', '.join(registry)}"
        )
    return [registry[n] for n in wanted]


def _header(info: Mapping[str, Any], quick: bool) -> str:
    load = ", ".join(str(x) for x in info["loadavg"])
    return (
        f"# stepcache benchmarks{' (--quick)' if quick else ''}\n\n"
        f"{info['nproc']} cores ({info['cpu']}), Python {info['python']}, temp dir "
        f"{info['tmp']} on {info['tmp_fs']}; load average at start: {load}. "
        "Times: min and median over repeats; ratios measured in the same run.\n"
    )


def _emit(text: str, out: Any) -> None:
    if out is not None:
        print(text, file=out, flush=True)


def _missed(sections: Sequence[h.Section]) -> list[dict[str, Any]]:
    return [{"section": s.name, **g.to_dict()} for s in sections for g in s.goals if not g.met]


def run_all(
    scenarios: Sequence[Scenario], *, quick: bool, out: Any = None
) -> tuple[dict[str, Any], list[h.Section]]:
    """Measure ``scenarios`` in order; print each table to ``out`` as soon as it is ready.

    Returns the JSON document and the sections.
    """
    info = h.machine()
    started = time.time()
    _emit(_header(info, quick), out)
    sections = []
    for scenario in scenarios:
        print(f"[benchmarks] {scenario.name}: {scenario.title} ...", file=sys.stderr, flush=True)
        section = measure(scenario, quick)
        print(f"[benchmarks] {scenario.name}: {section.seconds:.1f} s", file=sys.stderr)
        sections.append(section)
        _emit(h.render(section), out)
    _emit(h.summary(sections), out)
    doc = {
        "machine": info,
        "quick": quick,
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started)),
        "seconds": round(time.time() - started, 1),
        "loadavg_end": h.machine()["loadavg"],
        "sections": {s.name: s.to_dict() for s in sections},
        "missed": _missed(sections),
    }
    return doc, sections


def rebuild(
    path: str, registry: Mapping[str, Scenario], out: Any = None
) -> tuple[dict[str, Any], list[h.Section]]:
    """Tables, verdicts and plot again from a JSON file written by ``--json``."""
    with open(path) as f:
        doc: dict[str, Any] = json.load(f)
    _emit(_header(doc["machine"], doc["quick"]), out)
    sections = []
    for name, saved in doc["sections"].items():
        scenario = registry.get(name, Scenario(name, "", saved["title"]))
        if saved["skipped"] is not None or name not in registry:
            reason = saved["skipped"] or "not a known scenario"
            section = h.Section(name, saved["title"], [], skipped=reason)
        else:
            section = build(scenario, saved["figures"])
        section.seconds = saved["seconds"]
        sections.append(section)
        _emit(h.render(section), out)
    _emit(h.summary(sections), out)
    doc["sections"] = {s.name: s.to_dict() for s in sections}
    doc["missed"] = _missed(sections)
    return doc, sections


def main(argv: list[str] | None = None, registry: Mapping[str, Scenario] = SCENARIOS) -> int:
    """Command line entry point (also behind ``stepcache bench``); returns the exit status."""
    parser = _parser(list(registry))
    args = parser.parse_args(argv)
    if args.list:
        for scenario in registry.values():
            note = "" if scenario.default else "  (only with --only)"
            print(f"{scenario.name:12} {scenario.title}{note}")
        return 0
    to_stdout = args.json == "-"
    out = None if to_stdout else sys.stdout
    if args.source:
        doc, sections = rebuild(args.source, registry, out)
    else:
        scenarios = _select(parser, args.only, registry)
        # Spawned workers and fresh processes start as installed software does (when
        # run as a program: a caller's own process is not replaced).
        h.cache_bytecode(rerun=["-m", "benchmarks", *sys.argv[1:]] if argv is None else None)
        doc, sections = run_all(scenarios, quick=args.quick, out=out)
    if args.plot:
        plots = [s.plot for s in sections if s.plot is not None and s.skipped is None]
        if plots:
            save_plot(plots, args.plot)
            print(f"[benchmarks] plot: {args.plot}", file=sys.stderr)
    if args.json is not None:
        text = json.dumps(doc, indent=1, default=str)
        if to_stdout:
            print(text)
        else:
            with open(args.json, "w") as f:
                f.write(text + "\n")
            print(f"[benchmarks] JSON: {args.json}", file=sys.stderr)
    failed = [s.name for s in sections if (s.skipped or "").startswith("failed:")]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
