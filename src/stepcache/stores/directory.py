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
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, Final

from stepcache import codec
from stepcache.stores import _beneath, _fsutil, _trust
from stepcache.stores._dirstate import (
    Cleaner,
    Item,
    PruneResult,
    StatsFile,
    VerifyResult,
    archive_stats,
    hex_names,
    iter_keys,
    plan_eviction,
    read_stats,
    scan,
)
from stepcache.stores._entryfile import check_entry, read_entry, read_header
from stepcache.stores._locks import KeyLocks, LeaseTiming
from stepcache.stores._stats import Stats
from stepcache.stores.base import DEFAULT_LOCK_TIMEOUT, MISSING, Store, validate_key

__all__ = ["DirectoryStore", "PruneResult", "VerifyResult"]

TAG: Final = (
    b"Signature: 8a477f597d28d172789f06886806bc55\n"
    b"# This file is a cache directory tag created by stepcache.\n"
    b"# For information about cache directory tags see https://bford.info/cachedir/\n"
)
_STALE_TEMP: Final = 3600.0


class DirectoryStore(Store):
    """A store in a local or network directory, shared by every process that opens it.

    ``max_bytes`` and ``max_age`` (seconds since last use) are enforced as
    entries are written, a part of the tree at a time, and fully by
    :meth:`prune`. ``durable=True`` fsyncs every write. ``lock`` (alias
    ``lock_backend``; default ``$STEPCACHE_LOCK``, else ``"auto"``) picks
    how ``get_or_compute`` excludes other processes: ``"auto"`` (flock on
    local filesystems, lease files on network and FUSE ones), ``"flock"``
    or ``"lease"``; ``lease_stale`` and ``lease_heartbeat`` (seconds) time
    the leases (see ``docs/shared-filesystems.md``).

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
    ) -> None:
        super().__init__(read_only=read_only, secret=secret, codec=codec, lock_timeout=lock_timeout)
        for name, limit in (("max_bytes", max_bytes), ("max_age", max_age)):
            if limit is not None and not limit > 0:
                raise ValueError(f"{name} must be positive or None, not {limit!r}")
        root = os.path.abspath(os.path.expanduser(os.fspath(path)))
        self._root = root
        self.lock = lock if lock is not None else lock_backend
        # The spec carries a chosen lock, so processes re-opening it by spec agree.
        self.spec = f"dir://{root}" + (f"?lock={self.lock}" if self.lock else "")
        self.max_bytes, self.max_age, self.durable = max_bytes, max_age, durable
        self.shared = shared
        self.lease_stale, self.lease_heartbeat = lease_stale, lease_heartbeat
        # Checked before the root is made: a bad option must leave no directory behind.
        timing = LeaseTiming(lease_heartbeat or lease_stale / 10, lease_stale)
        self._locks = KeyLocks(
            f"{root}/leases", backend=self.lock, timing=timing, warn=self._say_once
        )
        self._v1, self._tmp = f"{root}/v1", f"{root}/tmp"
        _trust.open_root(root, shared=shared, tag=None if read_only else TAG, durable=durable)
        if shared and self._secret is None:
            self._say_once("unsigned", _trust.UNSIGNED, self.spec)
        self._cleaner = (
            Cleaner(max_bytes, max_age) if (max_bytes or max_age) and not read_only else None
        )
        self._swept = read_only
        # Opening alone is no activity worth a stats file: only other counts make one.
        self._counters.dirty = False
        self._stats_file = None if read_only else StatsFile(self._counters, root, durable)
        if self._stats_file is not None:
            self._stats_file.flush_at_exit(self)

    @property
    def lock_mode(self) -> tuple[str, str]:
        """(``"flock"`` or ``"lease"``, why): the per-key lock in use, found at the first lock."""
        return self._locks.mode()

    @property
    def path(self) -> Path:
        """The root directory of the store."""
        return Path(self._root)

    def _options(self) -> dict[str, Any]:
        options = super()._options()
        defaults = {
            "max_bytes": None,
            "max_age": None,
            "durable": False,
            "lease_stale": 30.0,
            "lease_heartbeat": None,
            "shared": False,
        }
        options.update({k: getattr(self, k) for k, v in defaults.items() if getattr(self, k) != v})
        return options

    def _path(self, key: str) -> str:
        return f"{self._v1}/{key[:2]}/{key[2:4]}/{key}"

    # -- entry blobs -----------------------------------------------------------
    def _load(self, key: str) -> bytes | None:
        try:
            blob = read_entry(self._path(key), touch=not self.read_only)
        except codec.CorruptEntry as exc:
            self._discard(key, str(exc))
            blob = None
        stats = self._stats_file
        if stats is not None and time.monotonic() >= stats.due:
            stats.flush()
        return blob

    def _load_header(self, key: str) -> bytes | None:
        try:
            return read_header(self._path(key))
        except codec.CorruptEntry as exc:
            self._discard(key, str(exc))
            return None

    def _save(self, key: str, blob: bytes) -> None:
        _fsutil.write_atomic(self._path(key), blob, self._tmp, durable=self.durable)
        self._wrote(key, len(blob))

    def _remove(self, key: str) -> bool:
        path = self._path(key)
        existed = _beneath.unlink_beneath(path, self._root)
        _fsutil.discard_dir(path + ".d", self._tmp)
        return existed

    def _iter_keys(self) -> Iterator[str]:
        return iter_keys(self._v1)

    def _usage(self) -> tuple[int, int]:
        items = scan(self._v1, hex_names(self._v1))
        return sum(it.has_entry for it in items), sum(it.size for it in items)

    def _external_lock(self, key: str, deadline: float) -> contextlib.AbstractContextManager[bool]:
        if self.read_only:  # nothing will be published, so nobody gains from waiting
            return contextlib.nullcontext(False)
        return self._locks.hold(key, deadline)

    # -- artifact directories ------------------------------------------------
    def put_dir(
        self,
        key: str,
        src_dir: str | os.PathLike[str],
        *,
        info: Mapping[str, Any] | None = None,
        move: bool = False,
    ) -> Path:
        """Store a copy of directory ``src_dir`` as ``<key>.d``; return the stored copy's path.

        The copy is made in ``tmp/`` and published by one rename, so no reader
        ever sees part of it. With ``move=True`` the store takes ``src_dir``
        over: one rename when it is on the store's filesystem, else a copy
        and its removal. An existing directory for ``key`` is kept (it may
        be in use); a failed copy (disk full) is counted and logged, and
        ``src_dir`` itself is returned (and kept).

        >>> import tempfile, pathlib, stepcache as sc
        >>> src = pathlib.Path(tempfile.mkdtemp()); _ = (src / "lib.so").write_bytes(b"ELF")
        >>> store = sc.DirectoryStore(tempfile.mkdtemp())
        >>> (store.put_dir("ab" * 16, src) / "lib.so").read_bytes()
        b'ELF'
        """
        validate_key(key)
        self._check_writable()
        src = Path(src_dir)
        if not src.is_dir():
            raise NotADirectoryError(f"put_dir needs a directory, {src} is not one")
        dest = self._path(key) + ".d"
        try:
            tmp, files, nbytes = _fsutil.copy_tree(src, self._tmp, durable=self.durable, move=move)
            _fsutil.publish_dir(tmp, dest, durable=self.durable)
        except OSError as exc:
            self._counters.add("errors")
            self._say_once(
                "write", "stepcache: cannot write to %s (%s); continuing uncached", self.spec, exc
            )
            return src
        self._wrote(key, nbytes)
        marker = {"kind": "dir", "files": files, "bytes": nbytes}
        step = None if info is None else str(info.get("step", ""))
        self._save_blob(key, self._pack(key, marker, {**(info or {}), "kind": "dir"}), step)
        return Path(dest)

    def _find_dir(self, key: str) -> Path | None:
        value = self._lookup(key)
        dest = self._path(key) + ".d"
        if isinstance(value, dict) and value.get("kind") == "dir":
            if os.path.isdir(dest):
                return Path(dest)
            self._discard(key, "its artifact directory is missing")
        elif value is not MISSING:
            self._say_once(
                "not-dir", "stepcache: entry %s in %s is not a directory", key, self.spec
            )
        return None

    # -- eviction --------------------------------------------------------------
    def _wrote(self, key: str, nbytes: int) -> None:
        if not self._swept:  # once per instance: leftovers of writers that crashed
            self._swept = True
            _fsutil.sweep_temp(self._tmp, max_age=_STALE_TEMP)
        if self._cleaner is None:
            return
        for prefix in self._cleaner.plan(key, nbytes):
            if self._cleaner.lock.acquire(blocking=False):
                try:
                    self._cleaner.cleaned(prefix, self._clean(prefix))
                finally:
                    self._cleaner.lock.release()

    def _clean(self, prefix: str) -> int:
        """Enforce the limits on the level-1 directories starting with ``prefix``; bytes left."""
        share = None if self._cleaner is None else self._cleaner.share
        tops = [t for t in hex_names(self._v1) if t.startswith(prefix)]
        left = self._enforce(scan(self._v1, tops), share, self.max_age, low_water=0.9)[2]
        if prefix == "" or prefix.strip("0") == "":  # once per round of the rotation
            _fsutil.sweep_temp(self._tmp, max_age=_STALE_TEMP)
        return left

    def _enforce(
        self, items: list[Item], max_bytes: float | None, max_age: float | None, *, low_water: float
    ) -> tuple[int, int, int, int]:
        """Apply :func:`plan_eviction`: (evicted, bytes freed, bytes left, orphans removed)."""
        evict, orphans, left = plan_eviction(
            items, max_bytes, max_age, low_water=low_water, orphan_after=_STALE_TEMP
        )
        done = [it for it in evict if self._evict(it)]
        for it in orphans:
            with contextlib.suppress(OSError):  # as in _evict
                _fsutil.discard_dir(self._path(it.key) + ".d", self._tmp)
        return len(done), sum(it.size for it in done), left, len(orphans)

    def _evict(self, it: Item) -> int:
        try:
            if not _beneath.unlink_beneath(self._path(it.key), self._root):
                return 0  # another process evicted or replaced it first
            if it.has_dir:
                _fsutil.discard_dir(self._path(it.key) + ".d", self._tmp)
        except OSError as exc:  # a planted symlink, a group member's file: leave it, say so
            self._say_once("evict", "stepcache: cannot evict from %s: %s", self.spec, exc)
            return 0
        self._counters.add("evictions")
        return 1

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
        _trust.check_tree(self._root)
        max_bytes = self.max_bytes if max_bytes is None else max_bytes
        max_age = self.max_age if max_age is None else max_age
        items: list[Item] = []
        for top in hex_names(self._v1):
            found = scan(self._v1, [top])
            items.extend(found)
            if progress is not None:
                progress(len(found))
        if dry_run:
            evict, orphans, left = plan_eviction(
                items, max_bytes, max_age, low_water=1.0, orphan_after=_STALE_TEMP
            )
            temps = _fsutil.sweep_temp(self._tmp, max_age=_STALE_TEMP, dry_run=True)
            entries = sum(it.has_entry for it in items) - len(evict)
            freed = sum(it.size for it in evict)
            return PruneResult(len(evict), freed, len(orphans) + temps, entries, left)
        evicted, freed, _, swept = self._enforce(items, max_bytes, max_age, low_water=1.0)
        swept += _fsutil.sweep_temp(self._tmp, max_age=_STALE_TEMP) + self._locks.sweep()
        swept += archive_stats(f"{self._root}/stats", self._tmp, self._locks)
        entries, nbytes = self._usage()
        return PruneResult(evicted, freed, swept, entries, nbytes)

    def verify(
        self, *, repair: bool = False, progress: Callable[[int], None] | None = None
    ) -> VerifyResult:
        """Read and check every entry (checksum, signature, decoding, artifact directory).

        With ``repair=True`` bad entries are removed. ``progress(n)`` is
        called after each top-level directory with the number of entries checked.
        Checking does not count as use: eviction order is unchanged.

        >>> import tempfile, stepcache as sc
        >>> store = sc.DirectoryStore(tempfile.mkdtemp())
        >>> store["ab" * 16] = [1, 2]
        >>> result = store.verify()
        >>> result.checked, result.corrupt
        (1, ())
        """
        if repair:
            self._check_writable()
        checked, repaired, bad = 0, 0, []
        now = time.time()
        for top in hex_names(self._v1):
            # A fresh tree without its entry is a put_dir in progress, not damage.
            items = [
                it for it in scan(self._v1, [top]) if it.has_entry or now - it.mtime > _STALE_TEMP
            ]
            for it in items:
                reason = (
                    check_entry(self._path(it.key), it.key, it.has_dir, self._secret, self.codec)
                    if it.has_entry
                    else "artifact directory without an entry"
                )
                if reason is not None:
                    bad.append((it.key, reason))
                    if repair:
                        repaired += self._remove(it.key) or not it.has_entry
            checked += len(items)
            if progress is not None:
                progress(len(items))
        return VerifyResult(checked, tuple(bad), repaired)

    # -- statistics and lifecycle ------------------------------------------------
    def stats(self) -> Stats:
        """Counters summed over every instance that used the store, plus its size now."""
        own = None if self._stats_file is None else self._stats_file.name
        mine = self._counters.snapshot()
        # An instance that only opened the store (a CLI asking for these very
        # stats) writes no stats file, so it is left out here too.
        used = any(getattr(mine, n) for n in ("hits", "misses", "writes", "errors", "evictions"))
        parts = [*([mine] if used else []), *read_stats(f"{self._root}/stats", skip=own)]
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
