"""Atomic files and directories: the one module where stepcache writes files.

Every file a store publishes is written to a temp file in the store's
``tmp/`` directory (same filesystem), then renamed into place, so a reader
sees the old file, the new file or none, never part of one. Temp names carry
the writer's host and pid, so leftovers of a crashed writer can be told from
files still being written and swept. ``fsync`` happens only when asked
(``durable=True``): without it a crash can leave a torn entry, which fails
its checksum and reads as a miss.

Below a store's root every write, rename and removal goes through directory
fds that follow no symlink (:mod:`stepcache.stores.directory.beneath`); artifact
trees enter the same way (:mod:`stepcache.stores.directory.trees`). Modes are
0700/0600, or 2770/0660 in a group directory, whatever the umask.

>>> import tempfile, pathlib
>>> root = pathlib.Path(tempfile.mkdtemp())
>>> write_atomic(str(root / "a" / "entry"), b"data", str(root / "tmp"))
>>> (root / "a" / "entry").read_bytes(), list((root / "tmp").iterdir())
(b'data', [])
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import stat
import time
from pathlib import Path
from typing import Final

from stepcache.stores.directory.beneath import (
    DIR_FLAGS,
    NEW_FILE,
    common_dir,
    is_group_dir,
    open_dir,
    open_leaf,
    open_pair,
    rename_beneath,
    rmtree_at,
)
from stepcache.stores.directory.trees import TreeModes, adopt_tree, copy_into

__all__ = [
    "HOST",
    "copy_tree",
    "discard_dir",
    "fsync_dir",
    "make_dirs",
    "owner_is_dead",
    "parse_owner",
    "pid_alive",
    "publish_dir",
    "sweep_temp",
    "temp_name",
    "tree_size",
    "write_atomic",
]

#: this host's name, reduced to characters safe in a file name
HOST: Final = re.sub(r"[^A-Za-z0-9._]", "_", os.uname().nodename or "localhost")[:64]

_TEMP_RE: Final = re.compile(r"(?P<host>.+)-(?P<pid>[0-9]+)-[0-9a-f]+(?:\.[a-z]+)?")


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
    fd = os.open(path, DIR_FLAGS)
    try:
        with contextlib.suppress(OSError):  # some filesystems refuse fsync on directories
            os.fsync(fd)
    finally:
        os.close(fd)


def _write_all(fd: int, data: bytes | memoryview) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def write_atomic(path: str, data: bytes, tmp_dir: str, *, durable: bool = False) -> None:
    """Publish ``data`` at ``path``: write a temp file in ``tmp_dir``, then rename it over.

    The parent of ``path`` and ``tmp_dir`` are created on demand. Below the
    deepest directory holding both (a store's root) no symlink is followed
    (see :func:`~stepcache.stores.directory.beneath.open_dir`): a symlink planted in a
    cache never redirects the write. ``durable=True`` fsyncs the file before
    the rename and the directory after.
    """
    parent, name = os.path.split(path)
    dest_fd, tmp_fd = open_pair(parent, tmp_dir, durable=durable)
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
            fd = os.open(tmp, NEW_FILE, 0o600, dir_fd=tmp_fd)
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


def copy_tree(
    src: Path, tmp_dir: str, *, durable: bool = False, move: bool = False
) -> tuple[str, int, int]:
    """Copy (or with ``move=True``, move) directory ``src`` into a new temp directory.

    Returns (its path, files, bytes). Moving is one rename when ``src`` is on
    the same filesystem as the store, else a copy followed by removing
    ``src``. A tree holding anything but regular files and directories is
    refused with :class:`ValueError`, and ``src`` is left where it was. The
    copy is made through an fd of ``tmp_dir``, so a ``tmp/`` replaced by a
    symlink never receives it; in a group directory the tree is the group's
    (directories 2770, files 0660, or 0770 if executable).
    """
    if not src.is_dir() or src.is_symlink():
        raise NotADirectoryError(f"put_dir needs a directory, {src} is not one")
    tmp_fd = open_leaf(tmp_dir, create=True, durable=durable)
    try:
        st = os.fstat(tmp_fd)
        modes = TreeModes(st.st_gid if is_group_dir(st.st_mode) else None, durable)
        name = temp_name(".dir")
        moved = move and _rename_in(src, tmp_fd, name)
        try:
            if moved:
                files, nbytes = adopt_tree(tmp_fd, name, modes)
            else:
                files, nbytes = copy_into(os.fspath(src), tmp_fd, name, modes)
            # Fresh: an artifact directory not yet followed by its entry is young, not orphaned.
            os.utime(name, dir_fd=tmp_fd)
        except BaseException:
            if moved:
                with contextlib.suppress(OSError):
                    os.rename(name, src, src_dir_fd=tmp_fd)
            rmtree_at(tmp_fd, name, os.path.join(tmp_dir, name))
            raise
    finally:
        os.close(tmp_fd)
    if move and not moved:
        shutil.rmtree(src, ignore_errors=True)
    return os.path.join(tmp_dir, name), files, nbytes


def _rename_in(src: Path, tmp_fd: int, name: str) -> bool:
    try:
        os.rename(src, name, dst_dir_fd=tmp_fd)
    except OSError:  # EXDEV and friends: copy instead
        return False
    return True


def publish_dir(tmp: str, dest: str, *, durable: bool = False) -> bool:
    """Rename the complete temp directory ``tmp`` to ``dest``; ``False`` if ``dest`` exists.

    The first directory published under a name stays: a reader may be using
    it, so it is never replaced in place. The temp copy is removed then.
    (With ``durable``, :func:`copy_tree` already made the tree itself durable.)
    """
    try:
        rename_beneath(tmp, dest, durable=durable)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
        if os.path.isdir(dest):
            return False
        raise
    return True


def discard_dir(path: str, tmp_dir: str) -> bool:
    """Remove directory ``path`` so that it vanishes at once; ``False`` if it was not there.

    It is first renamed into ``tmp_dir`` (atomic), then deleted, so nobody
    ever sees a half-deleted tree under its published name.
    """
    parent, name = os.path.split(path)
    anchor, rel, tmp_rel = common_dir(parent, tmp_dir)
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
            rmtree_at(tmp_fd, grave, os.path.join(tmp_dir, grave))
        finally:
            os.close(tmp_fd)
    finally:
        os.close(fd)
    return True


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
    try:
        # By fd: a temp dir replaced by a symlink must not get a sweep of its target.
        fd = open_leaf(tmp_dir)
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
        rmtree_at(dir_fd, entry.name, os.path.join(tmp_dir, entry.name))
    else:
        # Failing here (another user's file in a group cache) must not fail the write
        # whose clean-up this is.
        with contextlib.suppress(OSError):
            os.unlink(entry.name, dir_fd=dir_fd)
