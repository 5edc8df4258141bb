"""Single flight: of all threads and processes missing one key at once, one computes.

Threads of one process queue on a per-key :class:`threading.Lock`; processes
on the backend's :meth:`~stepcache.Backend.lock`. A waiter does not simply
queue on the lock: between attempts it looks in the store, so once the
holder publishes, every waiter returns the published value within one poll
interval instead of taking the lock one after another. Polls back off from
1 ms to :data:`MAX_POLL`. A waiter past its deadline computes itself; a
waiter whose holder died gets the lock from the backend (which decides when
a holder is dead). Waiting never blocks other keys.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable
from typing import Any, Final

from stepcache.stores._forks import reset_in_children

__all__ = ["MAX_POLL", "Flights"]

_Lock = Callable[[str, float], contextlib.AbstractContextManager["bool | None"]]

MAX_POLL: Final = 0.025  # seconds: how late a waiter may notice a publish or a release
_FIRST_POLL: Final = 0.001


class Flights:
    """The per-key locks of one store instance, and the waiting loop around the backend's lock."""

    def __init__(self) -> None:
        self.reset_in_child()
        reset_in_children(self)

    def reset_in_child(self) -> None:
        """Forget every flight (in a forked child: its parent's threads' locks are not its own)."""
        self._flights: dict[str, list[Any]] = {}
        self._lock = threading.Lock()

    def _join(self, key: str, deadline: float) -> tuple[list[Any], bool | None]:
        """Join ``key``'s flight: ``(flight, got)``, ``got`` ``None``: its lock at once;
        ``True``: after waiting; ``False``: timed out. Always :meth:`_leave` it after."""
        with self._lock:
            flight = self._flights.setdefault(key, [threading.Lock(), 0])
            flight[1] += 1
        lock: threading.Lock = flight[0]
        got: bool | None = None
        try:
            if not lock.acquire(blocking=False):
                got = lock.acquire(timeout=_left(deadline))
        except BaseException:
            self._leave(key, flight, False)
            raise
        return flight, got

    def _leave(self, key: str, flight: list[Any], got: bool | None) -> None:
        if got is not False:
            flight[0].release()
        with self._lock:
            flight[1] -= 1
            if flight[1] == 0:
                del self._flights[key]

    def run(
        self,
        lock: _Lock | None,
        key: str,
        find: Callable[[], Any],
        produce: Callable[[], Any],
        deadline: float,
        missing: object,
    ) -> tuple[bool, Any]:
        """``(hit, value)``: ``find()`` once held or published, else ``produce()``.

        The caller has just found nothing: ``find`` is asked again only after
        waiting (for another thread, or while another process holds the key)
        and once the lock is held.

        ``lock(key, deadline)`` is the backend's lock, yielding ``None`` when
        the backend cannot lock at all (then this process computes without
        waiting); ``lock`` is ``None`` when other processes need not be
        excluded (a read-only store publishes nothing, so nobody gains from
        waiting).
        """
        # Joined and left by hand rather than through a context manager: a
        # generator-based one costs every miss a microsecond.
        flight, got = self._join(key, deadline)
        try:
            if got:  # another thread of this process held the key, and may have published it
                value = find()
                if value is not missing:
                    return True, value
            if got is False or lock is None:
                return False, produce()
            poll = _FIRST_POLL
            while True:
                # The lock is tried for at most one poll interval, then the store is read again.
                with lock(key, min(deadline, time.monotonic() + poll)) as held:
                    if held is None:
                        return False, produce()
                    if held:
                        value = find()
                        return (True, value) if value is not missing else (False, produce())
                value = find()
                if value is not missing:
                    return True, value
                if time.monotonic() >= deadline:
                    return False, produce()
                poll = min(poll * 2, MAX_POLL)
        finally:
            self._leave(key, flight, got)


def _left(deadline: float) -> float:
    return min(threading.TIMEOUT_MAX, max(0.0, deadline - time.monotonic()))
