"""Custom fingerprints: the ``register_fingerprint`` registry and the hook method.

A type says how to fingerprint its instances in one of two ways:

* it defines ``__stepcache_fingerprint__(self)`` returning a stand-in value;
* someone calls ``register_fingerprint(cls, fn)``; ``fn(obj)`` returns the
  stand-in. This is the way for types you do not own.

The method wins when both apply: the type's author knows best, and a
registration for a base class should not override a subclass that defines
its own hook. Registrations apply to subclasses (nearest class in the MRO).
"""

from __future__ import annotations

import types
from collections.abc import Callable
from typing import Any

HOOK = "__stepcache_fingerprint__"

_registry: dict[type, Callable[[Any], Any]] = {}
_listeners: list[Callable[[], None]] = []

# Types whose encoding is built into the walker's fast paths; a registration
# could not take effect for them, so it is refused rather than ignored.
_BUILTIN: frozenset[type] = frozenset(
    {
        str,
        int,
        float,
        bool,
        complex,
        type(None),
        bytes,
        bytearray,
        memoryview,
        tuple,
        list,
        dict,
        set,
        frozenset,
        range,
        slice,
        type,
        types.ModuleType,
        types.FunctionType,
        types.BuiltinFunctionType,
        types.MethodType,
        types.CodeType,
    }
)


def register_fingerprint(type_: type, fn: Callable[[Any], Any]) -> None:
    """Fingerprint instances of ``type_`` (and its subclasses) by ``fn(obj)``.

    ``fn`` returns any fingerprintable stand-in value, typically a tuple of
    the attributes that define the object. The stand-in is tagged with the
    object's type, so it never collides with the plain stand-in value.
    Registering again for the same type replaces the earlier function.

    >>> import threading
    >>> from stepcache.fingerprint import fingerprint, register_fingerprint
    >>> class Counter:
    ...     def __init__(self, start: int) -> None:
    ...         self.start = start
    ...         self.lock = threading.Lock()
    >>> register_fingerprint(Counter, lambda c: c.start)
    >>> fingerprint(Counter(1)) == fingerprint(Counter(1)) != fingerprint(1)
    True
    """
    if not isinstance(type_, type):
        raise TypeError(f"register_fingerprint() needs a class, not {type_!r}")
    if not callable(fn):
        raise TypeError(f"register_fingerprint() needs a callable, not {fn!r}")
    if type_ in _BUILTIN:
        raise TypeError(
            f"{type_.__qualname__} has a built-in encoding that cannot be replaced; "
            "wrap such values in a class of your own instead"
        )
    _registry[type_] = fn
    for listener in _listeners:
        listener()


def unregister_fingerprint(type_: type) -> None:
    """Remove a registration made by :func:`register_fingerprint` (a no-op if none).

    >>> from stepcache.fingerprint._registry import unregister_fingerprint
    >>> unregister_fingerprint(int)
    """
    if _registry.pop(type_, None) is not None:
        for listener in _listeners:
            listener()


def on_change(listener: Callable[[], None]) -> None:
    """Call ``listener()`` whenever the registry changes (to drop cached lookups)."""
    _listeners.append(listener)


def custom_standin(cls: type) -> Callable[[Any], Any] | None:
    """Return the stand-in maker for ``cls``: its hook method, else the nearest registration."""
    method = getattr(cls, HOOK, None)
    if method is not None:
        return method  # type: ignore[no-any-return]
    for base in cls.__mro__:
        fn = _registry.get(base)
        if fn is not None:
            return fn
    return None
