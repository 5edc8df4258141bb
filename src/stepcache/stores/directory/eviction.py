"""What a DirectoryStore tree holds and when to clean which part of it (ccache-style).

The fanout layout (``v2/ab/<key>``), the scan of it, the eviction plan
and the rotation of incremental cleaning, kept apart from the store class so
the policies can be read and tuned on their own.

One level of 256 fanout directories: a new store makes each once, in its
first few hundred writes, and a scan lists 257 directories. (Earlier
versions wrote ``v1/ab/cd/<key>``, two levels: a directory was made for
nearly every one of a store's first tens of thousands of entries, and a
scan listed up to 65,793 directories. Such a tree is never read; ``prune``
removes it, see :data:`LEGACY`.)
"""

from __future__ import annotations

import contextlib
import os
import stat
import threading
import time
from collections.abc import Collection, Iterable, Iterator
from typing import ClassVar, Final

from stepcache._record import Record
from stepcache.stores import _fsutil
from stepcache.stores._keys import HEX_DIGITS, is_key
from stepcache.stores.directory.sweep import signature

__all__ = [
    "ENTRIES",
    "LEGACY",
    "Cleaner",
    "Item",
    "PruneResult",
    "entry_rel",
    "hex_names",
    "iter_keys",
    "plan_eviction",
    "scan",
]

#: the directory of the entries under a store's root
ENTRIES: Final = "v2"
#: entry directories of earlier layouts under a store's root: never read; ``prune`` removes them
LEGACY: Final = ("v1",)

CLEAN_EVERY: Final = 64  # writes between two cleanings of the next unit in the rotation
_PREFIX_LEN: Final = {1: 0, 16: 1, 256: 2}


def hex_names(path: str) -> list[str]:
    """The two-hex-digit fanout directory names in ``path``, sorted."""
    try:
        names = os.listdir(path)
    except OSError:  # absent, not a directory, unreadable: nothing listed there
        return []
    return sorted(n for n in names if len(n) == 2 and not n.strip(HEX_DIGITS))


def entry_rel(key: str) -> str:
    """The entry file of ``key`` relative to the store's root (its tree: this plus ``.d``).

    >>> entry_rel("ab" * 16)
    'v2/ab/abababababababababababababababab'
    """
    return f"{ENTRIES}/{key[:2]}/{key}"


def iter_keys(entries: str) -> Iterator[str]:
    """The entry files under ``entries`` that are keys in their place of the fanout, unsorted.

    Only regular files count, so listing agrees with ``key in store``: a
    directory or symlink in an entry's place is no entry.
    """
    for top in hex_names(entries):
        try:
            with os.scandir(f"{entries}/{top}") as found:
                listed = list(found)
        except OSError:
            continue
        for entry in listed:
            name = entry.name
            if name.startswith(top) and is_key(name):
                with contextlib.suppress(OSError):
                    if entry.is_file(follow_symlinks=False):
                        yield name


class PruneResult(Record):
    """What :meth:`DirectoryStore.prune` did and what is left."""

    __slots__ = ("removed", "freed", "swept", "entries", "bytes")  # noqa: RUF023 - field order
    removed: int  #: entries evicted (too old, or least recently used over the size budget)
    freed: int  #: bytes of the evicted entries and their artifact directories
    #: leftovers removed: temp files, orphan directories, stale locks, stats files, and
    #: entries readers on a shared filesystem found damaged (checked again first)
    swept: int
    entries: int  #: entries left
    bytes: int  #: bytes left

    def __init__(self, removed: int, freed: int, swept: int, entries: int, bytes: int) -> None:
        self._set(removed=removed, freed=freed, swept=swept, entries=entries, bytes=bytes)


class Item:
    """One key found in the tree: its entry file, its artifact directory, or both."""

    # A plain class, not a dataclass: building one costs a store's import time.
    __slots__ = ("dir_sig", "has_dir", "has_entry", "key", "mtime", "size")

    def __init__(self, key: str, mtime: float = 0.0, size: int = 0) -> None:
        self.key = key
        self.mtime = mtime  #: of the entry (refreshed on use), else of the orphan directory
        self.size = size  #: bytes of the entry plus its artifact directory
        self.has_entry = False
        self.has_dir = False
        #: of the artifact directory, for telling an orphan from a put_dir in progress
        self.dir_sig: list[int] = []

    def __repr__(self) -> str:
        return f"Item({self.key!r}, mtime={self.mtime}, size={self.size})"

    def dir_path(self) -> str:
        """The artifact directory's path relative to the store root."""
        return entry_rel(self.key) + ".d"


def scan(entries: str, tops: Iterable[str]) -> list[Item]:
    """Every key in the fanout directories ``tops`` of ``entries``, with sizes and mtimes."""
    found: dict[str, Item] = {}
    for top in tops:
        try:
            listed = list(os.scandir(f"{entries}/{top}"))
        except (FileNotFoundError, NotADirectoryError):
            continue
        for entry in listed:
            _add(found, entry, top)
    return list(found.values())


def _add(found: dict[str, Item], entry: os.DirEntry[str], prefix: str) -> None:
    name = entry.name
    key = name[:-2] if name.endswith(".d") else name
    if not (key.startswith(prefix) and is_key(key)):
        return
    try:
        st = entry.stat(follow_symlinks=False)
    except FileNotFoundError:
        return
    item = found.get(key) or found.setdefault(key, Item(key))
    if key != name and stat.S_ISDIR(st.st_mode):
        item.has_dir = True
        item.dir_sig = signature(st)
        item.size += _fsutil.tree_size(entry.path)
        if not item.has_entry:
            item.mtime = st.st_mtime
    elif key == name and stat.S_ISREG(st.st_mode):
        item.has_entry = True
        item.size += st.st_size
        item.mtime = st.st_mtime


def plan_eviction(
    items: list[Item],
    max_bytes: float | None,
    max_age: float | None,
    *,
    low_water: float,
    abandoned: Collection[str],
) -> tuple[list[Item], list[Item], int]:
    """Which items to evict, which orphan directories to remove, and the bytes left then.

    Evicted: entries unused for more than ``max_age``, then the least
    recently used until the rest fits in ``low_water * max_bytes`` (only if
    it exceeds ``max_bytes``). An artifact directory without its entry whose
    path is in ``abandoned`` (seen unchanged for long, see
    :mod:`~stepcache.stores.directory.sweep`) is an orphan; any other may be
    a ``put_dir`` about to write its entry, so it counts towards the size
    but is left alone.
    """
    now = time.time()
    evict: list[Item] = []
    orphans: list[Item] = []
    keep: list[Item] = []
    pinned = 0
    for it in items:
        if it.has_entry and max_age is not None and now - it.mtime > max_age:
            evict.append(it)
        elif it.has_entry:
            keep.append(it)
        elif it.dir_path() in abandoned:
            orphans.append(it)
        else:
            pinned += it.size
    left = pinned + sum(it.size for it in keep)
    if max_bytes is not None and left > max_bytes:
        keep.sort(key=lambda it: it.mtime)
        for it in keep:
            if left <= max_bytes * low_water:
                break
            evict.append(it)
            left -= it.size
    return evict, orphans, left


class Cleaner:
    """Which part of the tree to clean after a write, ccache-style; one per store instance.

    The tree is cleaned in units: fanout directories (256 units), groups of
    16 of them by first hex digit (16 units) or all of it (1 unit), the
    finest for which a unit's share of ``max_bytes`` holds about
    ``unit_entries`` entries of the mean size this process writes: with
    fewer, one large entry would exceed its unit's share and be evicted at
    once. A unit is cleaned when this process's running estimate of its
    size exceeds its share (estimates start with a scan of the unit), and
    every ``CLEAN_EVERY`` writes the next unit in a rotation is cleaned, so
    other processes' writes and ``max_age`` are enforced too.
    """

    #: entries of mean size a unit's share of ``max_bytes`` should hold at least
    unit_entries: ClassVar[int] = 32

    def __init__(self, max_bytes: int | None, max_age: float | None) -> None:
        self.max_bytes = max_bytes
        self.max_age = max_age
        #: held while cleaning; a thread finding it taken skips cleaning
        self.lock = threading.Lock()
        self._state = threading.Lock()
        self.units = 256 if max_bytes is None else 1
        self._known: dict[str, int] = {}
        self._writes = self._written = 0
        import random  # only stores with limits clean: not imported to read

        self._turn = random.randrange(256)  # processes start the rotation at different units

    @property
    def share(self) -> float | None:
        """Bytes one unit may hold, or ``None`` without ``max_bytes``."""
        return None if self.max_bytes is None else self.max_bytes / self.units

    def plan(self, key: str, nbytes: int) -> list[str]:
        """Count a write of ``nbytes`` under ``key``; return the unit prefixes to clean now."""
        with self._state:
            self._writes += 1
            self._written += nbytes
            todo = []
            if self.max_bytes is not None:
                self._resize(self.max_bytes / (self._written / self._writes or 1))
                unit = key[: _PREFIX_LEN[self.units]]
                known = self._known.get(unit)
                if known is None or known + nbytes > self.max_bytes / self.units:
                    todo.append(unit)
                else:
                    self._known[unit] = known + nbytes
            if self._writes % CLEAN_EVERY == 0:
                self._turn = (self._turn + 1) % self.units
                todo.append(f"{self._turn:02x}"[2 - _PREFIX_LEN[self.units] :])
            return todo

    def _resize(self, mean_entries: float) -> None:
        units = next(u for u in (256, 16, 1) if u == 1 or mean_entries >= u * self.unit_entries)
        if units != self.units:
            self.units = units
            self._known.clear()
            self._turn %= units

    def cleaned(self, prefix: str, left: int) -> None:
        """Record that the unit ``prefix`` holds ``left`` bytes after cleaning."""
        with self._state:
            if len(prefix) == _PREFIX_LEN[self.units]:
                self._known[prefix] = left
