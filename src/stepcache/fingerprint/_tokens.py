"""The token grammar shared by the encoder and its handlers.

A value is encoded as a flat list of *tokens*, serialised once at the end
with ``marshal.dumps(tokens, 2)``. Version 2 of marshal is used on purpose:
it writes every object in full (no back-references keyed on identity or
reference counts, no flag for interned strings), little-endian, with a type
byte and a length prefix per object, so equal tokens always give equal bytes.

Tokens are either *raw leaves* -- objects of exactly ``str``, ``int``,
``float``, ``bool``, ``NoneType`` or ``complex``, which marshal tells apart by
type byte -- or ``bytes``. A bytes token is a *tag* saying what follows,
unless the tag before it announces data (``b"bytes"`` and then the bytes).
Each tag fixes how many tokens and values follow, so the stream parses one
way only and no two values share an encoding:

* fixed tags are short ASCII words without a colon (``b"tuple"``, then the
  length, then each item);
* per-type tags are ``b"<family>:"`` followed by a 128-bit digest of the
  marshalled names (module, qualname and, for dataclasses, field names),
  built once per type;
* unordered containers are a tag, the size, and one bytes token joining the
  sorted 16-byte digests of each element's own token stream.
"""

from __future__ import annotations

import functools
import marshal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from xxhash import xxh3_128_digest

from stepcache.errors import UnfingerprintableError

#: Handler signature: ``handler(obj, out, stack)`` appends tokens to ``out``
#: and pushes child values onto ``stack`` in reverse order (it is a LIFO).
Handler = Callable[[Any, "list[Any]", "list[Any]"], None]

LEAVES: frozenset[type] = frozenset({str, int, float, bool, type(None), complex})

VERSION = b"stepcache-fingerprint-1"

TUPLE = b"tuple"
LIST = b"list"
DICT = b"dict"
SET = b"set"
FROZENSET = b"frozenset"
BYTES = b"bytes"
BYTEARRAY = b"bytearray"
MEMORYVIEW = b"memoryview"
ELLIPSIS = b"ellipsis"
NOT_IMPLEMENTED = b"notimplemented"
RANGE = b"range"
SLICE = b"slice"
TYPE = b"type"
MODULE = b"module"
PATH = b"path"
CODE = b"code"
FUNCTION = b"function"
LOCAL_FUNCTION = b"localfunction"
FUNCTION_CODE = b"functioncode"
BUILTIN = b"builtin"
BOUND_BUILTIN = b"boundbuiltin"
METHOD = b"method"
PARTIAL = b"partial"
EMPTY_CELL = b"emptycell"
SELF_CELL = b"selfcell"
REF = b"ref"
REDUCE = b"reduce"
GLOBAL = b"global"
ARRAY = b"ndarray"
OBJECT_ARRAY = b"objectndarray"
NUMPY_SCALAR = b"npscalar"
DTYPE = b"dtype"
STRUCTURED_DTYPE = b"structdtype"


def qualified_name(obj: Any) -> tuple[Any, Any]:
    """Return ``(module, qualname)`` of a class or function, ``None`` where missing.

    A class or function of the script being run is named by the module the
    script is when imported (:func:`module_name`), not ``__main__``.
    """
    return module_name(getattr(obj, "__module__", None)), getattr(obj, "__qualname__", None)


def module_name(name: Any) -> Any:
    """The importable name of module ``name``: ``__main__`` resolved, others unchanged.

    ``python mypipe.py`` runs ``mypipe`` as ``__main__`` (and spawned
    workers as ``__mp_main__``); keys must be those of ``import mypipe``, so
    that a pipeline run as a script and the same pipeline imported (by
    pytest, say) share their entries.

    >>> module_name("stepcache.step"), module_name(None)
    ('stepcache.step', None)
    """
    if name not in ("__main__", "__mp_main__"):
        return name
    module = sys.modules.get(name)
    spec = getattr(module, "__spec__", None)
    spec_name = getattr(spec, "name", None)
    if isinstance(spec_name, str) and spec_name not in ("__main__", "__mp_main__"):
        return spec_name  # python -m pkg.mod
    path = getattr(module, "__file__", None)
    return _file_module(path) if isinstance(path, str) else name


@functools.lru_cache(maxsize=16)
def _file_module(path: str) -> str:
    """``pkg.sub.mod`` for ``.../pkg/sub/mod.py``: up through the directories that are packages."""
    file = Path(path).resolve()
    parts = [file.stem]
    folder = file.parent
    while (folder / "__init__.py").is_file() and folder.parent != folder:
        parts.insert(0, folder.name)
        folder = folder.parent
    return ".".join(parts)


def type_tag(family: bytes, cls: type, *extra: Any) -> bytes:
    """Build the per-type tag: ``family:`` + digest of module, qualname and extras.

    The digest (rather than the names) keeps tags short: a tag is repeated
    for every node of its type, and serialising it is a measurable share of
    the time for IR trees.
    """
    return family + b":" + xxh3_128_digest(marshal.dumps((*qualified_name(cls), *extra), 2))


def type_label(cls: type) -> str:
    """Return ``module.qualname`` of a type, for messages."""
    module, qualname = qualified_name(cls)
    return qualname if module in (None, "builtins") else f"{module}.{qualname}"


class Tokens:
    """A value whose encoding is a fixed token sequence (markers inside stand-ins).

    Used where a handler needs to place a non-value, such as "this closure
    cell is empty", among values it pushes for the walker to encode.
    """

    __slots__ = ("tokens",)

    def __init__(self, *tokens: Any) -> None:
        self.tokens = tokens


class Ctl:
    """A control instruction on the walker's stack (never a user value).

    ``BEGIN`` starts a sub-stream for one element of an unordered container,
    ``END`` digests it into ``data`` (a list of digests), ``FINISH`` sorts
    those digests and emits them, ``EXIT`` leaves an object whose address was
    being tracked for cycles (``data`` is that object).
    """

    __slots__ = ("data", "kind")

    BEGIN = 0
    END = 1
    FINISH = 2
    EXIT = 3

    def __init__(self, kind: int, data: Any) -> None:
        self.kind = kind
        self.data = data


BEGIN = Ctl(Ctl.BEGIN, None)


class Unfingerprintable(UnfingerprintableError):
    """An :class:`UnfingerprintableError` that remembers the offending object.

    The walker keeps no paths (they cost time on every node), so the top
    level uses ``obj`` to find where in the value the failure happened.
    ``fix`` replaces the usual advice (hook or registration) when given.
    """

    def __init__(self, obj: Any, reason: str, fix: str | None = None) -> None:
        super().__init__(describe_failure(type(obj), reason, fix=fix))
        self.obj = obj
        self.reason = reason
        self.fix = fix

    def __reduce__(self) -> tuple[type[UnfingerprintableError], tuple[str]]:
        # Unpickles as the public class: the offending object may not pickle.
        return (UnfingerprintableError, (str(self),))


def describe_failure(
    cls: type, reason: str, path: str | None = None, fix: str | None = None
) -> str:
    """Build the user-facing message: what failed, where, and how to fix it."""
    where = "" if path is None else f" at {path or '<root>'}"
    name = type_label(cls)
    if fix is None:
        fix = (
            f"Leave it out (a dataclass field made with stepcache.fingerprint.field("
            f"fingerprint=False) is skipped), give {name} a __stepcache_fingerprint__(self) "
            f"method returning a stable stand-in value, or call "
            f"stepcache.register_fingerprint({name}, fn)"
        )
    return f"cannot fingerprint {type_label(cls)} object{where}: {reason}. {fix}"
