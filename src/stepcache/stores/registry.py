"""``open_store``: from a spec string to the one shared store instance of this process.

The registry is the only process-wide mutable state in stepcache. It exists
so that code which opens "the cache" in many places (one pipeline variant per
test, fifteen of them per worker) gets one instance, set up once.
"""

from __future__ import annotations

import importlib
import os
import re
import sys
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Final

from stepcache.errors import StoreUnavailableError
from stepcache.stores._core import StoreCore
from stepcache.stores._stats import Stats
from stepcache.stores.backend import Backend
from stepcache.stores.base import STORE_OPTIONS, Store

__all__ = [
    "construct",
    "default_directory",
    "open_store",
    "process_stats",
    "register_backend",
    "reset_registry",
    "resolve_spec",
]

_Factory = Callable[..., Any]
# scheme -> factory, or "module:attr" of one, imported on first use. Built-in
# schemes go through the same table as third-party ones.
_factories: dict[str, _Factory | str] = {
    "dir": "stepcache.stores.directory:DirectoryStore",
    "memory": "stepcache.stores.memory:MemoryStore",
    "redis": "stepcache.stores.redis:RedisStore",
    "rediss": "stepcache.stores.redis:RedisStore",
    "unix": "stepcache.stores.redis:RedisStore",
    "tiered": "stepcache.stores.tiered:TieredStore",
    "s3": "stepcache.stores.s3:S3Store",
}
_EXTRAS: Final = {"redis": "redis", "rediss": "redis", "unix": "redis", "s3": "s3"}
_ENTRY_POINTS: Final = "stepcache.backends"
_registry: dict[tuple[str, tuple[tuple[str, Any], ...]], Store] = {}
# Re-entrant: a composite store may open its tiers while being constructed.
_lock = threading.RLock()


def register_backend(scheme: str, factory: _Factory | str) -> None:
    """Make ``open_store("scheme://...")`` open a store through ``factory``.

    ``factory(spec, **options)`` gets the whole spec string and the options
    other than the store's own (``secret``, ``codec``, ``lock_timeout``,
    ``read_only``) and returns a :class:`~stepcache.Backend`, which is
    wrapped in a :class:`~stepcache.Store`; a :class:`~stepcache.Store`
    subclass given as ``factory`` gets every option and is the store.
    ``factory`` may be a ``"module:attr"`` string, imported on first use.
    Packages can register schemes without being imported, through the entry
    point group ``stepcache.backends`` (name: the scheme, value: the factory).
    A store pickled into another process takes its factory along, so the
    scheme need not be registered there.

    >>> import stepcache as sc
    >>> class DictBackend(sc.Backend):
    ...     def __init__(self, spec):
    ...         self.spec, self.data = spec, {}
    ...     def load(self, key): return self.data.get(key)
    ...     def save(self, key, blob): self.data[key] = blob
    ...     def remove(self, key): return self.data.pop(key, None) is not None
    ...     def keys(self): return iter(list(self.data))
    >>> sc.register_backend("dict", DictBackend)
    >>> sc.open_store("dict://x").backend
    <DictBackend dict://x>
    """
    if not re.fullmatch(_SCHEME, scheme):
        raise ValueError(f"invalid scheme {scheme!r}: letters, digits, '+', '-', '.'")
    with _lock:
        _factories[scheme.lower()] = factory


_SCHEME: Final = r"[A-Za-z][A-Za-z0-9+.-]*"  # compiled at first use (re caches it)


def _factory(scheme: str) -> _Factory:
    """The factory registered for ``scheme`` (imported now if given by name)."""
    with _lock:
        factory = _factories.get(scheme)
    if factory is None:
        factory = _from_entry_points(scheme)
    if isinstance(factory, str):
        module, _, name = factory.partition(":")
        try:
            factory = getattr(importlib.import_module(module), name)
        except ImportError as exc:
            extra = _EXTRAS.get(scheme, scheme)
            raise StoreUnavailableError(
                f"the {scheme}:// store needs an optional dependency ({exc.name}); "
                f"install it with: pip install 'stepcache[{extra}]'"
            ) from exc
        assert not isinstance(factory, str)
        with _lock:
            _factories[scheme] = factory
    return factory


def _from_entry_points(scheme: str) -> _Factory | str:
    from importlib.metadata import entry_points

    for ep in entry_points(group=_ENTRY_POINTS):
        if ep.name.lower() == scheme:
            return str(ep.value)
    known = ", ".join(f"{s}://" for s in sorted(_factories))
    raise StoreUnavailableError(
        f"unknown store scheme {scheme}://: use a path or one of {known} "
        "(register others with stepcache.register_backend)"
    )


def _is_store_class(factory: _Factory) -> bool:
    return isinstance(factory, type) and issubclass(factory, Store)


def default_directory() -> Path:
    """``$STEPCACHE_DIR``, else the platform's user cache directory for stepcache."""
    env = os.environ.get("STEPCACHE_DIR")
    if env:
        return Path(env).expanduser()
    if sys.platform.startswith("linux") and "ANDROID_DATA" not in os.environ:
        # platformdirs' rule for Linux (XDG), without importing it into every worker.
        xdg = os.environ.get("XDG_CACHE_HOME", "").strip()
        return Path(xdg or os.path.expanduser("~/.cache"), "stepcache")
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
    if not sep and text.partition(":")[0].lower() in _factories and text.endswith(":"):
        # "dir:" or "redis:" alone: a spec cut short, not a relative path named so.
        example = "dir:///var/cache/stepcache" if text.lower() == "dir:" else f"{text}//..."
        raise StoreUnavailableError(f"store spec {text!r} names no store: use e.g. {example}")
    if not sep:
        scheme, rest = "dir", text
    scheme = scheme.lower()
    if scheme == "dir":
        from stepcache.stores._lockmode import split_query  # loaded with the store

        rest, query = split_query(rest)
        if not rest:
            raise StoreUnavailableError("dir:// needs a path, e.g. dir:///var/cache/stepcache")
        rest = os.path.abspath(os.path.expanduser(rest))
        return scheme, f"dir://{rest}" + (f"?lock={query['lock']}" if query else "")
    with _lock:
        known = scheme in _factories
    if not known:
        factory = _from_entry_points(scheme)
        with _lock:
            _factories.setdefault(scheme, factory)
    return scheme, f"{scheme}://{rest}"


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
        if store is not None and not store.closed and store.pid == os.getpid():
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
    factory = _factory(scheme)
    if _is_store_class(factory):
        store: Store = factory(canonical, **options)
        return store
    own = {k: options.pop(k) for k in STORE_OPTIONS if k in options}
    made = factory(canonical, **options)
    if isinstance(made, Store):
        return made
    if not isinstance(made, Backend):
        raise TypeError(
            f"the factory for {scheme}:// returned a {type(made).__name__}, not a stepcache.Backend"
        )
    if not made.spec:
        made.spec = canonical
    return Store(made, **own)


def reducer(store: StoreCore) -> tuple[Callable[..., Store], tuple[Any, ...]]:
    """How ``store`` pickles: reopened by spec through the registry, with its factory along."""
    scheme = store.spec.partition("://")[0].lower() if "://" in store.spec else "dir"
    with _lock:
        factory = _factories.get(scheme)
    if factory is None:  # never registered: the backend itself travels
        return (_rewrap, (type(store), store.backend, store.options()))
    return (_reopen, (store.spec, store.options(), scheme, factory))


def _reopen(spec: str, options: dict[str, Any], scheme: str, factory: _Factory | str) -> Store:
    with _lock:
        _factories.setdefault(scheme, factory)
    return open_store(spec, **options)


def _rewrap(cls: type[Store], backend: Backend, options: dict[str, Any]) -> Store:
    own = {k: v for k, v in options.items() if k in STORE_OPTIONS}
    return cls(backend, **own)


def reset_registry(*, close: bool = True) -> None:
    """Forget (and by default close) every store opened by :func:`open_store` in this process."""
    with _lock:
        stores = list(_registry.values())
        _registry.clear()
    if close:
        for store in stores:
            if store.pid == os.getpid():
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
        stores = [s for s in _registry.values() if s.pid == pid and not s.closed]
    seen: set[int] = set()
    out = []
    for store in stores:
        if id(store.counters) not in seen:
            seen.add(id(store.counters))
            out.append((store, store.counters.snapshot()))
    return out
