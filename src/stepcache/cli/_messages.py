"""What the command line prints besides its output: warnings and one-line errors.

The library's messages name the Python spelling of a fix (``shared=True``,
``secret=``); a person at the command line needs the CLI's (``--shared``,
``STEPCACHE_SECRET``). :func:`cli_words` translates, for errors and for the
warnings the library logs while a command runs.
"""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Iterator
from typing import Final

from stepcache import _log

__all__ = ["cli_words", "set_debug", "warnings_shown"]

# (Python spelling, CLI spelling), most specific first.
_CLI_WORDS: Final = (
    (" or pass secret=", ""),
    ("secret= or $STEPCACHE_SECRET", "STEPCACHE_SECRET"),
    ("open it with shared=True", "pass --shared"),
    ("shared=True", "--shared"),
    ("(STEPCACHE_DIR)", "(--store PATH or STEPCACHE_DIR)"),
    ("reopen it with read_only=False", "the command needs write access"),
)


def cli_words(text: str) -> str:
    """``text`` with the library's Python spellings replaced by the command line's.

    >>> cli_words("or open it with shared=True if it is a group cache")
    'or pass --shared if it is a group cache'
    >>> cli_words("set STEPCACHE_SECRET (the same on every client) or pass secret=")
    'set STEPCACHE_SECRET (the same on every client)'
    """
    for python, cli in _CLI_WORDS:
        text = text.replace(python, cli)
    return text


class _CliFormatter(logging.Formatter):
    debug = False

    def format(self, record: logging.LogRecord) -> str:
        text = cli_words(record.getMessage())
        if self.debug and record.exc_info:  # the traceback is for --debug only
            text += "\n" + self.formatException(record.exc_info)
        return text


@contextlib.contextmanager
def warnings_shown() -> Iterator[None]:
    """Print the library's warnings on stderr, in CLI spelling, while the block runs."""
    logger = _log.logger()
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_CliFormatter())
    logger.addHandler(handler)
    level = logger.level
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def set_debug() -> None:
    """``--debug``: the library's info messages too, and the tracebacks of logged errors."""
    logger = _log.logger()
    logger.setLevel(logging.DEBUG)
    for handler in logger.handlers:
        if isinstance(handler.formatter, _CliFormatter):
            handler.formatter.debug = True
