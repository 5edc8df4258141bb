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
import time
from stat import S_ISREG
from typing import Final

from stepcache import codec

__all__ = ["READ_FLAGS", "TOUCH_AFTER", "mark_used", "read_entry", "read_header"]

#: how entry files are opened: O_NOFOLLOW, a symlink at an entry's path is no entry;
#: O_NONBLOCK, nor is a FIFO to hang on
READ_FLAGS: Final = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)
_HEADER_READ: Final = 16384  # covers prefix, key and the info of nearly every entry
#: seconds: resolution of "recently used" for eviction. An entry read when its mtime is
#: older is touched (:func:`mark_used`): mtime is the last use, and refreshing it at most this
#: often keeps hits free of writes (relatime makes atime unreliable).
TOUCH_AFTER: Final = 60.0


def read_entry(path: str, touch: bool, to_eof: bool = False, header: bool = False) -> bytes | None:
    """The whole entry file, ``None`` if absent; ``touch`` marks it used (for eviction) if it
    was not lately. CorruptEntry if what is at ``path`` is no regular file.

    ``to_eof`` reads until the end of the file rather than to the size
    ``fstat`` reports, which a network filesystem may serve from a stale cache;
    ``header`` reads only the start (see :func:`read_header`). One open,
    fstat, read and close (``DirectoryStore`` reads plain entries in its own
    frame, the same way).
    """
    try:
        fd = os.open(path, READ_FLAGS)
    except FileNotFoundError:
        return None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise codec.CorruptEntry("the entry is a symlink") from None
        raise
    try:
        st = os.fstat(fd)
        if not S_ISREG(st.st_mode):
            raise codec.CorruptEntry("the entry is not a regular file")
        size = st.st_size
        if header:
            return _read_header(fd, size)
        blob = os.read(fd, size)
        while len(blob) < size or to_eof:  # huge files come in several reads
            chunk = os.read(fd, max(size - len(blob), 1 << 16))
            if not chunk:
                break
            blob += chunk
        if touch and time.time() - st.st_mtime > TOUCH_AFTER and blob.startswith(codec.MAGIC):
            mark_used(fd)  # a file that is no entry (behind a planted link, say) is left as is
    finally:
        os.close(fd)
    return blob


def read_header(path: str) -> bytes | None:
    """The start of the entry file, long enough to hold its whole header; ``None`` if absent."""
    return read_entry(path, False, header=True)


def _read_header(fd: int, size: int) -> bytes:
    blob = os.read(fd, _HEADER_READ)
    if len(blob) == _HEADER_READ:
        # Bytes 7 and 8-11 of the prefix hold the key and info lengths (see codec).
        need = min(codec.header_size(blob), size)
        if need > len(blob):
            blob += os.pread(fd, need - len(blob), len(blob))
    return blob


def mark_used(fd: int) -> None:
    """Mark the open entry file ``fd`` used now (for eviction; see :data:`TOUCH_AFTER`).

    Readers call it only for a file that starts as an entry does, so a file
    outside the store reached through a symlinked fanout directory, which is
    read and fails to verify as an entry, keeps its mtime.
    """
    with contextlib.suppress(OSError):  # a read-only file system, another user's file
        os.utime(fd)
