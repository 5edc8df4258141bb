"""Atomic files and directories: the one module where stepcache writes files.

Every file a store publishes is written to a temp file in the store's
``tmp/`` directory (same filesystem), then renamed into place, so a reader
sees the old file, the new file or none, never part of one. Temp names carry
the writer's host and pid, so leftovers of a crashed writer can be told from
files still being written and swept. ``fsync`` happens only when asked
(``durable=True``): without it a crash can leave a torn entry, which fails
its checksum and reads as a miss.

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
HOST = re.sub(r"[^A-Za-z0-9._]", "_", os.uname().nodename or "localhost")[:64]

_CREATE = os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
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


def make_dirs(path: str, *, durable: bool = False) -> None:
    """Create ``path`` and missing parents (mode 0700); safe when many processes race."""
    if durable:
        parent = os.path.dirname(path)
        if not os.path.isdir(parent):
            make_dirs(parent, durable=True)
        with contextlib.suppress(FileExistsError):
            os.mkdir(path, 0o700)
            fsync_dir(parent)
        return
    os.makedirs(path, 0o700, exist_ok=True)


def fsync_dir(path: str) -> None:
    """Make the entries of directory ``path`` durable (no-op where unsupported)."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        with contextlib.suppress(OSError):  # some filesystems refuse fsync on directories
            os.fsync(fd)
    finally:
        os.close(fd)


def _create_temp(tmp_dir: str, durable: bool) -> tuple[int, str]:
    while True:
        tmp = os.path.join(tmp_dir, temp_name())
        try:
            return os.open(tmp, _CREATE, 0o600), tmp
        except FileNotFoundError:
            make_dirs(tmp_dir, durable=durable)
        except FileExistsError:  # a dead process with a reused pid left this name
            continue


def _write_all(fd: int, data: bytes | memoryview) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def write_atomic(path: str, data: bytes, tmp_dir: str, *, durable: bool = False) -> None:
    """Publish ``data`` at ``path``: write a temp file in ``tmp_dir``, then rename it over.

    The parent of ``path`` and ``tmp_dir`` are created on demand.
    ``durable=True`` fsyncs the file before the rename and the directory after.
    """
    fd, tmp = _create_temp(tmp_dir, durable)
    try:
        try:
            _write_all(fd, data)
            if durable:
                os.fsync(fd)
        finally:
            os.close(fd)
        try:
            os.replace(tmp, path)
        except FileNotFoundError:
            make_dirs(os.path.dirname(path), durable=durable)
            os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    if durable:
        fsync_dir(os.path.dirname(path))


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
        try:
            os.rename(tmp, dest)
        except FileNotFoundError:
            make_dirs(os.path.dirname(dest), durable=durable)
            os.rename(tmp, dest)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
        if os.path.isdir(dest):
            return False
        raise
    if durable:
        fsync_dir(os.path.dirname(dest))
    return True


def discard_dir(path: str, tmp_dir: str) -> bool:
    """Remove directory ``path`` so that it vanishes at once; ``False`` if it was not there.

    It is first renamed into ``tmp_dir`` (atomic), then deleted, so nobody
    ever sees a half-deleted tree under its published name.
    """
    grave = os.path.join(tmp_dir, temp_name(".del"))
    try:
        os.rename(path, grave)
    except FileNotFoundError:
        if not os.path.isdir(tmp_dir) and os.path.isdir(path):
            make_dirs(tmp_dir)
            return discard_dir(path, tmp_dir)
        return False
    shutil.rmtree(grave, ignore_errors=True)
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
        entries = list(os.scandir(tmp_dir))
    except FileNotFoundError:
        return 0
    for entry in entries:
        try:
            old = now - entry.stat(follow_symlinks=False).st_mtime > max_age
        except FileNotFoundError:
            continue
        if not (old or owner_is_dead(entry.name)):
            continue
        if not dry_run:
            _remove(entry)
        removed += 1
    return removed


def _remove(entry: os.DirEntry[str]) -> None:
    if entry.is_dir(follow_symlinks=False):
        shutil.rmtree(entry.path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(entry.path)
