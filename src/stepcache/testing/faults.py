"""Faults to inject into stores under test: damaged entries, failing writes, unloadable values.

>>> damage(b"\\x93SCE and the rest", "truncate")
b'\\x93SCE and'
"""

from __future__ import annotations

import contextlib
import errno
from collections.abc import Iterator
from typing import Any, Final, NoReturn

from stepcache.stores.base import Store

__all__ = ["DAMAGES", "Unloadable", "damage", "failing_writes"]

#: kinds of damage :func:`damage` applies, each of which a store must read as a miss
DAMAGES: Final = ("truncate", "flip", "empty", "foreign")


def damage(blob: bytes, kind: str) -> bytes:
    """Return ``blob`` damaged: cut in half, last byte flipped, emptied, or replaced by a PNG."""
    if kind == "truncate":
        return blob[: len(blob) // 2]
    if kind == "flip":
        return blob[:-1] + bytes([blob[-1] ^ 0xFF])
    if kind == "empty":
        return b""
    if kind == "foreign":
        return b"\x89PNG\r\n\x1a\n" + bytes(64)
    raise ValueError(f"unknown damage {kind!r}; choose one of {', '.join(DAMAGES)}")


def _refuse(message: str) -> NoReturn:
    raise RuntimeError(message)


class Unloadable:
    """A value that pickles fine and raises when unpickled (its class "went away").

    >>> import pickle
    >>> blob = pickle.dumps(Unloadable())
    >>> pickle.loads(blob)
    Traceback (most recent call last):
    ...
    RuntimeError: this value cannot be loaded
    """

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return (_refuse, ("this value cannot be loaded",))


@contextlib.contextmanager
def failing_writes(store: Store, code: int = errno.ENOSPC) -> Iterator[None]:
    """Make every entry write of ``store`` fail with ``OSError(code)`` inside the block.

    >>> import stepcache as sc
    >>> store = sc.MemoryStore()
    >>> with failing_writes(store):
    ...     store.set("ab" * 16, 1)
    False
    """

    def fail(key: str, blob: bytes) -> None:
        raise OSError(code, f"injected failure writing {key}")

    backend = store.backend
    backend.save = fail  # type: ignore[method-assign]
    try:
        yield
    finally:
        del backend.save
