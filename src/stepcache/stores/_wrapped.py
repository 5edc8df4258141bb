"""A :class:`~stepcache.Store` over a :class:`~stepcache.Backend`, with back-off after outages.

Until every store is a ``Store(backend)``, this adapts a backend to the
store base class: the four blob methods and the optional hooks are the
backend's; a backend that raises :class:`~stepcache.StoreUnavailableError`
is counted (``stats().remote_errors``), logged once, and skipped for
``backend.backoff`` seconds, during which lookups are misses and writes are
skipped without a request, so a dead server costs one timeout per period.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any, TypeVar

from stepcache import codec
from stepcache.errors import StoreUnavailableError
from stepcache.stores import _maintenance
from stepcache.stores._dirstate import PruneResult, VerifyResult
from stepcache.stores.backend import Backend, EntryStat
from stepcache.stores.base import DEFAULT_LOCK_TIMEOUT, Store

__all__ = ["BackendStore"]

_T = TypeVar("_T")


class BackendStore(Store):
    """Entries in ``backend``; the store's codec, checksums, HMAC, counters and single flight."""

    def __init__(
        self,
        backend: Backend,
        *,
        read_only: bool = False,
        secret: bytes | str | None = None,
        codec: str = "pickle",
        lock_timeout: float = DEFAULT_LOCK_TIMEOUT,
        compress: str | None = None,
    ) -> None:
        super().__init__(
            read_only=read_only or backend.read_only,
            secret=secret,
            codec=codec,
            lock_timeout=lock_timeout,
        )
        self.backend = backend
        self.spec = backend.spec
        self.compress = compress if compress is not None else getattr(backend, "compress", None)
        self._down_until = 0.0
        self._down_lock = threading.Lock()
        if self._secret is None and backend.shared:
            self._say_once(
                "unsigned",
                "stepcache: %s is shared but has no secret, so entries are not signed and "
                "anyone who can write to it can run code in every reader; set "
                "STEPCACHE_SECRET (the same on every client) or pass secret=",
                self.spec,
            )

    # -- outages ---------------------------------------------------------------
    def _call(self, fn: Callable[[], _T]) -> _T:
        if time.monotonic() < self._down_until:
            raise StoreUnavailableError(f"{self.spec} is skipped after a failure (backing off)")
        try:
            return fn()
        except StoreUnavailableError as exc:
            self._counters.add("remote_errors")
            with self._down_lock:
                self._down_until = time.monotonic() + type(self.backend).backoff
            if not getattr(exc, "permanent", False):  # a set-up error is said by the caller
                self._say_once(
                    "down",
                    "stepcache: %s unavailable (%s); skipping it for %.0f s",
                    self.spec,
                    exc,
                    type(self.backend).backoff,
                )
            raise

    @property
    def available(self) -> bool:
        """Whether the backend is being used (not inside a back-off period)."""
        return time.monotonic() >= self._down_until

    # -- the backend's blobs -----------------------------------------------------
    def _load(self, key: str) -> bytes | None:
        return self._call(lambda: self.backend.load(key))

    def _save(self, key: str, blob: bytes) -> None:
        self._call(lambda: self.backend.save(key, blob))

    def _remove(self, key: str) -> bool:
        return self._call(lambda: self.backend.remove(key))

    def _iter_keys(self) -> Iterator[str]:
        return iter(self._call(lambda: list(self.backend.keys())))

    def _load_header(self, key: str) -> bytes | None:
        return self._call(lambda: self.backend.load_header(key))

    def _pack(self, key: str, value: Any, info: Mapping[str, Any] | None) -> bytes:
        return codec.pack_entry(
            key, value, codec=self.codec, info=info, secret=self._secret, compress=self.compress
        )

    def header(self, key: str) -> codec.EntryHeader | None:
        """The header of the entry under ``key``, or ``None`` (also when the backend is down)."""
        try:
            return super().header(key)
        except StoreUnavailableError:
            return None

    def _usage(self) -> tuple[int, int]:
        try:
            usage = self._call(self.backend.usage)
        except StoreUnavailableError as exc:
            if getattr(exc, "permanent", False):  # a set-up error: say so, do not show 0
                raise
            return 0, 0
        return super()._usage() if usage is None else usage

    def entries(self) -> Iterator[EntryStat]:
        """Size and last use of every entry (for eviction and listings)."""
        return iter(self._call(lambda: list(self.backend.entries())))

    def prune(
        self,
        max_bytes: int | None = None,
        max_age: float | None = None,
        *,
        progress: Callable[[int], None] | None = None,
        dry_run: bool = False,
    ) -> PruneResult:
        """Evict entries unused for longer than ``max_age`` s, then the least recently used
        until the store holds at most ``max_bytes``; ``dry_run`` removes nothing."""
        if not dry_run:
            self._check_writable()
        return _maintenance.prune(
            self.entries,
            lambda key: self._call(lambda: self.backend.remove(key)),
            max_bytes,
            max_age,
            progress=progress,
            dry_run=dry_run,
        )

    def verify(
        self, *, repair: bool = False, progress: Callable[[int], None] | None = None
    ) -> VerifyResult:
        """Read and check every entry (checksum, signature, decoding); ``repair`` drops the bad."""
        if repair:
            self._check_writable()
        return _maintenance.verify(
            self._iter_keys(),
            self._load,
            self._remove if repair else None,
            self._secret,
            self.codec == "pickle",
            progress,
        )

    @contextlib.contextmanager
    def _external_lock(self, key: str, deadline: float) -> Iterator[bool]:
        if not self.available:
            yield False
            return
        lock = self.backend.lock(key, deadline)
        try:
            held = self._call(lock.__enter__)
        except StoreUnavailableError:
            yield False
            return
        try:
            yield held
        finally:
            with contextlib.suppress(StoreUnavailableError):
                lock.__exit__(None, None, None)

    def _options(self) -> dict[str, Any]:
        options = super()._options()
        if self.backend.read_only:  # the backend's options say so
            options.pop("read_only", None)
        options.update(self.backend.options())
        return options

    def close(self) -> None:
        """Release the backend's connections."""
        self.backend.close()
        super().close()
