"""Per-instance counter files of a DirectoryStore: ``stats/<owner>``, summed by ``stats()``.

Each store instance that did something writes its counters to its own file
(never a shared one, so no lock is needed); ``prune`` merges the files of
exited processes into ``stats/_archived``.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import itertools
import os
import sys
import threading
import time
import weakref
from typing import TYPE_CHECKING, Any, Final

from stepcache.stores import _fsutil
from stepcache.stores._stats import Counters, Stats
from stepcache.stores.directory import beneath

if TYPE_CHECKING:
    from stepcache.stores._locks import KeyLocks

__all__ = [
    "ARCHIVE",
    "FLUSH_EVERY",
    "StatsFile",
    "archive_stats",
    "dumps",
    "read_named_stats",
    "read_stats",
]

FLUSH_EVERY: Final = 5.0  # seconds between two writes of a stats file
ARCHIVE: Final = "_archived"
_ARCHIVE_AFTER: Final = 30 * 86400.0  # stats files of other hosts this old are archived
_READ: Final = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)
_serial = itertools.count()
_INF: Final = float("inf")


def dumps(value: Any) -> str:
    """``json.dumps(value, separators=(",", ":"))``, without importing :mod:`json` for counters.

    A process that only read an entry writes its counters at exit, and
    importing :mod:`json` (about a millisecond) would be most of that.
    Counters are ints, finite floats, dicts, lists and plain ASCII strings;
    anything else (escapes, non-ASCII labels, other types) goes to :mod:`json`.

    >>> dumps({"hits": 1, "rate": 0.5, "steps": {"Parse": [1, 0]}, "recent": (), "x": None})
    '{"hits":1,"rate":0.5,"steps":{"Parse":[1,0]},"recent":[],"x":null}'
    """
    out: list[str] = []
    if _plain(value, out):
        return "".join(out)
    import json

    return json.dumps(value, separators=(",", ":"))


def _plain(value: Any, out: list[str]) -> bool:
    """Append the JSON text of ``value`` to ``out``; ``False`` if it needs :mod:`json`."""
    kind = type(value)
    if kind is int:  # exactly: bool and int subclasses print differently
        out.append(int.__repr__(value))
    elif kind is float and -_INF < value < _INF:
        out.append(float.__repr__(value))
    elif kind is str:
        if not (value.isascii() and value.isprintable()) or '"' in value or "\\" in value:
            return False
        out.append(f'"{value}"')
    elif kind is dict:
        out.append("{")
        for n, (k, v) in enumerate(value.items()):
            out.append("," if n else "")
            if type(k) is not str or not _plain(k, out):
                return False
            out.append(":")
            if not _plain(v, out):
                return False
        out.append("}")
    elif kind is list or kind is tuple:
        out.append("[")
        for n, item in enumerate(value):
            out.append("," if n else "")
            if not _plain(item, out):
                return False
        out.append("]")
    elif value is None or value is True or value is False:
        out.append("null" if value is None else "true" if value else "false")
    else:
        return False
    return True


class StatsFile:
    """One store instance's counters on disk, as ``stats/<host>-<pid>-<start>-<n>``.

    Written when the counters changed: at most every ``FLUSH_EVERY`` seconds
    while in use, and at close or exit; never by a process that only opened
    the store, and never by a forked child for its parent's counters.
    """

    def __init__(self, counters: Counters, root: str, durable: bool) -> None:
        self.counters = counters
        self.pid = os.getpid()
        self._serial = next(_serial)
        self._dir = f"{root}/stats"
        self._tmp = f"{root}/tmp"
        self._durable = durable
        self._lock = threading.Lock()
        #: ``time.monotonic()`` after which the next use should call :meth:`flush`
        self.due = time.monotonic() + FLUSH_EVERY

    @functools.cached_property
    def name(self) -> str:
        """The file's name, found at the first write (or ``stats()``): opening reads nothing."""
        return f"{_fsutil.owner_tag(self.pid)}-{self._serial}"

    @property
    def path(self) -> str:
        """Where the counters are written."""
        return f"{self._dir}/{self.name}"

    def flush_at_exit(self, owner: object) -> None:
        """Flush when ``owner`` is collected or the process exits, whichever comes first."""
        weakref.finalize(owner, self.flush)
        # Children of multiprocessing leave through os._exit, skipping atexit;
        # its own exit hooks still run. Only a process using it has it loaded.
        mp_util = sys.modules.get("multiprocessing.util")
        if mp_util is not None:
            mp_util.Finalize(owner, self.flush, exitpriority=10)

    def flush(self) -> None:
        """Write the counters if they changed; never raises for a failed write."""
        self.due = time.monotonic() + FLUSH_EVERY
        if os.getpid() != self.pid:
            return
        # Own lock first: a flush that the garbage collector starts (the
        # owner's finalizer) while this thread is inside a flush returns here,
        # without waiting for the counters' lock that thread holds.
        if not self._lock.acquire(blocking=False):
            return
        try:
            if not self.counters.dirty:
                return
            self.counters.dirty = False
            data = dumps(self.counters.snapshot().to_dict())
            _fsutil.write_atomic(self.path, data.encode(), self._tmp, durable=self._durable)
        except OSError:  # counters are best effort; try again next time
            self.counters.dirty = True
        finally:
            self._lock.release()


def _read(dir_fd: int, name: str) -> Stats | None:
    """The counters in stats file ``name`` of ``dir_fd``; ``None`` if unreadable or no file."""
    try:
        fd = os.open(name, _READ, dir_fd=dir_fd)
    except OSError:  # gone meanwhile, or a symlink
        return None
    import json

    with open(fd, "rb") as f:
        try:
            return Stats.from_dict(json.load(f))
        except (OSError, ValueError, TypeError, KeyError, AttributeError):
            return None  # being replaced, truncated by a crash, or foreign


def read_named_stats(stats_dir: str, *, since: float = 0.0) -> dict[str, Stats]:
    """Counters by stats file name, of the files in ``stats_dir`` written at or after ``since``.

    Unreadable files are left out. A ``stats_dir`` replaced by a symlink or a
    file holds no counters: it is not followed.
    """
    try:
        fd = beneath.open_leaf(stats_dir)
    except OSError as exc:
        if exc.errno in (errno.ENOENT, errno.ELOOP, errno.ENOTDIR, errno.EACCES, errno.EPERM):
            return {}
        raise
    found = {}
    try:
        with os.scandir(fd) as it:
            entries = list(it)
        for entry in entries:
            try:
                if since and entry.stat(follow_symlinks=False).st_mtime < since:
                    continue
            except FileNotFoundError:
                continue
            stats = _read(fd, entry.name)
            if stats is not None:
                found[entry.name] = stats
    finally:
        os.close(fd)
    return found


def read_stats(stats_dir: str, *, skip: str | None = None) -> list[Stats]:
    """Counters of the stats files in ``stats_dir`` but ``skip`` (see :func:`read_named_stats`)."""
    return [stats for name, stats in read_named_stats(stats_dir).items() if name != skip]


def _exited(dir_fd: int, now: float) -> list[str]:
    """Names of the stats files in ``dir_fd`` whose process exited (or untouched for long)."""
    with os.scandir(dir_fd) as found:
        entries = list(found)
    dead = []
    for entry in entries:
        if entry.name != ARCHIVE:
            try:
                old = now - entry.stat(follow_symlinks=False).st_mtime > _ARCHIVE_AFTER
            except FileNotFoundError:
                continue
            if old or _fsutil.owner_is_dead(entry.name):
                dead.append(entry.name)
    return dead


def archive_stats(stats_dir: str, tmp_dir: str, locks: KeyLocks) -> int:
    """Merge stats files of exited processes into ``_archived``; return how many were merged.

    Processes of other hosts cannot be asked whether they live; their files
    are merged once untouched for 30 days. Nothing is read or removed through
    a ``stats_dir`` replaced by a symlink (:class:`OSError`).
    """
    try:
        fd = beneath.open_leaf(stats_dir)
    except FileNotFoundError:
        return 0
    try:
        dead = _exited(fd, time.time())
        if not dead:
            return 0
        with locks.hold("stats-archive", time.monotonic() + 30) as held:
            if not held:
                return 0
            parts = [s for s in (_read(fd, n) for n in [ARCHIVE, *dead]) if s is not None]
            total = Stats.combine(parts, entries=0, nbytes=0).to_dict()
            archive = os.path.join(stats_dir, ARCHIVE)
            import json

            _fsutil.write_atomic(archive, json.dumps(total).encode(), tmp_dir)
            for name in dead:
                with contextlib.suppress(FileNotFoundError):  # merged by a concurrent prune
                    os.unlink(name, dir_fd=fd)
    finally:
        os.close(fd)
    return len(dead)
