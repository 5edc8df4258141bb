"""The ``stepcache`` command line: see inside a cache, explain its misses, maintain it.

::

    stepcache stats                      # entries, hit rate, instances opened, per step
    stepcache ls --step Translate --larger-than 1M
    stepcache explain                    # why the recent misses missed
    stepcache prune --max-size 2G --max-age 30d

This package imports click and rich only when :func:`main` runs, so the
helpers it shares with the library (``stepcache.cli._explain``) stay light.
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line with ``argv`` (default: ``sys.argv[1:]``); return the exit code.

    >>> main(["--version"])  # doctest: +ELLIPSIS
    stepcache ...
    0
    """
    from stepcache.cli._app import run

    return run(argv)
