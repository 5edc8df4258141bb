"""Artifact trees entering a store: copied or adopted through directory fds, checked as they go.

Helpers of :func:`stepcache.stores._fsutil.copy_tree`. Each file is read
once on its way in, and its digest taken then: both return the tree's
:class:`~stepcache.stores.artifacts.Manifest`, so the store never walks
the published tree again to sign it. A tree may hold only
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
>>> [(f.path, f.size) for f in copy_into(src, fd, "copy", TreeModes(None, durable=False)).files]
[('lib.so', 3)]
>>> os.close(fd)
"""

from __future__ import annotations

import contextlib
import os
import stat
from typing import Final

from stepcache._record import Record
from stepcache.stores.artifacts import FileRecord, Manifest, hash_fd
from stepcache.stores.directory.beneath import DIR_FLAGS, NEW_FILE

__all__ = ["TreeModes", "adopt_tree", "copy_into"]

_SUBDIR: Final = DIR_FLAGS | os.O_NOFOLLOW
_READ: Final = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)


class TreeModes(Record):
    """How a tree entering the store is owned: ``gid`` of a group directory (else ``None``).

    >>> TreeModes(None, durable=False).file_mode(0o100755), TreeModes(5, False).file_mode(0o644)
    (448, 432)
    """

    __slots__ = ("gid", "durable")  # noqa: RUF023 - field order
    gid: int | None
    durable: bool

    def __init__(self, gid: int | None, durable: bool) -> None:
        self._set(gid=gid, durable=durable)

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


class _Listing:
    """What a walk found so far: files (with digests under ``algo``) and directories."""

    __slots__ = ("algo", "dirs", "files")

    def __init__(self, algo: str) -> None:
        self.algo = algo
        self.files: list[FileRecord] = []
        self.dirs: list[str] = []

    def manifest(self) -> Manifest:
        return Manifest.listed(self.files, self.dirs, self.algo)


# -- copying (another filesystem, or the caller keeps its tree) ----------------------
def copy_into(
    src: str, parent_fd: int, name: str, modes: TreeModes, algo: str = "xxh3_128"
) -> Manifest:
    """Copy directory ``src`` to the new directory ``name`` in ``parent_fd``; the copy's manifest.

    Files keep their modification times; the copy's directories get
    :attr:`TreeModes.dir_mode`. Digests (under ``algo``) are of the bytes
    copied. On failure the partial copy is left for the caller to remove.
    """
    listing = _Listing(algo)
    _copy_dir(src, parent_fd, name, "", modes, listing)
    return listing.manifest()


def _copy_dir(
    src: str, parent_fd: int, name: str, rel: str, modes: TreeModes, listing: _Listing
) -> None:
    os.mkdir(name, 0o700, dir_fd=parent_fd)
    fd = os.open(name, _SUBDIR, dir_fd=parent_fd)
    try:
        with os.scandir(src) as found:
            entries = list(found)
        for entry in entries:
            st = entry.stat(follow_symlinks=False)
            _refuse(entry.name, st.st_mode)
            path = rel + entry.name
            if stat.S_ISDIR(st.st_mode):
                listing.dirs.append(path)
                _copy_dir(entry.path, fd, entry.name, path + "/", modes, listing)
                os.utime(entry.name, ns=(st.st_atime_ns, st.st_mtime_ns), dir_fd=fd)
            else:
                listing.files.append(_copy_file(entry.path, fd, path, st, modes, listing.algo))
        os.fchmod(fd, modes.dir_mode)
        if modes.durable:
            _fsync(fd)
    finally:
        os.close(fd)


def _copy_file(
    src: str, dir_fd: int, path: str, st: os.stat_result, modes: TreeModes, algo: str
) -> FileRecord:
    """Copy regular file ``src`` (whose lstat is ``st``) into ``dir_fd``; its record as copied."""
    fin = os.open(src, _READ)
    try:
        if not stat.S_ISREG(os.fstat(fin).st_mode):
            raise ValueError(f"put_dir stores regular files only; {src!r} changed while copied")
        fout = os.open(os.path.basename(path), NEW_FILE, 0o600, dir_fd=dir_fd)
        try:
            digest, nbytes = hash_fd(fin, st.st_size, algo, copy_to=fout)
            mode = modes.file_mode(st.st_mode)
            os.fchmod(fout, mode)
            os.utime(fout, ns=(st.st_atime_ns, st.st_mtime_ns))
            if modes.durable:
                os.fsync(fout)
        finally:
            os.close(fout)
    finally:
        os.close(fin)
    return FileRecord(path, mode, nbytes, digest)


# -- adopting (a tree renamed into tmp/) -------------------------------------------
def adopt_tree(parent_fd: int, name: str, modes: TreeModes, algo: str = "xxh3_128") -> Manifest:
    """Check and claim the tree ``name`` just moved into ``parent_fd``; its manifest.

    Every file and directory gets the modes (and in a group directory the
    group) a copy would have had; every file is read once, for its digest
    under ``algo``.
    """
    listing = _Listing(algo)
    fd = os.open(name, _SUBDIR, dir_fd=parent_fd)
    try:
        _adopt_dir(fd, "", modes, listing)
    finally:
        os.close(fd)
    return listing.manifest()


def _adopt_dir(fd: int, rel: str, modes: TreeModes, listing: _Listing) -> None:
    if modes.gid is not None and os.fstat(fd).st_gid != modes.gid:
        os.fchown(fd, -1, modes.gid)
    os.fchmod(fd, modes.dir_mode)
    with os.scandir(fd) as found:
        entries = list(found)
    for entry in entries:
        path = rel + entry.name
        # The kind comes from the directory listing itself (a stat only where
        # the filesystem does not say); a file swapped meanwhile fails the
        # no-follow open, or the fstat after it.
        if entry.is_dir(follow_symlinks=False):
            sub = os.open(entry.name, _SUBDIR, dir_fd=fd)
            try:
                _adopt_dir(sub, path + "/", modes, listing)
            finally:
                os.close(sub)
            listing.dirs.append(path)
        elif entry.is_file(follow_symlinks=False):
            listing.files.append(_adopt_file(fd, entry.name, path, modes, listing.algo))
        else:
            _refuse(entry.name, entry.stat(follow_symlinks=False).st_mode)
    if modes.durable:
        _fsync(fd)


def _adopt_file(dir_fd: int, name: str, path: str, modes: TreeModes, algo: str) -> FileRecord:
    """Claim regular file ``name`` in ``dir_fd`` and read it for its digest; its record."""
    try:
        fd = os.open(name, _READ, dir_fd=dir_fd)
    except PermissionError:  # not readable by its owner (mode 0200, say): it will be
        os.chmod(name, 0o600, dir_fd=dir_fd)
        fd = os.open(name, _READ, dir_fd=dir_fd)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise ValueError(f"put_dir stores regular files only; {path!r} changed while stored")
        if modes.gid is not None and st.st_gid != modes.gid:
            os.fchown(fd, -1, modes.gid)
        mode = modes.file_mode(st.st_mode)
        if stat.S_IMODE(st.st_mode) != mode:
            os.fchmod(fd, mode)
        digest, nbytes = hash_fd(fd, st.st_size, algo)
        if modes.durable:
            os.fsync(fd)
    finally:
        os.close(fd)
    return FileRecord(path, mode, nbytes, digest)
