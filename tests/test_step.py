from __future__ import annotations

import dataclasses

import pytest

import stepcache as sc


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
