"""Atomic files and directories: the one module where stepcache writes files.

Every file a store publishes is written to a temp file in the store's
``tmp/`` directory (same filesystem), then renamed into place, so a reader
sees the old file, the new file or none, never part of one. Temp names carry
the writer's identity (host, pid, start time: :mod:`stepcache.stores._owner`),
so leftovers of a crashed writer can be told from files still being written
and swept (:mod:`stepcache.stores.directory.sweep`). ``fsync`` happens only when asked
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
import itertools
import os
import stat
from pathlib import Path
from typing import TYPE_CHECKING

from stepcache.stores._owner import host, owner_alive, owner_tag, parse_owner, pid_alive
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

if TYPE_CHECKING:
    from collections.abc import Iterator

    from stepcache.stores._dirfds import DirFds
    from stepcache.stores.artifacts import Manifest

__all__ = [
    "copy_tree",
    "discard_dir",
    "fsync_dir",
    "host",
    "make_dirs",
    "owner_is_dead",
    "owner_tag",
    "parse_owner",
    "pid_alive",
    "publish",
    "publish_dir",
    "temp_name",
    "tree_size",
    "write_atomic",
]


class _Names:
    """Per-process temp name prefix: the owner tag and a random part, renewed in a forked child.

    Made at the first temp name, not at import: the owner tag reads ``/proc``.
    """

    def __init__(self) -> None:
        self.state: tuple[str, Iterator[int]] | None = None
        os.register_at_fork(after_in_child=self.forget)

    def forget(self) -> None:
        self.state = None

    def next(self, suffix: str) -> str:
        # One attribute, so a prefix is never paired with another prefix's counter.
        state = self.state
        if state is None:
            # Random per process, counted per name: no getpid or getrandom per write,
            # and names nobody can predict to plant a file under one.
            state = self.state = (f"{owner_tag()}-{os.urandom(4).hex()}", itertools.count())
        return f"{state[0]}{next(state[1]):x}{suffix}"


_names = _Names()


def temp_name(suffix: str = ".tmp") -> str:
    """A fresh temp file name ``<host>-<pid>-<start>-<random><suffix>`` (see :mod:`._owner`).

    >>> parse_owner(temp_name()).pid == os.getpid()
    True
    """
    return _names.next(suffix)


def owner_is_dead(name: str) -> bool:
    """Whether the file ``name`` was made by a process of this host that has exited."""
    owner = parse_owner(name)
    return owner is not None and owner_alive(owner) is False


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


def write_atomic(
    path: str, data: bytes, tmp_dir: str, *, durable: bool = False, fds: DirFds | None = None
) -> None:
    """Publish ``data`` at ``path``: write a temp file in ``tmp_dir``, then rename it over.

    The parent of ``path`` and ``tmp_dir`` are created on demand. Below the
    deepest directory holding both (a store's root) no symlink is followed
    (see :func:`~stepcache.stores.directory.beneath.open_dir`): a symlink planted in a
    cache never redirects the write. ``durable=True`` fsyncs the file before
    the rename and the directory after. ``fds``, a store's kept descriptors
    of its top directories, saves re-opening them (and ``tmp_dir``).
    """
    parent, _, name = path.rpartition(os.sep)  # os.path.split's answer for all but "/name"
    if not parent:
        parent, name = os.path.split(path)
    if fds is not None and fds.publish(parent, name, data, tmp_dir, durable):
        return
    dest_fd, tmp_fd = open_pair(parent, tmp_dir, durable=durable)
    try:
        publish(data, tmp_fd, dest_fd, name, durable)
    finally:
        os.close(tmp_fd)
        os.close(dest_fd)


def publish(
    data: bytes, tmp_fd: int, dest_fd: int, name: str, durable: bool, group: bool | None = None
) -> None:
    """Write ``data`` to a new temp file in ``tmp_fd``, then rename it to ``name`` in ``dest_fd``.

    ``group``: whether ``tmp_fd`` is a group directory (looked up if ``None``).
    """
    if group is None:
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
    src: Path,
    tmp_dir: str,
    *,
    durable: bool = False,
    move: bool = False,
    algo: str = "xxh3_128",
    fds: DirFds | None = None,
) -> tuple[str, Manifest, bool]:
    """Copy (or with ``move=True``, move) directory ``src`` into a new temp directory.

    Returns its path, its manifest (digests under ``algo``, each file read
    once on the way in) and whether ``src`` was moved. Moving is one rename
    when ``src`` is on the same filesystem as the store, else a copy (then
    ``src`` is still there: the caller removes it once the copy is
    published). A tree holding anything but regular files and directories
    is refused with :class:`ValueError`, and ``src`` is left where it was.
    The copy is made through an fd of ``tmp_dir`` (kept in ``fds`` where
    given), so a ``tmp/`` replaced by a symlink never receives it; in a
    group directory the tree is the group's (directories 2770, files 0660,
    or 0770 if executable).
    """
    from stepcache.stores.directory.trees import TreeModes, adopt_tree, copy_into

    try:
        is_dir = stat.S_ISDIR(os.lstat(src).st_mode)
    except OSError:
        is_dir = False
    if not is_dir:
        raise NotADirectoryError(f"put_dir needs a directory, {src} is not one")
    kept = _kept_dir(fds, tmp_dir)
    tmp_fd = _open_tmp(tmp_dir, durable) if kept is None else kept[0]
    try:
        st = os.fstat(tmp_fd) if kept is None else kept[1]
        modes = TreeModes(st.st_gid if is_group_dir(st.st_mode) else None, durable)
        name = temp_name(".dir")
        moved = move and _rename_in(src, tmp_fd, name)
        try:
            if moved:
                manifest = adopt_tree(tmp_fd, name, modes, algo)
            else:
                manifest = copy_into(os.fspath(src), tmp_fd, name, modes, algo)
            # Fresh: an artifact directory not yet followed by its entry is young, not orphaned.
            os.utime(name, dir_fd=tmp_fd)
        except BaseException:
            if moved:
                with contextlib.suppress(OSError):
                    os.rename(name, src, src_dir_fd=tmp_fd)
            rmtree_at(tmp_fd, name, os.path.join(tmp_dir, name))
            raise
    finally:
        if kept is None:
            os.close(tmp_fd)
    return os.path.join(tmp_dir, name), manifest, moved


def _open_tmp(tmp_dir: str, durable: bool) -> int:
    """Open (making it) a store's ``tmp_dir``; a store removed meanwhile is made again,
    as :func:`write_atomic` does for entries."""
    try:
        return open_leaf(tmp_dir, create=True, durable=durable)
    except FileNotFoundError:
        os.makedirs(os.path.dirname(os.path.abspath(tmp_dir)), mode=0o700, exist_ok=True)
        return open_leaf(tmp_dir, create=True, durable=durable)


def _kept_dir(fds: DirFds | None, path: str) -> tuple[int, os.stat_result] | None:
    """The kept fd of directory ``path`` and its stat, if ``fds`` has (or can open) one that
    is still linked; else ``None`` (then the caller opens it from the path)."""
    if fds is None:
        return None
    try:
        fd = fds.get(path)[0]
        st = os.fstat(fd)
    except OSError:  # not there yet: the path-based way creates it
        return None
    if st.st_nlink > 0:
        return fd, st
    fds.forget(path)  # removed under a running process (a cache deleted by hand)
    return None


def _rename_in(src: Path, tmp_fd: int, name: str) -> bool:
    try:
        os.rename(src, name, dst_dir_fd=tmp_fd)
    except OSError:  # EXDEV and friends: copy instead
        return False
    return True


def publish_dir(
    tmp: str,
    dest: str,
    *,
    durable: bool = False,
    restore: Path | None = None,
    fds: DirFds | None = None,
) -> bool:
    """Rename the complete temp directory ``tmp`` to ``dest``; ``False`` if ``dest`` exists.

    The first directory published under a name stays: a reader may be using
    it, so it is never replaced in place. The temp copy is removed then. If
    publishing fails, a tree moved in from ``restore`` (no longer there) is
    moved back rather than lost. (With ``durable``, :func:`copy_tree`
    already made the tree itself durable.) ``fds``: as for :func:`write_atomic`.
    """
    try:
        if fds is None or not fds.rename(tmp, dest, durable):
            rename_beneath(tmp, dest, durable=durable)
    except OSError:
        if os.path.isdir(dest):
            import shutil  # here: only cleaning up needs it

            shutil.rmtree(tmp, ignore_errors=True)
            return False
        if restore is not None and not os.path.lexists(restore):
            with contextlib.suppress(OSError):
                os.rename(tmp, restore)
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
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
