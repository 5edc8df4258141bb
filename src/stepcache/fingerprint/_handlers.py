"""Encoders for built-in and standard-library values, and the ``__reduce_ex__`` fallback.

Every handler has the signature ``handler(obj, out, stack)``: it appends
tokens to ``out`` and pushes the values still to encode onto ``stack`` in
reverse order. Handlers never recurse, so nesting depth is unbounded.
"""

from __future__ import annotations

import collections
import functools
import marshal
import pathlib
import types
from collections.abc import Callable
from typing import Any

from xxhash import xxh3_128_digest

from stepcache.fingerprint import _tokens as tk
from stepcache.fingerprint._tokens import LEAVES, Ctl, Handler, Tokens, Unfingerprintable

_BEGIN = tk.BEGIN


def leaf_digest(value: Any) -> bytes:
    """Digest of a raw leaf's one-token stream, as :func:`push_unordered` would make it."""
    return xxh3_128_digest(marshal.dumps([value], 2))


def push_unordered(tag: bytes, elements: Any, size: int, out: list[Any], stack: list[Any]) -> None:
    """Encode an unordered collection as its size and its elements' sorted digests.

    Each element is encoded into its own sub-stream and digested, so the
    result does not depend on iteration order (which for sets of strings
    changes with PYTHONHASHSEED). Leaves are digested on the spot; other
    elements are walked between ``BEGIN`` and ``END`` instructions.
    """
    digests: list[bytes] = []
    pending: list[Any] = []
    for element in elements:
        if type(element) in LEAVES:
            digests.append(leaf_digest(element))
        else:
            pending.append(element)
    _finish_unordered(tag, size, digests, pending, out, stack)


def _finish_unordered(
    tag: bytes,
    size: int,
    digests: list[bytes],
    pending: list[Any],
    out: list[Any],
    stack: list[Any],
) -> None:
    out.append(tag)
    out.append(size)
    if not pending:  # all leaves: no sub-streams, no control instructions
        digests.sort()
        out.append(b"".join(digests))
        return
    stack.append(Ctl(Ctl.FINISH, digests))
    end = Ctl(Ctl.END, digests)
    for element in pending:
        stack += (end, element, _BEGIN)


def encode_dict(obj: dict[Any, Any], out: list[Any], stack: list[Any]) -> None:
    """Dicts: the unordered collection of their ``(key, value)`` items."""
    digests: list[bytes] = []
    pending: list[Any] = []
    for item in obj.items():
        key, value = item
        if type(key) in LEAVES and type(value) in LEAVES:
            # The tokens the walker would produce for the item tuple.
            digests.append(xxh3_128_digest(marshal.dumps([tk.TUPLE, 2, key, value], 2)))
        else:
            pending.append(item)
    _finish_unordered(tk.DICT, len(obj), digests, pending, out, stack)


def encode_set(obj: set[Any], out: list[Any], stack: list[Any]) -> None:
    """Sets: order-independent, tagged apart from frozensets."""
    push_unordered(tk.SET, obj, len(obj), out, stack)


def encode_frozenset(obj: frozenset[Any], out: list[Any], stack: list[Any]) -> None:
    """Frozensets: order-independent, tagged apart from sets."""
    push_unordered(tk.FROZENSET, obj, len(obj), out, stack)


def encode_bytes(obj: bytes, out: list[Any], stack: list[Any]) -> None:
    """Bytes: tag, then the bytes (a bytes token alone would read as a tag)."""
    out.append(tk.BYTES)
    out.append(obj)


def encode_bytearray(obj: bytearray, out: list[Any], stack: list[Any]) -> None:
    """Bytearrays: like bytes under their own tag; copied so later mutation cannot leak in."""
    out.append(tk.BYTEARRAY)
    out.append(bytes(obj))


def encode_memoryview(obj: memoryview, out: list[Any], stack: list[Any]) -> None:
    """Memoryviews: item format, shape, and contents in C order."""
    out += (tk.MEMORYVIEW, obj.format, obj.ndim, *(obj.shape or ()), obj.tobytes())


def encode_range(obj: range, out: list[Any], stack: list[Any]) -> None:
    """Ranges: start, stop, step (all plain ints)."""
    out += (tk.RANGE, obj.start, obj.stop, obj.step)


def encode_slice(obj: slice, out: list[Any], stack: list[Any]) -> None:
    """Slices: start, stop, step, each any value."""
    out.append(tk.SLICE)
    stack += (obj.step, obj.stop, obj.start)


def encode_type(obj: type, out: list[Any], stack: list[Any]) -> None:
    """Classes: by module and qualified name, never by address."""
    module, qualname = tk.qualified_name(obj)
    out += (tk.TYPE, module, qualname)


def encode_module(obj: types.ModuleType, out: list[Any], stack: list[Any]) -> None:
    """Modules: by name."""
    out += (tk.MODULE, obj.__name__)


def encode_path(obj: pathlib.PurePath, out: list[Any], stack: list[Any]) -> None:
    """Paths: flavour and string form (a Path equals the PurePath it compares equal to)."""
    flavour = "windows" if isinstance(obj, pathlib.PureWindowsPath) else "posix"
    out += (tk.PATH, flavour, str(obj))


def encode_partial(obj: functools.partial[Any], out: list[Any], stack: list[Any]) -> None:
    """functools.partial: the function, the bound positional and keyword arguments."""
    out.append(tk.PARTIAL)
    stack += (obj.keywords, obj.args, obj.func)


def encode_tokens(obj: Tokens, out: list[Any], stack: list[Any]) -> None:
    """Internal markers: their fixed tokens."""
    out.extend(obj.tokens)


def _constant(tag: bytes) -> Handler:
    def encode(obj: Any, out: list[Any], stack: list[Any]) -> None:
        out.append(tag)

    return encode


#: Handlers for exact types, shared by both modes (function types are added per mode;
#: tuples, lists, raw leaves and dataclasses are encoded inline by the walker).
EXACT: dict[type, Handler] = {
    dict: encode_dict,
    set: encode_set,
    frozenset: encode_frozenset,
    bytes: encode_bytes,
    bytearray: encode_bytearray,
    memoryview: encode_memoryview,
    range: encode_range,
    slice: encode_slice,
    type: encode_type,
    types.ModuleType: encode_module,
    functools.partial: encode_partial,
    type(Ellipsis): _constant(tk.ELLIPSIS),
    type(NotImplemented): _constant(tk.NOT_IMPLEMENTED),
    Tokens: encode_tokens,
}


def enum_handler(cls: type) -> Handler:
    """Enum members: type and member name (value only for nameless flag combinations)."""
    by_name = tk.type_tag(b"enum", cls)
    by_value = tk.type_tag(b"enumvalue", cls)

    def encode(obj: Any, out: list[Any], stack: list[Any]) -> None:
        name = obj._name_
        if type(name) is str:
            out.append(by_name)
            out.append(name)
        else:
            out.append(by_value)
            stack.append(obj._value_)

    return encode


def namedtuple_handler(cls: type) -> Handler:
    """Named tuples: type, field names and elements in order."""
    tag = tk.type_tag(b"namedtuple", cls, tuple(cls._fields))  # type: ignore[attr-defined]

    def encode(obj: Any, out: list[Any], stack: list[Any]) -> None:
        out.append(tag)
        out.append(len(obj))
        stack.extend(reversed(obj))

    return encode


_SELF_FIX = "Return a stand-in instead, such as a tuple of the attributes that define the object"


def standin_handler(cls: type, make: Callable[[Any], Any]) -> Handler:
    """Objects with a hook: the stand-in value under a tag naming the object's type."""
    tag = tk.type_tag(b"standin", cls)

    def encode(obj: Any, out: list[Any], stack: list[Any]) -> None:
        standin = make(obj)
        if standin is obj:
            raise Unfingerprintable(
                obj, "its fingerprint hook returned the object itself", _SELF_FIX
            )
        out.append(tag)
        stack.append(standin)

    return encode


def _callable_ref(func: Any) -> Any:
    # Reconstructors are identified by name in both modes: their code is the
    # library's business, and copyreg.__newobj__ by code would be noise.
    module, qualname = tk.qualified_name(func)
    named = (type, types.FunctionType, types.BuiltinFunctionType)
    if isinstance(qualname, str) and isinstance(func, named):
        return Tokens(tk.REF, module, qualname)
    return func


def encode_reduce(obj: Any, out: list[Any], stack: list[Any]) -> None:
    """Anything else: what ``__reduce_ex__(4)`` says rebuilds it, as pickle would.

    A type that cannot be pickled (locks, generators, files, sockets) can
    only be told apart by address, so it is refused instead of keyed by ``id``.
    """
    try:
        reduced = obj.__reduce_ex__(4)
    except Exception as exc:
        raise Unfingerprintable(obj, f"it cannot be pickled ({exc})") from exc
    if isinstance(reduced, str):
        module = getattr(obj, "__module__", None)
        module = module if isinstance(module, str) else type(obj).__module__
        out += (tk.GLOBAL, tk.module_name(module), reduced)
        return
    if not isinstance(reduced, tuple) or not 2 <= len(reduced) <= 6:
        raise Unfingerprintable(obj, "its __reduce_ex__ returned neither a string nor a tuple")
    func, args, state, listitems, dictitems, setter = reduced + (None,) * (6 - len(reduced))
    if listitems is not None:
        listitems = list(listitems)
    if dictitems is not None:
        ordered = not isinstance(obj, dict) or isinstance(obj, collections.OrderedDict)
        dictitems = list(dictitems) if ordered else dict(dictitems)
    out.append(tk.REDUCE)
    parts = (_callable_ref(func), args, state, listitems, dictitems, _callable_ref(setter))
    stack.extend(reversed(parts))
