"""Per-key locks between processes: kernel ``flock`` where it works, lease files where not.

Single-flight is an optimisation, not a correctness condition: entries are
published atomically, so two processes computing the same key both publish
the same result. The locks here therefore prefer never hanging over strict
exclusion: a waiter gives up at its deadline and computes itself, and a lease
whose owner died or stopped heartbeating is taken over.

``flock`` backend
    ``<dir>/<key>.lock``, locked with ``fcntl.flock``; the kernel releases
    it when the holder dies. The holder unlinks the file *before* unlocking
    it, and a process that acquires a lock checks that the file it locked
    is still the one at the path (else it retries), so removing lock files
    never lets two holders in and the directory stays empty when idle.
    (Where NFS emulates ``flock`` with POSIX locks, two store instances of
    one process do not exclude each other; threads of one instance always do.)
``lease`` backend
    where ``flock`` fails with ``ENOLCK``/``ENOSYS``/``EOPNOTSUPP`` (some NFS
    mounts): ``<dir>/<key>.lease`` created with ``O_EXCL``, holding the
    owner's host, pid, start time and a random token, its mtime refreshed by
    a heartbeat thread. A waiter takes it over when its owner is a dead
    process of the same host or its heartbeat is older than ``stale_after``.

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
import fcntl
import json
import logging
import os
import stat
import threading
import time
from collections.abc import Callable, Iterator
from typing import Final

from stepcache.stores import _fsutil
from stepcache.stores.directory.beneath import is_group_dir, open_leaf

__all__ = ["BACKENDS", "KeyLocks"]

log = logging.getLogger("stepcache")
BACKENDS: Final = ("auto", "flock", "lease")
_UNSUPPORTED: Final = frozenset({errno.ENOLCK, errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOTSUP})
_OPEN_LOCK: Final = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
_OPEN_LEASE: Final = (
    os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
)
_OPEN_HELD: Final = os.O_RDWR | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
_READ: Final = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)
_MAX_POLL: Final = 0.01  # seconds: how late a waiter may notice a released lock (each try ~30 µs)


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

    def read(self, name: str) -> tuple[bytes, float] | None:
        """The content and mtime of file ``name``; ``None`` if there is none."""
        try:
            fd = os.open(name, _READ, dir_fd=self.fd)
        except FileNotFoundError:
            return None
        with open(fd, "rb") as f:
            return f.read(), os.fstat(fd).st_mtime

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


class _Lease:
    """A held lease file, kept fresh by a heartbeat thread until released."""

    def __init__(self, where: _Dir, name: str, body: bytes, interval: float) -> None:
        self.where, self.name, self.body = where, name, body
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._beat, args=(interval,), name="stepcache-lease", daemon=True
        )
        self._thread.start()

    def _owned(self) -> bool:
        try:
            found = self.where.read(self.name)
        except OSError:
            return False
        return found is not None and found[0] == self.body

    def _beat(self, interval: float) -> None:
        while not self._stop.wait(interval):
            if not self._owned():  # taken over: our heartbeat must not keep theirs alive
                return
            with contextlib.suppress(OSError):
                os.utime(self.name, dir_fd=self.where.fd, follow_symlinks=False)

    def release(self) -> None:
        """Stop the heartbeat and remove the lease, unless another process took it over."""
        self._stop.set()
        self._thread.join()
        if self._owned():
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.name, dir_fd=self.where.fd)


class KeyLocks:
    """Locks on names (store keys) shared by all processes using directory ``path``.

    ``backend`` is ``"auto"`` (``flock``, switching to leases for good the
    first time the filesystem refuses ``flock``), ``"flock"`` or ``"lease"``.
    ``stale_after`` is how old a lease's heartbeat may get before a waiter
    takes it over; ``warn(topic, message, *args)`` reports degraded modes.
    """

    def __init__(
        self,
        path: str,
        *,
        backend: str = "auto",
        stale_after: float = 30.0,
        warn: Callable[..., None] | None = None,
    ) -> None:
        if backend not in BACKENDS:
            raise ValueError(f"lock_backend must be one of {', '.join(BACKENDS)}, not {backend!r}")
        self.path = path
        self.backend = backend
        self.stale_after = stale_after
        self._warn = warn or (lambda topic, message, *args: log.warning(message, *args))

    @contextlib.contextmanager
    def hold(self, name: str, deadline: float) -> Iterator[bool]:
        """Hold the lock on ``name`` until the block exits; yield whether it was granted.

        Waits until ``deadline`` (a ``time.monotonic()`` value) at most. An
        error of the lock directory itself (permissions, full disk, a
        symlink in its place) raises :class:`OSError`: the caller decides
        whether to compute without the lock.
        """
        release = self._acquire(name, deadline)
        try:
            yield release is not None
        finally:
            if release is not None:
                release()

    def _acquire(self, name: str, deadline: float) -> Callable[[], None] | None:
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
        if self.backend != "lease":
            try:
                fd = _flock(where, f"{name}.lock", deadline)
            except _FlockUnsupported as exc:
                if self.backend == "flock":
                    raise OSError(errno.ENOLCK, f"flock is not supported here: {exc}") from None
                self.backend = "lease"
                self._warn(
                    "flock",
                    "stepcache: flock unsupported in %s (%s); using lease files",
                    self.path,
                    exc,
                )
            else:
                return None if fd is None else lambda: _unflock(where, f"{name}.lock", fd)
        lease = self._lease(where, f"{name}.lease", deadline)
        return None if lease is None else lease.release

    def sweep(self) -> int:
        """Remove lock files nobody holds and abandoned leases; return how many."""
        try:
            where = _Dir(self.path, create=False)
        except FileNotFoundError:
            return 0
        removed = 0
        try:
            for name in os.listdir(where.fd):
                if name.endswith(".lock"):
                    removed += _remove_unheld(where, name)
                elif name.endswith(".lease"):
                    # One unreadable lease (a group member's, a planted link) spoils no sweep.
                    with contextlib.suppress(OSError):
                        removed += self._take_over_abandoned(where, name)
        finally:
            where.close()
        return removed

    # -- lease files -----------------------------------------------------------
    def _lease(self, where: _Dir, name: str, deadline: float) -> _Lease | None:
        backoff = _Backoff(deadline)
        while True:
            body = json.dumps(
                {
                    "host": _fsutil.HOST,
                    "pid": os.getpid(),
                    "time": time.time(),
                    "token": os.urandom(8).hex(),
                }
            ).encode()
            try:
                fd = where.create(name, _OPEN_LEASE)
            except FileExistsError:
                if self._take_over_abandoned(where, name) or backoff.wait():
                    continue
                return None
            try:
                os.write(fd, body)
            except OSError:
                os.unlink(name, dir_fd=where.fd)  # an empty lease would block others until stale
                raise
            finally:
                os.close(fd)
            return _Lease(where, name, body, interval=max(self.stale_after / 6, 0.01))

    def _abandoned(self, where: _Dir, name: str) -> bytes | None:
        """The lease's content if it is abandoned, else ``None``."""
        found = where.read(name)
        if found is None:
            return None
        body, mtime = found
        if time.time() - mtime > self.stale_after:
            return body
        try:
            owner = json.loads(body)
            host, pid = str(owner["host"]), int(owner["pid"])
        except (ValueError, KeyError, TypeError):
            return None  # still being written, or foreign: judged by age alone
        dead = host == _fsutil.HOST and pid != os.getpid() and not _fsutil.pid_alive(pid)
        return body if dead else None

    def _take_over_abandoned(self, where: _Dir, name: str) -> bool:
        """Remove lease ``name`` if abandoned; whether a new one may be tried now."""
        body = self._abandoned(where, name)
        if body is None:
            return False
        # Renaming claims the file atomically; only then can its content be
        # checked without racing another waiter that replaced it meanwhile.
        grave = f"{name}.{os.urandom(6).hex()}.stale"
        try:
            os.rename(name, grave, src_dir_fd=where.fd, dst_dir_fd=where.fd)
        except FileNotFoundError:
            return True
        try:
            claimed = where.read(grave)
            if claimed is not None and claimed[0] != body:  # a fresh lease: give it back
                with contextlib.suppress(FileExistsError):  # unless a newer one exists
                    os.link(
                        grave, name, src_dir_fd=where.fd, dst_dir_fd=where.fd, follow_symlinks=False
                    )
        finally:
            os.unlink(grave, dir_fd=where.fd)
        return True


# -- flock ---------------------------------------------------------------------
def _flock(where: _Dir, name: str, deadline: float) -> int | None:
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
