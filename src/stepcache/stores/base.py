"""The :class:`Store` base class: a mapping of hex keys to values, and all shared logic.

A backend implements four methods that move entry blobs (``_load``,
``_save``, ``_remove``, ``_iter_keys``) and may override a few hooks
(``_load_header``, ``_external_lock``, ``_usage``, ``put_dir``/``get_dir``).
Everything else lives here once: key validation, the entry format and its
verification, counting, single-flight ``get_or_compute``, logging once per
degraded condition, pickling by spec.
"""

from __future__ import annotations

import abc
import contextlib
import logging
import os
import re
import tarfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping, MutableMapping
from pathlib import Path
from typing import Any, Final, TypeVar

from stepcache import codec
from stepcache.errors import InvalidKeyError, ReadOnlyStoreError
from stepcache.stores import _archive
from stepcache.stores._stats import Counters, Stats

__all__ = ["DEFAULT_LOCK_TIMEOUT", "MISSING", "Store", "validate_key"]

log = logging.getLogger("stepcache")
_T = TypeVar("_T")
_KEY_RE: Final = re.compile(r"[0-9a-f]{16,64}")
DEFAULT_LOCK_TIMEOUT: Final = 600.0


class _Missing:
    def __repr__(self) -> str:
        return "MISSING"


MISSING: Final = _Missing()


def validate_key(key: object) -> str:
    """Return ``key`` if it is 16-64 lowercase hex characters, else raise :class:`InvalidKeyError`.

    Only keys of the form :func:`stepcache.fingerprint` produces reach a
    backend, so no key can name a path outside the store.

    >>> validate_key("0123456789abcdef")
    '0123456789abcdef'
    """
    if type(key) is not str or _KEY_RE.fullmatch(key) is None:
        shown = repr(key) if len(repr(key)) < 80 else repr(key)[:77] + "..."
        raise InvalidKeyError(
            f"invalid store key {shown}: keys are 16-64 lowercase hex characters, "
            "as stepcache.fingerprint() produces"
        )
    return key


def _resolve_secret(secret: bytes | str | None) -> bytes | None:
    if secret is None:
        secret = os.environ.get("STEPCACHE_SECRET") or None
    if isinstance(secret, str):
        secret = secret.encode()
    if secret is not None and not secret:
        # An empty key would sign nothing yet demand signatures: every read a miss.
        raise ValueError("secret must not be empty; pass None (or unset it) for unsigned entries")
    return secret


class Store(MutableMapping[str, Any], abc.ABC):
    """A cache: ``MutableMapping[str, Any]`` with single-flight and statistics.

    Keys are hex fingerprints (see :func:`validate_key`). A corrupt, truncated,
    foreign or tampered entry is never an error: it is a miss, the entry is
    removed and ``stats().errors`` counts it.

    >>> import stepcache as sc
    >>> store = sc.MemoryStore()
    >>> store["ab" * 16] = {"answer": 42}
    >>> store["ab" * 16]
    {'answer': 42}
    >>> store.get_or_compute("cd" * 16, lambda: "computed once")
    'computed once'
    """

    #: canonical spec string; ``open_store(store.spec, **options)`` reopens it
    spec: str = ""

    def __init__(
        self,
        *,
        read_only: bool = False,
        secret: bytes | str | None = None,
        codec: str = "pickle",
        lock_timeout: float = DEFAULT_LOCK_TIMEOUT,
    ) -> None:
        from stepcache.codec import CODECS

        if codec not in CODECS or codec == "raw":
            raise ValueError(f"codec must be 'pickle' or 'safe', not {codec!r}")
        self.read_only = read_only
        self.codec = codec
        self.lock_timeout = lock_timeout
        self._secret = _resolve_secret(secret)
        # An explicit secret travels with the store to worker processes; one
        # from $STEPCACHE_SECRET is read there again.
        self._explicit_secret = secret
        self._counters = Counters()
        self._counters.add("opens")
        self._flights: dict[str, list[Any]] = {}
        self._flights_lock = threading.Lock()
        self._flights_pid = os.getpid()
        self._said: set[str] = set()
        self._pid = os.getpid()
        self.closed = False
        self._dir_cache: Path | None = None

    # -- what a backend implements ---------------------------------------
    @abc.abstractmethod
    def _load(self, key: str) -> bytes | None:
        """Return the entry blob stored under ``key``, or ``None``."""

    @abc.abstractmethod
    def _save(self, key: str, blob: bytes) -> None:
        """Publish ``blob`` under ``key`` atomically; may raise :class:`OSError`."""

    @abc.abstractmethod
    def _remove(self, key: str) -> bool:
        """Remove the entry; return whether one was there."""

    @abc.abstractmethod
    def _iter_keys(self) -> Iterator[str]:
        """Yield the keys present (in no particular order)."""

    # -- hooks a backend may override ------------------------------------
    def _load_header(self, key: str) -> bytes | None:
        """Return at least the header and info of the entry (default: all of it)."""
        return self._load(key)

    def _external_lock(self, key: str, deadline: float) -> contextlib.AbstractContextManager[bool]:
        """Hold ``key`` against other processes until ``deadline``; yield whether it is held."""
        return contextlib.nullcontext(True)

    def _usage(self) -> tuple[int, int]:
        """(entries, bytes) in the store now."""
        n = size = 0
        for header in self.headers():
            n += 1
            size += header.total_bytes
        return n, size

    def _options(self) -> dict[str, Any]:
        """Constructor options that ``open_store`` needs to reopen this store.

        Only those not at their default: ``open_store(spec)`` and the reopening
        of a pickled store must name the same registry entry.
        """
        options = {
            "read_only": self.read_only,
            "codec": self.codec,
            "lock_timeout": self.lock_timeout,
        }
        defaults = {"read_only": False, "codec": "pickle", "lock_timeout": DEFAULT_LOCK_TIMEOUT}
        out = {k: v for k, v in options.items() if v != defaults[k]}
        if self._explicit_secret is not None:
            out["secret"] = self._explicit_secret
        return out

    # -- shared machinery --------------------------------------------------
    def _say_once(self, topic: str, message: str, *args: Any) -> None:
        """Log a degraded condition once per store instance and topic."""
        if topic not in self._said:
            self._said.add(topic)
            log.warning(message, *args)

    def _discard(self, key: str, reason: str) -> None:
        self._counters.add("errors")
        self._say_once(
            "corrupt",
            "stepcache: %s unusable entry %s in %s: %s",
            "ignoring" if self.read_only else "dropping",
            key,
            self.spec,
            reason,
        )
        if not self.read_only:
            with contextlib.suppress(OSError):
                self._remove(key)

    def _lookup(self, key: str) -> Any:
        """The verified value under ``key``, or MISSING; uncounted."""
        try:
            blob = self._load(key)
        except OSError as exc:
            self._counters.add("errors")
            self._say_once("read", "stepcache: cannot read from %s: %s", self.spec, exc)
            return MISSING
        if blob is None:
            return MISSING
        try:
            return codec.unpack_entry(
                blob, key, secret=self._secret, allow_pickle=self.codec == "pickle"
            )
        except codec.CorruptEntry as exc:
            self._discard(key, str(exc))
            return MISSING

    def _check_writable(self) -> None:
        if self.read_only:
            raise ReadOnlyStoreError(
                f"{self.spec} is open read-only; reopen it with read_only=False"
            )

    def _pack(self, key: str, value: Any, info: Mapping[str, Any] | None) -> bytes:
        return codec.pack_entry(key, value, codec=self.codec, info=info, secret=self._secret)

    def _save_blob(self, key: str, blob: bytes, step: str | None = None) -> bool:
        """Publish a packed entry; a failing write is counted and logged, not raised."""
        try:
            self._save(key, blob)
        except OSError as exc:
            self._counters.add("errors")
            self._say_once(
                "write", "stepcache: cannot write to %s (%s); continuing uncached", self.spec, exc
            )
            return False
        self._counters.add("writes", step=step)
        return True

    # -- public mapping API --------------------------------------------------
    def get(self, key: str, default: Any = None, *, info: Mapping[str, Any] | None = None) -> Any:
        """The value under ``key``, or ``default``; counts a hit or a miss.

        ``info`` (``step``, ``label``) attributes the lookup to a step, as
        :meth:`get_or_compute` does, for callers that compute and store themselves.
        """
        value = self._lookup(validate_key(key))
        self._count_lookup(key, value is not MISSING, info)
        return default if value is MISSING else value

    def _count_lookup(self, key: str, hit: bool, info: Mapping[str, Any] | None) -> None:
        if info is None:
            self._counters.add("hits" if hit else "misses")
        elif hit:
            self._counters.add("hits", step=str(info.get("step", "")))
        else:
            self._counters.miss(str(info.get("step", "")), str(info.get("label", "")), key)

    def flush(self) -> None:
        """Make this process's counters visible to other processes now (where a store records them).

        Counters are otherwise recorded every few seconds while in use and at
        exit; a worker process that lives on between tasks calls this after each.
        """

    def __getitem__(self, key: str) -> Any:
        value = self.get(key, MISSING)
        if value is MISSING:
            raise KeyError(key)
        return value

    def set(self, key: str, value: Any, *, info: Mapping[str, Any] | None = None) -> bool:
        """Store ``value``; return whether the write reached the store.

        ``info`` (JSON-able: ``step``, ``label``, ``manifest``...) is kept in
        the entry's header, readable without decoding the value. A write the
        backend cannot do (disk full, permission denied) is counted in
        ``stats().errors``, logged once and returns ``False``.
        """
        validate_key(key)
        self._check_writable()
        step = None if info is None else str(info.get("step", ""))
        return self._save_blob(key, self._pack(key, value, info), step)

    def __setitem__(self, key: str, value: Any) -> None:
        self.set(key, value)

    def __delitem__(self, key: str) -> None:
        validate_key(key)
        self._check_writable()
        if not self._remove(key):
            raise KeyError(key)

    def __contains__(self, key: object) -> bool:
        if type(key) is not str or _KEY_RE.fullmatch(key) is None:
            return False
        return self.header(key) is not None

    def __iter__(self) -> Iterator[str]:
        return self._iter_keys()

    def __len__(self) -> int:
        return sum(1 for _ in self._iter_keys())

    def clear(self) -> None:
        """Remove every entry."""
        self._check_writable()
        for key in list(self._iter_keys()):
            self._remove(key)

    def header(self, key: str) -> codec.EntryHeader | None:
        """The header of the entry under ``key`` without decoding its value, or ``None``."""
        blob = self._load_header(validate_key(key))
        if blob is None:
            return None
        try:
            return codec.read_header(blob, key=key)
        except codec.CorruptEntry as exc:
            self._discard(key, str(exc))
            return None

    def headers(self) -> Iterator[codec.EntryHeader]:
        """Headers of all entries (for listing); decodes no value."""
        for key in self._iter_keys():
            with contextlib.suppress(OSError):
                header = self.header(key)
                if header is not None:
                    yield header

    # -- single flight -----------------------------------------------------
    @contextlib.contextmanager
    def _single_flight(self, key: str, deadline: float) -> Iterator[bool]:
        if self._flights_pid != os.getpid():
            # A forked child inherits locks held by its parent's threads, which
            # nobody in the child will ever release: start with none.
            self._flights, self._flights_lock = {}, threading.Lock()
            self._flights_pid = os.getpid()
        with self._flights_lock:
            flight = self._flights.setdefault(key, [threading.Lock(), 0])
            flight[1] += 1
        lock: threading.Lock = flight[0]
        try:
            got = lock.acquire(
                timeout=min(threading.TIMEOUT_MAX, max(0.0, deadline - time.monotonic()))
            )
            try:
                if not got:
                    yield False
                    return
                with self._external_lock(key, deadline) as held:
                    yield held
            finally:
                if got:
                    lock.release()
        finally:
            with self._flights_lock:
                flight[1] -= 1
                if flight[1] == 0:
                    del self._flights[key]

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
        missing key at once, one computes; the others wait for its result.
        Waiting never blocks other keys; a waiter whose holder died takes
        over, and one that waited ``timeout`` seconds (default
        ``lock_timeout``) computes itself. A failing write never fails the
        call. ``info`` (``step``, ``label``, ...) is recorded with the entry
        and counts the outcome per step.
        """
        validate_key(key)

        def produce() -> _T:
            value = fn()
            self._store_result(key, value, info)
            return value

        return self._single_flight_get(key, self._lookup, produce, timeout, info)  # type: ignore[no-any-return]

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
        as in :meth:`get_or_compute`; a read-only store returns the built
        directory itself.

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
            return self.put_dir(key, built, info=info, move=True)

        return self._single_flight_get(key, find, produce, timeout, info)  # type: ignore[no-any-return]

    def _single_flight_get(
        self,
        key: str,
        find: Callable[[str], Any],
        produce: Callable[[], Any],
        timeout: float | None,
        info: Mapping[str, Any] | None,
    ) -> Any:
        """``find(key)``, else -- holding the key -- find again, else ``produce()``; counted."""
        step = "" if info is None else str(info.get("step", ""))
        value = find(key)
        if value is MISSING:
            wait = self.lock_timeout if timeout is None else timeout
            with self._single_flight(key, time.monotonic() + wait):
                # Held or not (a timeout, an unusable lock directory), look again: the
                # holder we waited for has most likely published it by now.
                value = find(key)
                if value is MISSING:
                    label = "" if info is None else str(info.get("label", ""))
                    self._counters.miss(step, label, key)
                    return produce()
        self._counters.add("hits", step=step)
        return value

    def _store_result(self, key: str, value: Any, info: Mapping[str, Any] | None) -> None:
        if self.read_only:
            return
        try:
            blob = self._pack(key, value, info)
        except Exception as exc:  # an unpicklable result must not fail the computation
            self._counters.add("errors")
            self._say_once(
                "encode", "stepcache: cannot store a %s result: %s", type(value).__name__, exc
            )
            return
        self._save_blob(key, blob, None if info is None else str(info.get("step", "")))

    # -- artifact directories --------------------------------------------
    def put_dir(
        self,
        key: str,
        src_dir: str | os.PathLike[str],
        *,
        info: Mapping[str, Any] | None = None,
        move: bool = False,
    ) -> Path:
        """Store a copy of directory ``src_dir``; return where it can be read from.

        This default archives the tree into one entry; stores with a local
        directory keep it as a directory instead. ``move=True`` hands
        ``src_dir`` over to the store, which removes it once stored.
        """
        validate_key(key)
        self._check_writable()
        src = Path(src_dir)
        payload = _archive.pack_tree(src)
        step = None if info is None else str(info.get("step", ""))
        if not self._save_blob(
            key, self._pack(key, payload, {**(info or {}), "kind": "dir"}), step
        ):
            return src
        if move:
            import shutil

            shutil.rmtree(src, ignore_errors=True)
        return self._materialize(key, payload)

    def get_dir(self, key: str, *, info: Mapping[str, Any] | None = None) -> Path | None:
        """The directory :meth:`put_dir` stored under ``key``, or ``None``; counted."""
        found = self._find_dir(validate_key(key))
        self._count_lookup(key, found is not None, info)
        return found

    def _find_dir(self, key: str) -> Path | None:
        """The stored directory for ``key``, uncounted (this default unpacks the archive)."""
        value = self._lookup(key)
        if not isinstance(value, bytes):
            return None
        try:
            return self._materialize(key, value)
        except (tarfile.TarError, ValueError) as exc:  # verified bytes, but not an archive
            self._discard(key, f"not a directory archive: {exc}")
            return None

    def _materialize(self, key: str, payload: bytes) -> Path:
        if self._dir_cache is None:
            import tempfile

            self._dir_cache = Path(tempfile.mkdtemp(prefix="stepcache-dirs-"))
        return _archive.unpack_tree(payload, self._dir_cache / key)

    # -- lifecycle -----------------------------------------------------------
    def stats(self) -> Stats:
        """Counters of this process plus what the store holds now."""
        entries, nbytes = self._usage()
        return Stats.combine([self._counters.snapshot()], entries=entries, nbytes=nbytes)

    def close(self) -> None:
        """Release resources; the instance must not be used afterwards."""
        self.closed = True
        if self._dir_cache is not None:
            import shutil

            shutil.rmtree(self._dir_cache, ignore_errors=True)
            self._dir_cache = None

    def __enter__(self: _S) -> _S:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __reduce__(self) -> tuple[Callable[..., Store], tuple[str, dict[str, Any]]]:
        # Stores travel to worker processes by spec and reopen there through
        # the registry, so every process shares one instance per store.
        return (_reopen, (self.spec, self._options()))

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.spec}>"

    def __hash__(self) -> int:
        return id(self)

    def __eq__(self, other: object) -> bool:
        return self is other


_S = TypeVar("_S", bound=Store)


def _reopen(spec: str, options: dict[str, Any]) -> Store:
    from stepcache.stores.registry import open_store

    return open_store(spec, **options)
