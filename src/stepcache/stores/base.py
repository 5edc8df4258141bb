"""The :class:`Store`: a mapping of hex keys to values over any :class:`~stepcache.Backend`.

The backend moves bytes; everything else lives once in the store: the
mapping over verified entries (:mod:`~stepcache.stores._core`), and here
single-flight ``get_or_compute``, artifact trees (kept by
:mod:`~stepcache.stores._trees` in the format of
:mod:`~stepcache.stores.artifacts`) and ``verify``.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

from stepcache import codec
from stepcache.errors import StoreUnavailableError, StoreWriteError
from stepcache.stores._core import (
    DEFAULT_LOCK_TIMEOUT,
    MISSING,
    STORE_OPTIONS,
    StoreCore,
    validate_key,
)
from stepcache.stores._results import VerifyResult

__all__ = [
    "DEFAULT_LOCK_TIMEOUT",
    "MISSING",
    "STORE_OPTIONS",
    "Store",
    "VerifyResult",
    "validate_key",
]

_T = TypeVar("_T")


class Store(StoreCore):
    """A cache over a :class:`~stepcache.Backend`: a mapping with single flight and statistics.

    Keys are hex fingerprints (see :func:`validate_key`). A corrupt, truncated,
    foreign or tampered entry is never an error: it is a miss, the entry is
    removed and ``stats().errors`` counts it. ``DirectoryStore``,
    ``RedisStore`` and ``MemoryStore`` are stores over their backends;
    ``Store(backend)`` wraps any other.

    >>> import stepcache as sc
    >>> store = sc.MemoryStore()
    >>> store["ab" * 16] = {"answer": 42}
    >>> store["ab" * 16]
    {'answer': 42}
    >>> store.get_or_compute("cd" * 16, lambda: "computed once")
    'computed once'
    """

    # -- single flight -----------------------------------------------------
    def get_or_compute(
        self,
        key: str,
        fn: Callable[[], _T],
        *,
        timeout: float | None = None,
        info: Mapping[str, Any] | None = None,
    ) -> _T:
        """Return the value under ``key``, computing and storing ``fn()`` on a miss.

        Single-flight: of all threads and processes asking for the same
        missing key at once, one computes; the others wait for its result and
        return it as soon as it is published. Waiting never blocks other
        keys; a waiter whose holder died takes over, and one that waited
        ``timeout`` seconds (default ``lock_timeout``) computes itself. A
        failing write never fails the call. ``info`` (``step``, ``label``,
        ...) is recorded with the entry and counts the outcome per step.
        """
        value = self._read(validate_key(key))  # as _lookup: a hit takes no closure, no flight
        if value is not MISSING and type(value) is not codec.TreePayload:
            self.counters.step_hit("" if info is None else str(info.get("step", "")))
            return value  # type: ignore[no-any-return]

        def produce() -> _T:
            value = fn()
            self._store_result(key, value, info)
            return value

        return self._single_flight_get(key, self._lookup, produce, timeout, info, missed=True)  # type: ignore[no-any-return]

    def get_or_compute_dir(
        self,
        key: str,
        build: Callable[[], str | os.PathLike[str]],
        *,
        timeout: float | None = None,
        info: Mapping[str, Any] | None = None,
    ) -> Path:
        """The directory stored under ``key``, or ``build()``'s directory, stored (single-flight).

        ``build`` returns a new directory (a build tree) that the store takes
        over: it is moved into the store where possible (see :meth:`put_dir`)
        and the stored copy is returned. Waiting, take-over and timeouts work
        as in :meth:`get_or_compute`; when the tree cannot be stored (a
        read-only store, a full disk: :class:`~stepcache.StoreWriteError`,
        counted in ``errors``) the built directory itself is returned, uncached.

        >>> import pathlib, tempfile, stepcache as sc
        >>> def build():
        ...     out = pathlib.Path(tempfile.mkdtemp())
        ...     _ = (out / "lib.so").write_bytes(b"ELF")
        ...     return out
        >>> store = sc.DirectoryStore(tempfile.mkdtemp())
        >>> (store.get_or_compute_dir("ab" * 16, build) / "lib.so").read_bytes()
        b'ELF'
        """
        validate_key(key)

        def find(key: str) -> Any:
            found = self._find_dir(key)
            return MISSING if found is None else found

        def produce() -> Path:
            built = Path(build())
            if self.read_only:
                return built
            try:
                stored = self._store_dir(key, built, info, move=True, looked=True)
            except StoreWriteError as exc:  # counted and logged: the result is still the result
                if exc.filename is None or not os.path.isdir(exc.filename):
                    raise  # the tree itself is gone (removed by someone else)
                return Path(exc.filename)
            return built if stored is None else stored

        return self._single_flight_get(key, find, produce, timeout, info)  # type: ignore[no-any-return]

    def _single_flight_get(
        self,
        key: str,
        find: Callable[[str], Any],
        produce: Callable[[], Any],
        timeout: float | None,
        info: Mapping[str, Any] | None,
        missed: bool = False,
    ) -> Any:
        """``find(key)`` (unless the caller ``missed`` already), else -- holding the key --
        find again, else ``produce()``; counted."""
        step = "" if info is None else str(info.get("step", ""))
        value = MISSING if missed else find(key)
        if value is MISSING:
            wait = self.lock_timeout if timeout is None else timeout
            # A read-only store publishes nothing, so no other process gains from waiting.
            lock = None if self.read_only or not self.reachable else self._lock
            deadline = time.monotonic() + wait

            def counted_produce() -> Any:
                label = "" if info is None else str(info.get("label", ""))
                self.counters.miss(step, label, key)
                return produce()

            hit, value = self._flights.run(
                lock, key, lambda: find(key), counted_produce, deadline, MISSING
            )
            if not hit:
                return value
        self.counters.step_hit(step)
        return value

    def _lock(self, key: str, deadline: float) -> _BackendLock:
        """The backend's lock on ``key``; gives ``None`` when the backend cannot lock at all."""
        return _BackendLock(self, key, deadline)

    def _lock_failed(self, exc: OSError) -> None:
        if isinstance(exc, StoreUnavailableError):
            self.counters.add("remote_errors")
            if self.backend.backoff > 0:
                self._down_until = time.monotonic() + self.backend.backoff
        self.say_once(
            "lock",
            "stepcache: cannot lock in %s (%s); computing without waiting for others",
            self.spec,
            exc,
        )

    def _store_result(self, key: str, value: Any, info: Mapping[str, Any] | None) -> None:
        if self.read_only:
            return
        try:
            blob = self._pack(key, value, info)
        except Exception as exc:  # an unpicklable result must not fail the computation
            self.counters.add("errors")
            self.say_once(
                "encode", "stepcache: cannot store a %s result: %s", type(value).__name__, exc
            )
            return
        self._save(key, blob, info)

    # -- artifact trees ------------------------------------------------------
    def put_dir(
        self,
        key: str,
        src_dir: str | os.PathLike[str],
        *,
        info: Mapping[str, Any] | None = None,
        move: bool = False,
    ) -> Path:
        """Store directory ``src_dir`` as an artifact tree; return where the stored copy is.

        The tree's manifest (every file's path, mode, size and digest) is
        stored and signed like any entry; :meth:`get_dir` serves a tree only
        while its files match it. Symlinks and special files are refused
        (:class:`ValueError`). ``move=True`` hands ``src_dir`` over to the
        store (renamed into place where possible). A tree that cannot be
        stored (disk full, server down) raises
        :class:`~stepcache.StoreWriteError` (an :class:`OSError`) naming the
        cause, after counting it in ``stats().errors``; ``src_dir`` is then
        left where it was (or moved back), never returned as if it were
        stored, and the error's ``filename`` says where the tree is.
        (:meth:`get_or_compute_dir` instead returns the built directory: the
        computation's result is never lost to a failed write.)

        >>> import tempfile, pathlib, stepcache as sc
        >>> src = pathlib.Path(tempfile.mkdtemp()); _ = (src / "lib.so").write_bytes(b"ELF")
        >>> store = sc.MemoryStore()
        >>> (store.put_dir("ab" * 16, src) / "lib.so").read_bytes()
        b'ELF'
        """
        validate_key(key)
        self._check_writable()
        self.last_error = None
        stored = self._store_dir(key, Path(src_dir), info, move=move)
        if stored is None:
            raise StoreWriteError.for_tree(src_dir, self.spec, self.last_error)
        return stored

    def _store_dir(
        self,
        key: str,
        src: Path,
        info: Mapping[str, Any] | None,
        *,
        move: bool,
        looked: bool = False,
    ) -> Path | None:
        """Store ``src`` as the tree of ``key``; the stored copy, or on failure (counted)
        ``None`` if the tree is still at ``src``, else :class:`StoreWriteError` saying where.

        ``looked``: the caller found no good tree of ``key`` just now (single
        flight looks under the key's lock), so it is not looked for again.
        """
        from stepcache.stores._trees import store_tree

        return store_tree(self, key, src, info, move=move, looked=looked)

    def get_dir(
        self, key: str, *, info: Mapping[str, Any] | None = None, count: bool = True
    ) -> Path | None:
        """The tree :meth:`put_dir` stored under ``key``, checked against its manifest.

        A tree whose files differ from the manifest (names, sizes, contents)
        is a miss: counted in ``stats().errors`` and removed where the store
        is writable. The lookup counts as a hit or a miss unless ``count=False``
        (composite stores looking into their tiers).
        """
        found = self._find_dir(validate_key(key))
        if count:
            self._count_lookup(key, found is not None, info)
        return found

    def _scratch(self, key: str) -> Path:
        from stepcache.stores._scratch import scratch_dir

        return scratch_dir() / f"{id(self):x}" / key

    def _find_dir(self, key: str) -> Path | None:
        """The verified tree of ``key``, uncounted; a damaged one is discarded."""
        from stepcache.stores._trees import find_tree

        return find_tree(self, key)

    # -- maintenance -----------------------------------------------------------
    def verify(
        self, *, repair: bool = False, progress: Callable[[int], None] | None = None
    ) -> VerifyResult:
        """Read and check every entry: checksum, signature, decoding, and every file of every tree.

        With ``repair=True`` bad entries (and their trees) are removed.
        ``progress(n)`` is called with the number of entries checked so far
        in batches. Checking does not count as use.

        >>> import stepcache as sc
        >>> store = sc.MemoryStore()
        >>> store["ab" * 16] = [1, 2]
        >>> result = store.verify()
        >>> result.checked, result.corrupt
        (1, ())
        """
        if repair:
            self._check_writable()
        checked, repaired, bad = 0, 0, []
        for key in list(self):
            reason = self._check(key)
            checked += 1
            if reason is not None:
                bad.append((key, reason))
                if repair and self._repair(key):
                    repaired += 1
            if progress is not None and checked % 64 == 0:
                progress(64)
        if progress is not None and checked % 64:
            progress(checked % 64)
        return VerifyResult(checked, tuple(bad), repaired)

    def _repair(self, key: str) -> bool:
        """Remove the bad entry of ``key`` found by :meth:`verify`; whether it went."""
        return self._remove(key)

    def _check(self, key: str) -> str | None:
        """What is wrong with the entry of ``key`` (and its tree), or ``None``."""
        try:
            blob = self.backend.load(key)
        except OSError as exc:
            return str(exc)
        return None if blob is None else self._check_blob(key, blob)  # removed meanwhile

    def _check_blob(self, key: str, blob: bytes) -> str | None:
        """What is wrong with ``blob`` as the entry of ``key`` (and its tree), or ``None``."""
        try:
            value = codec.unpack_entry(
                blob, key, secret=self._secret, allow_pickle=self.codec == "pickle"
            )
        except (OSError, codec.CorruptEntry) as exc:
            return str(exc)
        if not isinstance(value, codec.TreePayload):
            return None
        from stepcache.stores import artifacts

        try:
            tree = artifacts.decode(value)
        except ValueError as exc:
            return f"its tree cannot be read: {exc}"
        if not self.backend.keeps_files:
            return None  # the archive is covered by the entry's checksum
        path = self.backend.tree_path(key)
        if path is None:
            return "its tree is missing"
        return artifacts.check_tree(path, tree.manifest)


class _BackendLock:
    """The context manager of ``Store._lock``: a class, as every miss takes one.

    Only taking the lock may fail into "no lock" (``None``, counted and said
    once), never the block it guards.
    """

    __slots__ = ("_deadline", "_key", "_lock", "_store")

    def __init__(self, store: Store, key: str, deadline: float) -> None:
        self._store, self._key, self._deadline = store, key, deadline
        self._lock: contextlib.AbstractContextManager[bool] | None = None

    def __enter__(self) -> bool | None:
        try:
            lock = self._store.backend.lock(self._key, self._deadline)
            held = lock.__enter__()
        except OSError as exc:
            self._store._lock_failed(exc)
            return None
        self._lock = lock
        return held

    def __exit__(self, *exc: Any) -> bool | None:
        return None if self._lock is None else self._lock.__exit__(*exc)
