"""Per-key locks between processes: kernel ``flock`` where it works, lease files where not.

Single-flight is an optimisation, not a correctness condition: entries are
published atomically, so two processes computing the same key both publish
the same result. The locks here therefore prefer never hanging over strict
exclusion: a waiter gives up at its deadline and computes itself, and a lease
whose owner died or stopped heartbeating is taken over.

``flock`` backend
    kernel locks, which the kernel releases when the holder dies. On Linux a
    byte of one file, ``<dir>/keys.ranges``, per key, locked with an open
    file description lock (:mod:`~stepcache.stores._ranges`: one system
    call to lock, one to release). Elsewhere, or where the kernel refuses
    those, ``<dir>/<key>.lock``, locked with ``fcntl.flock``. Its holder
    unlinks the file *before* unlocking
    it, and a process that acquires a lock checks that the file it locked
    is still the one at the path (else it retries), so removing lock files
    never lets two holders in and the directory stays empty when idle.
    (Where NFS emulates ``flock`` with POSIX locks, two store instances of
    one process do not exclude each other; threads of one instance always do.)
``lease`` backend
    on network and FUSE filesystems, where ``flock`` does not exclude
    across clients: ``<dir>/<key>.lease`` files kept alive by a heartbeat,
    taken over by at most one waiter once seen unchanged for
    ``stale_after`` seconds (:mod:`~stepcache.stores._lease`, specified in
    ``docs/shared-filesystems.md``).

Which one ``auto`` uses is decided at the first lock from the directory's
filesystem type (:mod:`~stepcache.stores._lockmode`); ``auto`` also
switches to leases for good the first time a filesystem refuses ``flock``.

The lock directory is opened with ``O_NOFOLLOW`` and every file in it is
reached through that fd: a lock directory replaced by a symlink refuses
locking (the caller computes unlocked) instead of making files where it
points. In a group directory (setgid, group-writable) lock and lease files
are 0660, so the group's members can lock each other's keys.

>>> import tempfile, time
>>> locks = KeyLocks(tempfile.mkdtemp())
>>> with locks.hold("ab" * 16, time.monotonic() + 1) as held:
...     held
True
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import time
from collections.abc import Callable
from typing import Final

from stepcache._log import log
from stepcache.stores._lease import Held, Leases, Watch, waiting
from stepcache.stores._lockmode import MODES, LeaseTiming, check_lock, resolve_mode
from stepcache.stores._ranges import FILE_NAME as RANGES_FILE
from stepcache.stores._ranges import SUPPORTED as RANGES_SUPPORTED
from stepcache.stores._ranges import RangeLocks, Unusable
from stepcache.stores.directory.beneath import is_group_dir, open_leaf

__all__ = ["BACKENDS", "RANGES_FILE", "KeyLocks", "LeaseTiming"]

BACKENDS: Final = MODES
_UNSUPPORTED: Final = frozenset({errno.ENOLCK, errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOTSUP})
_OPEN_LOCK: Final = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
_OPEN_HELD: Final = os.O_RDWR | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
_MAX_POLL: Final = 0.01  # seconds: how late a waiter may notice a released lock (each try ~30 µs)
#: Consecutive failed looks (errors, or "cannot create and nothing is there") before a
#: lease directory counts as unusable and the caller is told the lock is not held.
_MAX_FAILED_LOOKS: Final = 50


class _FlockUnsupported(Exception):
    pass


class _Backoff:
    """Sleeps of growing length until a deadline (``time.monotonic`` seconds)."""

    def __init__(self, deadline: float) -> None:
        self.deadline = deadline
        self.delay = 0.001

    def wait(self) -> bool:
        """Sleep a little; ``False`` once the deadline has passed."""
        remaining = self.deadline - time.monotonic()
        if remaining <= 0:
            return False
        time.sleep(min(self.delay, remaining))
        self.delay = min(self.delay * 2, _MAX_POLL)
        return True


class _Dir:
    """The open lock directory: its fd, and the mode of the files made in it."""

    def __init__(self, path: str, *, create: bool) -> None:
        self.fd = open_leaf(path, create=create)
        try:
            self.mode = 0o660 if is_group_dir(os.fstat(self.fd).st_mode) else 0o600
        except BaseException:
            os.close(self.fd)
            raise

    def create(self, name: str, flags: int) -> int:
        """Open file ``name`` with ``flags``; if this process owns it, it gets :attr:`mode`."""
        fd = os.open(name, flags, self.mode, dir_fd=self.fd)
        if self.mode == 0o600:
            return fd
        try:
            st = os.fstat(fd)
            # Only the file's owner may (and needs to) widen it for the group. Until it
            # has, a member finding it 0640 (umask 022) computes unlocked once: single
            # flight is an optimisation, so that window is tolerated.
            if st.st_uid == os.geteuid() and stat.S_IMODE(st.st_mode) != self.mode:
                os.fchmod(fd, self.mode)
        except BaseException:
            os.close(fd)
            raise
        return fd

    def is_current(self, fd: int, name: str) -> bool:
        """Whether ``name`` is (still) the file open as ``fd``."""
        try:
            st = os.stat(name, dir_fd=self.fd, follow_symlinks=False)
        except FileNotFoundError:
            return False
        mine = os.fstat(fd)
        return (st.st_dev, st.st_ino) == (mine.st_dev, mine.st_ino)

    def close(self) -> None:
        """Close the directory fd."""
        os.close(self.fd)


class _Hold:
    """:meth:`KeyLocks.hold`'s context manager: a class, cheaper than a generator's."""

    __slots__ = ("_deadline", "_locks", "_name", "_release")

    def __init__(self, locks: KeyLocks, name: str, deadline: float) -> None:
        self._locks, self._name, self._deadline = locks, name, deadline
        self._release: Callable[[], None] | None = None

    def __enter__(self) -> bool:
        self._release = self._locks._acquire(self._name, self._deadline)
        return self._release is not None

    def __exit__(self, *exc: object) -> None:
        if self._release is not None:
            self._release()


class KeyLocks:
    """Locks on names (store keys) shared by all processes using directory ``path``.

    ``backend`` is ``"auto"``, ``"flock"``, ``"lease"`` or ``None`` (then
    ``$STEPCACHE_LOCK``, else ``auto``); :meth:`mode` says which one is in
    use and why. ``timing`` sets the lease heartbeat and stale period
    (``stale_after`` alone sets the period, with a heartbeat a tenth of it);
    ``warn(topic, message, *args)`` reports degraded modes.
    """

    def __init__(
        self,
        path: str,
        *,
        backend: str | None = None,
        timing: LeaseTiming | None = None,
        stale_after: float | None = None,
        warn: Callable[..., None] | None = None,
    ) -> None:
        check_lock(backend)
        self.path = path
        self.requested = backend
        self._mode: tuple[str, str] | None = None
        if timing is None:
            timing = (
                LeaseTiming() if stale_after is None else LeaseTiming(stale_after / 10, stale_after)
            )
        self.timing = timing
        self._warn = warn or (lambda topic, message, *args: log.warning(message, *args))
        self._watch = Watch()  # what waiters of this instance saw of each lease, and since when
        self._failed: dict[str, int] = {}
        # Byte-range locks in one kept file while they work; None: a file per key.
        self._ranges = RangeLocks(self._open_ranges) if RANGES_SUPPORTED else None

    def _open_ranges(self) -> int:
        where = _Dir(self.path, create=True)
        try:
            return where.create(RANGES_FILE, _OPEN_LOCK)
        finally:
            where.close()

    def close(self) -> None:
        """Close the kept lock file, if any (a later lock opens it again)."""
        if self._ranges is not None:
            self._ranges.close()

    def mode(self) -> tuple[str, str]:
        """(``"flock"`` or ``"lease"``, why): decided at the first call, from the filesystem."""
        if self._mode is None:
            parent = os.path.dirname(self.path) or os.curdir
            where = self.path if os.path.isdir(self.path) else parent
            self._mode = resolve_mode(self.requested, where)
        return self._mode

    @property
    def backend(self) -> str:
        """The lock in use: ``"flock"`` or ``"lease"``."""
        return self.mode()[0]

    def file_of(self, name: str) -> str:
        """The name of the file in the lock directory that the lock on ``name`` lives in."""
        if self.backend == "lease":
            return f"{name}.lease"
        return f"{name}.lock" if self._ranges is None else RANGES_FILE

    def hold(self, name: str, deadline: float) -> _Hold:
        """Hold the lock on ``name`` until the block exits; give whether it was granted.

        Waits (on entering) until ``deadline``, a ``time.monotonic()`` value, at
        most. An error of the lock directory itself (permissions, full disk, a
        symlink in its place) raises :class:`OSError`: the caller decides
        whether to compute without the lock.
        """
        return _Hold(self, name, deadline)

    def _acquire(self, name: str, deadline: float) -> Callable[[], None] | None:
        ranges = self._ranges
        if ranges is not None and self.backend == "flock":
            try:
                return _range_lock(ranges, name, deadline)
            except Unusable as exc:
                self._ranges = None
                self._warn(
                    "ranges",
                    "stepcache: byte-range locks refused in %s (%s); using a lock file per key",
                    self.path,
                    exc,
                )
            except OSError as exc:
                if exc.errno not in (errno.EACCES, errno.EPERM):
                    raise  # the lock directory itself is unusable: the caller decides
                # A keys.ranges file this process may not open (another user's, in a
                # group directory it never widened): lock files of its own instead.
                self._ranges = None
        where = _Dir(self.path, create=True)
        try:
            release = self._acquire_in(where, name, deadline)
        except BaseException:
            where.close()
            raise
        if release is None:
            where.close()
            return None

        def done() -> None:
            try:
                release()
            finally:
                where.close()

        return done

    def _acquire_in(self, where: _Dir, name: str, deadline: float) -> Callable[[], None] | None:
        if self.backend == "flock":
            try:
                fd = _flock(where, f"{name}.lock", deadline)
            except _FlockUnsupported as exc:
                if self.requested == "flock":
                    raise OSError(errno.ENOLCK, f"flock is not supported here: {exc}") from None
                self._mode = ("lease", f"lease: flock refused in {self.path} ({exc})")
                self._warn(
                    "flock",
                    "stepcache: flock unsupported in %s (%s); using lease files",
                    self.path,
                    exc,
                )
            else:
                return None if fd is None else lambda: _unflock(where, f"{name}.lock", fd)
        held = self._lease(where, f"{name}.lease", deadline)
        return None if held is None else held.release

    def _lease(self, where: _Dir, name: str, deadline: float) -> Held | None:
        """Wait for lease ``name``: create it, or take it over once seen abandoned."""
        leases = Leases(where.fd, where.mode, self.timing)
        # One watch per instance: a store's waiter comes back in short slices (it
        # reads the store between them), and what it saw must outlive each slice.
        watch, wait = self._watch, waiting(self.timing, deadline)
        failed = self._failed.pop(name, 0)  # consecutive failed looks, also across slices
        while True:
            try:
                found = leases.read(name)
                if found is None:
                    held = leases.try_create(name)
                    # Whatever made the create fail (EEXIST, or EPERM, ESTALE, ... from a
                    # network filesystem), the answer is to look at what is there.
                    failed = 0 if held is not None or leases.read(name) is not None else failed + 1
                elif leases.abandoned(watch, name, found):
                    held, failed = leases.take_over(watch, name, found), 0
                else:
                    held, failed = None, 0
            except OSError:
                held, failed = None, failed + 1
            if held is not None:
                return held
            if failed >= _MAX_FAILED_LOOKS:
                raise OSError(errno.EIO, f"cannot create lease files in {self.path}")
            if not wait():
                if failed:
                    self._failed[name] = failed
                return None

    def sweep(self, observe: float = 0.0) -> int:
        """Remove unheld lock files and abandoned leases; return how many.

        Leases of dead processes of this host go at once; others only once
        seen unchanged for the stale period, so ``observe`` (seconds) keeps
        looking that long.
        """
        try:
            where = _Dir(self.path, create=False)
        except FileNotFoundError:
            return 0
        removed, watch = 0, Watch()
        end = time.monotonic() + observe
        try:
            while True:
                names = os.listdir(where.fd)
                removed += sum(_remove_unheld(where, n) for n in names if n.endswith(".lock"))
                leases = Leases(where.fd, where.mode, self.timing)
                # One unreadable lease (a group member's, a planted link) spoils no sweep.
                with contextlib.suppress(OSError):
                    removed += leases.sweep(watch, names)
                left = [n for n in os.listdir(where.fd) if n.endswith((".lease", ".claim"))]
                if not left or time.monotonic() >= end:
                    return removed
                time.sleep(min(self.timing.poll * 5, max(0.0, end - time.monotonic())))
        finally:
            where.close()


# -- flock ---------------------------------------------------------------------
def _range_lock(ranges: RangeLocks, name: str, deadline: float) -> Callable[[], None] | None:
    backoff = _Backoff(deadline)
    while True:
        offset = ranges.try_lock(name)
        if offset is not None:
            return lambda: ranges.unlock(offset)
        if not backoff.wait():
            return None


def _flock(where: _Dir, name: str, deadline: float) -> int | None:
    import fcntl  # on first lock: a process that only reads never needs it

    backoff = _Backoff(deadline)
    fd = where.create(name, _OPEN_LOCK)
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if backoff.wait():
                continue
            os.close(fd)
            return None
        except OSError as exc:
            os.close(fd)
            if exc.errno in _UNSUPPORTED:  # nobody can hold this file: leave no trace
                with contextlib.suppress(OSError):
                    os.unlink(name, dir_fd=where.fd)
                raise _FlockUnsupported(exc.strerror) from None
            raise
        if where.is_current(fd, name):
            return fd
        # The previous holder removed the file we locked: lock the new one.
        os.close(fd)
        fd = where.create(name, _OPEN_LOCK)


def _unflock(where: _Dir, name: str, fd: int) -> None:
    # Unlink while still holding the lock; see the module docstring.
    with contextlib.suppress(FileNotFoundError):
        os.unlink(name, dir_fd=where.fd)
    os.close(fd)


def _remove_unheld(where: _Dir, name: str) -> bool:
    # The same protocol as a holder's release: lock, check, unlink, unlock.
    try:
        fd = os.open(name, _OPEN_HELD, dir_fd=where.fd)
    except OSError:
        return False
    import fcntl

    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        if where.is_current(fd, name):
            os.unlink(name, dir_fd=where.fd)
            return True
    except OSError:
        pass
    finally:
        os.close(fd)
    return False
