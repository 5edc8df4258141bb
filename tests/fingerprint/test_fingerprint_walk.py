"""fingerprint: deep values need no recursion; cycles are errors, shared subtrees are not."""

from __future__ import annotations

import dataclasses
import threading
from typing import Any

import pytest

from stepcache.errors import UnfingerprintableError
from stepcache.fingerprint import _encode, fingerprint

DEPTH = 100_000


@dataclasses.dataclass(frozen=True)
class Link:
    value: int
    next: Any = None


@dataclasses.dataclass
class Mutable:
    name: str
    child: Any = None


def chain_of(wrap: Any, depth: int = DEPTH, start: Any = 0) -> Any:
    value = start
    for _ in range(depth):
        value = wrap(value)
    return value


@pytest.mark.parametrize(
    ("wrap", "depth"),
    [
        (lambda v: [v], DEPTH),
        (lambda v: (v,), DEPTH),
        (lambda v: Link(1, v), DEPTH),
        # Unordered containers digest each level separately: slower, so less deep.
        (lambda v: {"k": v}, DEPTH // 10),
        (lambda v: frozenset({v}), DEPTH // 10),
    ],
    ids=["list", "tuple", "dataclass", "dict", "frozenset"],
)
def test_deep_chain_is_fingerprinted_without_recursion(wrap: Any, depth: int) -> None:
    deep = chain_of(wrap, depth)
    assert fingerprint(deep) == fingerprint(chain_of(wrap, depth))
    assert fingerprint(deep) != fingerprint(chain_of(wrap, depth - 1))


def test_deep_chain_with_a_lock_at_the_bottom_is_refused_with_its_path() -> None:
    deep = chain_of(lambda v: (v,), 1_000, start=threading.Lock())
    with pytest.raises(UnfingerprintableError, match=r"lock object at (\[0\]){1000}:"):
        fingerprint(deep)


def test_self_containing_list_is_a_cycle_error() -> None:
    loop: list[Any] = [1]
    loop.append(loop)
    with pytest.raises(UnfingerprintableError, match="reference cycle"):
        fingerprint(loop)


def test_self_containing_dict_is_a_cycle_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_encode, "BUDGET", 1_000)  # the default is exercised with lists above
    loop: dict[str, Any] = {}
    loop["me"] = loop
    with pytest.raises(UnfingerprintableError, match="reference cycle"):
        fingerprint(loop)


def test_cycle_through_dataclasses_names_a_path_into_the_cycle() -> None:
    a, b = Mutable("a"), Mutable("b")
    a.child, b.child = (1, b), a
    # Which member of the cycle is reported depends on where the walk notices.
    with pytest.raises(UnfingerprintableError, match=r"Mutable object at \['x'\]\[0\]"):
        fingerprint({"x": [a]})


def test_cycle_through_a_hook_is_a_cycle_error() -> None:
    class Loop:
        def __stepcache_fingerprint__(self) -> Any:
            return (self,)

    with pytest.raises(UnfingerprintableError, match="reference cycle"):
        fingerprint(Loop())


def test_cycle_found_even_after_the_budget_is_spent_on_a_large_prefix(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(_encode, "BUDGET", 50)
    loop: list[Any] = list(range(100))
    loop.append(loop)
    with pytest.raises(UnfingerprintableError, match="reference cycle"):
        fingerprint(loop)


def test_large_acyclic_value_past_the_budget_keeps_its_key(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    shared = Link(7)
    value = {"rows": [(i, shared, [shared]) for i in range(200)], "tags": {"a", "b"}}
    expected = fingerprint(value)
    monkeypatch.setattr(_encode, "BUDGET", 10)
    assert fingerprint(value) == expected


def test_shared_subtrees_are_not_cycles_and_equal_copies() -> None:
    leaf = Link(1)
    shared = [leaf, leaf, (leaf, leaf)]
    copied = [Link(1), Link(1), (Link(1), Link(1))]
    assert fingerprint(shared) == fingerprint(copied)
