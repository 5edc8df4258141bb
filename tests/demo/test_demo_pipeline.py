"""The demo toolchain as cached steps: hits skip work, variants re-key, builds are stored."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import stepcache as sc
from stepcache.demo.dsl import Field, stencil
from stepcache.demo.ir import Program
from stepcache.demo.pipeline import (
    Compile,
    Pipeline,
    Source,
    Translate,
    counters,
    make_pipeline,
    reset_counters,
)
from stepcache.demo.programs import ProgramSpec, suite, verify

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(autouse=True)
def _isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # Compiler and code identities are memoised on disk: keep that out of the user's cache.
    monkeypatch.setenv("STEPCACHE_MEMO_DIR", str(tmp_path / "memo"))
    reset_counters()


@stencil
def blur(a: Field, w: float):
    return w * a[0, 0] + (1.0 - w) * 0.25 * (a[1, 0] + a[-1, 0] + a[0, 1] + a[0, -1])


def _run(pipeline: Pipeline, spec: ProgramSpec) -> bool:
    kernel = pipeline(Source(spec.name, spec.source))
    inputs = spec.inputs()
    return verify(spec, kernel(**inputs, **spec.scalar_args()), inputs)


def _spec(name: str) -> ProgramSpec:
    return next(s for s in suite(100) if s.name == name)


def test_pipeline_without_store_runs_a_decorated_stencil() -> None:
    kernel = make_pipeline()(blur)
    a = np.random.default_rng(3).normal(size=(6, 7))
    out = kernel(a, w=0.5)
    expected = 0.5 * a[1:-1, 1:-1] + 0.125 * (
        a[2:, 1:-1] + a[:-2, 1:-1] + a[1:-1, 2:] + a[1:-1, :-2]
    )
    np.testing.assert_allclose(out[1:-1, 1:-1], expected, rtol=1e-14)
    assert counters() == {"translations": 1, "compiles": 1}


def test_pipeline_fields_run_in_order_and_parse_accepts_source_or_program() -> None:
    pipeline = make_pipeline()
    assert [f for f in Pipeline.__dataclass_fields__] == [
        "parse",
        "lower",
        "translate",
        "compile",
        "load",
    ]
    program = pipeline.parse(Source("blur", "def f(a: Field, w: float):\n    return w"))
    assert isinstance(program, Program)
    assert program.name == "blur"
    assert pipeline.parse(blur) is blur
    assert pipeline.lower(blur).body == ()


def test_counters_count_real_work_and_reset() -> None:
    spec = _spec("lap_f64_r1")
    assert _run(make_pipeline(), spec)
    assert _run(make_pipeline(), spec)
    assert counters() == {"translations": 2, "compiles": 2}
    reset_counters()
    assert counters() == {"translations": 0, "compiles": 0}


def test_cached_pipeline_hits_skip_translation_and_compilation() -> None:
    store = sc.MemoryStore()
    specs = [s for s in suite(8) if s.dtype == "float64"]
    pipeline = make_pipeline(store)
    assert isinstance(pipeline.translate, sc.CachedStep)
    assert isinstance(pipeline.compile, sc.CachedDirStep)
    assert all(_run(pipeline, s) for s in specs)
    assert counters() == {"translations": len(specs), "compiles": len(specs)}
    # a new, equal pipeline (as in another test) reuses every entry
    again = make_pipeline(store)
    assert all(_run(again, s) for s in specs)
    assert counters() == {"translations": len(specs), "compiles": len(specs)}
    stats = store.stats()
    assert stats.hits == 2 * len(specs)
    assert len(store) == 2 * len(specs)


def test_replace_makes_variants_that_re_key_only_what_they_change() -> None:
    store = sc.MemoryStore()
    spec = _spec("fold_f64_identity")
    pipeline = make_pipeline(store)
    assert _run(pipeline, spec)
    assert counters() == {"translations": 1, "compiles": 1}

    # a setting of the wrapped Translate, set through the cache wrapper
    no_tx = pipeline.replace(translate=pipeline.translate.replace(enable_transforms=False))
    assert isinstance(no_tx.translate, sc.CachedStep)
    assert no_tx.translate.step == Translate(enable_transforms=False)
    assert _run(no_tx, spec)
    assert counters() == {"translations": 2, "compiles": 2}  # other C code, other build

    # another opt level: translation hits, compilation does not
    o0 = pipeline.replace(compile=pipeline.compile.replace(opt_level=0))
    assert o0.compile.step == Compile(opt_level=0)
    assert _run(o0, spec)
    assert counters() == {"translations": 2, "compiles": 3}

    # every variant again: all hits
    for variant in (pipeline, no_tx, o0):
        assert _run(variant, spec)
    assert counters() == {"translations": 2, "compiles": 3}


def test_dtype_variant_compiles_a_float32_kernel() -> None:
    pipeline = make_pipeline(sc.MemoryStore())
    f32 = pipeline.replace(translate=pipeline.translate.replace(dtype="float32"))
    spec = _spec("lap_f32_r1")
    assert _run(f32, spec)
    with pytest.raises(TypeError, match="dtype"):
        pipeline.translate.replace(dtpye="float32")


def test_build_root_is_not_part_of_the_key(tmp_path: Path) -> None:
    store = sc.MemoryStore()
    spec = _spec("box_f64_r1")
    assert _run(make_pipeline(store, build_root=tmp_path / "one"), spec)
    assert _run(make_pipeline(store, build_root=tmp_path / "two"), spec)
    assert counters() == {"translations": 1, "compiles": 1}


def test_directory_store_keeps_builds_as_directories_and_drops_the_temporary_build(
    tmp_path: Path,
) -> None:
    store = sc.open_store(str(tmp_path / "cache"))
    builds = tmp_path / "builds"
    pipeline = make_pipeline(store, build_root=builds)
    spec = _spec("skew_f64_diag")
    program = pipeline.lower(pipeline.parse(Source(spec.name, spec.source)))
    stored = pipeline.compile(pipeline.translate(program))
    assert stored.is_relative_to(tmp_path / "cache")
    assert (stored / "libskew_f64_diag.so").is_file()
    assert list(builds.iterdir()) == []  # published, then the step's own copy removed
    assert pipeline.compile(pipeline.translate(program)) == stored
    assert counters() == {"translations": 1, "compiles": 1}
    assert _run(make_pipeline(sc.open_store(str(tmp_path / "cache"))), spec)
    assert counters() == {"translations": 1, "compiles": 1}


def test_editing_nothing_keeps_keys_and_a_new_version_changes_them() -> None:
    store = sc.MemoryStore()
    program = make_pipeline().lower(blur)
    a, b = make_pipeline(store), make_pipeline(store)
    assert a.translate.key_for(program) == b.translate.key_for(program)
    bumped = make_pipeline(store, version="2")
    assert bumped.translate.key_for(program) != a.translate.key_for(program)


def test_missing_compiler_fails_with_compiler_error_naming_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CC", "/nonexistent/cc")
    with pytest.raises(sc.CompilerError, match="/nonexistent/cc"):
        make_pipeline()(blur)
    with pytest.raises(sc.CompilerError, match="/nonexistent/cc"):
        make_pipeline(sc.MemoryStore())(blur)


def test_explain_names_the_setting_a_variant_changed() -> None:
    pipeline = make_pipeline(sc.MemoryStore())
    program = pipeline.lower(blur)
    src = pipeline.translate(program)
    pipeline.compile(src)
    assert pipeline.translate.explain(program).hit
    assert pipeline.compile.explain(src).hit
    no_tx = pipeline.replace(translate=pipeline.translate.replace(enable_transforms=False))
    assert "step.enable_transforms" in no_tx.translate.explain(program).differences
    o3 = pipeline.replace(compile=pipeline.compile.replace(opt_level=3))
    report = o3.compile.explain(src)
    assert not report.hit
    assert report.label == "blur"
    assert "step.opt_level" in report.differences


def test_read_only_store_serves_hits_and_builds_misses_without_writing(tmp_path: Path) -> None:
    root = str(tmp_path / "cache")
    assert _run(make_pipeline(sc.open_store(root)), _spec("lap_f64_r1"))
    reader = sc.open_store(root, read_only=True)
    before = len(reader)
    reset_counters()
    assert _run(make_pipeline(reader), _spec("lap_f64_r1"))
    assert counters() == {"translations": 0, "compiles": 0}
    assert _run(make_pipeline(reader, build_root=tmp_path / "builds"), _spec("box_f64_r1"))
    assert counters() == {"translations": 1, "compiles": 1}
    assert len(reader) == before
