"""fingerprint: functions in both modes, hooks, the registry and the reduce fallback."""

from __future__ import annotations

import functools
import math
import operator
import pickle
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from stepcache.errors import StepCacheError, UnfingerprintableError
from stepcache.fingerprint import _registry as registry
from stepcache.fingerprint import fingerprint, register_fingerprint


def double(x: int) -> int:
    return x * 2


def triple(x: int) -> int:
    return x * 3


def make_adder(k: int) -> Callable[[int], int]:
    def add(x: int) -> int:
        return x + k

    return add


def make_factorial() -> Callable[[int], int]:
    def fact(n: int) -> int:
        return 1 if n <= 1 else n * fact(n - 1)

    return fact


@pytest.fixture
def registrations() -> Iterator[list[type]]:
    """Types registered by a test; unregistered afterwards."""
    made: list[type] = []
    yield made
    for cls in made:
        registry.unregister_fingerprint(cls)


def test_strict_functions_are_keyed_by_module_and_name() -> None:
    assert fingerprint(double) == fingerprint(double)
    assert fingerprint(double) != fingerprint(triple)


def test_strict_mode_ignores_the_body_of_a_named_function() -> None:
    strict, lenient = fingerprint(double), fingerprint(double, mode="lenient")
    original = double.__code__
    try:
        double.__code__ = triple.__code__
        edited = fingerprint(double), fingerprint(double, mode="lenient")
    finally:
        double.__code__ = original
    assert edited[0] == strict
    assert edited[1] != lenient


def test_lenient_functions_are_keyed_by_code_not_name() -> None:
    def twice(x: int) -> int:
        return x * 2

    def also_twice(x: int) -> int:
        return x * 2

    assert fingerprint(twice, mode="lenient") == fingerprint(also_twice, mode="lenient")
    assert fingerprint(double, mode="lenient") != fingerprint(triple, mode="lenient")


def test_lenient_mode_covers_defaults_and_closures() -> None:
    def scaled(x: int, factor: int = 2) -> int:
        return x * factor

    def rescaled(x: int, factor: int = 3) -> int:
        return x * factor

    assert fingerprint(scaled, mode="lenient") != fingerprint(rescaled, mode="lenient")
    assert fingerprint(make_adder(1), mode="lenient") != fingerprint(make_adder(2), mode="lenient")
    assert fingerprint(make_adder(1), mode="lenient") == fingerprint(make_adder(1), mode="lenient")


def test_lenient_mode_follows_nested_code_objects() -> None:
    def outer_a() -> Callable[[], int]:
        return lambda: 1

    def outer_b() -> Callable[[], int]:
        return lambda: 2

    assert fingerprint(outer_a, mode="lenient") != fingerprint(outer_b, mode="lenient")


@pytest.mark.parametrize("mode", ["strict", "lenient"])
def test_two_lambdas_in_one_module_differ(mode: str) -> None:
    first = lambda x: x + 1  # noqa: E731
    second = lambda x: x + 2  # noqa: E731
    assert fingerprint(first, mode=mode) != fingerprint(second, mode=mode)
    assert fingerprint(first, mode=mode) == fingerprint(first, mode=mode)


def test_strict_local_functions_include_their_closure() -> None:
    assert fingerprint(make_adder(1)) != fingerprint(make_adder(2))
    assert fingerprint(make_adder(1)) == fingerprint(make_adder(1))


@pytest.mark.parametrize("mode", ["strict", "lenient"])
def test_recursive_local_function_is_not_a_cycle(mode: str) -> None:
    assert fingerprint(make_factorial(), mode=mode) == fingerprint(make_factorial(), mode=mode)


def test_builtins_and_bound_methods() -> None:
    assert fingerprint(math.sqrt) != fingerprint(math.floor)
    assert fingerprint(len) == fingerprint(len)
    assert fingerprint([1].append) == fingerprint([1].append)
    assert fingerprint([1].append) != fingerprint([2].append)
    assert fingerprint(str.upper) != fingerprint(str.lower)


class Scaler:
    def __init__(self, factor: int) -> None:
        self.factor = factor

    def apply(self, x: int) -> int:
        return x * self.factor


def test_bound_methods_are_keyed_by_function_and_self() -> None:
    assert fingerprint(Scaler(2).apply) == fingerprint(Scaler(2).apply)
    assert fingerprint(Scaler(2).apply) != fingerprint(Scaler(3).apply)
    assert fingerprint(Scaler(2).apply) != fingerprint(Scaler.apply)


def test_partials_are_keyed_by_function_arguments_and_keywords() -> None:
    base = functools.partial(int, base=2)
    assert fingerprint(base) == fingerprint(functools.partial(int, base=2))
    assert fingerprint(base) != fingerprint(functools.partial(int, base=8))
    assert fingerprint(functools.partial(operator.add, 1)) != fingerprint(
        functools.partial(operator.add, 2)
    )
    assert fingerprint(functools.partial(double)) != fingerprint(double)


class Hooked:
    def __init__(self, value: int, noise: object) -> None:
        self.value = value
        self.noise = noise

    def __stepcache_fingerprint__(self) -> Any:
        return self.value


class HookedSub(Hooked):
    pass


def test_hook_method_gives_a_stand_in_tagged_by_type() -> None:
    assert fingerprint(Hooked(1, threading.Lock())) == fingerprint(Hooked(1, object()))
    assert fingerprint(Hooked(1, None)) != fingerprint(Hooked(2, None))
    assert fingerprint(Hooked(1, None)) != fingerprint(1)
    assert fingerprint(HookedSub(1, None)) != fingerprint(Hooked(1, None))


class Opaque:
    def __init__(self, name: str) -> None:
        self.name = name
        self.lock = threading.Lock()


class OpaqueSub(Opaque):
    pass


def test_registry_applies_to_the_type_and_its_subclasses(registrations: list[type]) -> None:
    with pytest.raises(UnfingerprintableError):
        fingerprint(Opaque("a"))
    register_fingerprint(Opaque, operator.attrgetter("name"))
    registrations.append(Opaque)
    assert fingerprint(Opaque("a")) == fingerprint(Opaque("a"))
    assert fingerprint(Opaque("a")) != fingerprint(Opaque("b"))
    assert fingerprint(Opaque("a")) != fingerprint("a")
    assert fingerprint(OpaqueSub("a")) == fingerprint(OpaqueSub("a"))
    assert fingerprint(OpaqueSub("a")) != fingerprint(Opaque("a"))


def test_registration_replaces_and_unregistration_restores(registrations: list[type]) -> None:
    register_fingerprint(Opaque, lambda o: 1)
    registrations.append(Opaque)
    first = fingerprint(Opaque("a"))
    register_fingerprint(Opaque, lambda o: 2)
    assert fingerprint(Opaque("a")) != first
    registry.unregister_fingerprint(Opaque)
    with pytest.raises(UnfingerprintableError):
        fingerprint(Opaque("a"))


def test_hook_method_wins_over_a_registration(registrations: list[type]) -> None:
    before = fingerprint(Hooked(1, None))
    register_fingerprint(Hooked, lambda h: "registered")
    registrations.append(Hooked)
    assert fingerprint(Hooked(1, None)) == before


def test_registering_a_builtin_type_or_a_non_type_is_refused() -> None:
    with pytest.raises(TypeError, match="built-in"):
        register_fingerprint(int, str)
    with pytest.raises(TypeError):
        register_fingerprint("Opaque", str)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        register_fingerprint(Opaque, "name")  # type: ignore[arg-type]


def test_hook_returning_the_object_itself_is_refused() -> None:
    class Selfish:
        def __stepcache_fingerprint__(self) -> Any:
            return self

    with pytest.raises(UnfingerprintableError, match="returned the object itself"):
        fingerprint([Selfish()])


class Plain:
    def __init__(self, a: int, b: list[int]) -> None:
        self.a = a
        self.b = b


class Slotted:
    __slots__ = ("a", "b")

    def __init__(self, a: int, b: int) -> None:
        self.a = a
        self.b = b


def test_reduce_fallback_keys_plain_objects_by_state() -> None:
    assert fingerprint(Plain(1, [2])) == fingerprint(Plain(1, [2]))
    assert fingerprint(Plain(1, [2])) != fingerprint(Plain(1, [3]))
    assert fingerprint(Plain(1, [2])) != fingerprint({"a": 1, "b": [2]})
    assert fingerprint(Slotted(1, 2)) != fingerprint(Slotted(2, 1))
    assert fingerprint(Slotted(1, 2)) == fingerprint(Slotted(1, 2))


def test_reduce_fallback_attribute_order_does_not_matter() -> None:
    first, second = Plain(1, [2]), Plain.__new__(Plain)
    second.b, second.a = [2], 1
    assert fingerprint(first) == fingerprint(second)


def _generator() -> Iterator[int]:
    yield 1


def _open_file() -> Any:
    return open(__file__)  # closed by the test, after use


@pytest.mark.parametrize(
    ("make", "name"),
    [(threading.Lock, "lock"), (_generator, "generator"), (_open_file, "TextIO")],
)
def test_values_only_identified_by_address_are_refused(make: Callable[[], Any], name: str) -> None:
    value = make()
    try:
        with pytest.raises(UnfingerprintableError, match=name) as info:
            fingerprint(value)
    finally:
        getattr(value, "close", lambda: None)()
    message = str(info.value)
    assert "__stepcache_fingerprint__" in message
    assert "register_fingerprint" in message


def test_unfingerprintable_error_is_a_type_error_and_names_the_path() -> None:
    with pytest.raises(TypeError) as info:
        fingerprint({"body": [1, 2, Plain(3, [threading.Lock()])]})
    assert isinstance(info.value, StepCacheError)
    assert "at ['body'][2].b[0]" in str(info.value)


def test_unfingerprintable_error_pickles_to_an_equal_message() -> None:
    with pytest.raises(UnfingerprintableError) as info:
        fingerprint((1, threading.Lock()))
    copy = pickle.loads(pickle.dumps(info.value))
    assert type(copy) is UnfingerprintableError
    assert str(copy) == str(info.value)


def test_object_whose_reduce_is_disabled_is_refused() -> None:
    opaque = object.__new__(type("Opaque", (), {"__reduce_ex__": None}))
    with pytest.raises(UnfingerprintableError, match="at <root>"):
        fingerprint(opaque)
