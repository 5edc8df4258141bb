"""Directory file descriptors beneath a store's root, never following a symlink below it.

Writes, renames and removals in a cache tree go through directory fds
opened with ``O_NOFOLLOW``, one component at a time: a symlink planted in
the tree (a fanout directory, ``tmp/`` or ``leases/`` pointing elsewhere)
makes the operation fail instead of landing outside the cache. The anchor
itself may be a symlink (a cache root in ``~/.cache`` pointing to scratch
space). Directories made here are 0700, or 2770 in a group directory
(:func:`is_group_dir`), whatever the umask.

>>> import tempfile
>>> root = tempfile.mkdtemp()
>>> fd = open_dir(root, "v2/ab", create=True)
>>> os.close(fd)
>>> unlink_beneath(f"{root}/v2/ab/entry", root)
False
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import sys
from typing import Final

__all__ = [
    "DIR_FLAGS",
    "NEW_FILE",
    "common_dir",
    "descend",
    "is_group_dir",
    "open_dir",
    "open_leaf",
    "open_pair",
    "rename_beneath",
    "rmtree_at",
    "unlink_beneath",
]

#: flags of an ``os.open`` of a directory for ``*at`` calls
DIR_FLAGS: Final = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | getattr(os, "O_CLOEXEC", 0)
#: flags of an ``os.open`` (with ``dir_fd``) creating a new file, never through a symlink
NEW_FILE: Final = os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
_GROUP_DIR: Final = stat.S_ISGID | stat.S_IWGRP


def is_group_dir(mode: int) -> bool:
    """Whether a directory of ``mode`` is a group cache directory: setgid and group-writable.

    What stepcache creates in one belongs to the group too: directories 2770
    and files 0660, whatever the umask; anywhere else 0700 and 0600.

    >>> is_group_dir(0o42770), is_group_dir(0o40700)
    (True, False)
    """
    return mode & _GROUP_DIR == _GROUP_DIR


def open_dir(anchor: str, rel: str = "", *, create: bool = False, durable: bool = False) -> int:
    """Open directory ``anchor/rel`` for ``*at`` calls, following no symlink below ``anchor``.

    ``anchor`` itself may be a symlink. A component of ``rel`` that is a
    symlink or no directory raises :class:`OSError` naming it, so nothing
    done through the returned fd lands outside ``anchor``, whatever was
    planted in the tree. With ``create``, missing directories are made (0700,
    or 2770 in a group directory); ``durable`` fsyncs their parents.

    >>> import tempfile
    >>> fd = open_dir(tempfile.mkdtemp(), "v2/ab", create=True)
    >>> os.close(fd)
    """
    base = os.open(anchor, DIR_FLAGS)
    try:
        return _descend(base, anchor, rel, create, durable)
    finally:
        os.close(base)


def open_leaf(path: str, *, create: bool = False, durable: bool = False) -> int:
    """Open directory ``path``, which must not be a symlink itself (its parents may be).

    For a store's own directories (``tmp/``, ``leases/``, ``stats/``): one
    replaced by a symlink raises :class:`OSError` rather than being followed.

    >>> import tempfile
    >>> os.close(open_leaf(f"{tempfile.mkdtemp()}/tmp", create=True))
    """
    parent, name = os.path.split(os.path.abspath(path))
    return open_dir(parent, name, create=create, durable=durable)


def open_pair(a: str, b: str, *, durable: bool = False) -> tuple[int, int]:
    """Open (making them) directories ``a`` and ``b``, following no link below their common one.

    >>> import tempfile
    >>> root = tempfile.mkdtemp()
    >>> fds = open_pair(f"{root}/v2/ab", f"{root}/tmp")
    >>> for fd in fds: os.close(fd)
    """
    common, a_rel, b_rel = common_dir(a, b)
    try:
        base = os.open(common, DIR_FLAGS)
    except FileNotFoundError:  # a == b, or their common directory is new: above the trust line
        os.makedirs(common, mode=0o700, exist_ok=True)
        base = os.open(common, DIR_FLAGS)
    try:
        a_fd = _descend(base, common, a_rel, True, durable)
        try:
            return a_fd, _descend(base, common, b_rel, True, durable)
        except BaseException:
            os.close(a_fd)
            raise
    finally:
        os.close(base)


def descend(
    base: int,
    anchor: str,
    rel: str,
    *,
    create: bool,
    durable: bool = False,
    group: bool | None = None,
) -> int:
    """A new fd of directory ``rel`` below open directory ``base`` (``anchor``): see open_dir.

    ``group``: whether ``base`` is a group directory, if the caller knows
    (else it is looked up when a directory has to be made).
    """
    return _descend(base, anchor, rel, create, durable, group)


def _descend(
    base: int, anchor: str, rel: str, create: bool, durable: bool, group: bool | None = None
) -> int:
    """A new fd of directory ``rel`` below the open directory ``base`` (which is ``anchor``)."""
    if rel in ("", os.curdir):
        return os.dup(base)
    names = rel.split(os.sep)
    fd, done, made = base, 0, False
    try:
        for name in names:
            # Below a directory just made, nothing exists yet: make without looking.
            child, made, group = _open_child(fd, name, create, durable, made, group)
            if fd != base:
                os.close(fd)
            fd, done = child, done + 1
    except BaseException as exc:
        if fd != base:
            os.close(fd)
        if not isinstance(exc, OSError):
            raise
        where = os.path.join(anchor, *names[: done + 1])
        # ELOOP: O_NOFOLLOW met a symlink; ENOTDIR: a file (or, on BSDs, a symlink).
        if exc.errno in (errno.ELOOP, errno.ENOTDIR):
            raise OSError(
                exc.errno,
                "is a symlink or not a directory; stepcache follows no symlink inside "
                "a cache directory (remove it)",
                where,
            ) from None
        raise OSError(exc.errno, exc.strerror, where) from None
    return fd


def _open_child(
    parent: int, name: str, create: bool, durable: bool, new_parent: bool, group: bool | None
) -> tuple[int, bool, bool | None]:
    """(new fd, made, group bit) of directory ``name`` in ``parent``, made if missing.

    Made 0700, or 2770 in a group directory.

    ``new_parent``: ``parent`` was just made, so ``name`` is not there yet;
    ``group``: ``parent``'s group bit if known. The group bit returned is
    the child's, if known.
    """
    flags = DIR_FLAGS | os.O_NOFOLLOW
    if not new_parent:
        try:
            return os.open(name, flags, dir_fd=parent), False, None
        except FileNotFoundError:
            if not create:
                raise
    try:
        os.mkdir(name, 0o700, dir_fd=parent)
    except FileExistsError:  # another process made it meanwhile
        return os.open(name, flags, dir_fd=parent), False, None
    child = os.open(name, flags, dir_fd=parent)
    try:
        if group is None:
            group = is_group_dir(os.fstat(parent).st_mode)
        if group:
            os.fchmod(child, 0o2770)  # the umask must not take the group's access away
        if durable:
            with contextlib.suppress(OSError):
                os.fsync(parent)
    except BaseException:
        os.close(child)
        raise
    return child, True, group


def common_dir(a: str, b: str) -> tuple[str, str, str]:
    """The deepest directory holding directories ``a`` and ``b``, and both relative to it.

    >>> common_dir("/c/v2/ab", "/c/tmp")
    ('/c', 'v2/ab', 'tmp')
    """
    # Plain string work: os.path.commonpath and relpath would double the cost of a write.
    pa, pb = os.path.abspath(a).split(os.sep), os.path.abspath(b).split(os.sep)
    n = 0
    for x, y in zip(pa, pb, strict=False):
        if x != y:
            break
        n += 1
    return os.sep.join(pa[:n]) or os.sep, os.sep.join(pa[n:]), os.sep.join(pb[n:])


def unlink_beneath(path: str, anchor: str) -> bool:
    """Remove file ``path``, following no symlink below ``anchor``; whether it was there."""
    parent, name = os.path.split(path)
    try:
        fd = open_dir(anchor, os.path.relpath(parent, anchor))
    except FileNotFoundError:
        return False
    try:
        os.unlink(name, dir_fd=fd)
    except FileNotFoundError:
        return False
    finally:
        os.close(fd)
    return True


def rename_beneath(src: str, dest: str, *, durable: bool) -> None:
    """``os.rename`` creating ``dest``'s parent, following no symlink below a common directory."""
    (src_parent, src_name), (dest_parent, dest_name) = os.path.split(src), os.path.split(dest)
    common, src_rel, dest_rel = common_dir(src_parent, dest_parent)
    src_fd = open_dir(common, src_rel)
    try:
        dest_fd = open_dir(common, dest_rel, create=True, durable=durable)
        try:
            os.rename(src_name, dest_name, src_dir_fd=src_fd, dst_dir_fd=dest_fd)
            if durable:
                with contextlib.suppress(OSError):  # some filesystems refuse it on directories
                    os.fsync(dest_fd)
        finally:
            os.close(dest_fd)
    finally:
        os.close(src_fd)


def rmtree_at(dir_fd: int, name: str, path: str) -> None:
    """Remove the tree ``name`` in ``dir_fd`` (at ``path``), never following a symlink out."""
    if sys.version_info >= (3, 11):
        import shutil  # here: only cleaning up needs it

        shutil.rmtree(name, ignore_errors=True, dir_fd=dir_fd)
    else:  # no dir_fd before 3.11: by path, whose directories were just checked
        import shutil

        shutil.rmtree(path, ignore_errors=True)
