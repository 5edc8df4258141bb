"""The :class:`Backend` ABC: the one public seam between a :class:`~stepcache.Store` and storage.

A backend moves bytes and nothing else. Four methods are required::

    load(key) -> bytes | None     the blob saved under key, or None
    save(key, blob) -> None       atomic: a reader sees the old blob or the new one, whole
    remove(key) -> bool           whether something was there
    keys() -> Iterator[str]       the keys present, in no order

Everything the same for every backend (the entry format, checksums, HMAC,
statistics, single flight, artifact trees, key validation, back-off after
failures) lives once in :class:`~stepcache.Store`, which wraps a backend.
Keys reaching a backend are always 16-64 lowercase hex characters
(:func:`~stepcache.validate_key`), so they are safe as file or object names.

The optional methods have working defaults and are overridden where a
backend can do better: :meth:`Backend.load_header` (read only the start of a
blob), :meth:`Backend.lock` (exclude other processes while one computes a
key), :meth:`Backend.usage`, :meth:`Backend.entries` (sizes and last use for
eviction), and the tree hooks :meth:`Backend.put_tree` (or
:meth:`Backend.put_tree_hashed`) / :meth:`Backend.tree_path` for backends
that keep artifact trees as files rather than as an archive inside the entry.

Failures: ``save`` raises :class:`OSError` when it cannot store (disk full,
permission); a backend that cannot reach its server raises
:class:`~stepcache.StoreUnavailableError` (an ``OSError``) from any method,
and the store backs off for :attr:`Backend.backoff` seconds.
"""

from __future__ import annotations

import abc
import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from stepcache._record import Record

if TYPE_CHECKING:
    from stepcache.stores.artifacts import Manifest

__all__ = ["Backend", "EntryStat"]


class EntryStat(Record):
    """Size and last use of one stored key, for eviction and listings."""

    __slots__ = ("key", "size", "used")
    key: str
    size: int  #: bytes of the blob plus any files of its tree
    used: float  #: last use (or write), seconds since the epoch, as the storage records it

    def __init__(self, key: str, size: int, used: float) -> None:
        self._set(key=key, size=size, used=used)


class Backend(abc.ABC):
    """Bytes in, bytes out, by hex key: what a store needs from its storage.

    Subclass it, implement the four abstract methods, set :attr:`spec`, and
    wrap an instance in :class:`~stepcache.Store`; register a factory with
    :func:`~stepcache.register_backend` so ``open_store("scheme://...")``
    and worker processes can open it by spec.

    >>> import stepcache as sc
    >>> class DictBackend(sc.Backend):
    ...     def __init__(self, spec="dict://"):
    ...         self.spec, self.data = spec, {}
    ...     def load(self, key): return self.data.get(key)
    ...     def save(self, key, blob): self.data[key] = blob
    ...     def remove(self, key): return self.data.pop(key, None) is not None
    ...     def keys(self): return iter(list(self.data))
    >>> store = sc.Store(DictBackend())
    >>> store["ab" * 16] = [1, 2]
    >>> store["ab" * 16], len(store)
    ([1, 2], 1)
    """

    #: canonical spec; ``open_store(spec, **options())`` opens the same storage again
    spec: str = ""
    #: nothing is written through this backend (set by backends opened read-only)
    read_only: bool = False
    #: seconds a store skips this backend after it raised StoreUnavailableError (0: never)
    backoff: float = 0.0
    #: the storage is shared by several machines (entries should be signed)
    shared: bool = False

    # -- required ----------------------------------------------------------
    @abc.abstractmethod
    def load(self, key: str) -> bytes | None:
        """The blob saved under ``key``, or ``None``."""

    @abc.abstractmethod
    def save(self, key: str, blob: bytes) -> None:
        """Store ``blob`` under ``key`` atomically (old or new blob, whole); may raise OSError."""

    @abc.abstractmethod
    def remove(self, key: str) -> bool:
        """Remove the blob (and any tree files) under ``key``; return whether there was one."""

    @abc.abstractmethod
    def keys(self) -> Iterator[str]:
        """The keys present, in no particular order."""

    # -- optional, with defaults ---------------------------------------------
    def load_header(self, key: str) -> bytes | None:
        """At least the first bytes of the blob, through the end of its header (default: all)."""
        return self.load(key)

    def lock(self, key: str, deadline: float) -> contextlib.AbstractContextManager[bool]:
        """Hold ``key`` against other processes until ``deadline`` (``time.monotonic()``).

        Yields whether the lock is held. The default excludes nobody: single
        flight then works between the threads of one process only.
        """
        return contextlib.nullcontext(True)

    def usage(self) -> tuple[int, int] | None:
        """(entries, bytes) stored now, or ``None`` to let the store add up the headers."""
        return None

    def entries(self) -> Iterator[EntryStat]:
        """Size and last use of every key (default: from :meth:`load`, use time unknown)."""
        for key in self.keys():
            blob = self.load(key)
            if blob is not None:
                yield EntryStat(key, len(blob), 0.0)

    def options(self) -> dict[str, Any]:
        """Options (besides the spec) needed to open this storage again in another process."""
        return {}

    def close(self) -> None:  # noqa: B027 - optional hook, nothing to release by default
        """Release connections and files; the backend is not used afterwards."""

    # -- artifact trees kept as files (optional) ------------------------------
    #: ``True`` where :meth:`put_tree` and :meth:`tree_path` keep trees as files
    keeps_files: ClassVar[bool] = False

    def put_tree(self, key: str, src: Path, *, move: bool) -> Path:
        """Publish a copy of directory ``src`` as the files of ``key``'s tree; return its path.

        Atomic: a reader sees the whole tree or none. With ``move=True`` the
        backend may take ``src`` over (rename) instead of copying it. Only
        called when :attr:`keeps_files` is true; may raise :class:`OSError`.
        """
        raise NotImplementedError(f"{type(self).__name__} keeps trees inside entries")

    def put_tree_hashed(
        self, key: str, src: Path, *, move: bool, algo: str
    ) -> tuple[Path, Manifest | None]:
        """:meth:`put_tree`, and the manifest of the published tree if it was read on the way.

        A backend that reads every file while storing it can take its digest
        (under ``algo``: ``"xxh3_128"`` or ``"sha256"``, see
        :func:`stepcache.stores.artifacts.new_hasher`) then and return the
        :class:`~stepcache.stores.artifacts.Manifest` of exactly what it
        published, saving the store a second walk of the tree. ``None``
        (the default) leaves building it to the store, which reads the
        published tree. The store calls this hook, whose default calls
        :meth:`put_tree`: a backend implements one of the two (a subclass
        that changes how trees are stored overrides this one).
        """
        return self.put_tree(key, src, move=move), None

    def tree_path(self, key: str) -> Path | None:
        """Where the files of ``key``'s tree are, if this backend keeps them as files."""
        return None

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.spec}>"
