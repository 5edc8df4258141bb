"""The ``stepcache`` logger: each warning once per process.

A degraded condition (a shared store without a secret, a store that cannot
be read) is worth one line, not one per store instance: a test session that
opens the same Redis server through four stores, or a command that opens a
store twice, would otherwise print the same warning four times. Warnings are
keyed by their message template and the arguments that name what they are
about (a store, a key); exception texts are left out of the key, so the same
failure with a different errno text is still the same warning.

>>> import logging
>>> log = logging.getLogger("stepcache")
>>> ONCE.reset()
>>> [ONCE.filter(log.makeRecord("stepcache", logging.WARNING, "", 0, "%s gone", ("a",), None))
...  for _ in range(2)]
[True, False]
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Hashable

__all__ = ["ONCE", "OncePerProcess", "install"]


class OncePerProcess(logging.Filter):
    """Lets each warning (template + non-exception arguments) through once; others pass."""

    def __init__(self) -> None:
        super().__init__()
        self._seen: set[Hashable] = set()
        self._lock = threading.Lock()

    @staticmethod
    def topic(record: logging.LogRecord) -> Hashable:
        """What makes two warnings the same: the template and what they name, not errno texts."""
        args = record.args if isinstance(record.args, tuple) else (record.args,)
        named = tuple(str(a) for a in args if not isinstance(a, BaseException))
        return (str(record.msg), named)

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING:
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


def install() -> None:
    """Put :data:`ONCE` on the ``stepcache`` logger (idempotent)."""
    logger = logging.getLogger("stepcache")
    if ONCE not in logger.filters:
        logger.addFilter(ONCE)
