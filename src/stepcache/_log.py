"""The ``stepcache`` logger, loaded on first use, and its each-warning-once filter.

:mod:`logging` costs a few milliseconds of import and most processes never
log anything, so modules log through :data:`log`, which imports
:mod:`logging` and looks the ``stepcache`` logger up at its first message.
Code that configures the logger (handlers, levels, filters) gets it from
:func:`logger`; either way the logger carries :data:`ONCE`.

A degraded condition (a shared store without a secret, a store that cannot
be read) is worth one line, not one per store instance: a test session that
opens the same Redis server through four stores, or a command that opens a
store twice, would otherwise print the same warning four times. Warnings are
keyed by their message template and the arguments that name what they are
about (a store, a key); exception texts are left out of the key, so the same
failure with a different errno text is still the same warning.

>>> import logging
>>> record = logger().makeRecord("stepcache", logging.WARNING, "", 0, "%s gone", ("a",), None)
>>> ONCE.reset()
>>> [ONCE.filter(record) for _ in range(2)]
[True, False]
"""

from __future__ import annotations

import threading
from collections.abc import Hashable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import logging

__all__ = ["ONCE", "OncePerProcess", "install", "log", "logger"]

_WARNING = 30  # logging.WARNING, without importing logging


class OncePerProcess:
    """Lets each warning (template + non-exception arguments) through once; others pass.

    A logging filter (anything with a ``filter(record)`` method serves as one).
    """

    def __init__(self) -> None:
        self._seen: set[Hashable] = set()
        self._lock = threading.Lock()

    @staticmethod
    def topic(record: logging.LogRecord) -> Hashable:
        """What makes two warnings the same: the template and what they name, not errno texts."""
        args = record.args if isinstance(record.args, tuple) else (record.args,)
        named = tuple(str(a) for a in args if not isinstance(a, BaseException))
        return (str(record.msg), named)

    def filter(self, record: logging.LogRecord) -> bool:
        """Whether ``record`` goes out: below warnings always, a warning the first time."""
        if record.levelno < _WARNING:
            return True
        key = self.topic(record)
        with self._lock:
            if key in self._seen:
                return False
            self._seen.add(key)
        return True

    def reset(self) -> None:
        """Forget every warning seen (for tests that each expect their warning)."""
        with self._lock:
            self._seen.clear()


#: the filter on the ``stepcache`` logger
ONCE = OncePerProcess()


def install(target: logging.Logger | None = None) -> None:
    """Put :data:`ONCE` on the ``stepcache`` logger (or ``target``); idempotent."""
    if target is None:
        import logging

        target = logging.getLogger("stepcache")
    if ONCE not in target.filters:
        target.addFilter(ONCE)


def logger() -> logging.Logger:
    """The ``stepcache`` logger, with :data:`ONCE` on it (imports :mod:`logging`)."""
    import logging

    found = logging.getLogger("stepcache")
    install(found)
    return found


class _LazyLogger:
    """Forwards to :func:`logger` at each message: nothing is imported until one is logged."""

    __slots__ = ()

    def debug(self, msg: str, *args: Any, **kwargs: Any) -> None:
        logger().debug(msg, *args, **kwargs)

    def info(self, msg: str, *args: Any, **kwargs: Any) -> None:
        logger().info(msg, *args, **kwargs)

    def warning(self, msg: str, *args: Any, **kwargs: Any) -> None:
        logger().warning(msg, *args, **kwargs)

    def error(self, msg: str, *args: Any, **kwargs: Any) -> None:
        logger().error(msg, *args, **kwargs)


#: what modules log through: ``log.warning(message, *args)`` as on a ``logging.Logger``
log = _LazyLogger()
