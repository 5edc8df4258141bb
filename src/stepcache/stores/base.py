"""The :class:`Store`: a mapping of hex keys to values over any :class:`~stepcache.Backend`.

The backend moves bytes; everything else lives here once: key validation,
the entry format and its verification, signatures, counting, single-flight
``get_or_compute``, artifact trees (:mod:`~stepcache.stores.artifacts`),
back-off from a backend that cannot be reached, logging once per degraded
condition, pickling by spec.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import logging
import os
import re
import shutil
import time
from collections.abc import Callable, Iterator, Mapping, MutableMapping
from pathlib import Path
from typing import Any, Final, TypeVar

from stepcache import codec
from stepcache.errors import InvalidKeyError, ReadOnlyStoreError, StoreUnavailableError
from stepcache.stores import artifacts
from stepcache.stores._flight import Flights
from stepcache.stores._stats import Counters, Stats
from stepcache.stores.backend import Backend

__all__ = ["DEFAULT_LOCK_TIMEOUT", "MISSING", "Store", "VerifyResult", "validate_key"]

log = logging.getLogger("stepcache")
_T = TypeVar("_T")
_KEY_RE: Final = re.compile(r"[0-9a-f]{16,64}")
DEFAULT_LOCK_TIMEOUT: Final = 600.0
_STORE_OPTIONS: Final = ("read_only", "secret", "codec", "lock_timeout")


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


@dataclasses.dataclass(frozen=True)
class VerifyResult:
    """What :meth:`Store.verify` found: ``(key, reason)`` for every bad entry."""

    checked: int
    corrupt: tuple[tuple[str, str], ...]
    repaired: int

    @property
    def ok(self) -> int:
        """Entries that verified."""
        return self.checked - len(self.corrupt)


class Store(MutableMapping[str, Any]):
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

    def __init__(
        self,
        backend: Backend,
        *,
        read_only: bool = False,
        secret: bytes | str | None = None,
        codec: str = "pickle",
        lock_timeout: float = DEFAULT_LOCK_TIMEOUT,
    ) -> None:
        if codec not in ("pickle", "safe"):
            raise ValueError(f"codec must be 'pickle' or 'safe', not {codec!r}")
        if not isinstance(backend, Backend):
            raise TypeError(f"Store needs a stepcache.Backend, not {type(backend).__name__}")
        self.backend = backend
        #: canonical spec string; ``open_store(store.spec, **options)`` reopens it
        self.spec: str = backend.spec
        self.read_only = read_only or backend.read_only
        self.codec = codec
        self.lock_timeout = lock_timeout
        self._secret = _resolve_secret(secret)
        # An explicit secret travels with the store to worker processes; one
        # from $STEPCACHE_SECRET is read there again.
        self._explicit_secret = secret
        #: this instance's counters (shared with a tiered store in front of it)
        self.counters = Counters()
        self.counters.add("opens")
        self._flights = Flights()
        self._said: set[str] = set()
        self._pid = os.getpid()
        self._down_until = 0.0
        #: the last OSError a backend call raised (what a failed put_dir reports)
        self.last_error: OSError | None = None
        self.closed = False

    @property
    def signed(self) -> bool:
        """Whether this store signs entries and accepts only signed ones."""
        return self._secret is not None

    @property
    def secret(self) -> bytes | None:
        """The key entries are signed and verified with, or ``None`` (unsigned store)."""
        return self._secret

    @property
    def pid(self) -> int:
        """The process that opened this instance (a forked child opens its own)."""
        return self._pid

    def options(self) -> dict[str, Any]:
        """Options that ``open_store(self.spec, **options)`` needs to open this store again.

        Only those not at their default, so that ``open_store(spec)`` and the
        reopening of a pickled store name the same registry entry.
        """
        out: dict[str, Any] = {}
        if self.read_only and not self.backend.read_only:
            out["read_only"] = True
        if self.codec != "pickle":
            out["codec"] = self.codec
        if self.lock_timeout != DEFAULT_LOCK_TIMEOUT:
            out["lock_timeout"] = self.lock_timeout
        if self._explicit_secret is not None:
            out["secret"] = self._explicit_secret
        out.update(self.backend.options())
        return out

    # -- guarded backend calls ---------------------------------------------
    def say_once(self, topic: str, message: str, *args: Any) -> None:
        """Log a degraded condition once per store instance and topic."""
        if topic not in self._said:
            self._said.add(topic)
            log.warning(message, *args)

    def _call(
        self, what: str, fn: Callable[[], _T], default: _T, *, unavailable: bool = False
    ) -> _T:
        """``fn()`` on the backend; on an OSError count it, log once, return ``default``.

        A backend that cannot be reached (:class:`StoreUnavailableError`) is
        skipped for ``backend.backoff`` seconds, so a dead server costs one
        timeout per back-off period, not one per lookup. With
        ``unavailable=True`` (listings, usage) that error is raised after
        counting it: an unreachable store is not an empty one.
        """
        if self._down_until and time.monotonic() < self._down_until:
            if unavailable:
                raise StoreUnavailableError(f"{self.spec} is unreachable (backing off)")
            return default
        try:
            result = fn()
        except OSError as exc:
            self.last_error = exc
            self.counters.add("errors")
            if isinstance(exc, StoreUnavailableError):
                self.counters.add("remote_errors")
            if unavailable and isinstance(exc, StoreUnavailableError):
                raise
            if isinstance(exc, StoreUnavailableError) and self.backend.backoff > 0:
                self._down_until = time.monotonic() + self.backend.backoff
                if "down" not in self._said:
                    self._said.add("down")
                    log.warning(
                        "stepcache: %s is unreachable (%s: %s); working without it, "
                        "retrying every %g s",
                        self.spec,
                        what,
                        exc,
                        self.backend.backoff,
                    )
                return default
            self.say_once(what, "stepcache: cannot %s %s: %s", what, self.spec, exc)
            return default
        if self._down_until:
            self._down_until = 0.0
            self._said.discard("down")
            log.info("stepcache: %s is reachable again", self.spec)
        return result

    @property
    def reachable(self) -> bool:
        """``False`` while the store is backed off after its backend could not be reached."""
        return not self._down_until or time.monotonic() >= self._down_until

    def discard(self, key: str, reason: str) -> None:
        """Count an unusable entry, log once, and remove it unless the store is read-only."""
        self.counters.add("errors")
        self.say_once(
            "corrupt",
            "stepcache: %s unusable entry %s in %s: %s",
            "ignoring" if self.read_only else "dropping",
            key,
            self.spec,
            reason,
        )
        if not self.read_only:
            self._call("remove from", lambda: self.backend.remove(key), False)

    # -- blobs: what composite stores move between stores ---------------------
    def read_blob(self, key: str) -> bytes | None:
        """The verified entry blob under ``key``, or ``None``; uncounted as hit or miss.

        An entry that fails verification is discarded (counted in
        ``stats().errors``) and reads as ``None``. Composite stores use this
        to move entries between stores without decoding them.
        """
        found = self._read(validate_key(key))
        return None if found is None else found[0]

    def write_blob(self, key: str, blob: bytes, *, step: str | None = None) -> bool:
        """Publish an entry blob made by :meth:`read_blob` of a store with the same secret.

        Returns whether it reached the backend; a failure is counted, not raised.
        """
        validate_key(key)
        self._check_writable()
        if not self._call("write to", lambda: self.backend.save(key, blob) or True, False):
            return False
        self.counters.add("writes", step=step)
        return True

    def _read(self, key: str) -> tuple[bytes, Any] | None:
        """(blob, decoded value) of the verified entry under ``key``, or ``None``."""
        blob = self._call("read from", lambda: self.backend.load(key), None)
        if blob is None:
            return None
        try:
            value = codec.unpack_entry(
                blob, key, secret=self._secret, allow_pickle=self.codec == "pickle"
            )
        except codec.CorruptEntry as exc:
            self.discard(key, str(exc))
            return None
        self._tick()
        return blob, value

    def _tick(self) -> None:
        """Called after each read; stores with periodic duties (stats files) override it."""

    def _lookup(self, key: str) -> Any:
        """The verified value under ``key``, or MISSING (tree entries too); uncounted."""
        found = self._read(key)
        if found is None or isinstance(found[1], codec.TreePayload):
            return MISSING
        return found[1]

    def _remove(self, key: str) -> bool:
        return self._call("remove from", lambda: self.backend.remove(key), False)

    def _check_writable(self) -> None:
        if self.read_only:
            raise ReadOnlyStoreError(f"{self.spec} is open read-only; reopen it writable")

    def _pack(self, key: str, value: Any, info: Mapping[str, Any] | None) -> bytes:
        return codec.pack_entry(key, value, codec=self.codec, info=info, secret=self._secret)

    def _save(self, key: str, blob: bytes, info: Mapping[str, Any] | None) -> bool:
        return self.write_blob(key, blob, step=None if info is None else str(info.get("step", "")))

    # -- public mapping API --------------------------------------------------
    def get(self, key: str, default: Any = None, *, info: Mapping[str, Any] | None = None) -> Any:
        """The value under ``key``, or ``default``; counts a hit or a miss.

        ``info`` (``step``, ``label``) attributes the lookup to a step, as
        :meth:`get_or_compute` does, for callers that compute and store themselves.
        """
        value = self._lookup(validate_key(key))
        self._count_lookup(key, value is not MISSING, info)
        return default if value is MISSING else value

    def peek(self, key: str, default: Any = None) -> Any:
        """The verified value under ``key``, or ``default``, without counting a hit or a miss."""
        value = self._lookup(validate_key(key))
        return default if value is MISSING else value

    def _count_lookup(self, key: str, hit: bool, info: Mapping[str, Any] | None) -> None:
        if info is None:
            self.counters.add("hits" if hit else "misses")
        elif hit:
            self.counters.add("hits", step=str(info.get("step", "")))
        else:
            self.counters.miss(str(info.get("step", "")), str(info.get("label", "")), key)

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
        return self._save(key, self._pack(key, value, info), info)

    def __setitem__(self, key: str, value: Any) -> None:
        self.set(key, value)

    def __delitem__(self, key: str) -> None:
        validate_key(key)
        self._check_writable()
        if not self.backend.remove(key):
            raise KeyError(key)

    def __contains__(self, key: object) -> bool:
        if type(key) is not str or _KEY_RE.fullmatch(key) is None:
            return False
        return self.header(key) is not None

    def __iter__(self) -> Iterator[str]:
        """The keys present; :class:`StoreUnavailableError` when the store cannot be reached."""
        none: list[str] = []
        return iter(self._call("list", lambda: list(self.backend.keys()), none, unavailable=True))

    def __len__(self) -> int:
        return sum(1 for _ in self)

    def clear(self) -> None:
        """Remove every entry."""
        self._check_writable()
        for key in list(self):
            self.backend.remove(key)

    def header(self, key: str) -> codec.EntryHeader | None:
        """The header of the entry under ``key`` without decoding its value, or ``None``."""
        blob = self._call("read from", lambda: self.backend.load_header(validate_key(key)), None)
        if blob is None:
            return None
        try:
            return codec.read_header(blob, key=key)
        except codec.CorruptEntry as exc:
            self.discard(key, str(exc))
            return None

    def headers(self) -> Iterator[codec.EntryHeader]:
        """Headers of all entries (for listing); decodes no value."""
        for key in self:
            header = self.header(key)
            if header is not None:
                yield header

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
        as in :meth:`get_or_compute`; when the tree cannot be stored (a
        read-only store, a full disk) the built directory itself is returned.

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
            stored = self._store_dir(key, built, info, move=True)
            return built if stored is None else stored

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
        self.counters.add("hits", step=step)
        return value

    @contextlib.contextmanager
    def _lock(self, key: str, deadline: float) -> Iterator[bool | None]:
        """The backend's lock on ``key``; ``None`` when the backend cannot lock at all."""
        with contextlib.ExitStack() as stack:
            try:
                held: bool | None = stack.enter_context(self.backend.lock(key, deadline))
            except OSError as exc:
                held = None
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
            yield held

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
        stored (disk full, server down) raises :class:`OSError` naming the
        cause, after counting it in ``stats().errors``; ``src_dir`` is then
        left where it was, never returned as if it were stored.
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
            cause = self.last_error
            raise OSError(
                getattr(cause, "errno", None) or errno.EIO,
                f"cannot store {src_dir} in {self.spec}: {cause or 'the write failed'}",
            )
        return stored

    def _store_dir(
        self, key: str, src: Path, info: Mapping[str, Any] | None, *, move: bool
    ) -> Path | None:
        """Store ``src`` as the tree of ``key``; the stored copy, or None (counted) on failure."""
        if not src.is_dir():
            raise NotADirectoryError(f"put_dir needs a directory, {src} is not one")
        existing = self._find_dir(key)
        if existing is not None:  # a good tree is there already (it may be in use): keep it
            if move:
                shutil.rmtree(src, ignore_errors=True)
            return existing
        algo = "sha256" if self.signed else "xxh3_128"
        tree_info = {**(info or {}), "kind": "tree"}
        if self.backend.keeps_files:
            if self.backend.tree_path(key) is not None:
                # An orphan tree (no entry, or a damaged one) is nobody's: make room.
                with contextlib.suppress(OSError):  # then publishing fails, and says why
                    self.backend.remove(key)
            path = self._call("write to", lambda: self.backend.put_tree(key, src, move=move), None)
            if path is None:
                return None
            manifest = artifacts.build_manifest(path, algo=algo)
            payload = codec.TreePayload(artifacts.encode(manifest, None))
            ok = self._save(key, self._pack(key, payload, tree_info), tree_info)
            return path if ok else None
        manifest = artifacts.build_manifest(src, algo=algo)
        payload = codec.TreePayload(artifacts.encode(manifest, src))
        if not self._save(key, self._pack(key, payload, tree_info), tree_info):
            return None
        copy = artifacts.unpack(artifacts.decode(payload), self._scratch(key))
        if move:
            shutil.rmtree(src, ignore_errors=True)
        return copy

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
        return artifacts.scratch_dir() / f"{id(self):x}" / key

    def _find_dir(self, key: str) -> Path | None:
        """The verified tree of ``key``, uncounted; a damaged one is discarded."""
        found = self._read(key)
        if found is None or not isinstance(found[1], codec.TreePayload):
            return None  # absent, damaged (discarded), or a value / an older format's entry
        try:
            tree = artifacts.decode(found[1])
            if self.backend.keeps_files:
                path = self.backend.tree_path(key)
            else:
                path = self._scratch(key)
                if not path.is_dir():
                    path = artifacts.unpack(tree, path)
        except (OSError, ValueError) as exc:
            self.discard(key, f"its tree cannot be read: {exc}")
            return None
        problem = (
            "its files are missing" if path is None else artifacts.check_tree(path, tree.manifest)
        )
        if problem is None:
            return path
        if path is not None and not self.backend.keeps_files:
            # Only this process's unpacked copy is damaged: the stored archive verified.
            shutil.rmtree(path, ignore_errors=True)
            self.counters.add("errors")
            self.say_once("copy", "stepcache: unpacked tree %s of %s: %s", key, self.spec, problem)
            return None
        self.discard(key, problem)
        return None

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
                if repair and self._remove(key):
                    repaired += 1
            if progress is not None and checked % 64 == 0:
                progress(64)
        if progress is not None and checked % 64:
            progress(checked % 64)
        return VerifyResult(checked, tuple(bad), repaired)

    def _check(self, key: str) -> str | None:
        """What is wrong with the entry of ``key`` (and its tree), or ``None``."""
        try:
            blob = self.backend.load(key)
            if blob is None:
                return None  # removed meanwhile
            value = codec.unpack_entry(
                blob, key, secret=self._secret, allow_pickle=self.codec == "pickle"
            )
        except (OSError, codec.CorruptEntry) as exc:
            return str(exc)
        if not isinstance(value, codec.TreePayload):
            return None
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

    # -- lifecycle -----------------------------------------------------------
    def stats(self) -> Stats:
        """Counters of this process plus what the store holds now.

        A store that cannot be reached reports 0 entries and bytes here; use
        ``list(store)`` (which raises :class:`StoreUnavailableError`) to tell.
        """
        try:
            entries, nbytes = self._usage()
        except StoreUnavailableError:
            entries = nbytes = 0
        return Stats.combine([self.counters.snapshot()], entries=entries, nbytes=nbytes)

    def _usage(self) -> tuple[int, int]:
        usage = self._call("read from", self.backend.usage, None, unavailable=True)
        if usage is not None:
            return usage
        n = size = 0
        for header in self.headers():
            n += 1
            size += header.total_bytes
        return n, size

    def close(self) -> None:
        """Release resources; the instance must not be used afterwards."""
        if self.closed:
            return
        self.closed = True
        with contextlib.suppress(OSError):
            self.backend.close()
        scratch = artifacts.scratch_dir(create=False)
        if scratch is not None:
            shutil.rmtree(scratch / f"{id(self):x}", ignore_errors=True)

    def __enter__(self: _S) -> _S:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __reduce__(self) -> tuple[Callable[..., Store], tuple[Any, ...]]:
        # Stores travel to worker processes by spec and reopen there through
        # the registry, so every process shares one instance per store.
        from stepcache.stores import registry

        return registry.reducer(self)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.spec}>"

    def __hash__(self) -> int:
        return id(self)

    def __eq__(self, other: object) -> bool:
        return self is other


_S = TypeVar("_S", bound=Store)
