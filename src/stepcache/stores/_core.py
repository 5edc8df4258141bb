"""The mapping half of :class:`~stepcache.Store`: entries over a backend, verified and counted.

Key validation, entry verification and signatures, counting, back-off from
an unreachable backend, statistics, pickling by spec; :mod:`.base` adds
single flight, artifact trees and ``verify``.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Callable, Iterator, Mapping, MutableMapping
from typing import Any, Final, TypeVar

from stepcache import codec
from stepcache._log import log
from stepcache.errors import ReadOnlyStoreError, StoreUnavailableError
from stepcache.stores._flight import Flights
from stepcache.stores._keys import HEX_DIGITS, MISSING, is_key, resolve_secret, validate_key
from stepcache.stores._stats import Counters, Stats
from stepcache.stores.backend import Backend

__all__ = ["DEFAULT_LOCK_TIMEOUT", "MISSING", "STORE_OPTIONS", "StoreCore", "validate_key"]

_T = TypeVar("_T")
DEFAULT_LOCK_TIMEOUT: Final = 600.0
STORE_OPTIONS: Final = ("read_only", "secret", "codec", "lock_timeout")


class StoreCore(MutableMapping[str, Any]):
    """Entries of a :class:`~stepcache.Backend` as a mapping; see :class:`~stepcache.Store`."""

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
        self._secret = resolve_secret(secret)
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
        """Options not at their default that ``open_store(self.spec, **options)`` needs."""
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

        While backed off (see :meth:`_failed`) the backend is not called.
        ``unavailable=True`` (listings, usage) raises StoreUnavailableError
        after counting it: an unreachable store is not an empty one.
        """
        if self._down_until and time.monotonic() < self._down_until:
            if unavailable:
                raise StoreUnavailableError(f"{self.spec} is unreachable (backing off)")
            return default
        try:
            result = fn()
        except OSError as exc:
            if unavailable and isinstance(exc, StoreUnavailableError):
                self.last_error = exc  # counted; the caller says it (no back-off warning)
                self.counters.add("errors")
                self.counters.add("remote_errors")
                raise
            self._failed(what, exc)
            return default
        if self._down_until:
            self._down_until = 0.0
            self._said.discard("down")
            log.info("stepcache: %s is reachable again", self.spec)
        return result

    def _failed(self, what: str, exc: OSError) -> None:
        """Count a failed call; an unreachable backend is skipped for ``backend.backoff`` s
        (one timeout per period, not one per lookup); log once."""
        self.last_error = exc
        self.counters.add("errors")
        if not isinstance(exc, StoreUnavailableError):
            self.say_once(what, "stepcache: cannot %s %s: %s", what, self.spec, exc)
            return
        self.counters.add("remote_errors")
        if self.backend.backoff > 0:
            self._down_until = time.monotonic() + self.backend.backoff
            if "down" not in self._said:
                self._said.add("down")
                log.warning(
                    "stepcache: %s is unreachable (%s: %s); working without it, retrying "
                    "every %g s",
                    self.spec,
                    what,
                    exc,
                    self.backend.backoff,
                )
        else:
            self.say_once(what, "stepcache: cannot %s %s: %s", what, self.spec, exc)

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
        """The verified entry blob under ``key`` (a damaged one is discarded), or ``None``;
        uncounted as hit or miss. For moving entries between stores."""
        blob = self._call("read from", lambda: self.backend.load(validate_key(key)), None)
        if blob is None:
            return None
        try:
            codec.unpack_entry(blob, key, secret=self._secret, allow_pickle=self.codec == "pickle")
        except codec.CorruptEntry as exc:
            found = self._unverified(key, blob, str(exc))
            return None if found is None else found[0]
        return blob

    def write_blob(self, key: str, blob: bytes, *, step: str | None = None) -> bool:
        """Publish a blob from :meth:`read_blob` of a store with the same secret; return
        whether it reached the backend (a failure is counted, not raised)."""
        validate_key(key)
        self._check_writable()
        if not self._call("write to", lambda: self.backend.save(key, blob) or True, False):
            return False
        self.counters.add("writes", step=step)
        return True

    def _read(self, key: str, blob: bytes | None = None) -> Any:
        """The verified value under ``key`` (a tree's payload too), or MISSING; ``blob``: the
        entry, if a subclass's own read has it already."""
        if blob is None:
            if self._down_until:  # backing off, or the first call since: the careful way
                blob = self._call("read from", lambda: self.backend.load(key), None)
            else:  # the hit path: no closure, no extra frame
                try:
                    blob = self.backend.load(key)
                except OSError as exc:
                    self._failed("read from", exc)
                    return MISSING
            if blob is None:
                return MISSING
        try:
            return codec.unpack_entry(
                blob, key, secret=self._secret, allow_pickle=self.codec == "pickle"
            )
        except codec.CorruptEntry as exc:
            found = self._unverified(key, blob, str(exc))
            return MISSING if found is None else found[1]

    def _unverified(self, key: str, blob: bytes, reason: str) -> tuple[bytes, Any] | None:
        """What a read that failed verification gives: here a counted miss (see discard)."""
        self.discard(key, reason)
        return None

    def _lookup(self, key: str) -> Any:
        """The verified value under ``key``, or MISSING (tree entries too); uncounted."""
        value = self._read(key)
        return MISSING if type(value) is codec.TreePayload else value

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
        # is_key(key), spelt out: a hit makes no call it can do without
        if type(key) is not str or not 16 <= len(key) <= 64 or key.strip(HEX_DIGITS):
            validate_key(key)  # raises InvalidKeyError
        value = self._read(key)  # not _lookup: one call less on every hit
        hit = value is not MISSING and type(value) is not codec.TreePayload
        if hit and info is None:
            self.counters.hit()  # a plain hit: no lock, no other call
            return value
        self._count_lookup(key, hit, info)
        return value if hit else default

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
        """Record this process's counters for other processes now (else every few seconds
        and at exit); a worker that lives on between tasks calls it after each."""

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
        return type(key) is str and is_key(key) and self.header(key) is not None

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

    # -- lifecycle -----------------------------------------------------------
    def stats(self) -> Stats:
        """Counters of this process plus what the store holds now (0 entries if unreachable:
        ``list(store)`` raises :class:`StoreUnavailableError` then)."""
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
        # Only a process that unpacked trees has this loaded (and a scratch directory).
        unpacked = sys.modules.get("stepcache.stores._scratch")
        scratch = None if unpacked is None else unpacked.scratch_dir(create=False)
        if scratch is not None:
            import shutil  # here: only cleaning up needs it

            shutil.rmtree(scratch / f"{id(self):x}", ignore_errors=True)

    def __enter__(self: _S) -> _S:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __reduce__(self) -> tuple[Callable[..., Any], tuple[Any, ...]]:
        # Stores travel to worker processes by spec and reopen there through
        # the registry, so every process shares one instance per store.
        from stepcache.stores import registry

        return registry.reducer(self)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.spec}>"

    __hash__ = object.__hash__

    def __eq__(self, other: object) -> bool:
        return self is other


_S = TypeVar("_S", bound=StoreCore)
