"""Paths inside a value (``body[3].op``): naming children, finding an object.

Path syntax: a dataclass field is ``.name`` (``name`` at the top), a
sequence item ``[3]``, a dict entry ``['key']`` and a set element
``{'element'}``. Keys and elements other than plain scalars are named by a
short digest, ``[#1f2e3d4c5b6a]``, so paths are stable across processes.
"""

from __future__ import annotations

import enum
import functools
from typing import Any

from stepcache.fingerprint import _registry
from stepcache.fingerprint._encode import fingerprint
from stepcache.fingerprint._resolve import _MAX_TYPES, keyed_fields

_SCALARS = (str, int, float, bool, type(None), bytes)
_SEPARATORS = ".[{"

# The search for a failing object is a courtesy for the error message; it
# gives up rather than make a failure on a huge value slow.
_LOCATE_LIMIT = 1_000_000


def label(value: Any, mode: str = "strict") -> str:
    """Name a dict key or set element in a path, the same way in every process."""
    if type(value) in _SCALARS:
        return repr(value)
    if isinstance(value, enum.Enum) and isinstance(value._name_, str):
        return f"{type(value).__qualname__}.{value._name_}"
    return "#" + fingerprint(value, mode=mode)[:12]


def join(path: str, segment: str) -> str:
    """Append ``segment`` to ``path``; a top-level field has no leading dot."""
    return path + segment if path or segment[0] != "." else segment[1:]


def ancestors(path: str) -> list[str]:
    """Every proper prefix of ``path`` that is itself a path, the root ``""`` included."""
    found = [path[:i] for i in range(1, len(path)) if path[i] in _SEPARATORS]
    return ["", *found] if path else []


# A manifest asks again for every node: remembered per class, as the
# fingerprint's own tables are (bounded, and dropped when the registry changes).
@functools.lru_cache(maxsize=_MAX_TYPES)
def expandable_fields(cls: type) -> tuple[str, ...] | None:
    """The fields instances of ``cls`` are keyed by (a dataclass without a hook), or ``None``."""
    return keyed_fields(cls) if _registry.custom_standin(cls) is None else None


_registry.on_change(expandable_fields.cache_clear)


def _first(pair: tuple[str, Any]) -> str:
    return pair[0]


def children(value: Any, mode: str = "strict") -> list[tuple[str, Any]] | None:
    """Named children of a container the key is built from, or ``None`` for anything else.

    Dict and set children are sorted by name, so equal values list equal
    children whatever their insertion or iteration order.
    """
    cls: type = type(value)
    if cls is tuple or cls is list:
        return [(f"[{i}]", item) for i, item in enumerate(value)]
    if cls is dict:
        return sorted(((f"[{label(k, mode)}]", v) for k, v in value.items()), key=_first)
    if cls is set or cls is frozenset:
        return sorted((("{" + label(e, mode) + "}", e) for e in value), key=_first)
    names = expandable_fields(cls)
    if names is not None:
        return [(f".{name}", getattr(value, name)) for name in names]
    return None


def _any_children(value: Any) -> list[tuple[str, Any]]:
    if type(value) is dict:
        return [(f"[{k!r}]", v) for k, v in value.items()]
    if type(value) in (set, frozenset):
        return [(f"{{{e!r}}}", e) for e in value]
    if isinstance(value, (tuple, list)):
        return [(f"[{i}]", item) for i, item in enumerate(value)]
    if not isinstance(value, type) and hasattr(value, "__dataclass_fields__"):
        import dataclasses  # loaded: the value is a dataclass

        return [(f".{f.name}", getattr(value, f.name)) for f in dataclasses.fields(value)]
    listed = getattr(type(value), "__stepcache_fields__", None)
    if listed is not None:
        return [(f".{name}", getattr(value, name)) for name in listed]
    attributes = getattr(value, "__dict__", None)
    if isinstance(attributes, dict):
        return [(f".{k}", v) for k, v in attributes.items()]
    return []


def locate(root: Any, target: Any) -> str | None:
    """Return the path of the first occurrence of ``target`` (by identity) in ``root``.

    Used only to make error messages precise: labels here are ``repr`` based
    and the search follows plain attributes too. ``None`` when not found.
    """
    seen: set[int] = set()
    stack: list[tuple[str, Any]] = [("", root)]
    for _ in range(_LOCATE_LIMIT):
        if not stack:
            return None
        path, value = stack.pop()
        if value is target:
            return path
        if id(value) in seen or type(value) in _SCALARS:
            continue
        seen.add(id(value))
        try:
            found = _any_children(value)
        except Exception:  # a broken property or __eq__ must not mask the real error
            continue
        stack.extend((join(path, segment), child) for segment, child in reversed(found))
    return None
