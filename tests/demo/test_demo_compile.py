"""Codegen, the real C compiler and ctypes loading, checked against numpy."""

from __future__ import annotations

import dataclasses
import json
import stat
from pathlib import Path

import numpy as np
import pytest

from stepcache.demo.build import MANIFEST, compile_source, compiler_command
from stepcache.demo.codegen import translate
from stepcache.demo.dsl import stencil_from_source
from stepcache.demo.ir import Const, Local, Program
from stepcache.demo.load import Kernel, load
from stepcache.demo.passes import lower, simplify
from stepcache.demo.programs import ProgramSpec, suite, verify
from stepcache.errors import CompilerError, StepCacheError

pytestmark = pytest.mark.timeout(60)

LAPLACIAN = """
def lap(a: Field, alpha: float):
    return alpha * (-4.0 * a[0, 0] + a[1, 0] + a[-1, 0] + a[0, 1] + a[0, -1])
"""


def _sample() -> list[ProgramSpec]:
    specs = suite(100)
    # Every 10th program: a spread of families, both dtypes, and two random mixes.
    return specs[::10]


def _build(program: Program, tmp: Path) -> Kernel:
    return load(compile_source(translate(lower(program)), tmp))


def test_sample_covers_both_dtypes_and_several_families() -> None:
    sample = _sample()
    assert len(sample) == 10
    assert {s.dtype for s in sample} == {"float32", "float64"}
    assert len({s.family for s in sample}) >= 6


@pytest.mark.parametrize("spec", _sample(), ids=lambda s: s.name)
def test_compiled_kernel_matches_numpy_reference(spec: ProgramSpec, tmp_path: Path) -> None:
    inputs = spec.inputs()
    lowered = lower(spec.program())
    for name, program in (("plain", lowered), ("simplified", simplify(lowered))):
        src = translate(program, dtype=spec.dtype)
        kernel = load(compile_source(src, tmp_path / name))
        result = kernel(**inputs, **spec.scalar_args())
        assert result.dtype == np.dtype(spec.dtype)
        assert verify(spec, result, inputs), (spec.name, name)
        assert not verify(spec, result + 0.01, inputs)


def test_laplacian_matches_a_hand_written_slicing_reference(tmp_path: Path) -> None:
    kernel = _build(stencil_from_source(LAPLACIAN), tmp_path)
    a = np.random.default_rng(1).normal(size=(13, 17))
    expected = np.zeros_like(a)
    expected[1:-1, 1:-1] = 0.5 * (
        -4.0 * a[1:-1, 1:-1] + a[2:, 1:-1] + a[:-2, 1:-1] + a[1:-1, 2:] + a[1:-1, :-2]
    )
    np.testing.assert_allclose(kernel(a, 0.5), expected, rtol=1e-13, atol=1e-13)


def test_opt_levels_and_unrolling_compute_the_same_values(tmp_path: Path) -> None:
    spec = next(s for s in suite(100) if s.name == "fused_f64_laplap")
    inputs = spec.inputs()
    program = simplify(lower(spec.program()))
    results = []
    for opt, unroll in ((0, 0), (3, 4)):
        src = translate(program, dtype=spec.dtype, unroll=unroll)
        assert ("#pragma GCC unroll 4" in src.code) == bool(unroll)
        out = compile_source(src, tmp_path / f"O{opt}", opt_level=opt)
        assert f"-O{opt}" in json.loads((out / MANIFEST).read_text())["command"]
        results.append(load(out)(**inputs, **spec.scalar_args()))
    assert np.array_equal(results[0], results[1])
    assert verify(spec, results[0], inputs)


def test_dsl_names_that_are_c_keywords_or_loop_variables_compile(tmp_path: Path) -> None:
    src = (
        "def f(int: Field, out: Field, k: float, nj: float):\n"
        "    return int[0, 1] * k + out[1, 0] - nj"
    )
    kernel = _build(stencil_from_source(src), tmp_path)
    x, y = np.ones((4, 5)), np.full((4, 5), 2.0)
    assert kernel(x, y, k=3.0, nj=0.5)[1, 1] == pytest.approx(4.5)


def test_float32_kernels_use_float_literals_and_math_functions() -> None:
    program = lower(stencil_from_source("def f(a: Field):\n    return sqrt(abs(a[0, 0])) * 0.5"))
    code = translate(program, dtype="float32").code
    assert "sqrtf(fabsf(f_a[k]))" in code
    assert "0.5f" in code
    assert "double" not in code


def test_comparisons_are_cast_to_the_field_type_except_as_conditions() -> None:
    program = lower(
        stencil_from_source(
            "def f(a: Field):\n"
            "    return (a[0, 0] > 0.0) * a[1, 0] + where(a[0, 0] <= 1.0, 2.0, 3.0)"
        )
    )
    code = translate(program).code
    assert "(double)(f_a[k] > 0.0) * f_a[k + nj]" in code
    assert "f_a[k] <= 1.0 ? 2.0 : 3.0" in code


def test_translate_refuses_locals_and_unknown_dtypes() -> None:
    with pytest.raises(ValueError, match="inline_locals"):
        translate(stencil_from_source("def f(a: Field):\n    t = a[0, 0]\n    return t"))
    with pytest.raises(ValueError, match="inline_locals"):
        translate(Program("f", ("a",), (), (), Local("t")))
    with pytest.raises(ValueError, match="dtype"):
        translate(Program("f", ("a",), (), (), Const(1.0)), dtype="int8")


def test_kernel_binds_arguments_like_the_dsl_function(tmp_path: Path) -> None:
    kernel = _build(stencil_from_source(LAPLACIAN), tmp_path)
    a = np.add.outer(np.arange(4.0) ** 2, np.arange(5.0) ** 2)  # laplacian 4 everywhere
    by_position = kernel(a, 1.0)
    assert np.array_equal(kernel(a=a, alpha=1.0), by_position)
    assert np.array_equal(kernel(a, alpha=1.0), by_position)
    # Other dtypes and non-contiguous views are converted, not misread.
    assert np.array_equal(kernel(np.asfortranarray(a).astype(np.float32), 1.0), by_position)
    assert by_position[1, 1] == pytest.approx(4.0)
    assert np.all(by_position[0] == 0)
    assert np.all(by_position[:, -1] == 0)
    for args, kwargs in (((a,), {}), ((a, 1.0, 2.0), {}), ((a,), {"beta": 1.0})):
        with pytest.raises(TypeError):
            kernel(*args, **kwargs)
    with pytest.raises(TypeError, match="repeated"):
        kernel(a, 1.0, alpha=1.0)
    with pytest.raises(ValueError, match="2-D"):
        kernel(np.ones(5), 1.0)
    assert "lap(a, alpha)" in repr(kernel)


def test_arrays_smaller_than_the_halo_give_zeros(tmp_path: Path) -> None:
    kernel = _build(
        stencil_from_source("def f(a: Field):\n    return a[2, 0] + a[-2, 0]"), tmp_path
    )
    assert np.array_equal(kernel(np.ones((3, 3))), np.zeros((3, 3)))


def test_build_directory_holds_source_library_and_manifest(tmp_path: Path) -> None:
    src = translate(lower(stencil_from_source(LAPLACIAN)), dtype="float32")
    out = compile_source(src, tmp_path / "build")
    assert sorted(p.name for p in out.iterdir()) == ["lap.c", "liblap.so", "manifest.json"]
    manifest = json.loads((out / MANIFEST).read_text())
    assert manifest["function"] == "sc_lap"
    assert manifest["fields"] == ["a"]
    assert manifest["scalars"] == ["alpha"]
    assert manifest["halo"] == [1, 1]
    assert manifest["dtype"] == "float32"
    assert manifest["library"] == "liblap.so"
    assert (out / "lap.c").read_text() == src.code


def test_translation_is_deterministic() -> None:
    spec = suite(100)[-1]
    first = translate(simplify(lower(spec.program())), dtype=spec.dtype)
    second = translate(simplify(lower(spec.program())), dtype=spec.dtype)
    assert first == second


def test_missing_compiler_raises_compiler_error_naming_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CC", "/nonexistent/cc")
    src = translate(lower(stencil_from_source(LAPLACIAN)))
    with pytest.raises(CompilerError, match="/nonexistent/cc") as info:
        compile_source(src, tmp_path)
    assert isinstance(info.value, StepCacheError)
    assert isinstance(info.value, RuntimeError)


def _script(path: Path, body: str) -> Path:
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


def test_failing_compiler_raises_compiler_error_with_its_stderr(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bad = _script(
        tmp_path / "badcc", 'echo "badcc: fatal: the moon is in the wrong phase" >&2\nexit 1'
    )
    monkeypatch.setenv("CC", str(bad))
    src = translate(lower(stencil_from_source(LAPLACIAN)))
    with pytest.raises(CompilerError) as info:
        compile_source(src, tmp_path / "build")
    message = str(info.value)
    assert "the moon is in the wrong phase" in message
    assert str(bad) in message
    assert "exit status 1" in message


def test_real_compile_errors_show_the_compiler_diagnostics(tmp_path: Path) -> None:
    src = translate(lower(stencil_from_source(LAPLACIAN)))
    code = src.code.replace("out[k] =", "out[k] = no_such_symbol +")
    with pytest.raises(CompilerError, match="no_such_symbol"):
        compile_source(dataclasses.replace(src, code=code), tmp_path)


def test_hanging_compiler_times_out_with_compiler_error(tmp_path: Path) -> None:
    slow = _script(tmp_path / "slowcc", "exec sleep 30")
    src = translate(lower(stencil_from_source(LAPLACIAN)))
    with pytest.raises(CompilerError, match="timed out"):
        compile_source(src, tmp_path / "build", cc=str(slow), timeout=0.3)


def test_compiler_command_splits_cc_like_a_shell(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CC", "gcc -m64")
    assert compiler_command() == ["gcc", "-m64"]
    assert compiler_command("clang") == ["clang"]
    monkeypatch.delenv("CC")
    assert compiler_command() == ["cc"]


def test_invalid_opt_level_is_rejected(tmp_path: Path) -> None:
    src = translate(lower(stencil_from_source(LAPLACIAN)))
    with pytest.raises(ValueError, match="opt_level"):
        compile_source(src, tmp_path, opt_level=4)
