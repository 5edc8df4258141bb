"""GT4Py: keep its translations and compiled programs in a stepcache store.

:func:`enable` routes GT4Py's translation caches (generated C++, one
``FileCache`` per backend) and its compiled programs through a store,
whatever ``GT4PY_BUILD_CACHE_LIFETIME`` says. Of a compiled program only what
loading needs is kept: the extension module and ``gt4py.json``, about a sixth
of GT4Py's build folder, keyed by the folder's name (GT4Py's fingerprint of
the generated source and build settings) plus compiler, Python and platform.
Entries record ``step`` ``gt4py.translation[<backend>]`` or
``gt4py.build[<backend>]`` and the program name as ``label``.

>>> import stepcache.integrations.gt4py as sc_gt4py
>>> store = sc_gt4py.enable("/var/cache/gt4py-team")  # doctest: +SKIP
>>> sc_gt4py.disable()
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import os
import sys
import threading
import types
import warnings
from collections.abc import Callable, Iterator, MutableMapping
from pathlib import PurePath
from typing import Any, Final

from stepcache._log import log
from stepcache.errors import StepCacheError
from stepcache.fingerprint import fingerprint
from stepcache.stores.base import MISSING, Store

__all__ = [
    "ENV_VAR",
    "GT4PyIntegrationError",
    "TranslationCache",
    "active_store",
    "disable",
    "enable",
    "enable_from_env",
    "install_hint",
]


#: Environment variable naming the store spec ("1" for the default store).
ENV_VAR: Final = "STEPCACHE_GT4PY"
_TESTED_WITH: Final = "1.2.3"
_KEY_VERSION: Final = "stepcache.gt4py/1"
_BUILD_ENV: Final = ("CXX", "CXXFLAGS", "CPPFLAGS", "LDFLAGS", "CUDAARCHS")
_BUILD_DISTRIBUTIONS: Final = ("gridtools-cpp", "nanobind")
_DATAFILE: Final = "gt4py.json"
_MODULES: Final = {
    "filecache": "gt4py._core.filecache",
    "locking": "gt4py._core.locking",
    "cache": "gt4py.next.otf.compilation.cache",
    "build_data": "gt4py.next.otf.compilation.build_data",
    "compiler": "gt4py.next.otf.compilation.compiler",
    "runners": "gt4py.next.otf.runners",
}
#: (module, attribute, annotated fields of that class) the integration relies on
_REQUIRED: Final = (
    ("filecache", "FileCache", ("path",)),
    ("locking", "lock", ()),
    ("cache", "get_cache_folder", ()),
    ("build_data", "read_data", ()),
    ("compiler", "is_usable", ()),
    ("compiler", "CPPCompiler", ("force_recompile",)),
    ("compiler", "CPPCompilationArtifact", ("src_dir", "module")),
    ("runners", "ProcessRunner", ()),
    ("runners", "CompilationTask", ("construct_compilable", "executor", "no_offload_reason")),
)
_Saved = list[tuple[object, str, Any]]
_ABSENT: Final = object()


class GT4PyIntegrationError(StepCacheError, RuntimeError):
    """GT4Py is not installed, or lacks an internal piece the integration relies on."""


def install_hint(version: tuple[int, int] = sys.version_info[:2]) -> str:
    """How to install GT4Py, if this Python can run it (GT4Py 1.2 needs Python 3.12).

    >>> install_hint((3, 12))
    "install it with: pip install 'stepcache[gt4py]'"
    >>> install_hint((3, 11)).startswith("GT4Py needs Python 3.12 or newer and this is Python 3.11")
    True
    """
    if version >= (3, 12):
        return "install it with: pip install 'stepcache[gt4py]'"
    return (
        f"GT4Py needs Python 3.12 or newer and this is Python {version[0]}.{version[1]}: "
        "use a Python 3.12 environment, then pip install 'stepcache[gt4py]'"
    )


def _import(name: str) -> Any:
    with warnings.catch_warnings():
        # A GT4Py dependency warns at import time; under -W error that would abort enable().
        warnings.simplefilter("ignore", DeprecationWarning)
        return importlib.import_module(name)


def _load_gt4py() -> Any:
    """Import GT4Py's internals; raise :class:`GT4PyIntegrationError` naming what is missing."""
    try:
        version = str(getattr(_import("gt4py"), "__version__", "unknown"))
    except ImportError as exc:
        raise GT4PyIntegrationError(f"GT4Py is not importable ({exc}); {install_hint()}") from exc
    mod: dict[str, Any] = {}
    missing: list[str] = []
    for short, name in _MODULES.items():
        try:
            mod[short] = _import(name)
        except ImportError:
            missing.append(name)
    for short, attr, fields in _REQUIRED:
        found = getattr(mod.get(short), attr, None)
        if short in mod and found is None:
            missing.append(f"{_MODULES[short]}.{attr}")
        known = getattr(found, "__annotations__", {})
        missing += [f"{attr}.{field}" for field in fields if found and field not in known]
    if missing:
        raise GT4PyIntegrationError(
            f"GT4Py {version} lacks {', '.join(missing)}, which stepcache's GT4Py integration "
            f"relies on; it is written against gt4py=={_TESTED_WITH}"
        )
    return types.SimpleNamespace(version=version, **mod)


class TranslationCache(MutableMapping[str, Any]):
    """One GT4Py backend's translation cache, kept in a stepcache store.

    It keeps GT4Py's contract for ``CachedStep`` caches: ``cache[key]`` raises
    :class:`KeyError` on a miss and ``cache[key] = value`` stores. GT4Py's
    16-hex keys become store keys salted with the backend name and ``salt``
    (the integration passes a digest of GT4Py's own code), so backends never
    share entries and an edited GT4Py never reuses stale translations. Each
    entry records ``step`` ``gt4py.translation[<backend>]`` and the program
    name as ``label``. It pickles as its store's spec plus backend and salt.

    >>> import stepcache as sc
    >>> cache = TranslationCache(sc.MemoryStore(), "gtfn")
    >>> cache["0123456789abcdef"] = "generated C++"
    >>> cache["0123456789abcdef"], "fedcba9876543210" in cache, list(cache)
    ('generated C++', False, ['0123456789abcdef'])
    """

    def __init__(self, store: Store, backend: str, salt: str = "") -> None:
        self.store, self.backend, self.salt = store, backend, salt
        self.step = f"gt4py.translation[{backend}]"

    def store_key(self, key: str) -> str:
        """The store key under which GT4Py's ``key`` is kept."""
        return fingerprint((_KEY_VERSION, "translation", self.backend, self.salt, key))

    def __getitem__(self, key: str) -> Any:
        value = self.store.get(self.store_key(key), MISSING, info={"step": self.step})
        if value is MISSING:
            raise KeyError(key)
        return value

    def __setitem__(self, key: str, value: Any) -> None:
        if self.store.read_only:
            return  # a read-only cache still serves; new results are just not kept
        entry_point = getattr(value, "entry_point", None)  # GT4Py's ProgramSource
        label = getattr(entry_point, "name", None) or getattr(value, "name", None)
        info = {"step": self.step, "label": str(label or ""), "gt4py_key": key}
        self.store.set(self.store_key(key), value, info=info)

    def __delitem__(self, key: str) -> None:
        try:
            del self.store[self.store_key(key)]
        except KeyError:
            raise KeyError(key) from None

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and self.store_key(key) in self.store

    def __iter__(self) -> Iterator[str]:
        for header in self.store.headers():
            key = header.info.get("gt4py_key")
            if (
                header.step == self.step
                and isinstance(key, str)
                and self.store_key(key) == header.key
            ):
                yield key

    def __len__(self) -> int:
        return sum(1 for _ in self)

    def __reduce__(self) -> tuple[type[TranslationCache], tuple[Store, str, str]]:
        return (TranslationCache, (self.store, self.backend, self.salt))


@dataclasses.dataclass
class _State:
    """What is switched on in this process; ``store is None`` means off."""

    store: Store | None = None
    gt: Any = None
    patches: _Saved | None = None
    env_before: str | None = None
    translations: dict[str, TranslationCache] = dataclasses.field(default_factory=dict)
    salt: str | None = None
    toolchain: Any = None
    said: set[str] = dataclasses.field(default_factory=set)


_state = _State()
_lock = threading.RLock()


def _say_once(topic: str, message: str, *args: Any) -> None:
    if topic not in _state.said:
        _state.said.add(topic)
        log.warning(message, *args)


def _set_attr(saved: _Saved, owner: Any, name: str, value: Any) -> None:
    saved.append((owner, name, vars(owner).get(name, _ABSENT)))
    setattr(owner, name, value)


def _undo(saved: _Saved) -> None:
    for owner, name, old in reversed(saved):
        if old is _ABSENT:
            delattr(owner, name)
        else:
            setattr(owner, name, old)
    saved.clear()


def _revive(store: Store, func: Callable[..., Any], args: tuple[Any, ...], state: Any) -> Any:
    """Unpickle a patched object (in a compile worker): switch the integration on first."""
    if _state.store is None:
        enable(store)
    obj = func(*args)
    if state is not None and hasattr(obj, "__setstate__"):
        obj.__setstate__(state)
    elif state is not None:
        attrs, slots = state if isinstance(state, tuple) else (state, None)
        for name, value in {**(attrs or {}), **(slots or {})}.items():
            object.__setattr__(obj, name, value)  # frozen dataclasses refuse setattr
    return obj


# -- translations ----------------------------------------------------------------------------
def _routed(file_cache: Any) -> TranslationCache | None:
    """The store-backed cache standing in for a FileCache under ``translation_cache/``."""
    store, path = _state.store, getattr(file_cache, "path", None)
    if store is None or not isinstance(path, PurePath) or path.parent.name != "translation_cache":
        return None
    with _lock:
        if _state.salt is None:  # translations depend on GT4Py's code, not only its version
            from stepcache.identity import code_identity

            _state.salt = code_identity("gt4py").digest
        if path.name not in _state.translations:
            _state.translations[path.name] = TranslationCache(store, path.name, _state.salt)
        return _state.translations[path.name]


def _patch_file_cache(patches: _Saved, cls: type) -> None:
    """Route every FileCache under ``translation_cache/``, existing or future, to the store."""
    from stepcache.integrations._gt4py_runner import NotStored, found, stored_only

    plain_reduce: Callable[..., Any] = cls.__reduce_ex__

    def routing(name: str) -> Callable[..., Any]:
        original = getattr(cls, name)

        @functools.wraps(original)
        def method(self: Any, *args: Any) -> Any:
            cache = _routed(self)
            if cache is None:
                return original(self, *args)
            if name == "__getitem__" and stored_only.get():
                # Looked at without counting: if the task goes to a worker after all
                # (a step of it has work left), the worker's own look counts.
                value = cache.store.peek(cache.store_key(args[0]), MISSING)
                if value is MISSING:
                    raise NotStored(args[0])  # translating is work, a worker's
                found(functools.partial(cache.store.counters.step_hit, cache.step))
                return value
            return getattr(cache, name)(*args)

        return method

    def __reduce_ex__(self: Any, protocol: Any) -> Any:
        cache = _routed(self)
        if cache is None:
            return plain_reduce(self, protocol)
        return (_revive, (cache.store, type(self), (str(self.path),), None))

    for name in ("__getitem__", "__setitem__", "__delitem__", "__contains__"):
        _set_attr(patches, cls, name, routing(name))
    _set_attr(patches, cls, "__reduce_ex__", __reduce_ex__)


# -- switching on and off --------------------------------------------------------------------
def enable(store: Store | str | os.PathLike[str] | None = None) -> Store:
    """Route GT4Py's translation caches and compiled programs through ``store``; return it.

    ``store``: a store or a spec for :func:`stepcache.open_store` (``None``: the
    default store). Works before or after GT4Py's backends are imported. GT4Py's
    compile workers are spawned: the patched objects pickle with the store, and
    unpickling one switches the worker on. Sets ``$STEPCACHE_GT4PY`` to the
    store's spec for processes that call :func:`enable_from_env`. Raises
    :class:`GT4PyIntegrationError` if GT4Py lacks a piece this relies on.

    >>> import stepcache.integrations.gt4py as sc_gt4py
    >>> sc_gt4py.enable("memory://")  # doctest: +SKIP
    <MemoryStore memory://>
    """
    from stepcache.stores.registry import open_store

    with _lock:
        gt = _load_gt4py()  # cheap once imported; checks the pieces every time
        target = store if isinstance(store, Store) else open_store(store)
        if _state.patches is None:
            patches: _Saved = []
            try:
                from stepcache.integrations import _gt4py_builds, _gt4py_runner

                _patch_file_cache(patches, gt.filecache.FileCache)
                _gt4py_builds.patch_compiler(patches, gt)
                _gt4py_runner.patch_runner(patches, gt)
            except BaseException:
                _undo(patches)
                raise
            _state.patches, _state.env_before = patches, os.environ.get(ENV_VAR)
        _state.gt, _state.store = gt, target
        _state.translations.clear()
        os.environ[ENV_VAR] = target.spec
        return target


def disable() -> None:
    """Undo :func:`enable`: GT4Py uses its own caches again; ``$STEPCACHE_GT4PY`` is restored.

    >>> import stepcache.integrations.gt4py as sc_gt4py
    >>> sc_gt4py.disable()  # a no-op when not enabled
    """
    with _lock:
        if _state.patches is None:
            return
        _undo(_state.patches)
        if _state.env_before is None:
            os.environ.pop(ENV_VAR, None)
        else:
            os.environ[ENV_VAR] = _state.env_before
        _state.patches = _state.store = _state.env_before = None
        _state.translations.clear()


def enable_from_env() -> bool:
    """Call :func:`enable` if ``$STEPCACHE_GT4PY`` is set; return whether it is on now.

    The value is a store spec, or ``1`` for the default store; empty, ``0``
    or ``off`` mean off.

    >>> import os, stepcache.integrations.gt4py as sc_gt4py
    >>> os.environ.pop("STEPCACHE_GT4PY", None) and None
    >>> sc_gt4py.enable_from_env()
    False
    """
    value = os.environ.get(ENV_VAR, "").strip()
    if value.lower() in ("", "0", "false", "off", "no"):
        return False
    if _state.store is not None and _state.store.spec == value:
        return True
    enable(None if value.lower() in ("1", "true", "on", "yes") else value)
    return True


def active_store() -> Store | None:
    """The store GT4Py's caches go to in this process, or ``None`` when not enabled.

    >>> import stepcache.integrations.gt4py as sc_gt4py
    >>> sc_gt4py.active_store() is None
    True
    """
    return _state.store
