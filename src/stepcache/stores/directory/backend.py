"""DirectoryBackend: entry files and artifact trees in a directory tree (see the layout below).

Layout under the root (see ``docs/`` for the entry format)::

    CACHEDIR.TAG           backup tools skip the cache
    v2/ab/<key>            one entry per file, fanned out by the key's first 2 hex digits
    v2/ab/<key>.d/         artifact directory of put_dir (published by rename)
    v1/                    entries of an earlier layout (v1/ab/cd/<key>): never read;
                           prune removes it
    tmp/                   temp files of writers; those of dead writers are swept
    tmp/seen.<host>        what this host's sweeps saw (:mod:`~stepcache.stores.directory.sweep`)
    leases/                keys.ranges (a byte per key, locked), per-key lock files or leases
    stats/<owner>-<n>      counters of one store instance of one process

Readers take no lock: every file is published by rename, so a reader sees a
whole entry or none, and a torn file (crash without ``durable=True``) fails
its checksum and reads as a miss (:mod:`~stepcache.stores.directory.entryfile`).
Opening an existing store costs two ``stat`` calls and writes nothing; who
may write the tree is checked then (:mod:`~stepcache.stores.directory.trust`).
A store that cannot be created (full disk, read-only mount, no permission)
opens :attr:`DirectoryBackend.degraded`: reads serve what is there, every
write fails (and is counted by the store).

On a filesystem other machines serve too (:attr:`DirectoryBackend.on_shared_fs`)
a reader cannot prove that a damaged file it read is the one at the path
now, so the store notes such keys (:meth:`DirectoryBackend.note_damaged`)
instead of removing them, and removes an entry only after taking it away
and checking that very file (:meth:`DirectoryBackend.claim`).
"""

from __future__ import annotations

import contextlib
import errno
import functools
import os
import stat
import time
import weakref
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from stepcache import codec
from stepcache.errors import StoreUnavailableError, UnsafeStoreError
from stepcache.stores import _fsutil
from stepcache.stores._keys import is_key
from stepcache.stores._lockmode import LeaseTiming, check_lock, shared_fs, split_query
from stepcache.stores._stats import Counters
from stepcache.stores.backend import Backend, EntryStat
from stepcache.stores.directory import beneath, trust
from stepcache.stores.directory.entryfile import read_entry, read_header
from stepcache.stores.directory.eviction import (
    ENTRIES,
    Cleaner,
    Item,
    entry_rel,
    hex_names,
    iter_keys,
    plan_eviction,
    scan,
)
from stepcache.stores.directory.statsfiles import StatsFile
from stepcache.stores.directory.sweep import STALE_AFTER, Observer, sweep_temp

if TYPE_CHECKING:
    from stepcache.stores._dirfds import DirFds
    from stepcache.stores._locks import KeyLocks
    from stepcache.stores.artifacts import Manifest

__all__ = ["DAMAGED", "TAG", "DirectoryBackend"]

TAG: Final = (
    b"Signature: 8a477f597d28d172789f06886806bc55\n"
    b"# This file is a cache directory tag created by stepcache.\n"
    b"# For information about cache directory tags see https://bford.info/cachedir/\n"
)
#: how a reader notes a damaged entry for ``prune`` (see :meth:`Observer.note`)
DAMAGED: Final = "damaged/"
#: why creating a store may fail that writes failing one by one handle as well
_DEGRADE: Final = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM})


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
        lock: str | None = None,
        lease_stale: float = 30.0,
        lease_heartbeat: float | None = None,
        shared: bool = False,
        sweep_after: float = STALE_AFTER,
        counters: Counters | None = None,
        warn: Callable[..., None] | None = None,
    ) -> None:
        for name, limit in (("max_bytes", max_bytes), ("max_age", max_age)):
            if limit is not None and not limit > 0:
                raise ValueError(f"{name} must be positive or None, not {limit!r}")
        text, query = split_query(os.fspath(path).removeprefix("dir://"))
        if "lock" in query and lock is not None and lock != query["lock"]:
            raise ValueError(f"dir://{text} says lock={query['lock']}, the options lock={lock}")
        root = os.path.abspath(os.path.expanduser(text))
        self.root = root
        #: the per-key lock chosen (``None``: ``$STEPCACHE_LOCK``, else by filesystem type)
        self.lock_choice = lock if lock is not None else query.get("lock")
        # The spec carries a chosen lock, so processes re-opening it by spec agree.
        self.spec = f"dir://{root}" + (f"?lock={self.lock_choice}" if self.lock_choice else "")
        self.read_only = read_only
        self.max_bytes, self.max_age, self.durable = max_bytes, max_age, durable
        self.shared, self.sweep_after = shared, sweep_after
        self.lease_stale, self.lease_heartbeat = lease_stale, lease_heartbeat
        # Checked before the root is made: a bad option must leave no directory behind.
        check_lock(self.lock_choice)
        self._timing = LeaseTiming(lease_heartbeat or lease_stale / 10, lease_stale)
        self.counters = counters if counters is not None else Counters()
        #: ``warn(topic, message, *args)`` reports a degraded condition (the store logs it once)
        self.warn: Callable[..., None] = warn or (lambda topic, message, *args: None)
        self._entries, self._tmp = f"{root}/{ENTRIES}", f"{root}/tmp"
        #: this host's record of what its sweeps saw (see :mod:`.sweep`)
        self.sweeper = Observer(self._tmp, stale_after=sweep_after)
        #: why the store could not be created, if it opened degraded (every write will fail)
        self.degraded: OSError | None = None
        self._open_root(tag=None if read_only else TAG)
        self.cleaner = (
            Cleaner(max_bytes, max_age) if (max_bytes or max_age) and not read_only else None
        )
        self._swept = read_only
        #: the store's counter file, written after a read when due (set by DirectoryStore)
        self.stats_file: StatsFile | None = None

    def _open_root(self, *, tag: bytes | None) -> None:
        """:func:`trust.open_root`, opening degraded where creating the store fails."""
        try:
            trust.open_root(self.root, shared=self.shared, tag=tag, durable=self.durable)
        except StoreUnavailableError as exc:
            cause = exc.__cause__
            if isinstance(exc, UnsafeStoreError) or not (
                isinstance(cause, OSError) and cause.errno in _DEGRADE
            ):
                raise  # not a directory, unsafe: a mistake to fix, not a condition to ride out
            self.degraded = cause

    @functools.cached_property
    def locks(self) -> KeyLocks:
        """The per-key locks in ``leases/``, made at the first use (a reader never locks)."""
        from stepcache.stores._locks import KeyLocks

        return KeyLocks(
            f"{self.root}/leases",
            backend=self.lock_choice,
            timing=self._timing,
            warn=lambda *args: self.warn(*args),  # noqa: PLW0108 - late bound
        )

    @functools.cached_property
    def _fds(self) -> DirFds:
        """Descriptors of ``v2/`` and ``tmp/``, kept from the first write on (never to read)."""
        from stepcache.stores._dirfds import DirFds

        fds = DirFds()
        weakref.finalize(self, fds.close)
        return fds

    @functools.cached_property
    def on_shared_fs(self) -> bool:
        """Whether other machines may serve the store's filesystem too (see ``shared_fs``)."""
        return shared_fs(self.root)

    def options(self) -> dict[str, Any]:
        defaults = {
            "max_bytes": None,
            "max_age": None,
            "durable": False,
            "lease_stale": 30.0,
            "lease_heartbeat": None,
            "shared": False,
            "sweep_after": STALE_AFTER,
        }
        return {k: getattr(self, k) for k, v in defaults.items() if getattr(self, k) != v}

    def path(self, key: str) -> str:
        """The entry file of ``key`` (its tree is this path plus ``.d``)."""
        return f"{self.root}/{entry_rel(key)}"

    # -- entry blobs -----------------------------------------------------------
    def load(self, key: str) -> bytes | None:
        try:
            blob = read_entry(self.path(key), not self.read_only)
        except codec.CorruptEntry:
            blob = _NOT_AN_ENTRY  # a directory or symlink in an entry's place: a damaged entry
        except (NotADirectoryError, PermissionError):
            blob = None  # a file where a fanout directory should be, or an unreadable one
        stats = self.stats_file
        if stats is not None and time.monotonic() >= stats.due:
            stats.flush()
        return blob

    def load_fresh(self, key: str) -> bytes | None:
        """The entry of ``key`` read again, from a fresh open to the end of the file.

        For a read that failed to verify on a shared filesystem: a file replaced
        from another machine can be read torn (a stale cached size), which is
        no damage. Raises :class:`~stepcache.codec.CorruptEntry` for no file.
        """
        return read_entry(self.path(key), touch=False, to_eof=True)

    def load_header(self, key: str) -> bytes | None:
        try:
            return read_header(self.path(key))
        except codec.CorruptEntry:
            return _NOT_AN_ENTRY
        except (NotADirectoryError, PermissionError):
            return None

    def save(self, key: str, blob: bytes) -> None:
        _fsutil.write_atomic(self.path(key), blob, self._tmp, durable=self.durable, fds=self._fds)
        self._wrote(key, len(blob))

    def remove(self, key: str) -> bool:
        path = self.path(key)
        try:
            existed = beneath.unlink_beneath(path, self.root)
        except IsADirectoryError:
            existed = _fsutil.discard_dir(path, self._tmp)
        return _fsutil.discard_dir(path + ".d", self._tmp) or existed

    def keys(self) -> Iterator[str]:
        return iter_keys(self._entries)

    def usage(self) -> tuple[int, int]:
        items = scan(self._entries, hex_names(self._entries))
        return sum(it.has_entry for it in items), sum(it.size for it in items)

    def entries(self) -> Iterator[EntryStat]:
        for it in scan(self._entries, hex_names(self._entries)):
            if it.has_entry:
                yield EntryStat(it.key, it.size, it.mtime)

    def close(self) -> None:
        """Close the kept directory descriptors and lock file."""
        if "_fds" in self.__dict__:  # else nothing was ever written
            self._fds.close()
        if "locks" in self.__dict__:  # else nothing was ever locked
            self.locks.close()

    def lock(self, key: str, deadline: float) -> contextlib.AbstractContextManager[bool]:
        return self.locks.hold(key, deadline)

    # -- artifact trees ----------------------------------------------------------
    def put_tree(self, key: str, src: Path, *, move: bool) -> Path:
        """Copy (or with ``move``, rename) ``src`` into ``tmp/``, then publish it by one rename.

        A failed publish after a move puts the tree back at ``src``; a tree
        copied across filesystems for a move is removed from ``src`` only
        once published.
        """
        return self.put_tree_hashed(key, src, move=move, algo="xxh3_128")[0]

    def put_tree_hashed(
        self, key: str, src: Path, *, move: bool, algo: str
    ) -> tuple[Path, Manifest | None]:
        """:meth:`put_tree`, with the manifest of the files as they went in.

        ``None`` for the manifest where another writer's tree was published
        first (it stays, and may differ from this one).
        """
        dest = self.path(key) + ".d"
        tmp, manifest, moved = _fsutil.copy_tree(
            src, self._tmp, durable=self.durable, move=move, algo=algo, fds=self._fds
        )
        restore = src if moved else None
        published = _fsutil.publish_dir(
            tmp, dest, durable=self.durable, restore=restore, fds=self._fds
        )
        if move and not moved:  # copied (another filesystem): the original goes now
            import shutil  # here: only cleaning up needs it

            shutil.rmtree(src, ignore_errors=True)
        if not published:  # another writer published first: theirs stays
            return Path(dest), None
        self._wrote(key, manifest.nbytes)
        return Path(dest), manifest

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
            self.sweep()
        if self.cleaner is None:
            return
        for prefix in self.cleaner.plan(key, nbytes):
            if self.cleaner.lock.acquire(blocking=False):
                try:
                    self.cleaner.cleaned(prefix, self._clean(prefix))
                finally:
                    self.cleaner.lock.release()

    def _clean(self, prefix: str) -> int:
        """Enforce the limits on the fanout directories starting with ``prefix``; bytes left."""
        share = None if self.cleaner is None else self.cleaner.share
        tops = [t for t in hex_names(self._entries) if t.startswith(prefix)]
        items = scan(self._entries, tops)
        left = self.enforce(items, share, self.max_age, low_water=0.9, scope=prefix)[2]
        if prefix == "" or prefix.strip("0") == "":  # once per round of the rotation
            self.sweep()
        return left

    def sweep(self, *, dry_run: bool = False) -> int:
        """Remove temp work of writers that are gone (see :mod:`.sweep`); how many (would) go."""
        return sweep_temp(self._tmp, self.sweeper, dry_run=dry_run)

    def abandoned(self, items: list[Item], scope: str, *, dry_run: bool = False) -> set[str]:
        """Artifact directories without an entry seen unchanged for ``sweep_after``."""
        orphans = {it.dir_path(): it.dir_sig for it in items if it.has_dir and not it.has_entry}
        return self.sweeper.abandoned(f"{ENTRIES}/{scope}", orphans, dry_run=dry_run)

    def enforce(
        self,
        items: list[Item],
        max_bytes: float | None,
        max_age: float | None,
        *,
        low_water: float,
        scope: str,
    ) -> tuple[int, int, int, int]:
        """Apply :func:`plan_eviction`: (evicted, bytes freed, bytes left, orphans removed).

        ``scope`` is the key prefix ``items`` were scanned under.
        """
        abandoned = self.abandoned(items, scope)
        evict, orphans, left = plan_eviction(
            items, max_bytes, max_age, low_water=low_water, abandoned=abandoned
        )
        done = [it for it in evict if self._evict(it)]
        for it in orphans:
            with contextlib.suppress(OSError):  # as in _evict
                _fsutil.discard_dir(self.path(it.key) + ".d", self._tmp)
        return len(done), sum(it.size for it in done), left, len(orphans)

    def _evict(self, it: Item) -> int:
        try:
            if not beneath.unlink_beneath(self.path(it.key), self.root):
                return 0  # another process evicted or replaced it first
            if it.has_dir:
                _fsutil.discard_dir(self.path(it.key) + ".d", self._tmp)
        except OSError as exc:  # a planted symlink, a group member's file: leave it, say so
            self.warn("evict", "stepcache: cannot evict from %s: %s", self.spec, exc)
            return 0
        self.counters.add("evictions")
        return 1

    # -- damage on a shared filesystem --------------------------------------------
    def note_damaged(self, key: str) -> None:
        """Note that a reader found ``key``'s entry damaged, for ``prune`` to check."""
        self.sweeper.note(DAMAGED + key)

    def noted_damage(self) -> set[str]:
        """The keys any host's readers noted as damaged."""
        noted = self.sweeper.noted(DAMAGED)
        return {n[len(DAMAGED) :] for n in noted if is_key(n[len(DAMAGED) :])}

    def forget_damage(self, keys: set[str]) -> None:
        """Drop ``keys`` from this host's notes (they were checked)."""
        self.sweeper.forget({DAMAGED + k for k in keys})

    def claim(self, key: str) -> str | None:
        """Rename ``key``'s entry into ``tmp/`` and return its new path (``None``: not there).

        The rename is atomic and seen at once by every client, so what is then
        checked is what would be removed, not a path another machine may be
        replacing meanwhile.
        """
        claimed = f"{self._tmp}/{_fsutil.temp_name('.chk')}"
        try:
            beneath.rename_beneath(self.path(key), claimed, durable=False)
        except FileNotFoundError:
            return None
        return claimed

    def read_claimed(self, claimed: str) -> bytes | None:
        """The bytes of an entry taken away by :meth:`claim`."""
        return read_entry(claimed, touch=False, to_eof=True)

    def give_back(self, claimed: str, key: str) -> None:
        """Put a claimed entry that checked good back in place (any good one is as good)."""
        with contextlib.suppress(OSError):  # else our leftover, swept once we exit
            beneath.rename_beneath(claimed, self.path(key), durable=False)

    def drop_claimed(self, claimed: str, key: str) -> None:
        """Remove a claimed entry that checked bad, and the tree of ``key``."""
        beneath.unlink_beneath(claimed, self.root)
        with contextlib.suppress(OSError):
            _fsutil.discard_dir(self.path(key) + ".d", self._tmp)


# A blob that fails verification: what a directory or symlink in an entry's place reads as.
_NOT_AN_ENTRY: Final = b"not an entry"
