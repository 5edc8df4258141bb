"""Per-key locks as byte-range locks in one file: two system calls per lock.

On Linux, an open file description lock (``F_OFD_SETLK``) on one byte of
one shared file excludes like ``flock`` on a file of its own: the kernel
grants it to one open file description at a time and drops it when the
holder dies. Every key maps to a byte of ``<lock dir>/keys.ranges`` (an
offset from a 62-bit hash of its name: keys colliding there would only
wait for each other), so a lock is one ``fcntl`` call and its release
another, where a file per key costs about eleven calls (opening the
directory, creating, checking and unlinking the file, closing both).

The file is opened once per :class:`RangeLocks` and kept. Threads of one
process share that open file description, which the kernel does not tell
apart, so the instance remembers which bytes it holds and treats them as
busy for its other threads. A forked child drops the inherited descriptor
(its locks belong to the parent) and opens the file again.

Where OFD locks do not exist (not Linux, or a 32-bit build) :data:`SUPPORTED`
is false and :mod:`~stepcache.stores._locks` uses a file per key.

Nothing in stepcache removes the file. Were it removed while processes had
it open (a store deleted under running processes), those that opened it
before and those that open it after would not exclude each other: both
compute, and entries stay whole, as single flight is an optimisation.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import struct
import sys
import threading
from collections.abc import Callable
from typing import Final

import xxhash

from stepcache.stores._forks import reset_in_children

__all__ = ["FILE_NAME", "SUPPORTED", "RangeLocks", "Unusable"]

#: The lock file in the lock directory; never removed (sweeps leave it alone).
FILE_NAME: Final = "keys.ranges"
_SETLK: Final[int] = getattr(fcntl, "F_OFD_SETLK", -1)
# struct flock on 64-bit Linux: l_type, l_whence (short), l_start, l_len (off_t), l_pid.
_FLOCK: Final = struct.Struct("hhqqi4x")
SUPPORTED: Final = sys.platform.startswith("linux") and _SETLK != -1 and struct.calcsize("P") == 8
_BUSY: Final = frozenset({errno.EAGAIN, errno.EACCES})
_OFFSETS: Final = (1 << 62) - 1


class Unusable(OSError):
    """The kernel refused byte-range locks here (``EINVAL``, ``ENOLCK``, ...)."""


class RangeLocks:
    """Exclusive locks on names, one byte each of one file opened by ``opener``.

    ``opener()`` returns a new read-write fd of the lock file (made if
    missing); it is called at the first lock and again after a fork.
    """

    def __init__(self, opener: Callable[[], int]) -> None:
        self._opener = opener
        self._fd: int | None = None
        self._held: set[int] = set()
        self._mutex = threading.Lock()
        reset_in_children(self)

    def try_lock(self, name: str) -> int | None:
        """The offset locked for ``name``, or ``None`` if someone holds it now.

        Raises :class:`Unusable` if the kernel refuses such locks and
        :class:`OSError` if the file cannot be opened.
        """
        offset = xxhash.xxh3_64_intdigest(name.encode()) & _OFFSETS
        with self._mutex:
            if offset in self._held:
                return None
            if self._fd is None:
                self._fd = self._opener()
            fd = self._fd
            try:
                fcntl.fcntl(fd, _SETLK, _FLOCK.pack(fcntl.F_WRLCK, os.SEEK_SET, offset, 1, 0))
            except OSError as exc:
                if exc.errno in _BUSY:
                    return None
                raise Unusable(exc.errno, exc.strerror) from None
            self._held.add(offset)
            return offset

    def unlock(self, offset: int) -> None:
        """Release the lock taken as ``offset``."""
        with self._mutex:
            self._held.discard(offset)
            if self._fd is not None:
                fcntl.fcntl(self._fd, _SETLK, _FLOCK.pack(fcntl.F_UNLCK, os.SEEK_SET, offset, 1, 0))

    def close(self) -> None:
        """Close the lock file (releasing every lock of this instance)."""
        with self._mutex:
            fd, self._fd = self._fd, None
            self._held.clear()
        if fd is not None:
            os.close(fd)

    def reset_in_child(self) -> None:
        """After a fork, in the child: drop the parent's descriptor and locks."""
        # The inherited descriptor shares the parent's locks: never use or release them.
        self._mutex = threading.Lock()
        self._held = set()
        if self._fd is not None:
            fd, self._fd = self._fd, None
            with contextlib.suppress(OSError):
                os.close(fd)  # the parent's own descriptor keeps its locks
