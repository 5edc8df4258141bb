"""DirectoryStore: the store over a :class:`DirectoryBackend`, with its maintenance and counters.

Readers take no lock: every file is published by rename, so a reader sees a
whole entry or none, and a torn file (crash without ``durable=True``) fails
its checksum and reads as a miss. Opening an existing store costs two
``stat`` calls and writes nothing; who may write the tree is checked then
(:mod:`~stepcache.stores.directory.trust`).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

from stepcache.stores import _fsutil
from stepcache.stores._stats import Stats
from stepcache.stores.base import DEFAULT_LOCK_TIMEOUT, Store, VerifyResult
from stepcache.stores.directory import trust
from stepcache.stores.directory.backend import STALE_TEMP, DirectoryBackend
from stepcache.stores.directory.eviction import (
    Item,
    PruneResult,
    hex_names,
    plan_eviction,
    scan,
)
from stepcache.stores.directory.statsfiles import StatsFile, archive_stats, read_stats

__all__ = ["DirectoryStore", "PruneResult", "VerifyResult"]


class DirectoryStore(Store):
    """A store in a local or network directory, shared by every process that opens it.

    ``max_bytes`` and ``max_age`` (seconds since last use) are enforced as
    entries are written, a part of the tree at a time, and fully by
    :meth:`prune`. ``durable=True`` fsyncs every write. ``lock_backend``
    picks how ``get_or_compute`` excludes other processes: ``"auto"``
    (flock, falling back to lease files where flock is unsupported),
    ``"flock"`` or ``"lease"``.

    The root must belong to this user (or root) and be writable by nobody
    else, else :class:`~stepcache.errors.UnsafeStoreError`: anyone who can
    write entries can run code in every reader. ``shared=True`` accepts a
    group's cache (any owner, group-writable, never writable by all); a new
    one is created setgid 2770, and its files 0660. Sign the entries of a
    shared cache with ``secret=`` or ``$STEPCACHE_SECRET``.

    >>> import tempfile, stepcache as sc
    >>> store = sc.DirectoryStore(tempfile.mkdtemp())
    >>> store["ab" * 16] = {"answer": 42}
    >>> store["ab" * 16], len(store)
    ({'answer': 42}, 1)
    """

    backend: DirectoryBackend

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        max_bytes: int | None = None,
        max_age: float | None = None,
        read_only: bool = False,
        secret: bytes | str | None = None,
        codec: str = "pickle",
        durable: bool = False,
        lock_timeout: float = DEFAULT_LOCK_TIMEOUT,
        lock_backend: str = "auto",
        shared: bool = False,
    ) -> None:
        backend = DirectoryBackend(
            path,
            max_bytes=max_bytes,
            max_age=max_age,
            read_only=read_only,
            durable=durable,
            lock_backend=lock_backend,
            shared=shared,
        )
        super().__init__(
            backend, read_only=read_only, secret=secret, codec=codec, lock_timeout=lock_timeout
        )
        backend.counters = self.counters
        backend.warn = self.say_once
        self.max_bytes, self.max_age, self.durable = max_bytes, max_age, durable
        self.lock_backend, self.shared = lock_backend, shared
        if shared and self._secret is None:
            self.say_once("unsigned", trust.UNSIGNED, self.spec)
        # Opening alone is no activity worth a stats file: only other counts make one.
        self.counters.dirty = False
        root = backend.root
        self._stats_file = None if read_only else StatsFile(self.counters, root, durable)
        if self._stats_file is not None:
            self._stats_file.flush_at_exit(self)

    @property
    def path(self) -> Path:
        """The root directory of the store."""
        return Path(self.backend.root)

    def _tick(self) -> None:
        stats = self._stats_file
        if stats is not None and time.monotonic() >= stats.due:
            stats.flush()

    # -- maintenance -------------------------------------------------------------
    def prune(
        self,
        max_bytes: int | None = None,
        max_age: float | None = None,
        *,
        progress: Callable[[int], None] | None = None,
        dry_run: bool = False,
    ) -> PruneResult:
        """Enforce ``max_bytes``/``max_age`` (default: the store's) over the whole store now.

        Also sweeps temp files of dead writers, orphan directories, unused lock
        files and stats files of exited processes (merged into
        ``stats/_archived``). ``progress(n)`` is called after each top-level
        directory with the number of entries examined there. ``dry_run=True``
        removes nothing and reports what would go (its ``swept`` counts temp
        files and orphan directories only).

        >>> import tempfile, stepcache as sc
        >>> store = sc.DirectoryStore(tempfile.mkdtemp())
        >>> store["ab" * 16] = b"x" * 1000
        >>> store.prune(max_bytes=10, dry_run=True).removed, len(store)
        (1, 1)
        >>> store.prune(max_bytes=10).removed, len(store)
        (1, 0)
        """
        if not dry_run:
            self._check_writable()
        backend = self.backend
        trust.check_tree(backend.root)
        v1, tmp = f"{backend.root}/v1", f"{backend.root}/tmp"
        max_bytes = self.max_bytes if max_bytes is None else max_bytes
        max_age = self.max_age if max_age is None else max_age
        items: list[Item] = []
        for top in hex_names(v1):
            found = scan(v1, [top])
            items.extend(found)
            if progress is not None:
                progress(len(found))
        if dry_run:
            evict, orphans, left = plan_eviction(
                items, max_bytes, max_age, low_water=1.0, orphan_after=STALE_TEMP
            )
            temps = _fsutil.sweep_temp(tmp, max_age=STALE_TEMP, dry_run=True)
            entries = sum(it.has_entry for it in items) - len(evict)
            freed = sum(it.size for it in evict)
            return PruneResult(len(evict), freed, len(orphans) + temps, entries, left)
        evicted, freed, _, swept = backend.enforce(items, max_bytes, max_age, low_water=1.0)
        swept += _fsutil.sweep_temp(tmp, max_age=STALE_TEMP) + backend.locks.sweep()
        swept += archive_stats(f"{backend.root}/stats", tmp, backend.locks)
        entries, nbytes = self._usage()
        return PruneResult(evicted, freed, swept, entries, nbytes)

    # -- statistics and lifecycle ------------------------------------------------
    def stats(self) -> Stats:
        """Counters summed over every instance that used the store, plus its size now."""
        own = None if self._stats_file is None else self._stats_file.name
        mine = self.counters.snapshot()
        # An instance that only opened the store (a CLI asking for these very
        # stats) writes no stats file, so it is left out here too.
        used = any(getattr(mine, n) for n in ("hits", "misses", "writes", "errors", "evictions"))
        parts = [*([mine] if used else []), *read_stats(f"{self.backend.root}/stats", skip=own)]
        entries, nbytes = self._usage()
        return Stats.combine(parts, entries=entries, nbytes=nbytes)

    def flush(self) -> None:
        """Write this instance's counters to its stats file now (if they changed)."""
        if self._stats_file is not None:
            self._stats_file.flush()

    def close(self) -> None:
        """Write this instance's counters and release resources."""
        if self._stats_file is not None:
            # The finalizer stays armed: a closed store still in use (say, by a
            # step that kept it across reset_registry) keeps its counts.
            self._stats_file.flush()
        super().close()
