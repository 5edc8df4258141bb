"""The backend face of a :class:`~stepcache.TieredStore`: blobs of two tiers, verified on the way.

It reaches the tiers only through public interfaces: their backends' four
methods and locks, and the tiered store's guarded remote calls.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING

from stepcache import codec
from stepcache.stores.backend import Backend

if TYPE_CHECKING:
    from stepcache.stores.tiered import TieredStore

__all__ = ["Tiers"]


class Tiers(Backend):
    """The tiered store's backend: blobs from the tiers' backends, verified on the way."""

    def __init__(self, owner: TieredStore) -> None:
        self.owner = owner
        self.spec = owner.spec
        self.local = owner.local.backend
        self.remote = owner.remote.backend

    def _verified(self, key: str, blob: bytes | None) -> bytes | None:
        if blob is None:
            return None
        try:
            codec.verify_entry(blob, key, secret=self.owner.secret)
        except codec.CorruptEntry as exc:
            raise _Bad(str(exc)) from None
        return blob

    def load(self, key: str) -> bytes | None:
        owner = self.owner
        try:
            blob = self._verified(key, self.local.load(key))
        except _Bad as exc:
            # Drop only the local copy: the remote one may well be intact.
            owner.discard_local(key, str(exc))
            blob = None
        if blob is not None:
            return blob
        try:
            blob = self._verified(key, owner.remote_call("read", lambda: self.remote.load(key)))
        except _Bad as exc:
            owner.discard_remote(key, str(exc))
            return None
        if blob is not None and owner.may_backfill():
            owner.backfill(key, blob)
        return blob

    def load_header(self, key: str) -> bytes | None:
        head = self.local.load_header(key)
        if head is not None:
            try:
                codec.read_header(head, key=key)
            except codec.CorruptEntry as exc:
                self.owner.discard_local(key, str(exc))
            else:
                return head
        return self.owner.remote_call("read", lambda: self.remote.load_header(key))

    def save(self, key: str, blob: bytes) -> None:
        failure: OSError | None = None
        try:
            if not self.owner.local.read_only:
                self.local.save(key, blob)
        except OSError as exc:
            failure = exc
        if self.owner.remote_writable():
            self.owner.remote_call("write", lambda: self.remote.save(key, blob))
        if failure is not None:
            raise failure

    def remove(self, key: str) -> bool:
        removed = False if self.owner.local.read_only else self.local.remove(key)
        if self.owner.remote_writable():
            removed = bool(self.owner.remote_call("delete", lambda: self.remote.remove(key))) or (
                removed
            )
        return removed

    def keys(self) -> Iterator[str]:
        seen = set()
        for key in self.local.keys():  # noqa: SIM118 - a Backend, not a mapping
            seen.add(key)
            yield key
        remote_keys = self.owner.remote_call("list", lambda: list(self.remote.keys())) or []
        yield from (key for key in remote_keys if key not in seen)

    @contextlib.contextmanager
    def lock(self, key: str, deadline: float) -> Iterator[bool]:
        # Local lock first: processes on this machine queue here without
        # touching the remote; one of them speaks for the machine remotely.
        with self.local.lock(key, deadline) as held:
            if not held or not self.owner.remote_writable():
                yield held
                return
            try:
                remote_lock = self.remote.lock(key, deadline)
                remote_held = remote_lock.__enter__()
            except OSError as exc:
                self.owner.remote_failed("lock", exc)
                yield held
                return
            try:
                yield remote_held
            finally:
                with contextlib.suppress(OSError):
                    remote_lock.__exit__(None, None, None)


class _Bad(Exception):
    """A blob that failed verification."""
