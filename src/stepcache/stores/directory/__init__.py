"""DirectoryStore: one file per entry in a directory tree, safe for many processes at once.

The package is split by what each module owns: :mod:`.store` (the store and
its maintenance), :mod:`.backend` (entry files and trees as a
:class:`~stepcache.Backend`), :mod:`.entryfile` (reading entry files),
:mod:`.trees` (trees entering the store), :mod:`.eviction` (layout scans and
eviction policy), :mod:`.statsfiles` (per-instance counters), :mod:`.trust`
(root ownership checks) and :mod:`.beneath` (descriptor-relative filesystem
calls). Atomic writes and the fsync policy live in
:mod:`stepcache.stores._fsutil`, locks in :mod:`stepcache.stores._locks`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from stepcache.stores.directory.backend import TAG, DirectoryBackend
    from stepcache.stores.directory.eviction import PruneResult
    from stepcache.stores.directory.store import DirectoryStore

__all__ = ["TAG", "DirectoryBackend", "DirectoryStore", "PruneResult"]

_WHERE = {
    "TAG": "backend",
    "DirectoryBackend": "backend",
    "DirectoryStore": "store",
    "PruneResult": "eviction",
}


def __getattr__(name: str) -> Any:
    # Lazy: the helper modules (beneath, trees...) are imported by
    # stepcache.stores._fsutil, which the store module itself imports.
    where = _WHERE.get(name)
    if where is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(f"{__name__}.{where}"), name)
