"""Output for the command line: rich tables on stdout, progress on stderr, JSON documents.

Colour only on a terminal and never with ``NO_COLOR`` set (rich honours
both). With ``--json`` a command prints exactly one JSON document on stdout
and shows no progress.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TextIO

from rich.console import Console, RenderableType
from rich.table import Table

__all__ = [
    "ProgressFn",
    "console",
    "counting",
    "emit_json",
    "key_values",
    "progress",
    "show",
    "table",
]

#: progress callback handed to long operations: ``fn(done, total)``
ProgressFn = Callable[[int, int], None]

# Wide enough that a listing piped to a file or `less` keeps one entry per line.
_PIPE_WIDTH = 120


def console(*, stderr: bool = False) -> Console:
    """A console on stdout (or stderr); labels and paths are printed as given, never as markup."""
    stream: TextIO = sys.stderr if stderr else sys.stdout
    width = None if stream.isatty() or "COLUMNS" in os.environ else _PIPE_WIDTH
    return Console(
        file=stream, width=width, highlight=False, markup=False, emoji=False, soft_wrap=False
    )


def show(*items: RenderableType) -> None:
    """Print ``items`` on stdout; in a pipe, without the padding rich adds to line ends."""
    out = console()
    if out.is_terminal:
        for item in items:
            out.print(item)
        return
    with out.capture() as captured:
        for item in items:
            out.print(item)
    sys.stdout.write("".join(line.rstrip() + "\n" for line in captured.get().splitlines()))


def emit_json(document: Any) -> None:
    """Print ``document`` as the only output on stdout."""
    sys.stdout.write(json.dumps(document, indent=2, allow_nan=False) + "\n")
    sys.stdout.flush()


def table(*columns: str, title: str | None = None, right: Sequence[str] = ()) -> Table:
    """A plain table with the given column headers; ``right`` columns are right-aligned."""
    out = Table(title=title, title_justify="left", box=None, pad_edge=False, header_style="bold")
    for name in columns:
        out.add_column(name, justify="right" if name in right else "left", overflow="fold")
    return out


def key_values(rows: Sequence[tuple[str, str]]) -> Table:
    """A two-column grid of names and values, for summaries."""
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column(overflow="fold")
    for name, value in rows:
        grid.add_row(name, value)
    return grid


@contextlib.contextmanager
def progress(description: str, *, enabled: bool) -> Iterator[ProgressFn | None]:
    """A progress bar on stderr while the block runs; yields its ``fn(done, total)``.

    Yields ``None`` (no callback, no output) when disabled or when stderr is
    not a terminal, so logs and ``--json`` consumers never see bar frames.
    """
    if not enabled or not sys.stderr.isatty():
        yield None
        return
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
    )

    bar = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console(stderr=True),
        transient=True,
    )
    task = bar.add_task(description, total=None)

    def update(done: int, total: int) -> None:
        bar.update(task, completed=done, total=total or None)

    with bar:
        yield update


def counting(update: ProgressFn | None, total: Callable[[], int]) -> Callable[[int], None] | None:
    """Adapt ``update(done, total)`` to callbacks that report increments, ``fn(n)``.

    ``total()`` is asked once, and only when there is a bar to show, so that a
    bar has its total while ``--json`` and pipes pay nothing for it. A count
    that outgrows it (entries written meanwhile) raises the total.
    """
    if update is None:
        return None
    done, expected = 0, total()
    update(0, expected)

    def add(n: int) -> None:
        nonlocal done
        done += n
        update(done, max(expected, done))

    return add
