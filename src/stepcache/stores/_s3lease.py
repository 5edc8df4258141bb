"""Single flight across machines on object storage: lease objects by conditional create.

A process that wants to compute a key creates ``leases/<key>`` with
``If-None-Match: *``; of all creators exactly one succeeds (the others get
412 Precondition Failed). The holder rewrites the lease every
``stale_after / 4`` seconds with a new heartbeat count, conditionally on the
ETag it last wrote (``If-Match``), so a holder that lost its lease never
overwrites a successor's.

A waiter judges liveness by what it *sees*: the ETag of the lease as read
by the waiter, and when (on the waiter's own monotonic clock) that ETag last
changed. A lease whose ETag has not changed for ``stale_after`` seconds of
the waiter's time is abandoned; the waiter takes it over by rewriting it
``If-Match`` the ETag it saw, so of several waiters only one wins and a late
heartbeat of a slow holder makes every take-over fail. No server timestamp
is ever compared with a local clock. An owner on the same host whose process
is gone is taken over at once, by the same conditional rewrite.

Any error of the server means "no lock": the caller computes unlocked,
which single flight allows (entries are published whole, so two computations
of one key publish the same result).
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, Final

from stepcache.stores import _fsutil
from stepcache.stores._lease import Heartbeat

__all__ = ["LeaseOps", "hold"]

_MAX_POLL: Final = 0.05  # seconds between looks at a held lease (one small GET each)


class LeaseOps:
    """What a lease needs from the object store; every method raises OSError when it cannot.

    ``create(name, body)`` returns the new ETag or ``None`` if the object
    exists; ``replace(name, body, etag)`` returns the new ETag or ``None``
    if the object's ETag is not ``etag``; ``read(name)`` returns
    ``(body, etag)`` or ``None``; ``delete(name)`` removes it.
    """

    def __init__(
        self,
        create: Callable[[str, bytes], str | None],
        replace: Callable[[str, bytes, str], str | None],
        read: Callable[[str], tuple[bytes, str] | None],
        delete: Callable[[str], None],
    ) -> None:
        self.create, self.replace, self.read, self.delete = create, replace, read, delete
        #: lease name -> (ETag last seen, when it was first seen on this process's clock).
        #: Kept across calls: a store tries a lock for one short poll at a time.
        self.seen: dict[str, tuple[str, float]] = {}
        self.seen_lock = threading.Lock()

    def observe(self, name: str, etag: str | None) -> float:
        """Record ``etag`` as seen now; return for how long it has been seen unchanged."""
        now = time.monotonic()
        with self.seen_lock:
            if etag is None:
                self.seen.pop(name, None)
                return 0.0
            last = self.seen.get(name)
            if last is None or last[0] != etag:
                self.seen[name] = (etag, now)
                return 0.0
            return now - last[1]


def _body(token: str, beat: int) -> bytes:
    owner = {"host": _fsutil.host(), "pid": os.getpid(), "token": token, "beat": beat}
    return json.dumps(owner, sort_keys=True).encode()


def _owner_dead(body: bytes) -> bool:
    try:
        owner: dict[str, Any] = json.loads(body)
        host, pid = str(owner["host"]), int(owner["pid"])
    except (ValueError, KeyError, TypeError):
        return False  # foreign or damaged: judged by its heartbeat alone
    return host == _fsutil.host() and pid != os.getpid() and not _fsutil.pid_alive(pid)


def _acquire(ops: LeaseOps, name: str, token: str, deadline: float, stale_after: float) -> str:
    """The ETag of our new lease, or "" when the deadline passed first."""
    delay = 0.002
    while True:
        etag = ops.create(name, _body(token, 0))
        if etag is not None:
            ops.observe(name, None)
            return etag
        found = ops.read(name)
        if found is None:
            continue  # released between our create and our read: try again at once
        body, seen = found
        # A heartbeat (or a new holder) changes the ETag and restarts the count.
        if ops.observe(name, seen) >= stale_after or _owner_dead(body):
            taken = ops.replace(name, _body(token, 0), seen)
            ops.observe(name, None)  # won, or another waiter won or the holder beat: look again
            if taken is not None:
                return taken
        left = deadline - time.monotonic()
        if left <= 0:
            return ""
        time.sleep(min(delay, left))  # polling: object stores cannot notify a waiter
        delay = min(delay * 1.5, _MAX_POLL, stale_after / 4)


def _renewer(ops: LeaseOps, name: str, token: str, etag: str) -> Callable[[], bool]:
    """One heartbeat of the lease at ``etag``: rewrite it if still ours; ``False`` once lost."""
    beat = 0

    def renew() -> bool:
        nonlocal beat, etag
        beat += 1
        try:
            renewed = ops.replace(name, _body(token, beat), etag)
        except OSError:
            return True  # a blip; if it lasts, a waiter takes over, as it should
        if renewed is None:
            return False  # taken over: nothing of ours left to keep alive
        etag = renewed
        return True

    return renew


@contextlib.contextmanager
def hold(ops: LeaseOps, name: str, deadline: float, *, stale_after: float = 30.0) -> Iterator[bool]:
    """Hold lease ``name`` until the block exits; yield whether it was granted by ``deadline``.

    Raises :class:`OSError` (from ``ops``) when the server cannot be asked.
    """
    token = os.urandom(8).hex()
    etag = _acquire(ops, name, token, deadline, stale_after)
    if not etag:
        yield False
        return
    heart = Heartbeat(_renewer(ops, name, token, etag), stale_after / 4, "stepcache-s3-lease")
    try:
        yield True
    finally:
        heart.stop()
        _release(ops, name, token)


def _release(ops: LeaseOps, name: str, token: str) -> None:
    # Remove it only if it is still ours: a waiter may have taken it over
    # while we were away. (A conditional DELETE is not portable across S3
    # servers; the window between this read and the delete is one request.)
    with contextlib.suppress(OSError, ValueError, AttributeError):
        found = ops.read(name)
        if found is not None and json.loads(found[0]).get("token") == token:
            ops.delete(name)
