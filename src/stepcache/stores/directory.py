"""DirectoryStore: one file per entry in a directory tree, safe for many processes at once.

Layout under the root (see ``docs/`` for the entry format)::

    CACHEDIR.TAG           backup tools skip the cache
    v1/ab/cd/<key>         one entry per file, fanned out by the key's first 4 hex digits
    v1/ab/cd/<key>.d/      artifact directory of put_dir (published by rename)
    tmp/                   temp files of writers; those of dead writers are swept
    leases/                per-key lock files (flock) or lease files (NFS fallback)
    stats/<host>-<pid>-<n> counters of one store instance of one process

Readers take no lock: every file is published by rename, so a reader sees a
whole entry or none, and a torn file (crash without ``durable=True``) fails
its checksum and reads as a miss (:mod:`~stepcache.stores._entryfile`).
Opening an existing store costs two ``stat`` calls and writes nothing; who
may write the tree is checked then (:mod:`~stepcache.stores._trust`).
"""

from __future__ import annotations

import contextlib
import os
import stat
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Final

from stepcache import codec
from stepcache.stores import _beneath, _fsutil, _trust
from stepcache.stores._dirstate import (
    Cleaner,
    Item,
    PruneResult,
    StatsFile,
    archive_stats,
    hex_names,
    iter_keys,
    plan_eviction,
    read_stats,
    scan,
)
from stepcache.stores._entryfile import read_entry, read_header
from stepcache.stores._locks import KeyLocks
from stepcache.stores._stats import Counters, Stats
from stepcache.stores.backend import Backend, EntryStat
from stepcache.stores.base import DEFAULT_LOCK_TIMEOUT, Store, VerifyResult

__all__ = ["DirectoryBackend", "DirectoryStore", "PruneResult", "VerifyResult"]

TAG: Final = (
    b"Signature: 8a477f597d28d172789f06886806bc55\n"
    b"# This file is a cache directory tag created by stepcache.\n"
    b"# For information about cache directory tags see https://bford.info/cachedir/\n"
)
_STALE_TEMP: Final = 3600.0


class DirectoryBackend(Backend):
    """Entry files in a directory tree (see the module docstring), trees kept as files.

    Built by :class:`DirectoryStore`, which adds counters and maintenance;
    its options are documented there.
    """

    keeps_files = True

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        max_bytes: int | None = None,
        max_age: float | None = None,
        read_only: bool = False,
        durable: bool = False,
        lock_backend: str = "auto",
        shared: bool = False,
        counters: Counters | None = None,
        warn: Callable[..., None] | None = None,
    ) -> None:
        for name, limit in (("max_bytes", max_bytes), ("max_age", max_age)):
            if limit is not None and not limit > 0:
                raise ValueError(f"{name} must be positive or None, not {limit!r}")
        text = os.fspath(path)
        if text.startswith("dir://"):
            text = text[len("dir://") :]
        root = os.path.abspath(os.path.expanduser(text))
        self.root = root
        self.spec = f"dir://{root}"
        self.read_only = read_only
        self.max_bytes, self.max_age, self.durable = max_bytes, max_age, durable
        self.lock_backend, self.shared = lock_backend, shared
        self.counters = counters if counters is not None else Counters()
        #: ``warn(topic, message, *args)`` reports a degraded condition (the store logs it once)
        self.warn: Callable[..., None] = warn or (lambda topic, message, *args: None)
        self._v1, self._tmp = f"{root}/v1", f"{root}/tmp"
        _trust.open_root(root, shared=shared, tag=None if read_only else TAG, durable=durable)
        self.locks = KeyLocks(
            f"{root}/leases",
            backend=lock_backend,
            warn=lambda *args: self.warn(*args),  # noqa: PLW0108 - late bound
        )
        self.cleaner = (
            Cleaner(max_bytes, max_age) if (max_bytes or max_age) and not read_only else None
        )
        self._swept = read_only

    def options(self) -> dict[str, Any]:
        defaults = {
            "max_bytes": None,
            "max_age": None,
            "durable": False,
            "lock_backend": "auto",
            "shared": False,
        }
        return {k: getattr(self, k) for k, v in defaults.items() if getattr(self, k) != v}

    def path(self, key: str) -> str:
        """The entry file of ``key`` (its tree is this path plus ``.d``)."""
        return f"{self._v1}/{key[:2]}/{key[2:4]}/{key}"

    # -- entry blobs -----------------------------------------------------------
    def load(self, key: str) -> bytes | None:
        try:
            return read_entry(self.path(key), touch=not self.read_only)
        except codec.CorruptEntry:
            return _NOT_AN_ENTRY  # a directory or symlink in an entry's place: a damaged entry
        except (NotADirectoryError, PermissionError):
            return None  # a file where a fanout directory should be, or an unreadable one

    def load_header(self, key: str) -> bytes | None:
        try:
            return read_header(self.path(key))
        except codec.CorruptEntry:
            return _NOT_AN_ENTRY
        except (NotADirectoryError, PermissionError):
            return None

    def save(self, key: str, blob: bytes) -> None:
        _fsutil.write_atomic(self.path(key), blob, self._tmp, durable=self.durable)
        self._wrote(key, len(blob))

    def remove(self, key: str) -> bool:
        path = self.path(key)
        try:
            existed = _beneath.unlink_beneath(path, self.root)
        except IsADirectoryError:
            existed = _fsutil.discard_dir(path, self._tmp)
        return _fsutil.discard_dir(path + ".d", self._tmp) or existed

    def keys(self) -> Iterator[str]:
        return iter_keys(self._v1)

    def usage(self) -> tuple[int, int]:
        items = scan(self._v1, hex_names(self._v1))
        return sum(it.has_entry for it in items), sum(it.size for it in items)

    def entries(self) -> Iterator[EntryStat]:
        for it in scan(self._v1, hex_names(self._v1)):
            if it.has_entry:
                yield EntryStat(it.key, it.size, it.mtime)

    def lock(self, key: str, deadline: float) -> contextlib.AbstractContextManager[bool]:
        return self.locks.hold(key, deadline)

    # -- artifact trees ----------------------------------------------------------
    def put_tree(self, key: str, src: Path, *, move: bool) -> Path:
        """Copy (or with ``move``, rename) ``src`` into ``tmp/``, then publish it by one rename."""
        dest = self.path(key) + ".d"
        tmp, _, nbytes = _fsutil.copy_tree(src, self._tmp, durable=self.durable, move=move)
        if not _fsutil.publish_dir(tmp, dest, durable=self.durable):
            return Path(dest)  # another writer published first: theirs stays
        self._wrote(key, nbytes)
        return Path(dest)

    def tree_path(self, key: str) -> Path | None:
        dest = self.path(key) + ".d"
        try:
            st = os.lstat(dest)
        except OSError:
            return None
        return Path(dest) if stat.S_ISDIR(st.st_mode) else None

    # -- eviction --------------------------------------------------------------
    def _wrote(self, key: str, nbytes: int) -> None:
        if not self._swept:  # once per instance: leftovers of writers that crashed
            self._swept = True
            _fsutil.sweep_temp(self._tmp, max_age=_STALE_TEMP)
        if self.cleaner is None:
            return
        for prefix in self.cleaner.plan(key, nbytes):
            if self.cleaner.lock.acquire(blocking=False):
                try:
                    self.cleaner.cleaned(prefix, self._clean(prefix))
                finally:
                    self.cleaner.lock.release()

    def _clean(self, prefix: str) -> int:
        """Enforce the limits on the level-1 directories starting with ``prefix``; bytes left."""
        share = None if self.cleaner is None else self.cleaner.share
        tops = [t for t in hex_names(self._v1) if t.startswith(prefix)]
        left = self.enforce(scan(self._v1, tops), share, self.max_age, low_water=0.9)[2]
        if prefix == "" or prefix.strip("0") == "":  # once per round of the rotation
            _fsutil.sweep_temp(self._tmp, max_age=_STALE_TEMP)
        return left

    def enforce(
        self, items: list[Item], max_bytes: float | None, max_age: float | None, *, low_water: float
    ) -> tuple[int, int, int, int]:
        """Apply :func:`plan_eviction`: (evicted, bytes freed, bytes left, orphans removed)."""
        evict, orphans, left = plan_eviction(
            items, max_bytes, max_age, low_water=low_water, orphan_after=_STALE_TEMP
        )
        done = [it for it in evict if self._evict(it)]
        for it in orphans:
            with contextlib.suppress(OSError):  # as in _evict
                _fsutil.discard_dir(self.path(it.key) + ".d", self._tmp)
        return len(done), sum(it.size for it in done), left, len(orphans)

    def _evict(self, it: Item) -> int:
        try:
            if not _beneath.unlink_beneath(self.path(it.key), self.root):
                return 0  # another process evicted or replaced it first
            if it.has_dir:
                _fsutil.discard_dir(self.path(it.key) + ".d", self._tmp)
        except OSError as exc:  # a planted symlink, a group member's file: leave it, say so
            self.warn("evict", "stepcache: cannot evict from %s: %s", self.spec, exc)
            return 0
        self.counters.add("evictions")
        return 1


# A blob that fails verification: what a directory or symlink in an entry's place reads as.
_NOT_AN_ENTRY: Final = b"not an entry"


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
            self.say_once("unsigned", _trust.UNSIGNED, self.spec)
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
        _trust.check_tree(backend.root)
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
                items, max_bytes, max_age, low_water=1.0, orphan_after=_STALE_TEMP
            )
            temps = _fsutil.sweep_temp(tmp, max_age=_STALE_TEMP, dry_run=True)
            entries = sum(it.has_entry for it in items) - len(evict)
            freed = sum(it.size for it in evict)
            return PruneResult(len(evict), freed, len(orphans) + temps, entries, left)
        evicted, freed, _, swept = backend.enforce(items, max_bytes, max_age, low_water=1.0)
        swept += _fsutil.sweep_temp(tmp, max_age=_STALE_TEMP) + backend.locks.sweep()
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
