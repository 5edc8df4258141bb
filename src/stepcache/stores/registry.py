"""``open_store``: from a spec string to the one shared store instance of this process.

The registry is the only process-wide mutable state in stepcache. It exists
so that code which opens "the cache" in many places (one pipeline variant per
test, fifteen of them per worker) gets one instance, set up once.
"""

from __future__ import annotations

import importlib
import os
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from stepcache.errors import StoreUnavailableError
from stepcache.stores._stats import Stats
from stepcache.stores.base import Store

__all__ = [
    "construct",
    "default_directory",
    "open_store",
    "process_stats",
    "reset_registry",
    "resolve_spec",
]

_BACKENDS = {
    "dir": "stepcache.stores.directory:DirectoryStore",
    "memory": "stepcache.stores.memory:MemoryStore",
    "redis": "stepcache.stores.redis:RedisStore",
    "rediss": "stepcache.stores.redis:RedisStore",
    "unix": "stepcache.stores.redis:RedisStore",
    "tiered": "stepcache.stores.tiered:TieredStore",
}
# Backends given the whole spec (a URL); the others get the path after "://".
_FULL_SPEC_SCHEMES = ("redis", "rediss", "unix", "tiered")
_registry: dict[tuple[str, tuple[tuple[str, Any], ...]], Store] = {}
# Re-entrant: a composite store may open its tiers while being constructed.
_lock = threading.RLock()


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
    >>> resolve_spec("dir:///tmp/cache?lock=lease")
    ('dir', 'dir:///tmp/cache?lock=lease')
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
        rest, query = _dir_query(rest)
        if not rest:
            raise StoreUnavailableError("dir:// needs a path, e.g. dir:///var/cache/stepcache")
        rest = os.path.abspath(os.path.expanduser(rest))
        return scheme, f"dir://{rest}" + (f"?lock={query['lock']}" if query else "")
    return scheme, f"{scheme}://{rest}"


def _dir_query(rest: str) -> tuple[str, dict[str, str]]:
    """Split ``path?lock=MODE`` (the only option a directory spec carries)."""
    from urllib.parse import parse_qsl

    path, _, query = rest.partition("?")
    options = dict(parse_qsl(query, keep_blank_values=True))
    unknown = set(options) - {"lock"}
    if unknown or options.get("lock", "auto") not in ("auto", "flock", "lease"):
        raise StoreUnavailableError(
            f"unknown option in dir://{rest}: a directory spec takes ?lock=auto|flock|lease"
        )
    return path, options


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
    canonical = resolve_spec(spec)[1]
    ident = (canonical, _freeze(options))
    with _lock:
        store = _registry.get(ident)
        if store is not None and not store.closed and store._pid == os.getpid():
            return store
        store = construct(canonical, **options)
        _registry[ident] = store
        return store


def _freeze(value: Any) -> Any:
    """A hashable stand-in for option values (mappings and sequences included)."""
    if isinstance(value, Mapping):
        return tuple(sorted((str(k), _freeze(v)) for k, v in value.items()))
    if isinstance(value, (list, tuple, set, frozenset)):
        items = [_freeze(v) for v in value]
        return tuple(sorted(items, key=repr) if isinstance(value, (set, frozenset)) else items)
    return value


def construct(spec: str | os.PathLike[str] | None, **options: Any) -> Store:
    """A new store instance for ``spec``, outside the registry (the caller owns and closes it).

    Composite stores use it for their tiers; everyone else wants :func:`open_store`.
    """
    scheme, canonical = resolve_spec(spec)
    cls: Any = _backend(scheme)
    target = canonical if scheme in _FULL_SPEC_SCHEMES else canonical.partition("://")[2]
    if scheme == "dir":
        target, query = _dir_query(target)
        if "lock" in query and options.setdefault("lock", query["lock"]) != query["lock"]:
            raise ValueError(
                f"{canonical} says lock={query['lock']}, the options lock={options['lock']}"
            )
    store: Store = cls(target, **options)
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


def process_stats() -> list[tuple[Store, Stats]]:
    """Each store :func:`open_store` has open in this process, with this process's counters.

    Unlike ``store.stats()``, which for a shared store sums every process
    that ever used it, these counters are what this process did, so a
    report can add up one run (``pytest --stepcache-report`` does). Stores
    that share counters (a tiered store and its local tier) appear once.

    >>> store = open_store("memory://process-stats-doc")
    >>> store.get_or_compute("ab" * 16, lambda: 1)
    1
    >>> [(s.spec, st.misses, st.writes) for s, st in process_stats() if s is store]
    [('memory://process-stats-doc', 1, 1)]
    """
    pid = os.getpid()
    with _lock:
        stores = [s for s in _registry.values() if s._pid == pid and not s.closed]
    seen: set[int] = set()
    out = []
    for store in stores:
        if id(store._counters) not in seen:
            seen.add(id(store._counters))
            out.append((store, store._counters.snapshot()))
    return out
