"""DirectoryBackend: entry files and artifact trees in a directory tree (see the layout below).

Layout under the root (see ``docs/`` for the entry format)::

    CACHEDIR.TAG           backup tools skip the cache
    v1/ab/cd/<key>         one entry per file, fanned out by the key's first 4 hex digits
    v1/ab/cd/<key>.d/      artifact directory of put_dir (published by rename)
    tmp/                   temp files of writers; those of dead writers are swept
    leases/                per-key lock files (flock) or lease files (NFS fallback)
    stats/<host>-<pid>-<n> counters of one store instance of one process

Readers take no lock: every file is published by rename, so a reader sees a
whole entry or none, and a torn file (crash without ``durable=True``) fails
its checksum and reads as a miss (:mod:`~stepcache.stores.directory.entryfile`).
Opening an existing store costs two ``stat`` calls and writes nothing; who
may write the tree is checked then (:mod:`~stepcache.stores.directory.trust`).
"""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Final

from stepcache import codec
from stepcache.stores import _fsutil
from stepcache.stores._locks import KeyLocks
from stepcache.stores._stats import Counters
from stepcache.stores.backend import Backend, EntryStat
from stepcache.stores.directory import beneath, trust
from stepcache.stores.directory.entryfile import read_entry, read_header
from stepcache.stores.directory.eviction import (
    Cleaner,
    Item,
    hex_names,
    iter_keys,
    plan_eviction,
    scan,
)

__all__ = ["STALE_TEMP", "TAG", "DirectoryBackend"]

TAG: Final = (
    b"Signature: 8a477f597d28d172789f06886806bc55\n"
    b"# This file is a cache directory tag created by stepcache.\n"
    b"# For information about cache directory tags see https://bford.info/cachedir/\n"
)
#: seconds after which temp files and entry-less trees count as leftovers
STALE_TEMP: Final = 3600.0


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
        trust.open_root(root, shared=shared, tag=None if read_only else TAG, durable=durable)
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
            existed = beneath.unlink_beneath(path, self.root)
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
            _fsutil.sweep_temp(self._tmp, max_age=STALE_TEMP)
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
            _fsutil.sweep_temp(self._tmp, max_age=STALE_TEMP)
        return left

    def enforce(
        self, items: list[Item], max_bytes: float | None, max_age: float | None, *, low_water: float
    ) -> tuple[int, int, int, int]:
        """Apply :func:`plan_eviction`: (evicted, bytes freed, bytes left, orphans removed)."""
        evict, orphans, left = plan_eviction(
            items, max_bytes, max_age, low_water=low_water, orphan_after=STALE_TEMP
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


# A blob that fails verification: what a directory or symlink in an entry's place reads as.
_NOT_AN_ENTRY: Final = b"not an entry"
