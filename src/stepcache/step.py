"""Steps: the unit of work a pipeline is made of, and ways to compose them.

A step is any callable taking one input and returning one output. Steps that
carry settings are frozen dataclasses, so their settings are part of their
identity (and of every cache key derived from them) and ``replace()`` makes a
variant::

    >>> import dataclasses, stepcache as sc
    >>> @dataclasses.dataclass(frozen=True)
    ... class Scale(sc.StepBase):
    ...     factor: int = 2
    ...     def __call__(self, inp: int) -> int:
    ...         return inp * self.factor
    >>> Scale().replace(factor=3)(2)
    6
    >>> sc.chain(Scale(), sc.step(str))(21)
    '42'

The steps stepcache makes itself (:func:`step`, :func:`chain`,
:class:`~stepcache.CachedStep`) behave as frozen dataclasses do (fields,
equality, hashing, ``repr``, pickling, ``replace()``, keys) but are plain
classes (:class:`FieldStep`): building a dataclass, and importing
:mod:`dataclasses` with :mod:`inspect`, would cost every ``import stepcache``
a few milliseconds.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar, Protocol, TypeVar, runtime_checkable

from stepcache._record import Record

__all__ = ["Chain", "FieldStep", "FunctionStep", "NamedSteps", "Step", "StepBase", "chain", "step"]

_T = TypeVar("_T")
_S = TypeVar("_S", bound="StepBase")


@runtime_checkable
class Step(Protocol):
    """What a pipeline stage is: ``step(inp) -> out``.

    A step may also offer ``replace(**changes)`` returning a variant with
    some settings changed; :class:`StepBase` provides it for dataclasses.

    >>> import stepcache as sc
    >>> isinstance(sc.step(len), sc.Step)
    True
    """

    def __call__(self, inp: Any, /) -> Any: ...


def _setting_names(obj: object) -> list[str]:
    listed = getattr(type(obj), "__stepcache_fields__", None)
    if listed is not None:
        return list(listed)
    if not hasattr(type(obj), "__dataclass_fields__"):  # dataclasses.is_dataclass
        return []
    import dataclasses  # loaded: obj is a dataclass

    return [f.name for f in dataclasses.fields(obj)]  # type: ignore[arg-type]


class StepBase:
    """Mixin for dataclass steps: ``replace()`` and ``chain()``.

    Subclasses are ``@dataclasses.dataclass(frozen=True)`` classes whose fields
    are the step's settings.

    >>> import dataclasses, stepcache as sc
    >>> @dataclasses.dataclass(frozen=True)
    ... class Add(sc.StepBase):
    ...     n: int = 1
    ...     def __call__(self, inp: int) -> int:
    ...         return inp + self.n
    >>> Add().chain(Add(n=10))(0)
    11
    """

    def replace(self: _S, **changes: Any) -> _S:
        """Return a copy with the named settings changed.

        Raises :class:`TypeError` naming the unknown settings and the known ones.
        """
        known = _setting_names(self)
        unknown = sorted(set(changes) - set(known))
        if unknown:
            raise TypeError(
                f"{type(self).__name__}.replace() got unknown setting(s) "
                f"{', '.join(map(repr, unknown))}; its settings are: {', '.join(known) or 'none'}"
            )
        return self._replaced(changes)

    def _replaced(self: _S, changes: dict[str, Any]) -> _S:
        import dataclasses  # loaded: subclasses are dataclasses

        return dataclasses.replace(self, **changes)  # type: ignore[type-var]

    def chain(self, *others: Callable[[Any], Any]) -> Chain:
        """Return a step that runs this step, then each of ``others`` in turn."""
        first: Callable[[Any], Any] = self  # type: ignore[assignment]  # subclasses are callable
        return chain(first, *others)


def _rebuild(cls: type[FieldStep], values: tuple[Any, ...]) -> FieldStep:
    """Unpickle a :class:`FieldStep`: its fields set as they were, ``__init__`` not run again."""
    obj = cls.__new__(cls)
    obj._set(**dict(zip(cls._fields, values, strict=True)))
    return obj


class FieldStep(Record, StepBase):
    """Base of stepcache's own steps: a frozen value keyed and compared by its fields.

    It behaves as a frozen dataclass would: the fields (``_fields``) are
    compared, hashed, shown by ``repr``, pickled (without running
    ``__init__`` again) and keyed by :func:`~stepcache.fingerprint` exactly
    as a dataclass with those fields is; assigning one raises
    :class:`dataclasses.FrozenInstanceError`; ``replace()`` makes a variant.
    ``dataclasses.fields()`` and ``dataclasses.replace()`` do not apply.
    """

    __slots__ = ()
    #: the fields :func:`~stepcache.fingerprint` keys instances by, as a dataclass's
    __stepcache_fields__: ClassVar[tuple[str, ...]] = ()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls.__stepcache_fields__ = cls._fields
        cls.__match_args__ = cls._fields  # type: ignore[attr-defined,misc]  # as dataclasses have

    def __setattr__(self, name: str, value: object) -> None:
        import dataclasses  # on the error path only

        raise dataclasses.FrozenInstanceError(f"cannot assign to field {name!r}")

    def __delattr__(self, name: str) -> None:
        import dataclasses

        raise dataclasses.FrozenInstanceError(f"cannot delete field {name!r}")

    def __reduce__(self) -> tuple[Any, ...]:
        return _rebuild, (type(self), self._values())

    def _replaced(self: _F, changes: dict[str, Any]) -> _F:
        return type(self)(**{**self.as_dict(), **changes})


_F = TypeVar("_F", bound=FieldStep)


class FunctionStep(FieldStep):
    """A plain function used as a step; made by :func:`step`.

    Its identity (and so its cache key) is the function's module and
    qualified name.
    """

    __slots__ = ("fn",)
    fn: Callable[[Any], Any]

    def __init__(self, fn: Callable[[Any], Any]) -> None:
        self._set(fn=fn)

    def __call__(self, inp: Any, /) -> Any:
        return self.fn(inp)

    @property
    def name(self) -> str:
        """The wrapped function's qualified name."""
        return getattr(self.fn, "__qualname__", type(self.fn).__name__)


def step(fn: Callable[[Any], Any]) -> FunctionStep:
    """Wrap a one-argument function as a :class:`Step`; usable as a decorator.

    >>> import stepcache as sc
    >>> @sc.step
    ... def double(x: int) -> int:
    ...     return 2 * x
    >>> double(4)
    8
    """
    if not callable(fn):
        raise TypeError(f"step() needs a callable, got {type(fn).__name__}")
    return FunctionStep(fn)


class Chain(FieldStep):
    """Steps run one after another, each output feeding the next; made by :func:`chain`."""

    __slots__ = ("steps",)
    steps: tuple[Callable[[Any], Any], ...]

    def __init__(self, steps: tuple[Callable[[Any], Any], ...]) -> None:
        self._set(steps=steps)

    def __call__(self, inp: Any, /) -> Any:
        for s in self.steps:
            inp = s(inp)
        return inp


def chain(*steps: Callable[[Any], Any]) -> Chain:
    """Compose steps left to right; nested chains are flattened.

    >>> import stepcache as sc
    >>> sc.chain(sc.step(abs), sc.step(str))(-3)
    '3'
    """
    flat: list[Callable[[Any], Any]] = []
    for s in steps:
        if not callable(s):
            raise TypeError(f"chain() needs callables, got {type(s).__name__}")
        flat.extend(s.steps if isinstance(s, Chain) else (s,))
    return Chain(tuple(flat))


class NamedSteps(StepBase):
    """A pipeline whose dataclass fields are its steps, run in declaration order.

    Subclass it as a frozen dataclass; a field set to ``None`` is skipped.
    Replace a stage (or a setting of a stage) with ``replace``, the pattern
    compile pipelines use to make variants::

        >>> import dataclasses, stepcache as sc
        >>> @dataclasses.dataclass(frozen=True)
        ... class Pipeline(sc.NamedSteps):
        ...     parse: sc.Step = sc.step(int)
        ...     render: sc.Step = sc.step(str)
        >>> Pipeline()("0042")
        '42'
        >>> Pipeline().replace(render=sc.step(float))("7")
        7.0
    """

    def __call__(self, inp: Any, /) -> Any:
        names = _setting_names(self)
        if not names and not hasattr(type(self), "__dataclass_fields__"):
            raise TypeError(f"{type(self).__name__} must be a @dataclasses.dataclass")
        for name in names:
            stage = getattr(self, name)
            if stage is not None:
                inp = stage(inp)
        return inp
