"""How a :class:`~stepcache.Store` keeps artifact trees: stored once, signed, served checked.

A tree is an entry holding its manifest (:mod:`~stepcache.stores.artifacts`);
a backend that keeps files (``keeps_files``) holds the tree itself beside
it, any other an archive inside the entry, unpacked per process into
:func:`~stepcache.stores._scratch.scratch_dir`. :func:`store_tree` and
:func:`find_tree` are the bodies of the store's ``_store_dir`` and
``_find_dir``, kept here so the store's module stays about the mapping.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from stepcache import codec
from stepcache.errors import StoreWriteError

if TYPE_CHECKING:
    from stepcache.stores.base import Store

__all__ = ["find_tree", "store_tree"]


def store_tree(
    store: Store,
    key: str,
    src: Path,
    info: Mapping[str, Any] | None,
    *,
    move: bool,
    looked: bool,
) -> Path | None:
    """``src`` stored as ``key``'s tree (``Store._store_dir``, which says what ``looked`` means);
    the stored copy, or ``None`` (counted) if the tree is still at ``src``."""
    from stepcache.stores import artifacts

    if looked:  # nothing to keep: storing it checks that src is a directory
        existing = None
    elif not src.is_dir():
        raise NotADirectoryError(f"put_dir needs a directory, {src} is not one")
    else:
        existing = store._find_dir(key)
    if existing is not None:  # a good tree is there already (it may be in use): keep it
        if move:
            import shutil  # here: only cleaning up needs it

            shutil.rmtree(src, ignore_errors=True)
        return existing
    algo = "sha256" if store.signed else "xxh3_128"
    tree_info = {**(info or {}), "kind": "tree"}
    if store.backend.keeps_files:
        if store.backend.tree_path(key) is not None:
            # An orphan tree (no entry, or a damaged one) is nobody's: make room.
            with contextlib.suppress(OSError):  # then publishing fails, and says why
                store.backend.remove(key)
        put = store._call(
            "write to",
            lambda: store.backend.put_tree_hashed(key, src, move=move, algo=algo),
            None,
        )
        if put is None:
            return None
        path, manifest = put
        if manifest is None:  # not read on the way in: read the published tree
            manifest = artifacts.build_manifest(path, algo=algo)
        payload = codec.TreePayload(artifacts.encode(manifest, None))
        if not store._save(key, store._pack(key, payload, tree_info), tree_info):
            why = f"its entry could not be written: {store.last_error}"
            raise StoreWriteError.for_tree(path, store.spec, why)
        return path
    manifest = artifacts.build_manifest(src, algo=algo)
    payload = codec.TreePayload(artifacts.encode(manifest, src))
    if not store._save(key, store._pack(key, payload, tree_info), tree_info):
        return None
    copy = artifacts.unpack(artifacts.decode(payload), store._scratch(key))
    if move:
        import shutil

        shutil.rmtree(src, ignore_errors=True)
    return copy


def find_tree(store: Store, key: str) -> Path | None:
    """The verified tree of ``key``, uncounted; a damaged one is discarded."""
    from stepcache.stores import artifacts

    found = store._read(key)
    if not isinstance(found, codec.TreePayload):
        return None  # absent, damaged (discarded), or a value / an older format's entry
    try:
        tree = artifacts.decode(found)
        if store.backend.keeps_files:
            path = store.backend.tree_path(key)
        else:
            path = store._scratch(key)
            if not path.is_dir():
                path = artifacts.unpack(tree, path)
    except (OSError, ValueError) as exc:
        store.discard(key, f"its tree cannot be read: {exc}")
        return None
    problem = "its files are missing" if path is None else artifacts.check_tree(path, tree.manifest)
    if problem is None:
        return path
    if path is not None and not store.backend.keeps_files:
        # Only this process's unpacked copy is damaged: the stored archive verified.
        import shutil

        shutil.rmtree(path, ignore_errors=True)
        store.counters.add("errors")
        store.say_once("copy", "stepcache: unpacked tree %s of %s: %s", key, store.spec, problem)
        return None
    store.discard(key, problem)
    return None
