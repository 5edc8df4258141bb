"""Who may write a DirectoryStore: the checks on its root and its own directories.

Whoever can write the tree can run code in its readers (see
``docs/security.md``), so the root must belong to this user (or root) and be
writable by nobody else, unless the store is opened ``shared=True`` (a
group's cache: any owner, group-writable, never writable by all).

>>> import tempfile
>>> root = tempfile.mkdtemp()
>>> open_root(root, shared=False, tag=b"Signature: ...", durable=False)
>>> os.path.exists(f"{root}/CACHEDIR.TAG"), check_tree(root)
(True, None)
"""

from __future__ import annotations

import contextlib
import os
import stat
from typing import Final

from stepcache.errors import StoreUnavailableError, UnsafeStoreError
from stepcache.stores import _fsutil
from stepcache.stores.directory.beneath import is_group_dir

__all__ = ["UNSIGNED", "check_dedicated", "check_root", "check_tree", "open_root"]

#: the warning of a shared store without a secret, with ``%s`` for its spec
UNSIGNED: Final = (
    "stepcache: %s is shared but has no secret, so entries are not signed and "
    "any member of its group can run code in every reader; set STEPCACHE_SECRET "
    "(the same for the whole group) or pass secret="
)
_OWN_DIRS: Final = ("v2", "v1", "tmp", "leases", "stats")  # v1: an earlier layout's entries


def check_root(root: str, st: os.stat_result, *, shared: bool = False) -> None:
    """Raise :class:`UnsafeStoreError` if users other than this one could write ``root``.

    Refused: a directory writable by others; unless ``shared``, one owned by
    another user (root's own are fine) or writable by its group.

    >>> check_root("/x", os.stat_result((0o40700, 0, 0, 0, os.geteuid(), 0, 0, 0, 0, 0)))
    """
    if not stat.S_ISDIR(st.st_mode):
        raise StoreUnavailableError(f"{root} is not a directory; pass a directory for the cache")
    why = "could plant entries that run code in this process (docs/security.md)"
    if st.st_mode & stat.S_IWOTH:
        raise UnsafeStoreError(
            f"{root} is writable by every user, any of whom {why}; chmod o-w {root}"
        )
    if shared:
        return
    if st.st_uid not in (os.geteuid(), 0):
        raise UnsafeStoreError(
            f"{root} belongs to another user (uid {st.st_uid}), who {why}; use a cache "
            "directory of your own (STEPCACHE_DIR), or open it with shared=True if it is "
            "a group cache whose members you trust"
        )
    if st.st_mode & stat.S_IWGRP:
        raise UnsafeStoreError(
            f"{root} is writable by its group, whose members {why}; chmod g-w {root}, "
            "or open it with shared=True if it is a group cache whose members you trust"
        )


def open_root(root: str, *, shared: bool, tag: bytes | None, durable: bool) -> None:
    """Check who can write ``root`` (:func:`check_root`); with a ``tag``, make a missing store.

    ``tag`` is the content of a new store's ``CACHEDIR.TAG``, written last:
    a root without it is made (again). An existing store costs two ``stat``
    calls and no write.
    """
    try:
        st: os.stat_result | None = os.stat(root)
    except FileNotFoundError:
        st = None
    except OSError as exc:
        raise StoreUnavailableError(
            f"cannot open the cache directory {root}: {exc}; "
            "pass a writable path or set STEPCACHE_DIR"
        ) from exc
    if st is not None:
        check_root(root, st, shared=shared)
    is_store = st is not None and os.path.exists(f"{root}/CACHEDIR.TAG")
    if st is not None and not is_store:
        check_dedicated(root)
    if tag is not None and not is_store:
        _create(root, tag, shared=shared, durable=durable)


def check_dedicated(root: str) -> None:
    """Refuse to make a store of a directory that holds anything but stepcache's own.

    A store's ``CACHEDIR.TAG`` tells backup tools to skip its directory: put
    into ``/`` or a home directory, it would hide everything there from them,
    and ``clear`` would work on files that are not entries. Allowed: an empty
    directory, or one holding only what stepcache makes (its own directories
    and ``memo/``, the code-identity memo kept in the default store directory,
    and a ``CACHEDIR.TAG`` that another process has just written).

    >>> import tempfile
    >>> check_dedicated(tempfile.mkdtemp())
    """
    try:
        names = set(os.listdir(root))
    except OSError as exc:
        raise StoreUnavailableError(f"cannot open the cache directory {root}: {exc}") from exc
    # CACHEDIR.TAG: another process made the store since we looked (an attribute
    # cache, as on sshfs, can also hide it from the stat that looked): a store.
    foreign = sorted(names - {*_OWN_DIRS, "memo", "CACHEDIR.TAG"})
    if foreign:
        shown = ", ".join(foreign[:3]) + (", ..." if len(foreign) > 3 else "")
        raise StoreUnavailableError(
            f"{root} is not a stepcache store (no CACHEDIR.TAG) and holds other files "
            f"({shown}); pass a new or empty directory for the cache, or set STEPCACHE_DIR"
        )


def _create(root: str, tag: bytes, *, shared: bool, durable: bool) -> None:
    # Many processes may create the same new store at once: every step
    # either tolerates an existing result or replaces it atomically.
    try:
        _fsutil.make_dirs(root, durable=durable)
        st = os.stat(root)
        if shared and st.st_uid == os.geteuid() and not is_group_dir(st.st_mode):
            os.chmod(root, 0o2770)  # a group cache: see beneath.is_group_dir
            st = os.stat(root)
        # Checked again: another user may have made it first.
        check_root(root, st, shared=shared)
        _fsutil.write_atomic(f"{root}/CACHEDIR.TAG", tag, f"{root}/tmp", durable=durable)
    except OSError as exc:
        if isinstance(exc, UnsafeStoreError):
            raise
        raise StoreUnavailableError(
            f"cannot create the cache directory {root}: {exc}; "
            "pass a writable path or set STEPCACHE_DIR"
        ) from exc


def check_tree(root: str) -> None:
    """Refuse (:class:`UnsafeStoreError`) a tree whose own directories are symlinks or files.

    For whole-tree maintenance (``prune``), which would otherwise sweep
    wherever such a link points.
    """
    for name in _OWN_DIRS:
        path = f"{root}/{name}"
        with contextlib.suppress(FileNotFoundError):
            mode = os.lstat(path).st_mode
            if not stat.S_ISDIR(mode):
                kind = "a symlink" if stat.S_ISLNK(mode) else "not a directory"
                raise UnsafeStoreError(
                    f"{path} is {kind}; stepcache follows no symlink inside a cache "
                    "directory: remove it (see docs/security.md)"
                )
