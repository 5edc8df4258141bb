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
its checksum and reads as a miss. Opening an existing store costs two
``stat`` calls (the root's owner and mode, the tag) and writes nothing.

Whoever can write the tree can run code in its readers (see
``docs/security.md``), so the root must be the user's own and writable by
nobody else, unless the store is opened ``shared=True``.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, Final

from stepcache import codec
from stepcache.errors import StoreUnavailableError, UnsafeStoreError
from stepcache.stores import _fsutil
from stepcache.stores._dirstate import (
    Cleaner,
    Item,
    PruneResult,
    StatsFile,
    VerifyResult,
    archive_stats,
    hex_names,
    plan_eviction,
    read_stats,
    scan,
)
from stepcache.stores._locks import KeyLocks
from stepcache.stores._stats import Stats
from stepcache.stores.base import _KEY_RE, DEFAULT_LOCK_TIMEOUT, MISSING, Store, validate_key

__all__ = ["DirectoryStore", "PruneResult", "VerifyResult"]

TAG: Final = (
    b"Signature: 8a477f597d28d172789f06886806bc55\n"
    b"# This file is a cache directory tag created by stepcache.\n"
    b"# For information about cache directory tags see https://bford.info/cachedir/\n"
)
# O_NOFOLLOW: a symlink at an entry's path is no entry; O_NONBLOCK: nor is a FIFO to hang on.
_READ: Final = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)
_HEADER_READ: Final = 16384  # covers prefix, key and the info of nearly every entry
_TOUCH_AFTER: Final = 60.0  # seconds: resolution of "recently used" for eviction
_STALE_TEMP: Final = 3600.0
_OWN_DIRS: Final = ("v1", "tmp", "leases", "stats")


def _check_root(root: str, st: os.stat_result, *, shared: bool = False) -> None:
    """Raise :class:`UnsafeStoreError` if users other than this one could write ``root``.

    Refused: a directory writable by others; unless ``shared``, one owned by
    another user (root's own are fine) or writable by its group.

    >>> _check_root("/x", os.stat_result((0o40700, 0, 0, 0, os.geteuid(), 0, 0, 0, 0, 0)))
    """
    if not stat.S_ISDIR(st.st_mode):
        raise StoreUnavailableError(f"{root} is not a directory; pass a directory for the cache")
    why = "could plant entries that run code in this process (docs/security.md)"
    if st.st_mode & stat.S_IWOTH:
        raise UnsafeStoreError(f"{root} is writable by every user, who {why}; chmod o-w {root}")
    if shared:
        return
    if st.st_uid not in (os.geteuid(), 0):
        raise UnsafeStoreError(
            f"{root} belongs to another user (uid {st.st_uid}), who {why}; use a cache "
            "directory of your own (STEPCACHE_DIR), or open it with shared=True if it is "
            "a group cache whose members you trust"
        )
    if st.st_mode & stat.S_IWGRP:
        raise UnsafeStoreError(
            f"{root} is writable by its group, whose members {why[4:]}; chmod g-w {root}, "
            "or open it with shared=True if it is a group cache whose members you trust"
        )


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
        super().__init__(read_only=read_only, secret=secret, codec=codec, lock_timeout=lock_timeout)
        for name, limit in (("max_bytes", max_bytes), ("max_age", max_age)):
            if limit is not None and not limit > 0:
                raise ValueError(f"{name} must be positive or None, not {limit!r}")
        root = os.path.abspath(os.path.expanduser(os.fspath(path)))
        self._root = root
        self.spec = f"dir://{root}"
        self.max_bytes, self.max_age, self.durable = max_bytes, max_age, durable
        self.lock_backend, self.shared = lock_backend, shared
        self._v1, self._tmp = f"{root}/v1", f"{root}/tmp"
        self._open_root()
        self._locks = KeyLocks(f"{root}/leases", backend=lock_backend, warn=self._say_once)
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
    def path(self) -> Path:
        """The root directory of the store."""
        return Path(self._root)

    def _open_root(self) -> None:
        """Check who can write the root (see :func:`_check_root`); create the store if new."""
        root = self._root
        try:
            st: os.stat_result | None = os.stat(root)
        except FileNotFoundError:
            st = None
        except OSError as exc:
            raise StoreUnavailableError(
                f"cannot open the cache directory {root}: {exc}; "
                "pass a writable path or set STEPCACHE_DIR"
            ) from exc
        if st is not None:
            _check_root(root, st, shared=self.shared)
        if self.shared and self._secret is None:
            self._say_once(
                "unsigned",
                "stepcache: %s is shared but has no secret, so entries are not signed and "
                "any member of its group can run code in every reader; set STEPCACHE_SECRET "
                "(the same for the whole group) or pass secret=",
                self.spec,
            )
        if not self.read_only and (st is None or not os.path.exists(f"{root}/CACHEDIR.TAG")):
            self._create(root)

    def _create(self, root: str) -> None:
        # Many processes may create the same new store at once: every step
        # either tolerates an existing result or replaces it atomically.
        try:
            _fsutil.make_dirs(root, durable=self.durable)
            st = os.stat(root)
            if self.shared and st.st_uid == os.geteuid() and not _fsutil.is_group_dir(st.st_mode):
                os.chmod(root, 0o2770)  # a group cache: see _fsutil.is_group_dir
                st = os.stat(root)
            # Checked again: another user may have made it first.
            _check_root(root, st, shared=self.shared)
            _fsutil.write_atomic(f"{root}/CACHEDIR.TAG", TAG, self._tmp, durable=self.durable)
        except OSError as exc:
            if isinstance(exc, UnsafeStoreError):
                raise
            raise StoreUnavailableError(
                f"cannot create the cache directory {root}: {exc}; "
                "pass a writable path or set STEPCACHE_DIR"
            ) from exc

    def _options(self) -> dict[str, Any]:
        options = super()._options()
        defaults = {
            "max_bytes": None,
            "max_age": None,
            "durable": False,
            "lock_backend": "auto",
            "shared": False,
        }
        options.update({k: getattr(self, k) for k, v in defaults.items() if getattr(self, k) != v})
        return options

    def _path(self, key: str) -> str:
        return f"{self._v1}/{key[:2]}/{key[2:4]}/{key}"

    # -- entry blobs -----------------------------------------------------------
    def _load(self, key: str) -> bytes | None:
        try:
            blob = self._read(key, touch=not self.read_only)
        except codec.CorruptEntry as exc:
            self._discard(key, str(exc))
            blob = None
        stats = self._stats_file
        if stats is not None and time.monotonic() >= stats.due:
            stats.flush()
        return blob

    def _read(self, key: str, *, touch: bool) -> bytes | None:
        """The whole entry file; ``touch`` marks it used (for eviction) if it was not lately."""
        opened = self._open_entry(key)
        if opened is None:
            return None
        fd, st = opened
        try:
            blob = os.read(fd, st.st_size)
            while len(blob) < st.st_size:  # huge files come in several reads
                chunk = os.read(fd, st.st_size - len(blob))
                if not chunk:
                    break
                blob += chunk
            # mtime is the last use; refreshing it at most once per _TOUCH_AFTER
            # keeps hits free of writes (relatime makes atime unreliable).
            if touch and time.time() - st.st_mtime > _TOUCH_AFTER:
                with contextlib.suppress(OSError):
                    os.utime(fd)
        finally:
            os.close(fd)
        return blob

    def _open_entry(self, key: str) -> tuple[int, os.stat_result] | None:
        """The entry file's fd and stat, ``None`` if absent; CorruptEntry if it is no file."""
        try:
            fd = os.open(self._path(key), _READ)
        except FileNotFoundError:
            return None
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise codec.CorruptEntry("the entry is a symlink") from None
            raise
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            os.close(fd)
            raise codec.CorruptEntry("the entry is not a regular file")
        return fd, st

    def _load_header(self, key: str) -> bytes | None:
        try:
            opened = self._open_entry(key)
        except codec.CorruptEntry as exc:
            self._discard(key, str(exc))
            return None
        if opened is None:
            return None
        fd, st = opened
        try:
            blob = os.read(fd, _HEADER_READ)
            if len(blob) == _HEADER_READ:
                # Bytes 7 and 8-11 of the prefix hold the key and info lengths (see codec).
                need = min(codec.header_size(blob), st.st_size)
                if need > len(blob):
                    blob += os.pread(fd, need - len(blob), len(blob))
            return blob
        finally:
            os.close(fd)

    def _save(self, key: str, blob: bytes) -> None:
        _fsutil.write_atomic(self._path(key), blob, self._tmp, durable=self.durable)
        self._wrote(key, len(blob))

    def _remove(self, key: str) -> bool:
        path = self._path(key)
        existed = _fsutil.unlink_beneath(path, self._root)
        _fsutil.discard_dir(path + ".d", self._tmp)
        return existed

    def _iter_keys(self) -> Iterator[str]:
        for top in hex_names(self._v1):
            for sub in hex_names(f"{self._v1}/{top}"):
                with contextlib.suppress(FileNotFoundError, NotADirectoryError):
                    for name in os.listdir(f"{self._v1}/{top}/{sub}"):
                        if name.startswith(top + sub) and _KEY_RE.fullmatch(name):
                            yield name

    def _usage(self) -> tuple[int, int]:
        items = scan(self._v1, hex_names(self._v1))
        return sum(it.has_entry for it in items), sum(it.size for it in items)

    def _external_lock(self, key: str, deadline: float) -> contextlib.AbstractContextManager[bool]:
        if self.read_only:  # nothing will be published, so nobody gains from waiting
            return contextlib.nullcontext(False)
        if os.path.islink(self._locks.path):  # lock files would be made wherever it points
            where = self._locks.path
            self._say_once("lock", "stepcache: %s is a symlink; computing unlocked", where)
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
            if not _fsutil.unlink_beneath(self._path(it.key), self._root):
                return 0  # another process evicted or replaced it first
            if it.has_dir:
                _fsutil.discard_dir(self._path(it.key) + ".d", self._tmp)
        except OSError as exc:  # a planted symlink, a group member's file: leave it, say so
            self._say_once("evict", "stepcache: cannot evict from %s: %s", self.spec, exc)
            return 0
        self._counters.add("evictions")
        return 1

    def _check_tree(self) -> None:
        """Refuse to sweep a tree whose own directories were replaced by symlinks or files."""
        for name in _OWN_DIRS:
            path = f"{self._root}/{name}"
            with contextlib.suppress(FileNotFoundError):
                mode = os.lstat(path).st_mode
                if not stat.S_ISDIR(mode):
                    kind = "a symlink" if stat.S_ISLNK(mode) else "not a directory"
                    raise UnsafeStoreError(
                        f"{path} is {kind}; stepcache follows no symlink inside a cache "
                        "directory: remove it (see docs/security.md)"
                    )

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
        self._check_tree()
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
                reason = self._check(it)
                if reason is not None:
                    bad.append((it.key, reason))
                    if repair:
                        repaired += self._remove(it.key) or not it.has_entry
            checked += len(items)
            if progress is not None:
                progress(len(items))
        return VerifyResult(checked, tuple(bad), repaired)

    def _check(self, it: Item) -> str | None:
        if not it.has_entry:
            return "artifact directory without an entry"
        try:
            blob = self._read(it.key, touch=False)  # checking is no use
            if blob is None:
                return None  # removed meanwhile
            value = codec.unpack_entry(
                blob, it.key, secret=self._secret, allow_pickle=self.codec == "pickle"
            )
        except (OSError, codec.CorruptEntry) as exc:
            return str(exc)
        if isinstance(value, dict) and value.get("kind") == "dir" and not it.has_dir:
            return "its artifact directory is missing"
        return None

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

    def close(self) -> None:
        """Write this instance's counters and release resources."""
        if self._stats_file is not None:
            # The finalizer stays armed: a closed store still in use (say, by a
            # step that kept it across reset_registry) keeps its counts.
            self._stats_file.flush()
        super().close()
