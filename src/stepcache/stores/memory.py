"""MemoryStore: entries in a dict of this process; for tests and short-lived runs."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

from stepcache.stores.backend import Backend
from stepcache.stores.base import Store

__all__ = ["MemoryBackend", "MemoryStore"]


class MemoryBackend(Backend):
    """Blobs in a dict of this process (``memory://name``)."""

    def __init__(self, name: str = "") -> None:
        self.name = name
        self.spec = f"memory://{name}"
        self._data: dict[str, bytes] = {}
        self._lock = threading.Lock()

    def load(self, key: str) -> bytes | None:
        return self._data.get(key)

    def save(self, key: str, blob: bytes) -> None:
        with self._lock:
            self._data[key] = blob

    def remove(self, key: str) -> bool:
        with self._lock:
            return self._data.pop(key, None) is not None

    def keys(self) -> Iterator[str]:
        return iter(list(self._data))

    def usage(self) -> tuple[int, int]:
        with self._lock:
            return len(self._data), sum(map(len, self._data.values()))


class MemoryStore(Store):
    """A store held in this process's memory, with the same entry format as the others.

    Values are serialised like in every other store, so a cached result is a
    copy, never the object the step returned. Opened by ``open_store("memory://")``
    (one instance per process) or ``open_store("memory://name")`` for separate
    namespaces. Sent to another process it reopens empty there.

    >>> import stepcache as sc
    >>> store = sc.MemoryStore()
    >>> store["0f" * 16] = [1, 2]
    >>> len(store), store.stats().entries
    (1, 1)
    """

    def __init__(self, name: str = "", **options: Any) -> None:
        if name.startswith("memory://"):
            name = name[len("memory://") :]
        super().__init__(MemoryBackend(name), **options)
        self.name = name
