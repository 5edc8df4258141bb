"""Options and entry filters shared by ``ls``, ``clear`` and ``prune``."""

from __future__ import annotations

import fnmatch
import time
from collections.abc import Callable, Iterable

import click

from stepcache.cli._units import parse_duration, parse_size
from stepcache.codec import EntryHeader

__all__ = ["duration", "label_option", "select_headers", "size", "step_option"]


def duration(ctx: click.Context, param: click.Parameter, value: str | None) -> float | None:
    """Click callback: ``7d`` -> seconds, with click's error for a bad value."""
    try:
        return None if value is None else parse_duration(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc), ctx, param) from None


def size(ctx: click.Context, param: click.Parameter, value: str | None) -> int | None:
    """Click callback: ``500M`` -> bytes, with click's error for a bad value."""
    try:
        return None if value is None else parse_size(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc), ctx, param) from None


step_option = click.option("--step", metavar="NAME", help="Only entries of this step.")
label_option = click.option(
    "--label", metavar="PATTERN", help="Only labels matching PATTERN (exact or shell glob: 'lap*')."
)


def select_headers(
    headers: Iterable[EntryHeader],
    *,
    step: str | None = None,
    label: str | None = None,
    older_than: float | None = None,
    larger_than: int | None = None,
    size: Callable[[EntryHeader], int] = lambda h: h.total_bytes,
) -> list[EntryHeader]:
    """The headers that pass every given filter (``None`` means no filter).

    ``size`` gives an entry's size (see :mod:`stepcache.cli._sizes`).

    >>> select_headers([], step="Translate")
    []
    """
    now = time.time()
    return [
        h
        for h in headers
        if (step is None or h.step == step)
        and (label is None or fnmatch.fnmatchcase(h.label, label))
        and (older_than is None or h.created < now - older_than)
        and (larger_than is None or size(h) > larger_than)
    ]
