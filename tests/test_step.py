from __future__ import annotations

import copy
import dataclasses
import pickle
from pathlib import Path
from typing import Any

import pytest

import stepcache as sc
from stepcache.fingerprint import fingerprint, manifest


@dataclasses.dataclass(frozen=True)
class Add(sc.StepBase):
    n: int = 1

    def __call__(self, inp: int) -> int:
        return inp + self.n


@dataclasses.dataclass(frozen=True)
class Pipeline(sc.NamedSteps):
    first: sc.Step = Add(1)
    second: sc.Step | None = Add(10)


def test_step_wraps_a_function_and_satisfies_the_protocol() -> None:
    double = sc.step(lambda x: 2 * x)
    assert double(3) == 6
    assert isinstance(double, sc.Step)


def test_step_rejects_a_non_callable() -> None:
    with pytest.raises(TypeError, match="callable"):
        sc.step(3)  # type: ignore[arg-type]


def test_chain_runs_left_to_right_and_flattens() -> None:
    c = sc.chain(Add(1), sc.chain(sc.step(lambda x: x * 10), Add(2)))
    assert c(0) == 12
    assert len(c.steps) == 3
    assert Add(1).chain(Add(2))(0) == 3


def test_named_steps_run_fields_in_order_and_skip_none() -> None:
    assert Pipeline()(0) == 11
    assert Pipeline(second=None)(0) == 1


def test_named_steps_replace_swaps_a_stage() -> None:
    p = Pipeline().replace(second=Add(100))
    assert p(0) == 101
    assert Pipeline()(0) == 11


def test_replace_names_unknown_and_known_settings() -> None:
    with pytest.raises(TypeError, match=r"'m'.*settings are: n"):
        Add().replace(m=3)


def test_steps_are_frozen_values() -> None:
    assert Add(2) == Add(2)
    assert hash(Add(2)) == hash(Add(2))
    with pytest.raises(dataclasses.FrozenInstanceError):
        Add().n = 5  # type: ignore[misc]


def _twin(cls: type, field: str) -> Any:
    """A frozen dataclass with ``cls``'s name and one field: what ``cls`` would be as one."""
    twin = dataclasses.make_dataclass(cls.__name__, [field], frozen=True)
    twin.__module__, twin.__qualname__ = cls.__module__, cls.__qualname__
    return twin


def test_stepcaches_own_steps_are_keyed_as_frozen_dataclasses_would_be() -> None:
    as_step, as_chain = _twin(sc.FunctionStep, "fn"), _twin(sc.Chain, "steps")
    ours = sc.chain(sc.step(str.upper), sc.step(len))
    theirs = as_chain((as_step(str.upper), as_step(len)))
    for mode in ("strict", "lenient"):
        assert fingerprint(ours, mode=mode) == fingerprint(theirs, mode=mode)
    assert fingerprint(sc.step(str.upper)) == fingerprint(as_step(str.upper))
    assert manifest(ours, depth=3) == manifest(theirs, depth=3)
    assert "steps[1].fn" in manifest(ours, depth=3)


def test_stepcaches_own_steps_behave_as_frozen_dataclasses(tmp_path: Path) -> None:
    upper = sc.step(str.upper)
    assert upper == sc.step(str.upper) != sc.step(str.lower)
    assert hash(upper) == hash(sc.step(str.upper))
    assert repr(upper) == f"FunctionStep(fn={str.upper!r})"
    assert pickle.loads(pickle.dumps(upper)) == upper == copy.deepcopy(upper)
    assert upper.replace(fn=str.lower)("A") == "a"
    match upper:
        case sc.FunctionStep(fn):
            assert fn is str.upper
    with pytest.raises(dataclasses.FrozenInstanceError):
        upper.fn = len  # type: ignore[misc]
    with pytest.raises(TypeError, match="settings are: fn"):
        upper.replace(func=len)

    store = sc.DirectoryStore(tmp_path)
    cached = sc.CachedStep(upper, store, version="1")
    assert cached == sc.CachedStep(upper, store, "1") != cached.replace(version="2")
    assert copy.copy(cached) == cached
    assert repr(cached).startswith("CachedStep(step=FunctionStep(")
    with pytest.raises(dataclasses.FrozenInstanceError):
        cached.version = "2"  # type: ignore[misc]
    assert cached("ab") == "AB"
    assert cached.key_for("ab") == copy.copy(cached).key_for("ab")
    tree = sc.CachedDirStep(upper, store)
    assert tree.step is upper
    assert tree == sc.CachedDirStep(upper, store) != sc.CachedStep(upper, store)


def test_copying_a_cached_step_does_not_run_its_checks_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = sc.DirectoryStore(tmp_path)
    cached = sc.CachedStep(sc.step(str.upper), store, code=("stepcache.step",))

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("__init__ ran again")

    monkeypatch.setattr(sc.CachedStep, "__init__", refuse)
    assert copy.copy(cached) == cached
    assert pickle.loads(pickle.dumps(cached)).key_for("ab") == cached.key_for("ab")
