"""``stepcache demo`` (the reference toolchain, uncached, cold and warm) and ``stepcache bench``."""

from __future__ import annotations

import contextlib
import importlib
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import click

from stepcache.cli import _render
from stepcache.cli._app import EXIT_CHECK, EXIT_OK, CliError, Session, json_option, pass_session

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


def _ratios(runs: dict[str, dict[str, Any]]) -> list[str]:
    lines = []
    cold, warm, plain = (runs.get(n, {}).get("wall_s") for n in ("cold", "warm", "no-cache"))
    if cold and warm:
        lines.append(f"warm run: {cold / warm:.1f}x faster than cold")
    if cold and plain:
        cost = cold / plain - 1
        lines.append(f"cold vs no cache: {cost:+.0%} wall time (the cost of filling the cache)")
    return lines


def _print_report(doc: dict[str, Any]) -> None:
    right = [title for _, title in _COLUMNS]
    out = _render.table("run", *right, right=right, title=f"{doc['programs']} programs")
    for run in doc["runs"]:
        cells = [f"{run['wall_s']:.2f}s", *(f"{run[name]:,}" for name, _ in _COLUMNS[1:])]
        out.add_row(run["name"], *cells)
    verified = "yes" if doc["verified"] else "NO - results differ from the reference"
    ratios = _ratios({run["name"]: run for run in doc["runs"]})
    _render.show(out, *ratios, f"verified: {verified}")


@click.command(short_help="Run the demo toolchain without cache, cold and warm.")
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
@json_option
@pass_session
def demo(session: Session, programs: int, workers: int | None, as_json: bool) -> int:
    """Compile a suite of stencil programs to C three times: no cache, cold, warm.

    Workers are spawned processes that open the store the way test fixtures
    do. The table shows per run: wall time, programs compiled and translated
    (real work, not cache hits), hits, misses, store instances the workers
    opened, entries in the store afterwards and keys the run added. The cold
    and warm runs use --store if given, else a fresh temporary directory.
    Needs a C compiler ($CC or cc).

    \b
    Examples:
      stepcache demo --programs 20 --workers 2
      stepcache --store /tmp/democache demo --json
    """
    from stepcache.demo.runner import run_demo

    with _demo_progress(not as_json) as progress:
        report = run_demo(programs=programs, workers=workers, store=session.spec, progress=progress)
    doc = report.to_dict()
    if as_json:
        _render.emit_json(doc)
    else:
        _print_report(doc)
    return EXIT_OK if doc["verified"] else EXIT_CHECK


def _benchmarks_main() -> Callable[[list[str]], Any]:
    import stepcache

    root = Path(stepcache.__file__).resolve().parents[2]
    if not (root / "benchmarks" / "__main__.py").is_file():
        raise CliError(
            "no benchmarks next to this stepcache: they are not part of the installed package",
            hint="run `stepcache bench` from a source checkout installed with pip install -e",
        )
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    main: Callable[[list[str]], Any] = importlib.import_module("benchmarks.__main__").main
    return main


@click.command(short_help="Run the benchmarks (from a source checkout).")
@click.option("--quick", is_flag=True, help="Fewer repetitions and smaller sizes.")
@click.option("--plot", metavar="FILE", help="Also save a chart (needs matplotlib).")
@json_option
def bench(quick: bool, plot: str | None, as_json: bool) -> int:
    """Run the benchmarks of a source checkout (same as: python -m benchmarks).

    \b
    Examples:
      stepcache bench --quick
      stepcache bench --json --plot bench.png
    """
    args = [*(["--quick"] if quick else []), *(["--json"] if as_json else [])]
    args += ["--plot", plot] if plot else []
    code = _benchmarks_main()(args)
    return code if isinstance(code, int) else EXIT_OK


def register(group: click.Group) -> None:
    """Add this module's commands to ``group``."""
    group.add_command(demo)
    group.add_command(bench)
