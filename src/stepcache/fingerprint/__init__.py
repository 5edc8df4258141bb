"""Stable keys for Python values: canonical, type-tagged encoding hashed with XXH3-128.

``fingerprint(value)`` returns 32 hex digits that depend only on the value,
never on ``hash()``, ``id()``, ``repr()`` of unknown objects,
PYTHONHASHSEED, dict insertion order, set iteration order or the process.

Rules, per kind of value:

* ``None``, ``bool``, ``int`` (any size), ``float`` (by bit pattern: ``-0.0``
  differs from ``0.0``, each NaN payload is itself), ``complex``, ``str``
  (UTF-8, lone surrogates allowed) and ``bytes`` are tagged by type, so
  ``1``, ``True``, ``1.0``, ``"1"`` and ``b"1"`` all differ; ``bytearray`` and
  ``memoryview`` (format, shape, contents) are tagged apart from ``bytes``.
  Everything is length-prefixed: ``("ab", "c")`` differs from ``("a", "bc")``.
* ``tuple`` and ``list`` differ; both are ordered. ``dict``, ``set`` and
  ``frozenset`` are unordered (each element is digested on its own and the
  digests sorted); a set differs from the equal frozenset.
* dataclasses: by type (module and qualified name), then each field's name
  and value in declaration order; a field made with
  ``field(fingerprint=False)`` (metadata ``{"stepcache.fingerprint": False}``)
  is left out. The steps :func:`stepcache.step` and :func:`stepcache.chain`
  make are keyed the same way (by their fields ``fn`` and ``steps``), though
  they are not dataclasses. Named tuples: type, field names, items.
* enums: type and member name. Paths (``pathlib.PurePath`` and subclasses):
  flavour and string. Classes: module and qualified name. Modules: name.
  ``Ellipsis``, ``NotImplemented``, ``range`` and ``slice`` are supported.
* numpy: arrays by dtype (``dtype.str``, plus ``descr`` when structured),
  shape and contents in C order, so a strided view equals its copy; object
  arrays by their elements; scalars by dtype and bytes; dtypes themselves.
  numpy is never imported to do this.
* functions: ``mode="strict"`` (default) by module and qualified name, and
  by code too when the name is not importable (lambdas, nested functions);
  ``mode="lenient"`` by code: bytecode, constants, names, defaults and closure
  contents. Bound methods: function and ``self``. ``functools.partial``:
  function, arguments, keywords. Built-ins by name.
* custom types: a ``__stepcache_fingerprint__(self)`` method, or a function
  given to :func:`register_fingerprint`, returns a stand-in value; it is
  encoded under a tag naming the object's type. The method wins when both
  exist, and registrations apply to subclasses.
* anything else: what ``__reduce_ex__(4)`` returns, as pickle would use it.
  A value pickle refuses (locks, generators, open files, sockets) would only
  be identified by its address, so it raises
  :class:`~stepcache.errors.UnfingerprintableError`, a ``TypeError`` that
  names the type and where in the value it sits. So does a value that
  contains itself.

Containers are walked with an explicit stack, so depth is limited only by
memory. Stand-ins and reduce results are what is hashed: a hook that
returns something different on each call gives a different key each time.

:func:`manifest` records a digest per path for the top levels of a value
(``body[3].op``, ``params['alpha']``) and :func:`diff_manifests` names the
paths that differ between two manifests, to explain why a key changed.

>>> from stepcache.fingerprint import fingerprint
>>> fingerprint({"alpha": 0.5, "tags": {"x", "y"}}) == fingerprint(
...     {"tags": {"y", "x"}, "alpha": 0.5})
True
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from stepcache.fingerprint._encode import fingerprint
from stepcache.fingerprint._registry import register_fingerprint
from stepcache.fingerprint._resolve import METADATA_KEY

if TYPE_CHECKING:
    from stepcache.fingerprint._manifest import diff_manifests, manifest

__all__ = [
    "diff_manifests",
    "field",
    "fingerprint",
    "manifest",
    "register_fingerprint",
]


def field(*, fingerprint: bool = True, **kwargs: Any) -> Any:
    """``dataclasses.field`` with one more option: ``fingerprint=False`` leaves it out of keys.

    Use it for fields that do not change the result, such as caches, loggers
    or callbacks. The opt-out is stored as the field metadata
    ``{"stepcache.fingerprint": False}``, which is honoured when set directly.
    Returns a :class:`dataclasses.Field` (typed ``Any`` so it can be the
    default of a field of any type, as with ``dataclasses.field``).

    >>> import dataclasses
    >>> from stepcache.fingerprint import field, fingerprint
    >>> @dataclasses.dataclass
    ... class Options:
    ...     level: int
    ...     log: list[str] = field(fingerprint=False, default_factory=list)
    >>> fingerprint(Options(2, ["a"])) == fingerprint(Options(2, []))
    True
    """
    import dataclasses  # here: a program defining dataclasses has imported it anyway

    if not fingerprint:
        metadata = dict(kwargs.pop("metadata", None) or {})
        metadata[METADATA_KEY] = False
        kwargs["metadata"] = metadata
    return dataclasses.field(**kwargs)


def __getattr__(name: str) -> object:
    # Manifests serve explanations only: loaded on first use, not with every key.
    if name in ("diff_manifests", "manifest"):
        from stepcache.fingerprint import _manifest

        value = getattr(_manifest, name)
        globals()[name] = value  # found directly from now on: every miss asks for it
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
