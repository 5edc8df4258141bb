"""``prune`` and ``verify`` for any store that lists its entries with size and last use.

A directory store has its own (it also sweeps temp files and stats); these
serve stores over a :class:`~stepcache.Backend`, such as S3, where the
listing already carries each entry's size and last use, so pruning reads no
entry and verifying reads each entry once.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

from stepcache import codec
from stepcache.stores._dirstate import PruneResult, VerifyResult
from stepcache.stores.backend import EntryStat

__all__ = ["plan", "prune", "verify"]

_PROGRESS_EVERY = 100


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


def verify(
    keys: Iterator[str],
    load: Callable[[str], bytes | None],
    remove: Callable[[str], bool] | None,
    secret: bytes | None,
    allow_pickle: bool,
    progress: Callable[[int], None] | None = None,
) -> VerifyResult:
    """Read and check each entry (length, checksum, signature, decoding); ``remove`` the bad."""
    checked = repaired = 0
    bad: list[tuple[str, str]] = []
    for key in keys:
        blob = load(key)
        if blob is None:  # removed meanwhile
            continue
        checked += 1
        try:
            codec.unpack_entry(blob, key, secret=secret, allow_pickle=allow_pickle)
        except codec.CorruptEntry as exc:
            bad.append((key, str(exc)))
            if remove is not None:
                repaired += remove(key)
        if progress is not None and checked % _PROGRESS_EVERY == 0:
            progress(_PROGRESS_EVERY)
    if progress is not None:
        progress(checked % _PROGRESS_EVERY)
    return VerifyResult(checked, tuple(bad), repaired)
