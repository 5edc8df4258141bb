"""Reading a DirectoryStore's entry files: whole or header only, never a symlink or a FIFO.

Readers take no lock: every entry file is published by rename, so a read
sees a whole entry or none. What is at an entry's path but is no regular file
(a planted symlink, a FIFO to hang on) raises :class:`~stepcache.codec.CorruptEntry`,
which the store turns into a counted miss.

>>> import pathlib, tempfile
>>> path = f"{tempfile.mkdtemp()}/entry"
>>> _ = pathlib.Path(path).write_bytes(b"entry bytes")
>>> read_entry(path, touch=False), read_entry(path + "-missing", touch=False)
(b'entry bytes', None)
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import time
from typing import Final

from stepcache import codec

__all__ = ["open_entry", "read_entry", "read_header"]

# O_NOFOLLOW: a symlink at an entry's path is no entry; O_NONBLOCK: nor is a FIFO to hang on.
_READ: Final = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)
_HEADER_READ: Final = 16384  # covers prefix, key and the info of nearly every entry
_TOUCH_AFTER: Final = 60.0  # seconds: resolution of "recently used" for eviction


def open_entry(path: str) -> tuple[int, os.stat_result] | None:
    """The entry file's fd and stat, ``None`` if absent; CorruptEntry if it is no file."""
    try:
        fd = os.open(path, _READ)
    except FileNotFoundError:
        return None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise codec.CorruptEntry("the entry is a symlink") from None
        raise
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        raise codec.CorruptEntry("the entry is not a regular file")
    return fd, st


def read_entry(path: str, *, touch: bool) -> bytes | None:
    """The whole entry file; ``touch`` marks it used (for eviction) if it was not lately."""
    opened = open_entry(path)
    if opened is None:
        return None
    fd, st = opened
    try:
        blob = os.read(fd, st.st_size)
        while len(blob) < st.st_size:  # huge files come in several reads
            chunk = os.read(fd, st.st_size - len(blob))
            if not chunk:
                break
            blob += chunk
        # mtime is the last use; refreshing it at most once per _TOUCH_AFTER
        # keeps hits free of writes (relatime makes atime unreliable).
        if touch and time.time() - st.st_mtime > _TOUCH_AFTER:
            with contextlib.suppress(OSError):
                os.utime(fd)
    finally:
        os.close(fd)
    return blob


def read_header(path: str) -> bytes | None:
    """The start of the entry file, long enough to hold its whole header; ``None`` if absent."""
    opened = open_entry(path)
    if opened is None:
        return None
    fd, st = opened
    try:
        blob = os.read(fd, _HEADER_READ)
        if len(blob) == _HEADER_READ:
            # Bytes 7 and 8-11 of the prefix hold the key and info lengths (see codec).
            need = min(codec.header_size(blob), st.st_size)
            if need > len(blob):
                blob += os.pread(fd, need - len(blob), len(blob))
        return blob
    finally:
        os.close(fd)
