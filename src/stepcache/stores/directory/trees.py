"""Artifact trees entering a store: copied or adopted through directory fds, checked as they go.

Helpers of :func:`stepcache.stores._fsutil.copy_tree`. A tree may hold only
regular files and directories: a symlink could point anywhere, including
outside the cache, so one is refused with :class:`ValueError`. Modes are
narrowed to the owner's (keeping the executable bit shared objects need), and
inside a group directory given to the group (see :class:`TreeModes`).
Everything is created below an open directory fd with ``O_NOFOLLOW``, so a
directory swapped for a symlink meanwhile never receives a file.

>>> import pathlib, tempfile
>>> src, tmp = tempfile.mkdtemp(), tempfile.mkdtemp()
>>> _ = pathlib.Path(src, "lib.so").write_bytes(b"ELF")
>>> fd = os.open(tmp, os.O_RDONLY)
>>> copy_into(src, fd, "copy", TreeModes(None, durable=False))
(1, 3)
>>> os.close(fd)
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
import stat
from typing import Final

from stepcache.stores.directory.beneath import DIR_FLAGS, NEW_FILE

__all__ = ["TreeModes", "adopt_tree", "copy_into"]

_SUBDIR: Final = DIR_FLAGS | os.O_NOFOLLOW
_READ: Final = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)
_CHUNK: Final = 1 << 20


@dataclasses.dataclass(frozen=True)
class TreeModes:
    """How a tree entering the store is owned: ``gid`` of a group directory (else ``None``).

    >>> TreeModes(None, durable=False).file_mode(0o100755), TreeModes(5, False).file_mode(0o644)
    (448, 432)
    """

    gid: int | None
    durable: bool

    @property
    def dir_mode(self) -> int:
        """0700, or 2770 in a group directory, whatever the umask."""
        return 0o700 if self.gid is None else 0o2770

    def file_mode(self, mode: int) -> int:
        """The owner's bits of ``mode`` (at least rw), and the same for the group in a group dir."""
        own = (mode & 0o700) | 0o600
        return own if self.gid is None else own | own >> 3


def _refuse(name: str, mode: int) -> None:
    if not (stat.S_ISDIR(mode) or stat.S_ISREG(mode)):
        kind = "a symlink" if stat.S_ISLNK(mode) else "not a regular file"
        raise ValueError(f"put_dir stores regular files only; {name!r} is {kind}")


def _fsync(fd: int) -> None:
    with contextlib.suppress(OSError):  # some filesystems refuse fsync on directories
        os.fsync(fd)


def copy_into(src: str, parent_fd: int, name: str, modes: TreeModes) -> tuple[int, int]:
    """Copy directory ``src`` to the new directory ``name`` in ``parent_fd``; (files, bytes).

    Files keep their modification times; the copy's directories get
    :attr:`TreeModes.dir_mode`. On failure the partial copy is left for the
    caller to remove.
    """
    os.mkdir(name, 0o700, dir_fd=parent_fd)
    fd = os.open(name, _SUBDIR, dir_fd=parent_fd)
    try:
        files = nbytes = 0
        with os.scandir(src) as found:
            entries = list(found)
        for entry in entries:
            st = entry.stat(follow_symlinks=False)
            _refuse(entry.name, st.st_mode)
            if stat.S_ISDIR(st.st_mode):
                sub_files, sub_bytes = copy_into(entry.path, fd, entry.name, modes)
                os.utime(entry.name, ns=(st.st_atime_ns, st.st_mtime_ns), dir_fd=fd)
                files, nbytes = files + sub_files, nbytes + sub_bytes
            else:
                nbytes += _copy_file(entry.path, fd, entry.name, st, modes)
                files += 1
        os.fchmod(fd, modes.dir_mode)
        if modes.durable:
            _fsync(fd)
    finally:
        os.close(fd)
    return files, nbytes


def _copy_file(src: str, dir_fd: int, name: str, st: os.stat_result, modes: TreeModes) -> int:
    """Copy regular file ``src`` (whose lstat is ``st``) to ``name`` in ``dir_fd``; its bytes."""
    with open(os.open(src, _READ), "rb") as fin:
        if not stat.S_ISREG(os.fstat(fin.fileno()).st_mode):
            raise ValueError(f"put_dir stores regular files only; {src!r} changed while copied")
        with open(os.open(name, NEW_FILE, 0o600, dir_fd=dir_fd), "wb") as fout:
            shutil.copyfileobj(fin, fout, _CHUNK)
            fout.flush()
            os.fchmod(fout.fileno(), modes.file_mode(st.st_mode))
            os.utime(fout.fileno(), ns=(st.st_atime_ns, st.st_mtime_ns))
            if modes.durable:
                os.fsync(fout.fileno())
            return fout.tell()


def adopt_tree(parent_fd: int, name: str, modes: TreeModes) -> tuple[int, int]:
    """Check and claim the tree ``name`` just moved into ``parent_fd``; (files, bytes).

    Every file and directory gets the modes (and in a group directory the
    group) a copy would have had.
    """
    files = nbytes = 0
    _claim(parent_fd, name, os.stat(name, dir_fd=parent_fd, follow_symlinks=False), modes)
    for _, dirs, names, dir_fd in os.fwalk(name, dir_fd=parent_fd):
        for child in (*dirs, *names):
            st = os.stat(child, dir_fd=dir_fd, follow_symlinks=False)
            _refuse(child, st.st_mode)
            _claim(dir_fd, child, st, modes)
            if stat.S_ISREG(st.st_mode):
                files, nbytes = files + 1, nbytes + st.st_size
                if modes.durable:
                    _fsync_file(dir_fd, child)
        if modes.durable:
            _fsync(dir_fd)
    return files, nbytes


def _claim(dir_fd: int, name: str, st: os.stat_result, modes: TreeModes) -> None:
    """Give ``name`` (checked: no symlink) the group and mode a copy of it would have."""
    if modes.gid is not None and st.st_gid != modes.gid:
        os.chown(name, -1, modes.gid, dir_fd=dir_fd, follow_symlinks=False)
    is_dir = stat.S_ISDIR(st.st_mode)
    os.chmod(name, modes.dir_mode if is_dir else modes.file_mode(st.st_mode), dir_fd=dir_fd)


def _fsync_file(dir_fd: int, name: str) -> None:
    fd = os.open(name, _READ, dir_fd=dir_fd)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
