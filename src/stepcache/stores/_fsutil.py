"""Atomic files and directories: the one module where stepcache writes files.

Every file a store publishes is written to a temp file in the store's
``tmp/`` directory (same filesystem), then renamed into place, so a reader
sees the old file, the new file or none, never part of one. Temp names carry
the writer's host and pid, so leftovers of a crashed writer can be told from
files still being written and swept. ``fsync`` happens only when asked
(``durable=True``): without it a crash can leave a torn entry, which fails
its checksum and reads as a miss.

Writes, renames and removals below a store's root go through directory file
descriptors opened with ``O_NOFOLLOW`` (:func:`open_dir`): a symlink planted
in the tree, say a fanout directory pointing elsewhere, makes the operation
fail instead of landing outside the cache. Modes are 0700/0600, or 2770/0660
in a group directory (:func:`is_group_dir`), whatever the umask.

>>> import tempfile, pathlib
>>> root = pathlib.Path(tempfile.mkdtemp())
>>> write_atomic(str(root / "a" / "entry"), b"data", str(root / "tmp"))
>>> (root / "a" / "entry").read_bytes(), list((root / "tmp").iterdir())
(b'data', [])
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import shutil
import stat
import sys
import time
from pathlib import Path

__all__ = [
    "HOST",
    "copy_tree",
    "discard_dir",
    "fsync_dir",
    "is_group_dir",
    "make_dirs",
    "open_dir",
    "owner_is_dead",
    "parse_owner",
    "pid_alive",
    "publish_dir",
    "sweep_temp",
    "temp_name",
    "tree_size",
    "unlink_beneath",
    "write_atomic",
]

#: this host's name, reduced to characters safe in a file name
HOST = re.sub(r"[^A-Za-z0-9._]", "_", os.uname().nodename or "localhost")[:64]

_CREATE = os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
_DIR = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | getattr(os, "O_CLOEXEC", 0)
_GROUP_DIR = stat.S_ISGID | stat.S_IWGRP
_TEMP_RE = re.compile(r"(?P<host>.+)-(?P<pid>[0-9]+)-[0-9a-f]+(?:\.[a-z]+)?")


def temp_name(suffix: str = ".tmp") -> str:
    """A fresh temp file name ``<host>-<pid>-<random><suffix>``.

    >>> parse_owner(temp_name()) == (HOST, os.getpid())
    True
    """
    return f"{HOST}-{os.getpid()}-{os.urandom(6).hex()}{suffix}"


def parse_owner(name: str) -> tuple[str, int] | None:
    """The (host, pid) encoded in a temp or stats file name, or ``None``.

    >>> parse_owner("build-host-4242-00ff.tmp")
    ('build-host', 4242)
    """
    m = _TEMP_RE.fullmatch(name)
    return (m["host"], int(m["pid"])) if m else None


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` of this host is running (a zombie counts as dead)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, belongs to someone else
        return True
    # A killed process stays a zombie until its parent reaps it; it holds
    # nothing any more, so waiting for it would only delay a takeover.
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rpartition(b")")[2].split()[0] != b"Z"
    except (OSError, IndexError):
        return True


def owner_is_dead(name: str) -> bool:
    """Whether the file ``name`` was made by a process of this host that has exited."""
    owner = parse_owner(name)
    return owner is not None and owner[0] == HOST and not pid_alive(owner[1])


def is_group_dir(mode: int) -> bool:
    """Whether a directory of ``mode`` is a group cache directory: setgid and group-writable.

    What stepcache creates in one belongs to the group too: directories 2770
    and files 0660, whatever the umask; anywhere else 0700 and 0600.

    >>> is_group_dir(0o42770), is_group_dir(0o40700)
    (True, False)
    """
    return mode & _GROUP_DIR == _GROUP_DIR


def make_dirs(path: str, *, durable: bool = False) -> None:
    """Create directory ``path`` (0700, or 2770 in a group directory) and missing parents.

    Safe when many processes race to create the same directory.
    """
    parent = os.path.dirname(path)
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        if not os.path.isdir(path):
            raise
        return
    except FileNotFoundError:
        if durable:
            make_dirs(parent, durable=True)
        else:
            os.makedirs(parent, exist_ok=True)
        return make_dirs(path, durable=durable)
    if is_group_dir(os.stat(parent or os.curdir).st_mode):
        os.chmod(path, 0o2770)  # the umask must not take the group's access away
    if durable:
        fsync_dir(parent or os.curdir)


def fsync_dir(path: str) -> None:
    """Make the entries of directory ``path`` durable (no-op where unsupported)."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        with contextlib.suppress(OSError):  # some filesystems refuse fsync on directories
            os.fsync(fd)
    finally:
        os.close(fd)


def open_dir(anchor: str, rel: str = "", *, create: bool = False, durable: bool = False) -> int:
    """Open directory ``anchor/rel`` for ``*at`` calls, following no symlink below ``anchor``.

    ``anchor`` itself may be a symlink (a cache root in ``~/.cache`` that
    points to scratch space). A component of ``rel`` that is a symlink or no
    directory raises :class:`OSError` naming it, so nothing done through the
    returned fd lands outside ``anchor``, whatever was planted in the tree.
    With ``create``, missing directories are made as :func:`make_dirs` does.

    >>> import tempfile
    >>> fd = open_dir(tempfile.mkdtemp(), "v1/ab", create=True)
    >>> os.close(fd)
    """
    base = os.open(anchor, _DIR)
    try:
        return _descend(base, anchor, rel, create, durable)
    finally:
        os.close(base)


def _descend(base: int, anchor: str, rel: str, create: bool, durable: bool) -> int:
    """A new fd of directory ``rel`` below the open directory ``base`` (which is ``anchor``)."""
    if rel in ("", os.curdir):
        return os.dup(base)
    names = rel.split(os.sep)
    fd, done = base, 0
    try:
        for name in names:
            child = _open_child(fd, name, create, durable)
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


def _open_child(parent: int, name: str, create: bool, durable: bool) -> int:
    """A new fd of directory ``name`` in ``parent``, made as :func:`make_dirs` does if missing."""
    flags = _DIR | os.O_NOFOLLOW
    try:
        return os.open(name, flags, dir_fd=parent)
    except FileNotFoundError:
        if not create:
            raise
    try:
        os.mkdir(name, 0o700, dir_fd=parent)
    except FileExistsError:  # another process made it meanwhile
        return os.open(name, flags, dir_fd=parent)
    child = os.open(name, flags, dir_fd=parent)
    try:
        if is_group_dir(os.fstat(parent).st_mode):
            os.fchmod(child, 0o2770)  # the umask must not take the group's access away
        if durable:
            with contextlib.suppress(OSError):
                os.fsync(parent)
    except BaseException:
        os.close(child)
        raise
    return child


def _anchor(a: str, b: str) -> tuple[str, str, str]:
    """The deepest directory holding directories ``a`` and ``b``, and both relative to it."""
    # Plain string work: os.path.commonpath and relpath would double the cost of a write.
    pa, pb = os.path.abspath(a).split(os.sep), os.path.abspath(b).split(os.sep)
    n = 0
    for x, y in zip(pa, pb, strict=False):
        if x != y:
            break
        n += 1
    return os.sep.join(pa[:n]) or os.sep, os.sep.join(pa[n:]), os.sep.join(pb[n:])


def _write_all(fd: int, data: bytes | memoryview) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def write_atomic(path: str, data: bytes, tmp_dir: str, *, durable: bool = False) -> None:
    """Publish ``data`` at ``path``: write a temp file in ``tmp_dir``, then rename it over.

    The parent of ``path`` and ``tmp_dir`` are created on demand. Below the
    deepest directory holding both (a store's root) no symlink is followed
    (see :func:`open_dir`): a symlink planted in a cache never redirects the
    write. ``durable=True`` fsyncs the file before the rename and the
    directory after.
    """
    parent, name = os.path.split(path)
    anchor, dest_rel, tmp_rel = _anchor(parent, tmp_dir)
    base = os.open(anchor, _DIR)
    try:
        dest_fd = _descend(base, anchor, dest_rel, True, durable)
        try:
            tmp_fd = _descend(base, anchor, tmp_rel, True, durable)
        except BaseException:
            os.close(dest_fd)
            raise
    finally:
        os.close(base)
    try:
        _publish(data, tmp_fd, dest_fd, name, durable)
    finally:
        os.close(tmp_fd)
        os.close(dest_fd)


def _publish(data: bytes, tmp_fd: int, dest_fd: int, name: str, durable: bool) -> None:
    group = is_group_dir(os.fstat(tmp_fd).st_mode)
    while True:
        tmp = temp_name()
        try:
            fd = os.open(tmp, _CREATE, 0o600, dir_fd=tmp_fd)
            break
        except FileExistsError:  # a dead process with a reused pid left this name
            continue
    try:
        try:
            if group:
                os.fchmod(fd, 0o660)
            _write_all(fd, data)
            if durable:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, name, src_dir_fd=tmp_fd, dst_dir_fd=dest_fd)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp, dir_fd=tmp_fd)
        raise
    if durable:
        with contextlib.suppress(OSError):  # some filesystems refuse fsync on directories
            os.fsync(dest_fd)


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


def _adopt_tree(dest: str, *, durable: bool) -> tuple[int, int]:
    """Check a tree now in the store's temp dir; return (files, bytes).

    Only regular files and directories are accepted: a symlink could point
    anywhere, including outside the cache. Modes are narrowed to the owner's
    (keeping the executable bit shared objects need).
    """
    files = nbytes = 0
    for here, dirs, names in os.walk(dest):
        for name in (*dirs, *names):
            path = os.path.join(here, name)
            st = os.lstat(path)
            if stat.S_ISLNK(st.st_mode) or not (
                stat.S_ISDIR(st.st_mode) or stat.S_ISREG(st.st_mode)
            ):
                kind = "a symlink" if stat.S_ISLNK(st.st_mode) else "not a regular file"
                raise ValueError(f"put_dir stores regular files only; {name!r} is {kind}")
            if stat.S_ISREG(st.st_mode):
                os.chmod(path, (st.st_mode & 0o700) | 0o600)
                nbytes += st.st_size
                files += 1
                if durable:
                    _fsync_file(path)
            else:
                os.chmod(path, 0o700)
    os.chmod(dest, 0o700)
    return files, nbytes


def copy_tree(
    src: Path, tmp_dir: str, *, durable: bool = False, move: bool = False
) -> tuple[str, int, int]:
    """Copy (or with ``move=True``, move) directory ``src`` into a new temp directory.

    Returns (its path, files, bytes). Moving is one rename when ``src`` is on
    the same filesystem as the store, else a copy followed by removing
    ``src``. A tree holding anything but regular files and directories is
    refused with :class:`ValueError`, and ``src`` is left where it was.
    """
    if not src.is_dir() or src.is_symlink():
        raise NotADirectoryError(f"put_dir needs a directory, {src} is not one")
    make_dirs(tmp_dir, durable=durable)
    dest = os.path.join(tmp_dir, temp_name(".dir"))
    moved = False
    if move:
        try:
            os.rename(src, dest)
            moved = True
        except OSError:  # EXDEV and friends: copy instead
            pass
    try:
        if not moved:
            shutil.copytree(src, dest, symlinks=True)
        files, nbytes = _adopt_tree(dest, durable=durable)
    except BaseException:
        if moved:
            with contextlib.suppress(OSError):
                os.rename(dest, src)
        shutil.rmtree(dest, ignore_errors=True)
        raise
    if move and not moved:
        shutil.rmtree(src, ignore_errors=True)
    return dest, files, nbytes


def _fsync_file(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def publish_dir(tmp: str, dest: str, *, durable: bool = False) -> bool:
    """Rename the complete temp directory ``tmp`` to ``dest``; ``False`` if ``dest`` exists.

    The first directory published under a name stays: a reader may be using
    it, so it is never replaced in place. The temp copy is removed then.
    """
    if durable:
        for here, _, _ in os.walk(tmp):
            fsync_dir(here)
    try:
        _rename_beneath(tmp, dest, durable=durable)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
        if os.path.isdir(dest):
            return False
        raise
    return True


def _rename_beneath(src: str, dest: str, *, durable: bool) -> None:
    """``os.rename`` creating ``dest``'s parent, following no symlink below a common directory."""
    (src_parent, src_name), (dest_parent, dest_name) = os.path.split(src), os.path.split(dest)
    anchor, src_rel, dest_rel = _anchor(src_parent, dest_parent)
    src_fd = open_dir(anchor, src_rel)
    try:
        dest_fd = open_dir(anchor, dest_rel, create=True, durable=durable)
        try:
            os.rename(src_name, dest_name, src_dir_fd=src_fd, dst_dir_fd=dest_fd)
            if durable:
                with contextlib.suppress(OSError):  # some filesystems refuse it on directories
                    os.fsync(dest_fd)
        finally:
            os.close(dest_fd)
    finally:
        os.close(src_fd)


def discard_dir(path: str, tmp_dir: str) -> bool:
    """Remove directory ``path`` so that it vanishes at once; ``False`` if it was not there.

    It is first renamed into ``tmp_dir`` (atomic), then deleted, so nobody
    ever sees a half-deleted tree under its published name.
    """
    parent, name = os.path.split(path)
    anchor, rel, tmp_rel = _anchor(parent, tmp_dir)
    try:
        fd = open_dir(anchor, rel)
    except FileNotFoundError:
        return False
    try:
        try:
            st = os.stat(name, dir_fd=fd, follow_symlinks=False)
        except FileNotFoundError:  # the usual case: an entry without a directory
            return False
        if not stat.S_ISDIR(st.st_mode):  # a planted symlink: remove it, never its target
            os.unlink(name, dir_fd=fd)
            return True
        tmp_fd = open_dir(anchor, tmp_rel, create=True)
        try:
            grave = temp_name(".del")
            try:
                os.rename(name, grave, src_dir_fd=fd, dst_dir_fd=tmp_fd)
            except FileNotFoundError:  # removed meanwhile
                return False
            _rmtree_at(tmp_fd, grave, os.path.join(tmp_dir, grave))
        finally:
            os.close(tmp_fd)
    finally:
        os.close(fd)
    return True


def _rmtree_at(dir_fd: int, name: str, path: str) -> None:
    """Remove the tree ``name`` in ``dir_fd`` (at ``path``), never following a symlink out."""
    if sys.version_info >= (3, 11):
        shutil.rmtree(name, ignore_errors=True, dir_fd=dir_fd)
    else:  # no dir_fd before 3.11: by path, whose directories were just checked
        shutil.rmtree(path, ignore_errors=True)


def tree_size(path: str) -> int:
    """Bytes of the regular files under ``path`` (0 if it is gone)."""
    total = 0
    for here, _, names in os.walk(path):
        for name in names:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(here, name)).st_size
    return total


def sweep_temp(
    tmp_dir: str, *, max_age: float = 3600.0, now: float | None = None, dry_run: bool = False
) -> int:
    """Remove temp files and directories whose writer died, or older than ``max_age``.

    Writers on other hosts cannot be asked whether they live, so age is the
    only test there; no write takes anywhere near ``max_age``. Returns how
    many were removed (with ``dry_run``, would be).
    """
    now = time.time() if now is None else now
    removed = 0
    parent, name = os.path.split(os.path.abspath(tmp_dir))
    try:
        # By fd: a temp dir replaced by a symlink must not get a sweep of its target.
        fd = open_dir(parent, name)
    except FileNotFoundError:
        return 0
    try:
        with os.scandir(fd) as found:
            entries = list(found)
        for entry in entries:
            try:
                old = now - entry.stat(follow_symlinks=False).st_mtime > max_age
            except FileNotFoundError:
                continue
            if not (old or owner_is_dead(entry.name)):
                continue
            if not dry_run:
                _remove(fd, entry, tmp_dir)
            removed += 1
    finally:
        os.close(fd)
    return removed


def _remove(dir_fd: int, entry: os.DirEntry[str], tmp_dir: str) -> None:
    if entry.is_dir(follow_symlinks=False):
        _rmtree_at(dir_fd, entry.name, os.path.join(tmp_dir, entry.name))
    else:
        # Failing here (another user's file in a group cache) must not fail the write
        # whose clean-up this is.
        with contextlib.suppress(OSError):
            os.unlink(entry.name, dir_fd=dir_fd)
