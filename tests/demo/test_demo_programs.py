"""The program suite: deterministic, distinct, and checked by an independent reference."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from stepcache.demo.interp import evaluate
from stepcache.demo.passes import lower
from stepcache.demo.programs import TOLERANCES, suite, verify

_DUMP = """
import hashlib, json
from stepcache.demo.programs import suite
out = []
for s in suite(120):
    digest = hashlib.sha256()
    for name, array in sorted(s.inputs().items()):
        digest.update(name.encode() + array.tobytes())
    out.append([s.name, s.source, s.dtype, list(s.shape), [list(x) for x in s.scalars],
                digest.hexdigest()])
print(json.dumps(out))
"""


def _dump_in_subprocesses(*hash_seeds: str) -> list[list[list[object]]]:
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _DUMP],
            env={**os.environ, "PYTHONHASHSEED": seed},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for seed in hash_seeds
    ]
    dumps = []
    for proc in procs:
        out, err = proc.communicate(timeout=90)
        assert proc.returncode == 0, err
        dumps.append(json.loads(out))
    return dumps


@pytest.mark.timeout(120)
def test_suite_is_identical_in_other_processes_and_hash_seeds() -> None:
    first, second = _dump_in_subprocesses("1", "2024")
    assert first == second
    here = [
        [s.name, s.source, s.dtype, list(s.shape), [list(x) for x in s.scalars]] for s in suite(120)
    ]
    assert [row[:5] for row in first] == here


def test_suite_has_at_least_100_distinct_programs_with_distinct_names() -> None:
    specs = suite(100)
    assert len(specs) == 100
    assert len({s.name for s in specs}) == 100
    # f32 and f64 versions of a stencil share a body but are different programs
    bodies = {(s.source.split("\n", 1)[1], s.dtype) for s in specs}
    assert len(bodies) == 100
    # distinct as computations too, not only as text
    lowered = {(lower(s.program()).result, s.dtype) for s in specs}
    assert len(lowered) == 100
    assert {s.dtype for s in specs} == {"float32", "float64"}
    assert len({s.family for s in specs}) >= 12


def test_suite_grows_past_the_fixed_families_with_distinct_random_mixes() -> None:
    specs = suite(250)
    assert len({s.name for s in specs}) == 250
    assert len({(s.source.split("\n", 1)[1], s.dtype) for s in specs}) == 250
    assert sum(s.family == "mix" for s in specs) > 150


def test_a_prefix_of_the_suite_is_the_smaller_suite() -> None:
    assert suite(100)[:30] == suite(30)
    assert suite(0) == []
    with pytest.raises(ValueError, match="n must be"):
        suite(-1)


def test_seed_changes_only_the_random_mixes() -> None:
    a, b = suite(100, seed=0), suite(100, seed=1)
    fixed = [s for s in a if s.family != "mix"]
    assert fixed == [s for s in b if s.family != "mix"]
    assert [s for s in a if s.family == "mix"] != [s for s in b if s.family == "mix"]


def test_every_program_parses_and_its_shape_exceeds_the_halo() -> None:
    for spec in suite(100):
        program = spec.program()
        assert program.name == spec.name
        assert set(program.scalars) == set(spec.scalar_args())
        hi, hj = program.halo
        assert spec.shape[0] > 2 * hi, spec.name
        assert spec.shape[1] > 2 * hj, spec.name
        reference = spec.reference()
        assert reference.shape == spec.shape
        assert np.isfinite(reference).all(), spec.name


def test_inputs_are_deterministic_and_typed() -> None:
    spec = next(s for s in suite(100) if s.dtype == "float32" and len(s.program().fields) > 1)
    first, second = spec.inputs(), spec.inputs()
    assert list(first) == list(spec.program().fields)
    for name in first:
        assert first[name].dtype == np.float32
        assert first[name].shape == spec.shape
        assert np.array_equal(first[name], second[name])
    assert not np.array_equal(*list(first.values())[:2])


def test_reference_agrees_with_hand_written_numpy_slicing() -> None:
    box = next(s for s in suite(100) if s.name == "box_f64_r1")
    a = box.inputs()["a"]
    expected = np.zeros_like(a)
    ni, nj = a.shape
    expected[1:-1, 1:-1] = sum(
        a[1 + di : ni - 1 + di, 1 + dj : nj - 1 + dj] for di in (-1, 0, 1) for dj in (-1, 0, 1)
    ) * (1.0 / 9.0)
    np.testing.assert_allclose(box.reference(), expected, rtol=1e-14)

    upwind = next(s for s in suite(100) if s.name == "upwind_f64_i")
    fields, c = upwind.inputs(), upwind.scalar_args()["c"]
    a, u = fields["a"][:, 1:-1], fields["u"][1:-1, 1:-1]
    flux = np.where(u > 0, u * (a[1:-1] - a[:-2]), u * (a[2:] - a[1:-1]))
    np.testing.assert_allclose(upwind.reference()[1:-1, 1:-1], a[1:-1] - c * flux, rtol=1e-14)


def test_reference_computes_float32_programs_in_float32() -> None:
    spec = next(s for s in suite(100) if s.name == "lap_f32_r1")
    result = spec.reference()
    assert result.dtype == np.float32
    as_double = evaluate(
        spec.program(), {k: v.astype(np.float64) for k, v in spec.inputs().items()},
        spec.scalar_args(),
    )  # fmt: skip
    np.testing.assert_allclose(result, as_double, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_verify_accepts_rounding_noise_and_rejects_real_errors(dtype: str) -> None:
    spec = next(s for s in suite(100) if s.dtype == dtype)
    expected = spec.reference()
    noise = expected * (1 + TOLERANCES[dtype] / 10)
    assert verify(spec, noise.astype(dtype))
    wrong = expected.copy()
    wrong[5, 5] += 100 * TOLERANCES[dtype] * max(1.0, float(np.abs(expected).max()))
    assert not verify(spec, wrong)
    assert not verify(spec, expected.astype("float64" if dtype == "float32" else "float32"))
    assert not verify(spec, expected[1:])


def test_inputs_are_splitmix64_of_the_program_and_field_name() -> None:
    import zlib

    from stepcache.demo.programs import _uniform

    mask, state, expected = (1 << 64) - 1, zlib.crc32(b"lap_f64_r1:a"), []
    for _ in range(6):  # SplitMix64, one value at a time, in plain integers
        state = (state + 0x9E3779B97F4A7C15) & mask
        z = ((state ^ (state >> 30)) * 0xBF58476D1CE4E5B9) & mask
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & mask
        expected.append(2.0 * ((z ^ (z >> 31)) >> 11) * 2.0**-53 - 1.0)
    assert _uniform("lap_f64_r1:a", (2, 3)).ravel().tolist() == expected
    lap = suite(1)[0]  # lap_f64_r1: float64, so the values are the generator's own
    assert lap.inputs()["a"].ravel()[:6].tolist() == expected
