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
import threading
import time
from collections.abc import Callable, Iterator
from typing import Final

from stepcache.stores import _fsutil

__all__ = ["BACKENDS", "KeyLocks"]

log = logging.getLogger("stepcache")
BACKENDS: Final = ("auto", "flock", "lease")
_UNSUPPORTED: Final = frozenset({errno.ENOLCK, errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOTSUP})
_OPEN_LOCK: Final = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
_OPEN_LEASE: Final = (
    os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
)
_MAX_POLL: Final = 0.05  # seconds: how late a waiter may notice a released lock


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


class _Lease:
    """A held lease file, kept fresh by a heartbeat thread until released."""

    def __init__(self, path: str, body: bytes, interval: float) -> None:
        self.path = path
        self.body = body
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._beat, args=(interval,), name="stepcache-lease", daemon=True
        )
        self._thread.start()

    def _owned(self) -> bool:
        try:
            with open(self.path, "rb") as f:
                return f.read() == self.body
        except OSError:
            return False

    def _beat(self, interval: float) -> None:
        while not self._stop.wait(interval):
            if not self._owned():  # taken over: our heartbeat must not keep theirs alive
                return
            with contextlib.suppress(OSError):
                os.utime(self.path)

    def release(self) -> None:
        """Stop the heartbeat and remove the lease, unless another process took it over."""
        self._stop.set()
        self._thread.join()
        if self._owned():
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)


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
        error of the lock directory itself (permissions, full disk) yields
        ``False`` after a warning rather than failing the caller.
        """
        try:
            release = self._acquire(name, deadline)
        except OSError as exc:
            self._warn(
                "lock", "stepcache: cannot lock in %s (%s); computing unlocked", self.path, exc
            )
            release = None
        try:
            yield release is not None
        finally:
            if release is not None:
                release()

    def _acquire(self, name: str, deadline: float) -> Callable[[], None] | None:
        if self.backend != "lease":
            try:
                fd = self._flock(os.path.join(self.path, f"{name}.lock"), deadline)
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
                return None if fd is None else lambda: self._unflock(name, fd)
        lease = self._lease(os.path.join(self.path, f"{name}.lease"), deadline)
        return None if lease is None else lease.release

    def sweep(self) -> int:
        """Remove lock files nobody holds and abandoned leases; return how many."""
        try:
            names = os.listdir(self.path)
        except FileNotFoundError:
            return 0
        removed = 0
        for name in names:
            path = os.path.join(self.path, name)
            if name.endswith(".lock"):
                removed += _remove_unheld(path)
            elif name.endswith(".lease"):
                removed += self._take_over_abandoned(path)
        return removed

    # -- flock -----------------------------------------------------------------
    def _open(self, path: str) -> int:
        try:
            return os.open(path, _OPEN_LOCK, 0o600)
        except FileNotFoundError:
            _fsutil.make_dirs(self.path)
            return os.open(path, _OPEN_LOCK, 0o600)

    def _flock(self, path: str, deadline: float) -> int | None:
        backoff = _Backoff(deadline)
        fd = self._open(path)
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
                        os.unlink(path)
                    raise _FlockUnsupported(exc.strerror) from None
                raise
            if _is_current(fd, path):
                return fd
            # The previous holder removed the file we locked: lock the new one.
            os.close(fd)
            fd = self._open(path)

    def _unflock(self, name: str, fd: int) -> None:
        # Unlink while still holding the lock; see the module docstring.
        with contextlib.suppress(FileNotFoundError):
            os.unlink(os.path.join(self.path, f"{name}.lock"))
        os.close(fd)

    # -- lease files -----------------------------------------------------------
    def _lease(self, path: str, deadline: float) -> _Lease | None:
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
                fd = os.open(path, _OPEN_LEASE, 0o600)
            except FileNotFoundError:
                _fsutil.make_dirs(self.path)
                continue
            except FileExistsError:
                if self._take_over_abandoned(path) or backoff.wait():
                    continue
                return None
            try:
                os.write(fd, body)
            except OSError:
                os.unlink(path)  # an empty lease would block others until it is stale
                raise
            finally:
                os.close(fd)
            return _Lease(path, body, interval=max(self.stale_after / 6, 0.01))

    def _abandoned(self, path: str) -> bytes | None:
        """The lease's content if it is abandoned, else ``None``."""
        try:
            with open(path, "rb") as f:
                body = f.read()
                age = time.time() - os.fstat(f.fileno()).st_mtime
        except FileNotFoundError:
            return None
        if age > self.stale_after:
            return body
        try:
            owner = json.loads(body)
            host, pid = str(owner["host"]), int(owner["pid"])
        except (ValueError, KeyError, TypeError):
            return None  # still being written, or foreign: judged by age alone
        dead = host == _fsutil.HOST and pid != os.getpid() and not _fsutil.pid_alive(pid)
        return body if dead else None

    def _take_over_abandoned(self, path: str) -> bool:
        """Remove the lease at ``path`` if abandoned; whether a new one may be tried now."""
        body = self._abandoned(path)
        if body is None:
            return False
        # Renaming claims the file atomically; only then can its content be
        # checked without racing another waiter that replaced it meanwhile.
        grave = f"{path}.{os.urandom(6).hex()}.stale"
        try:
            os.rename(path, grave)
        except FileNotFoundError:
            return True
        try:
            with open(grave, "rb") as f:
                claimed = f.read()
            if claimed != body:  # a fresh lease: give it back unless a newer one exists
                with contextlib.suppress(FileExistsError):
                    os.link(grave, path)
        finally:
            os.unlink(grave)
        return True


def _remove_unheld(path: str) -> bool:
    # The same protocol as a holder's release: lock, check, unlink, unlock.
    try:
        fd = os.open(path, os.O_RDWR | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0))
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        if _is_current(fd, path):
            os.unlink(path)
            return True
    except OSError:
        pass
    finally:
        os.close(fd)
    return False


def _is_current(fd: int, path: str) -> bool:
    try:
        st = os.stat(path, follow_symlinks=False)
    except FileNotFoundError:
        return False
    mine = os.fstat(fd)
    return (st.st_dev, st.st_ino) == (mine.st_dev, mine.st_ino)
