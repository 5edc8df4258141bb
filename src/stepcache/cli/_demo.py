"""``stepcache demo`` (the reference toolchain, uncached, cold and warm) and ``stepcache bench``."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import click

from stepcache.cli import _render
from stepcache.cli._app import (
    EXIT_CHECK,
    EXIT_OK,
    EXIT_USAGE,
    CliError,
    Session,
    json_option,
    pass_session,
)
from stepcache.cli._units import plural

__all__ = ["register"]

_COLUMNS = (
    ("wall_s", "wall"),
    ("compiles", "compiled"),
    ("translations", "translated"),
    ("hits", "hits"),
    ("misses", "misses"),
    ("instances", "opened"),
    ("entries", "entries"),
    ("new_keys", "new keys"),
)


@contextlib.contextmanager
def _demo_progress(enabled: bool) -> Iterator[Callable[[str, int, int], None] | None]:
    # One bar per run (no-cache, cold, warm), each advanced by finished programs.
    with _render.progress("programs", enabled=enabled) as update:
        if update is None:
            yield None
            return
        runs: list[str] = []

        def report(run: str, done: int, total: int) -> None:
            if run not in runs:
                runs.append(run)
            update(done + total * (len(runs) - 1), total * 3)

        yield report


def _compare(base: float, other: float, what: str) -> str:
    """How ``other`` compares with ``base`` (``what``): a factor of at least 1, or a percentage.

    >>> _compare(4.0, 1.0, "cold"), _compare(4.0, 5.0, "cold"), _compare(1.0, 1.04, "cold")
    ('4.0x faster than cold', '1.2x slower than cold', '4% slower than cold')
    >>> _compare(1.0, 1.0, "cold")
    'as fast as cold'
    """
    factor = max(base, other) / min(base, other) if min(base, other) > 0 else 1.0
    word = "faster" if other < base else "slower"
    if factor >= 1.1:
        return f"{factor:.1f}x {word} than {what}"
    percent = round((factor - 1) * 100)
    return f"{percent}% {word} than {what}" if percent else f"as fast as {what}"


def _ratios(runs: list[dict[str, Any]]) -> list[str]:
    """One line per cached run: against no cache and, for a warm run, against a cold one."""
    plain = next((r["wall_s"] for r in runs if r["name"] == "no-cache"), None)
    cold = next((r["wall_s"] for r in runs if r["name"] == "cold"), None)
    names = [r["name"] for r in runs]
    lines = []
    for i, run in enumerate(runs):
        if run["name"] == "no-cache" or plain is None:
            continue
        label = run["name"] + (f" run {i}" if names.count(run["name"]) > 1 else " run")
        line = f"{label}: {_compare(plain, run['wall_s'], 'without a cache')}"
        if run["name"] == "cold" and run["wall_s"] > plain:
            line += " (the cost of filling the cache)"
        if run["name"] == "warm" and cold is not None:
            line += f", {_compare(cold, run['wall_s'], 'the cold run')}"
        lines.append(line)
    return lines


def _print_report(doc: dict[str, Any], look: str = "stepcache stats") -> None:
    right = [title for _, title in _COLUMNS]
    title = plural(doc["programs"], "program")
    out = _render.table("run", *right, right=right, title=title)
    for run in doc["runs"]:
        cells = [f"{run['wall_s']:.2f}s", *(f"{run[name]:,}" for name, _ in _COLUMNS[1:])]
        out.add_row(run["name"], *cells)
    verified = "yes" if doc["verified"] else "NO - results differ from the reference"
    lines = [*_ratios(doc["runs"]), f"verified: {verified}"]
    if doc.get("store"):
        where = doc["store"]
        shown = where.removeprefix("dir://")
        if doc.get("kept"):
            lines += [f"store: {shown} (kept)", f"see it with: {look}"]
        else:
            lines.append(f"store: {shown} (temporary, removed)")
    _render.show(out, *lines)


def _needs_numpy() -> None:
    try:
        import numpy  # noqa: F401
    except ImportError:
        raise CliError(
            "the demo needs numpy, which is not installed",
            hint="install it with: pip install 'stepcache[demo]' "
            "(in a source checkout: pip install -e '.[demo]')",
            exit_code=EXIT_USAGE,
        ) from None


@click.command(short_help="Run the demo toolchain without cache, then twice with it.")
@click.option(
    "--programs",
    default=100,
    show_default=True,
    type=click.IntRange(min=1),
    metavar="N",
    help="Programs in the suite.",
)
@click.option(
    "--workers",
    type=click.IntRange(min=1),
    metavar="W",
    help="Worker processes (default: one per CPU).",
)
@click.option(
    "--fresh", is_flag=True, help="Use a temporary store, removed afterwards, instead of the store."
)
@json_option
@pass_session
def demo(session: Session, programs: int, workers: int | None, fresh: bool, as_json: bool) -> int:
    """Compile a suite of stencil programs to C three times: without a cache, then twice with it.

    The cache is the store every command uses (--store, else $STEPCACHE_DIR,
    else the user cache directory) and is kept, so `stepcache stats`, `ls`
    and `explain` show what the demo did, and a second demo is warm. Nothing
    is cleared: each run is named by what it met (cold: no hit; warm: no
    miss). --fresh uses a temporary store instead. Workers are spawned
    processes that open the store the way test fixtures do. The table shows
    per run: wall time, programs compiled and translated (real work, not
    cache hits), hits, misses, store instances the workers opened, entries in
    the store afterwards and keys the run added. Needs a C compiler ($CC or
    cc) and numpy.

    \b
    Examples:
      stepcache demo --programs 20 --workers 2
      stepcache --store /tmp/democache demo --json
      stepcache demo --fresh
    """
    _needs_numpy()
    from stepcache.demo.runner import run_demo

    if not fresh:  # a store that cannot be used fails now, not after the first run
        session.store(writes="demo", create=True)
    with _demo_progress(not as_json) as progress:
        report = run_demo(
            programs=programs, workers=workers, store=session.spec, progress=progress, fresh=fresh
        )
    doc = report.to_dict()
    if as_json:
        _render.emit_json(doc)
    else:
        _print_report(doc, session.command("stats"))
    return EXIT_OK if doc["verified"] else EXIT_CHECK


def _benchmarks_root() -> Path:
    """The source checkout holding ``benchmarks/``; :class:`CliError` from an installed copy."""
    import stepcache

    root = Path(stepcache.__file__).resolve().parents[2]
    if not (root / "benchmarks" / "__main__.py").is_file():
        raise CliError(
            "the benchmarks are in the source tree, not in the installed package",
            hint="run them from a source checkout: python -m benchmarks",
            exit_code=EXIT_USAGE,
        )
    return root


@click.command(short_help="Run the benchmarks (from a source checkout).")
@click.option("--quick", is_flag=True, help="Fewer repetitions and smaller sizes.")
@click.option(
    "--only", metavar="NAME,...", help="Only these scenarios (see python -m benchmarks --list)."
)
@click.option("--plot", metavar="FILE", help="Also save a chart (needs matplotlib).")
@json_option
def bench(quick: bool, only: str | None, plot: str | None, as_json: bool) -> int:
    """Run the benchmarks of a source checkout (same as: python -m benchmarks).

    They run as ``python -m benchmarks`` in a process of their own, which
    starts its workers with cached bytecode as installed software runs.

    \b
    Examples:
      stepcache bench --quick
      stepcache bench --only demo,miss
      stepcache bench --json --plot bench.png
    """
    import subprocess

    root = _benchmarks_root()
    args = [*(["--quick"] if quick else []), *(["--only", only] if only else [])]
    args += [*(["--json"] if as_json else []), *(["--plot", plot] if plot else [])]
    sys.stdout.flush()
    # Not in this process: one started with -B (or under PYTHONDONTWRITEBYTECODE)
    # would pass that to every worker the benchmarks spawn.
    return subprocess.run(
        [sys.executable, "-m", "benchmarks", *args], cwd=root, check=False
    ).returncode


def register(group: click.Group) -> None:
    """Add this module's commands to ``group``."""
    group.add_command(demo)
    group.add_command(bench)
