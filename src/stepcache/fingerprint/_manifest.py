"""Manifests: digests of the top levels of a value, and their difference.

A key says *that* an input changed; a manifest stored next to it says
*where*: comparing the manifest of a new input with that of the nearest
stored one names the parts that differ (``body[3].op``, ``opt_level``).
"""

from __future__ import annotations

import ast
import collections
import functools
import marshal
from collections.abc import Mapping
from typing import Any, Final

from xxhash import xxh3_64_hexdigest

from stepcache.fingerprint import _tokens as tk
from stepcache.fingerprint._encode import fingerprint
from stepcache.fingerprint._paths import ancestors, children, join
from stepcache.fingerprint._resolve import _MAX_TYPES, tables_for


@functools.lru_cache(maxsize=_MAX_TYPES)
def _node_tag(cls: type) -> bytes:
    """The tag of an expanded container's own entry (every one of a manifest needs it)."""
    return tk.type_tag(b"node", cls)


def _own_digest(value: Any, size: int) -> str:
    # An expanded container's own entry covers only its type and size; its
    # contents have entries of their own. So list -> tuple, or a new length,
    # shows at the container's path, and a changed item only at the item's.
    cls: type = type(value)
    return xxh3_64_hexdigest(marshal.dumps([_node_tag(cls), size], 2))


# Leaves shown as values rather than digests: short, exact-typed scalars and strings.
_VALUE_TYPES: Final = (bool, int, float, str, type(None))
_MAX_VALUE_CHARS: Final = 40


def leaf_entry(value: Any, mode: str = "strict") -> str:
    """A manifest entry for a leaf: ``=<repr>`` for a short scalar or string, else a digest.

    The repr of these types differs exactly when their fingerprints do, so
    it identifies the leaf as well as a digest, and ``explain`` can show
    ``step.n: 2 -> 3`` instead of two hashes. Large or binary values keep
    their 16-hex-digit digest.

    >>> leaf_entry(3), leaf_entry("O3"), len(leaf_entry(b"bytes")), len(leaf_entry("x" * 100))
    ('=3', "='O3'", 16, 16)
    """
    if type(value) in _VALUE_TYPES:
        text = repr(value)
        if len(text) <= _MAX_VALUE_CHARS and text.isprintable():
            return "=" + text
    return fingerprint(value, mode=mode)[:16]


def manifest(
    obj: Any, *, depth: int = 3, max_entries: int = 256, mode: str = "strict"
) -> dict[str, str]:
    """Map paths in ``obj`` to 16-hex-digit digests (or short values), for explaining misses.

    Tuples, lists, dicts, sets and dataclasses are expanded breadth first,
    down to ``depth`` levels below ``obj``, while the manifest stays within
    ``max_entries``; what lies deeper or beyond gets one digest of its
    whole subtree. An expanded container's own entry covers its type and
    length. Paths look like ``body[3].op``, ``opt_level``, ``params['alpha']``
    or ``tags{'x'}``. The root itself has no entry (its digest is the key),
    so the manifest of a leaf, or of anything not expanded, is empty. A leaf
    that is a short scalar or string is recorded as ``=<repr>`` (:func:`leaf_entry`).

    >>> from stepcache.fingerprint import manifest
    >>> m = manifest({"alpha": 1.0, "shape": (4, 4)})
    >>> sorted(m)
    ["['alpha']", "['shape']", "['shape'][0]", "['shape'][1]"]
    >>> m["['alpha']"], len(m["['shape']"])
    ('=1.0', 16)
    """
    tables_for(mode)
    if depth < 0:
        raise ValueError(f"depth must be >= 0, not {depth}")
    if max_entries < 0:
        raise ValueError(f"max_entries must be >= 0, not {max_entries}")
    entries: dict[str, str] = {}
    top = children(obj, mode) if depth > 0 else None
    if top is None or len(top) > max_entries:
        return entries
    # Every queued node will produce exactly one entry, so entries + queue
    # is the size the manifest will have if nothing else is expanded.
    queue = collections.deque((join("", segment), kid, 1) for segment, kid in top)
    while queue:
        path, value, level = queue.popleft()
        kids = children(value, mode) if level < depth else None
        if kids is not None and len(entries) + len(queue) + 1 + len(kids) <= max_entries:
            entries[path] = _own_digest(value, len(kids))
            queue.extend((join(path, segment), kid, level + 1) for segment, kid in kids)
        else:
            entries[path] = leaf_entry(value, mode)
    return entries


def diff_manifests(old: Mapping[str, str], new: Mapping[str, str]) -> list[str]:
    """Return the most specific paths whose digests differ, added or removed, sorted.

    A path is left out when a path below it also differs: the change is
    explained there. An added (or removed) subtree is reported once, at its
    top, so a container that grew shows as the new item, not as the
    container nor as every path inside the new item.

    >>> from stepcache.fingerprint import diff_manifests, manifest
    >>> diff_manifests(manifest({"a": 1, "b": [1, 2]}), manifest({"a": 1, "b": [1, 3]}))
    ["['b'][1]"]
    >>> diff_manifests(manifest({"b": [1]}), manifest({"b": [1, (2, 3)]}))
    ["['b'][1]"]
    """
    changed = {p for p in old.keys() | new.keys() if not same_entry(old.get(p), new.get(p))}
    kept = {path for path in changed if not _inside_added_or_removed(path, old, new)}
    explained = {parent for path in kept for parent in ancestors(path)}
    return sorted(kept - explained)


def same_entry(a: str | None, b: str | None) -> bool:
    """Whether two manifest entries record the same leaf, one as ``=<repr>`` and one as a digest.

    Entries written before leaves were recorded as values have digests
    there; comparing them with new ones must not report every setting as
    changed.

    >>> same_entry("=2", fingerprint(2)[:16]), same_entry("=2", fingerprint(3)[:16])
    (True, False)
    """
    if a == b:
        return True
    if a is None or b is None or a.startswith("=") == b.startswith("="):
        return False
    shown, digest = (a, b) if a.startswith("=") else (b, a)
    try:
        value = ast.literal_eval(shown[1:])
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return False
    return bool(fingerprint(value)[:16] == digest)


def _inside_added_or_removed(path: str, old: Mapping[str, str], new: Mapping[str, str]) -> bool:
    parents = [p for p in ancestors(path) if p in old or p in new]
    if not parents:
        return False
    parent = parents[-1]
    return (path not in old and parent not in old) or (path not in new and parent not in new)
