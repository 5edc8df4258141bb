"""Test support for stores: the conformance suite and helpers to break and check stores.

Subclass :class:`StoreContract` in a ``Test...`` class and give it a
``store`` fixture; every backend in stepcache passes the same suite, and a
third-party store can reuse it. Only ``StoreContract`` needs pytest, and it
is imported on first use, so child processes of a test can import the
helpers cheaply.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from stepcache.testing.faults import DAMAGES, Unloadable, damage, failing_writes
from stepcache.testing.values import checked_value, is_whole, key, tree

if TYPE_CHECKING:
    from stepcache.testing.contract import StoreContract

__all__ = [
    "DAMAGES",
    "StoreContract",
    "Unloadable",
    "checked_value",
    "damage",
    "failing_writes",
    "is_whole",
    "key",
    "lock_files",
    "tree",
]


def lock_files(directory: str | os.PathLike[str]) -> list[str]:
    """The names of the per-key lock, lease and claim files in lock directory ``directory``.

    The one file byte-range locks live in (``keys.ranges``) is kept for
    good and is not among them: an idle store's lock directory has none.
    """
    from stepcache.stores._ranges import FILE_NAME

    return sorted(n for n in os.listdir(directory) if n != FILE_NAME)


def __getattr__(name: str) -> object:
    if name == "StoreContract":
        from stepcache.testing.contract import StoreContract

        return StoreContract
    raise AttributeError(f"module 'stepcache.testing' has no attribute {name!r}")
