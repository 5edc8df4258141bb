"""The walker: turns a value into its token stream and hashes it.

The walk is a loop over an explicit stack, so a 100,000-deep chain needs no
recursion. Dataclasses, tuples, lists and raw leaves -- nearly every node of
an IR tree -- are encoded inline; everything else goes through a handler
chosen once per type.

Cycles are found without paying for them on every node: the walk starts
with a step budget and no bookkeeping. An acyclic value almost always fits;
a cyclic one never ends, so once the budget is spent the walk carries on in
*checked* mode, tracking the objects it enters from then on. Every object
entered after the switch whose encoding never ends is met again inside
itself, so a cycle is reported soon after the switch, and nothing already
encoded is redone.
"""

from __future__ import annotations

import marshal
import sys
from typing import Any

from xxhash import xxh3_128_digest, xxh3_128_hexdigest

from stepcache.errors import UnfingerprintableError
from stepcache.fingerprint import _tokens as tk
from stepcache.fingerprint._resolve import Tables, tables_for
from stepcache.fingerprint._tokens import LEAVES, Ctl, Unfingerprintable

# Steps (popped stack items) before a walk is suspected of going round a
# cycle. An IR of 10,000 nodes takes about 50,000. Past the budget a walk
# costs about three times as much per container; below it, a cycle costs
# this many steps (a fraction of a second) before it is reported.
BUDGET = 500_000

_STOP = Ctl(Ctl.EXIT, None)

_CYCLE_FIX = (
    "A key cannot be computed for a value with a reference cycle: break the cycle, "
    "or give the class holding the back-reference a __stepcache_fingerprint__(self) "
    "method that leaves it out"
)


def _control(op: Ctl, out: list[Any], outs: list[list[Any]], active: set[int]) -> list[Any]:
    """Run one control instruction; return the token list to continue writing to."""
    kind = op.kind
    if kind == Ctl.BEGIN:
        outs.append(out)
        return []
    if kind == Ctl.END:
        op.data.append(xxh3_128_digest(marshal.dumps(out, 2)))
        return outs.pop()
    if kind == Ctl.FINISH:
        op.data.sort()
        out.append(b"".join(op.data))
        return out
    active.discard(id(op.data))
    return out


def encode(root: Any, tables: Tables) -> bytes:
    """Return the canonical serialised token stream of ``root``.

    Raises :class:`Unfingerprintable` for a value without a stable key.
    """
    out: list[Any] = [tk.VERSION]
    outs: list[list[Any]] = []
    stack: list[Any] = [_STOP, root]
    active: set[int] = set()
    append, pop, push, extend = out.append, stack.pop, stack.append, stack.extend
    get_handler, get_dataclass = tables.handlers.get, tables.dataclasses.get
    tuple_tag, list_tag = tk.TUPLE, tk.LIST
    checked = False
    for limit in (BUDGET, sys.maxsize):
        for _ in range(limit):
            obj = pop()
            cls = type(obj)
            if cls in LEAVES:
                append(obj)
                continue
            if checked and cls is not Ctl:
                if id(obj) in active:
                    raise Unfingerprintable(obj, "it contains itself", _CYCLE_FIX)
                active.add(id(obj))
                push(Ctl(Ctl.EXIT, obj))  # popped once everything inside obj is encoded
            if cls is tuple or cls is list:
                append(tuple_tag if cls is tuple else list_tag)
                append(len(obj))
                extend(reversed(obj))
                continue
            info = get_dataclass(cls)
            if info is not None:
                append(info.tag)
                if info.arity > 1:
                    extend(info.getter(obj))
                elif info.arity:
                    push(info.getter(obj))
                continue
            handler = get_handler(cls)
            if handler is not None:
                handler(obj, out, stack)
            elif cls is Ctl:
                if obj is _STOP:
                    return marshal.dumps(out, 2)
                out = _control(obj, out, outs, active)
                append = out.append
            else:
                tables.resolve(cls)(obj, out, stack)
        checked = True
    raise AssertionError("unreachable: the second pass has no step limit")


def fingerprint(obj: Any, *, mode: str = "strict") -> str:
    """Return a 128-bit key (32 lowercase hex digits) for ``obj``, stable across processes.

    Equal values get equal keys whatever the process, host, PYTHONHASHSEED,
    dict insertion order or set iteration order; values of different types
    (``1``, ``True``, ``1.0``, ``"1"``) get different keys. ``mode`` decides
    how functions count: ``"strict"`` by module and qualified name,
    ``"lenient"`` by code. See :mod:`stepcache.fingerprint` for every rule.

    >>> from stepcache.fingerprint import fingerprint
    >>> fingerprint({"a": 1, "b": 2}) == fingerprint({"b": 2, "a": 1})
    True
    >>> fingerprint((1, 2)) == fingerprint([1, 2])
    False
    >>> len(fingerprint(None))
    32

    Raises :class:`~stepcache.errors.UnfingerprintableError` (a ``TypeError``)
    for a value that could only be keyed by its address, such as a lock.
    """
    tables = tables_for(mode)
    try:
        data = encode(obj, tables)
    except Unfingerprintable as exc:
        raise _locate(exc, obj) from exc.__cause__
    return xxh3_128_hexdigest(data)


def _locate(exc: Unfingerprintable, root: Any) -> UnfingerprintableError:
    # Paths cost on every node, so they are searched for only after a failure.
    from stepcache.fingerprint._paths import locate

    path = locate(root, exc.obj)
    return UnfingerprintableError(tk.describe_failure(type(exc.obj), exc.reason, path, exc.fix))
