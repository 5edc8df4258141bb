"""DirectoryStore: the store over a :class:`DirectoryBackend`, with its maintenance and counters.

Readers take no lock: every file is published by rename, so a reader sees a
whole entry or none, and a torn file (crash without ``durable=True``) fails
its checksum and reads as a miss. Opening an existing store costs two
``stat`` calls and writes nothing; who may write the tree is checked then
(:mod:`~stepcache.stores.directory.trust`). On a filesystem shared with
other machines readers never remove anything
(:mod:`~stepcache.stores.directory.sharedfs`), and sweeps judge other hosts'
leftovers by the filesystem's time, never a clock
(:mod:`~stepcache.stores.directory.sweep`).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from stat import S_ISREG
from typing import Any

import xxhash

from stepcache._values import pickle_loads
from stepcache.codec import (
    CHECKSUM_AT,
    MAGIC,
    MAX_CREATED,
    PLAIN_HEADS,
    PLAIN_PREFIX,
    PREFIX_SIZE,
)
from stepcache.stores import _fsutil
from stepcache.stores._stats import Stats
from stepcache.stores.base import DEFAULT_LOCK_TIMEOUT, MISSING, VerifyResult
from stepcache.stores.directory import trust
from stepcache.stores.directory.backend import DirectoryBackend
from stepcache.stores.directory.entryfile import READ_FLAGS, TOUCH_AFTER, mark_used
from stepcache.stores.directory.eviction import (
    ENTRIES,
    LEGACY,
    Item,
    PruneResult,
    hex_names,
    plan_eviction,
    scan,
)
from stepcache.stores.directory.sharedfs import SharedFsStore
from stepcache.stores.directory.statsfiles import StatsFile, archive_stats, read_stats
from stepcache.stores.directory.sweep import STALE_AFTER

__all__ = ["DirectoryStore", "PruneResult", "VerifyResult"]

#: Keys a store remembers as lately marked used before it forgets them all.
_FRESH_KEYS = 4096


class DirectoryStore(SharedFsStore):
    """A store in a local or network directory, shared by every process that opens it.

    ``max_bytes`` and ``max_age`` (seconds since last use) are enforced as
    entries are written, a part of the tree at a time, and fully by
    :meth:`prune`. ``durable=True`` fsyncs every write. ``lock`` (alias
    ``lock_backend``; default ``$STEPCACHE_LOCK``, else ``"auto"``) picks
    how ``get_or_compute`` excludes other processes: ``"auto"`` (flock on
    local filesystems, lease files on network and FUSE ones), ``"flock"``
    or ``"lease"``; ``lease_stale`` and ``lease_heartbeat`` (seconds) time
    the leases (see ``docs/shared-filesystems.md``).

    A store that cannot be created (full disk, read-only mount, no
    permission) opens with :attr:`degraded` set: it serves what it can
    read, counts every failed write in ``stats().errors`` and warns once.

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
        lock: str | None = None,
        lock_backend: str | None = None,
        lease_stale: float = 30.0,
        lease_heartbeat: float | None = None,
        shared: bool = False,
        sweep_after: float = STALE_AFTER,
    ) -> None:
        backend = DirectoryBackend(
            path,
            max_bytes=max_bytes,
            max_age=max_age,
            read_only=read_only,
            durable=durable,
            lock=lock if lock is not None else lock_backend,
            lease_stale=lease_stale,
            lease_heartbeat=lease_heartbeat,
            shared=shared,
            sweep_after=sweep_after,
        )
        super().__init__(
            backend, read_only=read_only, secret=secret, codec=codec, lock_timeout=lock_timeout
        )
        backend.counters = self.counters
        backend.warn = self.say_once
        self.max_bytes, self.max_age, self.durable = max_bytes, max_age, durable
        self.lock, self.shared, self.sweep_after = backend.lock_choice, shared, sweep_after
        if backend.degraded is not None:
            # The topic of failed writes: one warning, not one more per write.
            self.say_once(
                "write to",
                "stepcache: cannot create the cache %s (%s); running uncached: reads serve "
                "what is there, failed writes count as errors",
                self.spec,
                backend.degraded,
            )
        if shared and self._secret is None:
            self.say_once("unsigned", trust.UNSIGNED, self.spec)
        # Opening alone is no activity worth a stats file: only other counts make one.
        self.counters.dirty = False
        root = backend.root
        self._stats_file = None if read_only else StatsFile(self.counters, root, durable)
        if self._stats_file is not None:
            self._stats_file.flush_at_exit(self)
        # The backend checks after each read whether the counters are due to be
        # written: no extra call on a hit.
        backend.stats_file = self._stats_file
        # What the hit path (_read) needs, looked up once.
        self._entries = f"{root}/{ENTRIES}"
        self._plain = self._secret is None and self.codec == "pickle"
        self._touches = not backend.read_only
        # Keys this process found (and marked) used less than TOUCH_AFTER ago, by
        # time.monotonic(), and their sizes: a hit of one needs no fstat.
        self._fresh: dict[str, tuple[float, int]] = {}

    # -- the hit path ---------------------------------------------------------------
    def _read(self, key: str, blob: bytes | None = None) -> Any:
        """As :meth:`Store._read`, with a plain entry read, verified and decoded in this frame.

        A plain entry (unsigned, uncompressed, pickled: ``codec.PLAIN_HEADS``)
        is read as ``DirectoryBackend.load`` reads it and checked as
        ``codec.unpack_entry`` checks it -- creation time, length, key,
        checksum -- with no other call. Anything else read (a tree entry, a
        damaged one) goes to the general path to be verified as every store
        does, without a second read; so do a file that cannot be read, and
        signed or ``codec="safe"`` stores.
        """
        stats = self._stats_file
        if stats is not None and time.monotonic() >= stats.due:
            stats.flush()  # as DirectoryBackend.load does after each read
        if blob is not None or not self._plain or self._down_until:
            return super()._read(key, blob)
        try:
            fd = os.open(f"{self._entries}/{key[:2]}/{key}", READ_FLAGS)  # backend.path(key)
        except FileNotFoundError:
            return MISSING
        except OSError:  # a symlink, no fanout directory, no permission: said there
            return super()._read(key)
        st = None
        try:
            seen = self._fresh.get(key)
            if seen is not None and time.monotonic() - seen[0] < TOUCH_AFTER:
                # Checked (and marked used) lately by this process: one read of the size
                # it had then and a byte more, which comes back short unless it grew.
                want = seen[1] + 1
                blob = os.read(fd, want)
                if len(blob) == want:  # it grew: the rest, as below
                    st = os.fstat(fd)
                    if S_ISREG(st.st_mode) and st.st_size > want:
                        blob += os.read(fd, st.st_size - want)
            else:
                st = os.fstat(fd)
                # What is no regular file reads empty (a FIFO, a device: st_size is 0)
                # or fails (a directory): the general path says so, at the end.
                blob = os.read(fd, st.st_size)
                if self._touches:
                    if time.time() - st.st_mtime > TOUCH_AFTER and blob[:4] == MAGIC:
                        mark_used(fd)  # as read_entry does: only what starts as an entry
                    if len(self._fresh) >= _FRESH_KEYS:
                        self._fresh.clear()
                    self._fresh[key] = (time.monotonic(), st.st_size)
        except OSError:
            blob = None
        finally:
            os.close(fd)
        if blob is None:  # an I/O error, a directory: the general path says which
            return super()._read(key)
        n = len(blob)
        if n >= PREFIX_SIZE:
            head, ilen, plen, created, checksum = PLAIN_PREFIX.unpack_from(blob)
            end = PREFIX_SIZE + len(key)
            start = end + ilen
            if (
                head == PLAIN_HEADS[len(key)]
                and n == start + plen
                and 0.0 <= created < MAX_CREATED
                and blob[PREFIX_SIZE:end] == key.encode()
            ):
                view = memoryview(blob)
                digest = xxhash.xxh3_64(blob[:CHECKSUM_AT])
                digest.update(view[PREFIX_SIZE:])
                if digest.intdigest() == checksum:
                    try:
                        return pickle_loads(view[start:])
                    except Exception:  # unpickled again below, to say why and drop it
                        pass
        if st is None:  # read in one go without an fstat (a regular file's all), not good
            return super()._read(key, blob) if blob else super()._read(key)
        if n < st.st_size or not S_ISREG(st.st_mode):
            # A huge file comes in several reads, which the general path makes; it
            # also tells what is no regular file from a damaged one.
            return super()._read(key)
        return super()._read(key, blob)

    @property
    def degraded(self) -> bool:
        """Whether the store opened although it could not be created (every write fails)."""
        return self.backend.degraded is not None

    @property
    def lock_mode(self) -> tuple[str, str]:
        """(``"flock"`` or ``"lease"``, why): the per-key lock in use, found at the first lock."""
        return self.backend.locks.mode()

    @property
    def path(self) -> Path:
        """The root directory of the store."""
        return Path(self.backend.root)

    @property
    def earlier_layout(self) -> Path | None:
        """The entries an earlier version wrote in a layout this one never reads (``v1/``), if
        the store holds them: they count towards no limit; ``prune`` and ``clear`` remove them."""
        for name in LEGACY:
            path = self.path / name
            if path.is_dir():
                return path
        return None

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
        files, stats files of exited processes (merged into
        ``stats/_archived``), entries that readers on a shared filesystem
        found damaged, if a check of the removed file confirms it, and the
        ``v1/`` tree of entries earlier versions wrote in their two-level
        layout, which this version never reads (``swept`` counts its files).
        ``progress(n)`` is called after each fanout directory with the
        number of entries examined there. ``dry_run=True`` removes nothing and
        reports what would go (its ``swept`` counts temp files, orphan
        directories and the files of the earlier layout only).

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
        fanout = f"{backend.root}/{ENTRIES}"
        max_bytes = self.max_bytes if max_bytes is None else max_bytes
        max_age = self.max_age if max_age is None else max_age
        items: list[Item] = []
        for top in hex_names(fanout):
            found = scan(fanout, [top])
            items.extend(found)
            if progress is not None:
                progress(len(found))
        if dry_run:
            return self._would_prune(items, max_bytes, max_age)
        evicted, freed, _, swept = backend.enforce(
            items, max_bytes, max_age, low_water=1.0, scope=""
        )
        swept += self._remove_legacy()
        swept += backend.sweep() + backend.locks.sweep() + self.remove_noted_damage()
        swept += archive_stats(f"{backend.root}/stats", f"{backend.root}/tmp", backend.locks)
        entries, nbytes = self._usage()
        return PruneResult(evicted, freed, swept, entries, nbytes)

    def verify(
        self, *, repair: bool = False, progress: Callable[[int], None] | None = None
    ) -> VerifyResult:
        """As :meth:`Store.verify`, plus artifact directories whose entry never came.

        A tree without its entry may be a ``put_dir`` in progress, so it is
        reported (and with ``repair=True`` removed) only once this host's
        sweeps have seen it unchanged for ``sweep_after`` seconds.

        >>> import tempfile, stepcache as sc
        >>> store = sc.DirectoryStore(tempfile.mkdtemp())
        >>> store["ab" * 16] = [1, 2]
        >>> result = store.verify()
        >>> result.checked, result.corrupt
        (1, ())
        """
        result = super().verify(repair=repair, progress=progress)
        fanout = f"{self.backend.root}/{ENTRIES}"
        items = [it for it in scan(fanout, hex_names(fanout)) if it.has_dir and not it.has_entry]
        abandoned = self.backend.abandoned(items, "", dry_run=not repair)
        orphans = sorted(it.key for it in items if it.dir_path() in abandoned)
        repaired = sum(self._remove(key) for key in orphans) if repair else 0
        if progress is not None and orphans:
            progress(len(orphans))
        return VerifyResult(
            result.checked + len(orphans),
            result.corrupt + tuple((k, "artifact directory without an entry") for k in orphans),
            result.repaired + repaired,
        )

    def clear(self) -> None:
        """Remove every entry, and what earlier versions' layouts left (see ``prune``)."""
        super().clear()
        self._remove_legacy()

    def _remove_legacy(self, *, dry_run: bool = False) -> int:
        """Remove the entry trees of earlier layouts (never read); how many files they held."""
        files = 0
        for name in LEGACY:
            path = f"{self.backend.root}/{name}"
            files += sum(len(names) for _, _, names in os.walk(path))
            if not dry_run:
                _fsutil.discard_dir(path, f"{self.backend.root}/tmp")
        return files

    def _would_prune(
        self, items: list[Item], max_bytes: int | None, max_age: float | None
    ) -> PruneResult:
        """What :meth:`prune` would do to ``items``, with nothing removed or recorded."""
        abandoned = self.backend.abandoned(items, "", dry_run=True)
        evict, orphans, left = plan_eviction(
            items, max_bytes, max_age, low_water=1.0, abandoned=abandoned
        )
        temps = self.backend.sweep(dry_run=True) + self._remove_legacy(dry_run=True)
        entries = sum(it.has_entry for it in items) - len(evict)
        freed = sum(it.size for it in evict)
        return PruneResult(len(evict), freed, len(orphans) + temps, entries, left)

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
