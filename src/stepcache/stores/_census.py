"""A census of every store instance this process creates, for reports that must see them all.

:func:`~stepcache.stores.registry.process_stats` sees the stores that
``open_store`` opened and that are still open. A test suite also builds
stores directly (``DirectoryStore(path)``) and closes them in fixtures, and
``pytest --stepcache-report`` must count those too. Once :func:`install`
has run, each store class records, when an instance's construction ends,
the instance's spec and its counters; the counters are kept (they are
small), so an instance closed or collected before the report still counts.

The census costs one dictionary entry per store created, so it is only
switched on by whoever reports (the pytest plugin), never by the library.

>>> import stepcache as sc
>>> install()
>>> store = sc.MemoryStore("census-doc")
>>> store.get_or_compute("ab" * 16, lambda: 1)
1
>>> store.close()
>>> [(spec, st.misses) for spec, st, _ in counted() if spec == "memory://census-doc"]
[('memory://census-doc', 1)]
"""

from __future__ import annotations

import functools
import os
import threading
import weakref
from collections.abc import Callable
from typing import Any

from stepcache.stores._core import StoreCore
from stepcache.stores._stats import Counters, Stats
from stepcache.stores.base import Store

__all__ = ["counted", "install", "installed"]

# id(counters) -> (counters, spec, pid, the store while it lives). Keyed by
# the counters: a tiered store shares its local tier's, and is recorded last
# (its construction ends after the tier's), so the shared counters carry the
# tiered store's spec.
_records: dict[int, tuple[Counters, str, int, weakref.ref[Store]]] = {}
_lock = threading.Lock()
_installed = False


def installed() -> bool:
    """Whether the census is counting."""
    return _installed


def install() -> None:
    """Record every store constructed from now on in this process (idempotent)."""
    global _installed
    with _lock:
        if _installed:
            return
        _installed = True
        # The base too: a store made as Store(backend) has no subclass to record it.
        for cls in [StoreCore, *_subclasses(StoreCore)]:
            _wrap(cls)
        # Store classes defined later (third-party backends, tests) join too.
        previous = StoreCore.__dict__.get("__init_subclass__")

        def init_subclass(cls: type[StoreCore], /, **kwargs: Any) -> None:
            if previous is not None:
                previous.__func__(cls, **kwargs)
            else:
                super(StoreCore, cls).__init_subclass__(**kwargs)
            _wrap(cls)

        StoreCore.__init_subclass__ = classmethod(init_subclass)  # type: ignore[assignment]


def _subclasses(cls: type) -> list[type]:
    found: list[type] = []
    subs: list[type] = cls.__subclasses__()
    for sub in subs:
        found += [sub, *_subclasses(sub)]
    return found


def _wrap(cls: type) -> None:
    init = cls.__dict__.get("__init__")
    if init is None or getattr(init, "_stepcache_census", False):
        return  # inherits a wrapped __init__, or is wrapped already

    @functools.wraps(init)
    def counted_init(self: Store, *args: Any, **kwargs: Any) -> None:
        init(self, *args, **kwargs)
        counters = self.counters
        with _lock:
            _records[id(counters)] = (counters, self.spec, os.getpid(), weakref.ref(self))

    counted_init._stepcache_census = True  # type: ignore[attr-defined]
    cls.__init__ = counted_init  # type: ignore[misc]


def counted() -> list[tuple[str, Stats, Callable[[], Store | None]]]:
    """``(spec, this process's counters, the store if it still lives)`` per store instance.

    Only instances created by this process, each set of counters once.
    """
    pid = os.getpid()
    with _lock:
        records = list(_records.values())
    return [
        (spec, counters.snapshot(), ref) for counters, spec, owner, ref in records if owner == pid
    ]
