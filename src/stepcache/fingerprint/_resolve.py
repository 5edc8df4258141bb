"""Choosing a handler per type, once: hooks, numpy, enums, dataclasses, fallback.

Lookups are cached per exact type and mode; the caches are dropped when the
registry changes. Dataclasses get a compact description instead of a handler
because the walker encodes them inline (they are most nodes of an IR tree).
A class listing its fields in ``__stepcache_fields__`` (stepcache's own
steps, which are not dataclasses so that importing stepcache builds none) is
keyed exactly as a dataclass with those fields would be.
:mod:`dataclasses` is never imported here: a dataclass exists only once its
program has imported it.
"""

from __future__ import annotations

import enum
import operator
import pathlib
import types
from collections.abc import Callable
from typing import Any

from stepcache._record import Record
from stepcache.fingerprint import _handlers, _registry
from stepcache.fingerprint import _tokens as tk
from stepcache.fingerprint._functions import function_handlers
from stepcache.fingerprint._numpy import numpy_handler
from stepcache.fingerprint._tokens import Handler

MODES = ("strict", "lenient")
METADATA_KEY = "stepcache.fingerprint"

# The caches hold classes strongly; a program that makes classes on the fly
# (a namedtuple per call) would otherwise grow them without end.
_MAX_TYPES = 4096


class DataclassInfo(Record):
    """How the walker encodes one dataclass type.

    ``tag`` names the type and its fingerprinted fields; ``getter(obj)``
    returns the field values in *reverse* order (ready to push on the stack)
    as a tuple when ``arity`` > 1, as the single value when ``arity`` == 1,
    and is unused when ``arity`` == 0.
    """

    __slots__ = ("tag", "getter", "arity")  # noqa: RUF023 - field order
    tag: bytes
    getter: Callable[[Any], Any]
    arity: int

    def __init__(self, tag: bytes, getter: Callable[[Any], Any], arity: int) -> None:
        self._set(tag=tag, getter=getter, arity=arity)


def _no_fields(obj: Any) -> tuple[()]:
    return ()


def keyed_fields(cls: type) -> tuple[str, ...] | None:
    """Names of the fields that key instances of ``cls``, in order, if it is keyed like a
    dataclass (else ``None``): a dataclass's, less those marked ``fingerprint=False``, or
    the ``__stepcache_fields__`` a class lists."""
    listed = getattr(cls, "__stepcache_fields__", None)
    if listed is not None:
        return tuple(listed)
    if not hasattr(cls, "__dataclass_fields__"):  # dataclasses.is_dataclass, without importing
        return None
    import dataclasses

    return tuple(
        f.name for f in dataclasses.fields(cls) if f.metadata.get(METADATA_KEY, True) is not False
    )


def dataclass_info(cls: type, names: tuple[str, ...]) -> DataclassInfo:
    """Build the cached encoding of ``cls``, keyed by its fields ``names`` (see keyed_fields)."""
    tag = tk.type_tag(b"dataclass", cls, names)
    if not names:
        return DataclassInfo(tag, _no_fields, 0)
    # attrgetter fetches all fields in one C call; reversed so the walker
    # can push the result as is and still pop fields in declaration order.
    return DataclassInfo(tag, operator.attrgetter(*reversed(names)), len(names))


def _dataclass_handler(info: DataclassInfo) -> Handler:
    def encode(obj: Any, out: list[Any], stack: list[Any]) -> None:
        out.append(info.tag)
        if info.arity > 1:
            stack.extend(info.getter(obj))
        elif info.arity:
            stack.append(info.getter(obj))

    return encode


class Tables:
    """Per-mode caches: type -> handler, and type -> dataclass description."""

    def __init__(self, mode: str) -> None:
        self.mode = mode
        self.handlers: dict[type, Handler] = {}
        self.dataclasses: dict[type, DataclassInfo] = {}
        self.clear()

    def clear(self) -> None:
        """Forget every resolved type (after the registry changed)."""
        # New dicts rather than .clear(): a walk running in another thread
        # keeps its consistent old view instead of seeing a half-filled table.
        self.handlers = {**_handlers.EXACT, **function_handlers(self.mode)}
        self.dataclasses = {}

    def resolve(self, cls: type) -> Handler:
        """Find, cache and return the handler for instances of ``cls``."""
        if len(self.handlers) > _MAX_TYPES:
            self.clear()
        handler = self._find(cls)
        self.handlers[cls] = handler
        return handler

    def _find(self, cls: type) -> Handler:
        standin = _registry.custom_standin(cls)
        if standin is not None:
            return _handlers.standin_handler(cls, standin)
        numpy = numpy_handler(cls)
        if numpy is not None:
            return numpy
        if issubclass(cls, enum.Enum):
            return _handlers.enum_handler(cls)
        names = keyed_fields(cls)
        if names is not None:
            info = dataclass_info(cls, names)
            self.dataclasses[cls] = info
            return _dataclass_handler(info)
        if issubclass(cls, type):
            return _handlers.encode_type
        if issubclass(cls, pathlib.PurePath):
            return _handlers.encode_path
        if issubclass(cls, tuple) and hasattr(cls, "_fields") and not cls.__dictoffset__:
            return _handlers.namedtuple_handler(cls)
        if issubclass(cls, types.ModuleType):
            return _handlers.encode_module
        return _handlers.encode_reduce


TABLES: dict[str, Tables] = {mode: Tables(mode) for mode in MODES}


def _clear_all() -> None:
    for tables in TABLES.values():
        tables.clear()


_registry.on_change(_clear_all)


def tables_for(mode: str) -> Tables:
    """Return the caches for ``mode``; ``ValueError`` for an unknown mode."""
    try:
        return TABLES[mode]
    except (KeyError, TypeError):
        raise ValueError(f"mode must be 'strict' or 'lenient', not {mode!r}") from None
