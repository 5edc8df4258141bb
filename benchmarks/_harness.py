"""Shared benchmark machinery: timing, goals and verdicts, sections, markdown and JSON.

A scenario measures and returns plain figures (a JSON-able dict); a
*section* turns them into a markdown table whose rows carry the goal they
are judged against and a verdict. Timings are always reported as min and
median, and judged by ratios measured in the same run, because the machines
these run on are shared and noisy::

    times = interleaved({"a": f, "b": g}, repeat=100)
    a, b = summarize(times["a"]), summarize(times["b"])
    goal = at_most("a / b", a.median / b.median, 1.3, "x")  # Goal(text="≤ 1.3x", met=...)
"""

from __future__ import annotations

import dataclasses
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

__all__ = [
    "Goal",
    "Plot",
    "Section",
    "Timing",
    "ahead_of",
    "at_most",
    "cache_bytecode",
    "child_env",
    "discard_tree",
    "exactly",
    "fmt",
    "interleaved",
    "ratio",
    "machine",
    "render",
    "standalone",
    "summarize",
]


# -- timing ------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Timing:
    """Min and median of repeated measurements, in the unit they were given in."""

    min: float
    median: float
    n: int

    def scaled(self, factor: float) -> Timing:
        """The same timing in another unit: ``Timing(1e3, 2e3, 5).scaled(1e-3).min == 1.0``."""
        return Timing(self.min * factor, self.median * factor, self.n)

    def to_dict(self) -> dict[str, float]:
        """``{"min": ..., "median": ..., "n": ...}``."""
        return {"min": self.min, "median": self.median, "n": self.n}


def summarize(samples: Sequence[float], factor: float = 1.0) -> Timing:
    """Min and median of ``samples`` times ``factor``: ``summarize([3, 1, 2]).median == 2``."""
    if not samples:
        raise ValueError("no samples to summarize")
    return Timing(min(samples) * factor, statistics.median(samples) * factor, len(samples))


def interleaved(
    funcs: Mapping[str, Callable[[int], object]], repeat: int, warmup: int = 0
) -> dict[str, list[float]]:
    """Seconds per call of each ``func(i)``, calling each once per round for ``repeat`` rounds.

    Interleaving makes drift in the machine's speed (other jobs, frequency
    scaling) hit every contender alike, so their ratios stay meaningful.
    ``warmup`` untimed rounds come first, to warm caches and code paths; they
    pass ``i`` from ``repeat`` on, so no timed call repeats one of theirs
    (a second miss of the same key would find the kernel's negative cache)::

        times = interleaved({"floor": lambda i: read(i), "store": lambda i: get(i)}, 100)
    """
    for i in range(repeat, repeat + warmup):
        for func in funcs.values():
            func(i)
    times: dict[str, list[float]] = {name: [] for name in funcs}
    clock = time.perf_counter_ns
    for i in range(repeat):
        for name, func in funcs.items():
            start = clock()
            func(i)
            times[name].append((clock() - start) * 1e-9)
    return times


# -- goals -------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Goal:
    """A target and whether a measured figure meets it.

    ``what`` names the figure, ``text`` states the target, ``verdict`` is
    ``"met"`` or says by how much it was missed.
    """

    what: str
    text: str
    met: bool
    verdict: str

    def to_dict(self) -> dict[str, Any]:
        """The JSON form."""
        return dataclasses.asdict(self)


def fmt(x: float | None, digits: int = 3) -> str:
    """A number with ``digits`` significant digits, no exponent for everyday sizes.

    >>> fmt(0.012345), fmt(1234.5), fmt(None)
    ('0.0123', '1234', '—')
    """
    if x is None:
        return "—"
    if x == 0 or abs(x) >= 10 ** (digits - 1):
        return f"{x:.0f}"
    return f"{x:.{digits}g}"


def ratio(x: float | None) -> str:
    """A ratio with two decimals: ``ratio(1.234) == '1.23x'``."""
    return "—" if x is None else f"{x:.2f}x"


def at_most(what: str, value: float, limit: float, unit: str = "") -> Goal:
    """Lower is better and ``value`` must not exceed ``limit``.

    >>> at_most("hit / floor", 1.56, 1.3, "x").verdict
    'missed by 20% (1.56x)'
    """
    met = value <= limit
    verdict = "met" if met else f"missed by {value / limit - 1:.0%} ({fmt(value)}{unit})"
    return Goal(what, f"≤ {fmt(limit)}{unit}", met, verdict)


def exactly(what: str, value: int, target: int) -> Goal:
    """A count that must equal ``target``.

    >>> exactly("errors", 3, 0).verdict
    'missed by 3 extra errors'
    """
    met = value == target
    diff = value - target
    verdict = "met" if met else f"missed by {abs(diff)} {'extra ' if diff > 0 else ''}{what}"
    return Goal(what, f"= {target}", met, verdict)


def ahead_of(what: str, value: float, peers: Mapping[str, float | None]) -> Goal:
    """Lower is better and ``value`` must beat every peer's figure (missing peers ignored).

    >>> ahead_of("wall", 1.0, {"diskcache": 2.5, "joblib": 1.5}).verdict
    'met (next: joblib, 1.50x)'
    >>> ahead_of("wall", 1.0, {"joblib": 0.8}).verdict
    'missed by 25% (joblib is faster)'
    """
    present = {name: v for name, v in peers.items() if v is not None}
    if not present:
        return Goal(what, "ahead of every peer", True, "no peer measured")
    name, best = min(present.items(), key=lambda kv: kv[1])
    if value < best:
        return Goal(what, "ahead of every peer", True, f"met (next: {name}, {best / value:.2f}x)")
    return Goal(
        what, "ahead of every peer", False, f"missed by {value / best - 1:.0%} ({name} is faster)"
    )


# -- sections ----------------------------------------------------------------------------------
@dataclasses.dataclass
class Plot:
    """One chart: grouped bars (``kind="bar"``) or lines over numeric categories (``"line"``).

    ``series`` maps a legend label to one value per category (``None``: not measured);
    ``refs`` draws dashed horizontal lines (a floor, a goal) at the given heights.
    """

    title: str
    ylabel: str
    categories: list[str]
    series: dict[str, list[float | None]]
    kind: str = "bar"
    log: bool = False
    refs: dict[str, float] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class Section:
    """One scenario's results: a table whose last two columns are the goal and the verdict.

    >>> s = Section("demo", "Demo", ["run", "wall s"])
    >>> s.add(["warm", "1.0"], [at_most("warm / cold", 0.1, 0.15)])
    >>> s.goals[0].met
    True
    """

    name: str
    title: str
    columns: list[str]
    rows: list[list[str]] = dataclasses.field(default_factory=list)
    goals: list[Goal] = dataclasses.field(default_factory=list)
    notes: list[str] = dataclasses.field(default_factory=list)
    plot: Plot | None = None
    figures: dict[str, Any] = dataclasses.field(default_factory=dict)
    skipped: str | None = None
    seconds: float = 0.0

    def add(self, cells: Sequence[str], goals: Iterable[Goal] = ()) -> None:
        """Append a row; its goal and verdict cells list ``goals`` (joined by ``;``)."""
        goals = list(goals)
        self.goals.extend(goals)
        self.rows.append(
            [
                *cells,
                "; ".join(f"{g.what} {g.text}" for g in goals) or "—",
                "; ".join(g.verdict for g in goals) or "—",
            ]
        )

    def to_dict(self) -> dict[str, Any]:
        """The JSON form: title, table, goals, raw figures, run time, skip reason."""
        return {
            "title": self.title,
            "skipped": self.skipped,
            "seconds": round(self.seconds, 2),
            "columns": [*self.columns, "goal", "verdict"],
            "rows": self.rows,
            "goals": [g.to_dict() for g in self.goals],
            "notes": self.notes,
            "figures": self.figures,
        }


def render(section: Section) -> str:
    """The section as markdown: a heading, its notes and its table (or the skip reason)."""
    out = [f"### {section.title}", ""]
    if section.skipped is not None:
        return "\n".join([*out, f"Skipped: {section.skipped}", ""])
    out += [*section.notes, ""] if section.notes else []
    if not section.columns:
        return "\n".join(out)
    header = [*section.columns, "goal", "verdict"]
    out.append("| " + " | ".join(header) + " |")
    out.append("|" + "|".join("---" for _ in header) + "|")
    out += ["| " + " | ".join(row) + " |" for row in section.rows]
    return "\n".join([*out, ""])


def summary(sections: Iterable[Section]) -> str:
    """One paragraph: how many goals were met, and every missed one with its verdict."""
    goals = [(s.title, g) for s in sections for g in s.goals]
    missed = [(title, g) for title, g in goals if not g.met]
    lines = [f"**Goals: {len(goals) - len(missed)} met, {len(missed)} missed.**"]
    lines += [f"- {title}: {g.what} {g.text}: {g.verdict}" for title, g in missed]
    return "\n".join(lines)


# -- environment -------------------------------------------------------------------------------
def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _fs_type(path: str) -> str:
    """Filesystem type of the mount holding ``path`` (Linux ``/proc/mounts``), or ``"?"``."""
    best, kind = "", "?"
    try:
        with open("/proc/mounts") as f:
            for line in f:
                parts = line.split()
                mount = parts[1] if len(parts) > 2 else ""
                inside = path == mount or path.startswith(mount.rstrip("/") + "/")
                if inside and len(mount) >= len(best):
                    best, kind = mount, parts[2]
    except OSError:
        pass
    return kind


def machine() -> dict[str, Any]:
    """What the figures were measured on: cores, CPU, Python, temp filesystem, load."""
    tmp = os.path.realpath(tempfile.gettempdir())
    load = os.getloadavg() if hasattr(os, "getloadavg") else (0.0, 0.0, 0.0)
    return {
        "nproc": os.cpu_count(),
        "cpu": _cpu_model(),
        "python": platform.python_version(),
        "implementation": sys.implementation.name,
        "platform": platform.platform(),
        "tmp": tmp,
        "tmp_fs": _fs_type(tmp),
        "loadavg": [round(x, 2) for x in load],
    }


_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_OWN_PYCACHE = "STEPCACHE_BENCH_PYCACHE"  # a prefix made here, removed at exit


def cache_bytecode(rerun: list[str] | None = None) -> None:
    """Let processes started from now on cache bytecode, even under ``PYTHONDONTWRITEBYTECODE``.

    Installed software runs from cached bytecode; without it every fresh
    process would compile stepcache's modules again and the fresh-process
    figures would measure the compiler. The cache goes to a private
    ``PYTHONPYCACHEPREFIX`` (removed at exit), never into the source tree.
    Workers started by :mod:`multiprocessing` get this interpreter's own
    ``-B`` flag whatever the environment says, so an interpreter started
    with it runs itself again without it, with the arguments ``rerun``
    (``None``: it does not).
    """
    if os.environ.pop("PYTHONDONTWRITEBYTECODE", None) and not os.environ.get(
        "PYTHONPYCACHEPREFIX"
    ):
        os.environ["PYTHONPYCACHEPREFIX"] = tempfile.mkdtemp(prefix="stepcache-bench-pycache-")
        os.environ[_OWN_PYCACHE] = os.environ["PYTHONPYCACHEPREFIX"]
    if rerun is not None and sys.flags.dont_write_bytecode:
        sys.stdout.flush()
        sys.stderr.flush()
        os.execv(sys.executable, [sys.executable, *rerun])
    owned = os.environ.pop(_OWN_PYCACHE, None)
    if owned is not None:
        import atexit
        import shutil

        atexit.register(shutil.rmtree, owned, True)


def discard_tree(path: str) -> str:
    """Delete the directory tree ``path`` without waiting for it, where ``rm`` exists.

    Returns ``"background"`` or ``"done"``. A store of 100,000 one-file
    entries takes minutes to delete on a busy disk; the run need not wait,
    and the scenario that makes one runs last.
    """
    import shutil
    import subprocess

    rm = shutil.which("rm")
    if rm is None:
        shutil.rmtree(path, ignore_errors=True)
        return "done"
    subprocess.Popen(
        [rm, "-rf", "--", path],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # outlives this process; nothing waits for it
    )
    return "background"


def child_env(**extra: str) -> dict[str, str]:
    """Environment for a fresh interpreter: this checkout importable, bytecode cached, ``extra``."""
    cache_bytecode()
    env = {**os.environ, **extra}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (_ROOT, env.get("PYTHONPATH")) if p)
    return env


# -- a module run alone ------------------------------------------------------------------------
def standalone(
    run: Callable[[bool], dict[str, Any]],
    table: Callable[[dict[str, Any]], str],
    description: str,
    argv: Sequence[str] | None = None,
) -> None:
    """The command line of a ``bench_*`` module run alone: ``[--quick] [--json]``.

    Prints ``table(run(quick))``, or the figures as JSON with ``--json``::

        def main(argv=None):
            standalone(run, table, "Fingerprint speed against its floor.", argv)
    """
    import argparse
    import json

    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--quick", action="store_true", help="fewer repeats: noisy figures")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args(argv)
    figures = run(args.quick)
    print(json.dumps(figures, indent=2) if args.json else table(figures))
