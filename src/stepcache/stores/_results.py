"""The result record of :meth:`stepcache.Store.verify`."""

from __future__ import annotations

from stepcache._record import Record

__all__ = ["VerifyResult"]


class VerifyResult(Record):
    """What :meth:`Store.verify` found: ``(key, reason)`` for every bad entry."""

    __slots__ = ("checked", "corrupt", "repaired")
    checked: int
    corrupt: tuple[tuple[str, str], ...]
    repaired: int

    def __init__(self, checked: int, corrupt: tuple[tuple[str, str], ...], repaired: int) -> None:
        self._set(checked=checked, corrupt=corrupt, repaired=repaired)

    @property
    def ok(self) -> int:
        """Entries that verified."""
        return self.checked - len(self.corrupt)
