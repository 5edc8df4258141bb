"""``Record``: the base of the small immutable values every store returns.

A frozen dataclass builds its methods from source text when its module is
imported (about half a millisecond per class), and ``import stepcache``
would pay that for values most processes never look at. A ``Record``
subclass lists its fields in ``__slots__``, sets them in a plain
``__init__`` and gets comparison, hashing, ``repr``, pickling and
immutability from here.

>>> class Point(Record):
...     __slots__ = ("x", "y")
...     def __init__(self, x: int, y: int = 0) -> None:
...         self._set(x=x, y=y)
>>> Point(1) == Point(1, 0), Point(1, 2)
(True, Point(x=1, y=2))

A class whose slots hold more than its fields (or that keeps caches in a
``__dict__``) names its fields in ``_fields``; subclasses inherit them.
"""

from __future__ import annotations

from typing import Any, ClassVar

__all__ = ["Record"]


class Record:
    """Immutable value whose fields are its ``__slots__`` (or ``_fields``), in order."""

    __slots__: tuple[str, ...] = ()
    #: the field names, in order: those given, else the declaring class's own ``__slots__``
    _fields: ClassVar[tuple[str, ...]] = ()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "_fields" not in cls.__dict__ and cls.__dict__.get("__slots__"):
            cls._fields = tuple(cls.__dict__["__slots__"])

    def _set(self, **fields: Any) -> None:
        for name, value in fields.items():
            object.__setattr__(self, name, value)

    def _values(self) -> tuple[Any, ...]:
        return tuple(getattr(self, name) for name in self._fields)

    def as_dict(self) -> dict[str, Any]:
        """The fields as a dict, in order (not recursive)."""
        return {name: getattr(self, name) for name in self._fields}

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        assert isinstance(other, Record)
        return self._values() == other._values()

    def __hash__(self) -> int:
        return hash(self._values())

    def __repr__(self) -> str:
        fields = ", ".join(f"{name}={getattr(self, name)!r}" for name in self._fields)
        return f"{type(self).__qualname__}({fields})"

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"cannot assign to field {name!r} of {type(self).__name__}")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"cannot delete field {name!r} of {type(self).__name__}")

    def __reduce__(self) -> tuple[type[Record], tuple[Any, ...]]:
        # The default slot-state restore assigns attributes, which this class refuses.
        return type(self), self._values()
