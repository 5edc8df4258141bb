"""One definition of an entry's size for every command, and the tidying ``clear`` does.

An entry's size is the bytes of its files on disk: the entry file, plus its
artifact directory's files when it has one (a build). ``stats`` (the store's
usage), ``prune`` (what eviction frees), ``ls`` and ``clear`` all count so.
A header alone knows only the entry file, so for a directory store the sizes
come from one scan of its tree, the same scan that its usage and eviction
use. Other stores keep a tree inside the entry, so the header's size is all.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from pathlib import Path

from stepcache.codec import EntryHeader
from stepcache.stores.base import Store
from stepcache.stores.directory.eviction import ENTRIES

__all__ = ["remove_empty_fanout", "size_of"]


def _directory_root(store: Store) -> Path | None:
    """The root of ``store``'s local directory tier, if it has one."""
    for candidate in (store, getattr(store, "local", None)):
        root = getattr(candidate, "path", None)
        if isinstance(root, Path):
            return root
    return None


def size_of(store: Store) -> Callable[[EntryHeader], int]:
    """``fn(header)``: the entry's bytes on disk, artifact directory included."""
    local = getattr(store, "local", store)
    backend = local.backend if isinstance(local, Store) else store.backend
    if not backend.keeps_files:
        return lambda header: header.total_bytes
    known = {e.key: e.size for e in backend.entries()}
    return lambda header: known.get(header.key, header.total_bytes)


def remove_empty_fanout(store: Store) -> int:
    """Remove the fanout directories of a directory store that hold nothing; how many.

    ``rmdir`` removes only an empty directory, so an entry published meanwhile
    stays. A writer whose directory goes between its ``mkdir`` and its
    rename fails that one write, which it counts and survives (an entry is
    never half-written), as it would after any ``clear``.
    """
    root = _directory_root(store)
    if root is None:
        return 0
    removed = 0
    with contextlib.suppress(FileNotFoundError, NotADirectoryError):
        for top in sorted(os.scandir(root / ENTRIES), key=lambda e: e.name):
            if top.is_dir(follow_symlinks=False) and len(top.name) == 2:
                removed += _rmdir(top.path)
    return removed


def _rmdir(path: str) -> int:
    try:
        os.rmdir(path)
    except OSError:  # not empty (an entry arrived), or gone already
        return 0
    return 1
