"""``open_store``: from a spec string to the one shared store instance of this process.

The registry is the only process-wide mutable state in stepcache. It exists
so that code which opens "the cache" in many places (one pipeline variant per
test, fifteen of them per worker) gets one instance, set up once.
"""

from __future__ import annotations

import importlib
import os
import threading
from pathlib import Path
from typing import Any

from stepcache.errors import StoreUnavailableError
from stepcache.stores.base import Store

__all__ = ["default_directory", "open_store", "reset_registry", "resolve_spec"]

_BACKENDS = {
    "dir": "stepcache.stores.directory:DirectoryStore",
    "memory": "stepcache.stores.memory:MemoryStore",
    "redis": "stepcache.stores.redis:RedisStore",
    "rediss": "stepcache.stores.redis:RedisStore",
    "unix": "stepcache.stores.redis:RedisStore",
    "tiered": "stepcache.stores.tiered:TieredStore",
}
_registry: dict[tuple[str, tuple[tuple[str, Any], ...]], Store] = {}
_lock = threading.Lock()


def default_directory() -> Path:
    """``$STEPCACHE_DIR``, else the platform's user cache directory for stepcache."""
    env = os.environ.get("STEPCACHE_DIR")
    if env:
        return Path(env).expanduser()
    import platformdirs

    return Path(platformdirs.user_cache_dir("stepcache", appauthor=False))


def resolve_spec(spec: str | os.PathLike[str] | None) -> tuple[str, str]:
    """Split a spec into (scheme, canonical spec string).

    >>> resolve_spec("memory://")
    ('memory', 'memory://')
    >>> resolve_spec("/tmp/cache")
    ('dir', 'dir:///tmp/cache')
    """
    if spec is None:
        spec = default_directory()
    text = os.fspath(spec)
    scheme, sep, rest = text.partition("://")
    if not sep:
        scheme, rest = "dir", text
    scheme = scheme.lower()
    if scheme not in _BACKENDS:
        raise StoreUnavailableError(
            f"unknown store spec {text!r}: use a path, dir:///path, memory://, "
            "redis://host:port/db, unix:///path/to/socket or tiered://..."
        )
    if scheme == "dir":
        if not rest:
            raise StoreUnavailableError("dir:// needs a path, e.g. dir:///var/cache/stepcache")
        rest = os.path.abspath(os.path.expanduser(rest))
        return scheme, f"dir://{rest}"
    return scheme, f"{scheme}://{rest}"


def _backend(scheme: str) -> type[Store]:
    module, _, name = _BACKENDS[scheme].partition(":")
    try:
        cls: type[Store] = getattr(importlib.import_module(module), name)
    except ImportError as exc:
        raise StoreUnavailableError(
            f"the {scheme}:// store needs an optional dependency ({exc.name}); "
            f"install it with: pip install 'stepcache[{'redis' if 'redis' in module else scheme}]'"
        ) from exc
    return cls


def open_store(spec: str | os.PathLike[str] | None = None, **options: Any) -> Store:
    """Open a store by spec; every call with the same spec and options returns one instance.

    ``None`` means ``$STEPCACHE_DIR`` or the platform user cache directory.
    A path or ``dir:///path`` opens a :class:`~stepcache.DirectoryStore`,
    ``redis://...`` a :class:`~stepcache.RedisStore`, ``memory://`` a
    :class:`~stepcache.MemoryStore`. Options go to the store's constructor.
    An instance inherited through ``fork`` is not reused by the child.

    >>> import stepcache as sc
    >>> sc.open_store("memory://") is sc.open_store("memory://")
    True
    """
    scheme, canonical = resolve_spec(spec)
    ident = (canonical, tuple(sorted(options.items())))
    with _lock:
        store = _registry.get(ident)
        if store is not None and not store.closed and store._pid == os.getpid():
            return store
        cls = _backend(scheme)
        target = canonical.partition("://")[2]
        store = cls(
            canonical if scheme in ("redis", "rediss", "unix", "tiered") else target, **options
        )
        _registry[ident] = store
        return store


def reset_registry(*, close: bool = True) -> None:
    """Forget (and by default close) every store opened by :func:`open_store` in this process."""
    with _lock:
        stores = list(_registry.values())
        _registry.clear()
    if close:
        for store in stores:
            if store._pid == os.getpid():
                store.close()
