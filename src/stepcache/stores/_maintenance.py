"""``prune`` for any store whose backend lists its entries with size and last use.

A directory store has its own (it also sweeps temp files and stats); this
serves backends such as S3, where one listing carries each entry's size and
last use, so pruning reads no entry.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

from stepcache.stores.backend import EntryStat
from stepcache.stores.directory.eviction import PruneResult

__all__ = ["plan", "prune"]


def plan(
    entries: list[EntryStat], max_bytes: int | None, max_age: float | None, now: float
) -> list[EntryStat]:
    """The entries to evict: unused for longer than ``max_age``, then least recently used.

    >>> old, new = EntryStat("a" * 16, 10, 0.0), EntryStat("b" * 16, 10, 100.0)
    >>> [e.used for e in plan([old, new], None, 50.0, now=120.0)]
    [0.0]
    >>> [e.used for e in plan([old, new], 15, None, now=120.0)]
    [0.0]
    """
    by_age = sorted(entries, key=lambda e: e.used)
    evict = [e for e in by_age if max_age is not None and now - e.used > max_age]
    if max_bytes is not None:
        chosen = {e.key for e in evict}
        left = sum(e.size for e in entries) - sum(e.size for e in evict)
        for entry in by_age:
            if left <= max_bytes:
                break
            if entry.key not in chosen:
                evict.append(entry)
                left -= entry.size
    return evict


def prune(
    entries: Callable[[], Iterator[EntryStat]],
    remove: Callable[[str], bool],
    max_bytes: int | None,
    max_age: float | None,
    *,
    progress: Callable[[int], None] | None = None,
    dry_run: bool = False,
) -> PruneResult:
    """Evict by ``plan`` through ``remove(key)``; report what went and what is left.

    Ages compare the storage's record of last use with this machine's clock:
    with limits in days, minutes of clock skew do not matter.
    """
    listed = list(entries())
    if progress is not None:
        progress(len(listed))
    evict = plan(listed, max_bytes, max_age, time.time())
    removed = freed = 0
    for entry in evict:
        if dry_run or remove(entry.key):
            removed += 1
            freed += entry.size
    total = sum(e.size for e in listed)
    return PruneResult(removed, freed, 0, len(listed) - removed, total - freed)
