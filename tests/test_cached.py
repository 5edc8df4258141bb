"""CachedStep: the investigation's three tests, replace() forwarding, keys, explain."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import pytest

import stepcache as sc

CALLS: list[str] = []


@dataclasses.dataclass(frozen=True)
class Translate(sc.StepBase):
    """Stands in for a DSL translation step with the setting that broke the original."""

    enable_itir_transforms: bool = True
    opt_level: int = 2

    def __call__(self, program: str) -> str:
        CALLS.append(program)
        body = program.upper() if self.enable_itir_transforms else program
        return f"/* O{self.opt_level} */ {body}"


@dataclasses.dataclass(frozen=True)
class Parse(sc.StepBase):
    def __call__(self, src: str) -> str:
        return src.strip()


@dataclasses.dataclass(frozen=True)
class Pipeline(sc.NamedSteps):
    parse: sc.Step
    translate: sc.Step


PROGRAMS = [f"stencil_{i}" for i in range(20)]


@pytest.fixture(autouse=True)
def _reset_calls() -> None:
    CALLS.clear()


def test_cached_step_fills_the_store(store_factory: Callable[[], sc.Store]) -> None:
    store = store_factory()
    cached = sc.CachedStep(Translate(), store)
    results = [cached(p) for p in PROGRAMS]
    assert len(store) == len(PROGRAMS)
    assert results == [Translate()(p) for p in PROGRAMS]
    assert store.stats().writes == len(PROGRAMS)


def test_new_identical_cached_step_keeps_the_entries(store_factory: Callable[[], sc.Store]) -> None:
    for p in PROGRAMS:
        sc.CachedStep(Translate(), store_factory())(p)
    again = sc.CachedStep(Translate(), store_factory())
    assert again.key_for(PROGRAMS[0]) in store_factory()
    assert len(store_factory()) == len(PROGRAMS)


def test_new_identical_cached_step_reuses_the_cache(store_factory: Callable[[], sc.Store]) -> None:
    first = sc.CachedStep(Translate(), store_factory())
    expected = [first(p) for p in PROGRAMS]
    CALLS.clear()
    second = sc.CachedStep(Translate(), store_factory())
    assert [second(p) for p in PROGRAMS] == expected
    assert CALLS == []


def test_replace_forwards_inner_settings_through_a_pipeline() -> None:
    store = sc.MemoryStore()
    pipeline = Pipeline(parse=Parse(), translate=sc.CachedStep(Translate(), store))
    off = pipeline.replace(translate=pipeline.translate.replace(enable_itir_transforms=False))  # type: ignore[attr-defined]
    assert off.translate.step.enable_itir_transforms is False
    assert off(" lap ") == "/* O2 */ lap"
    assert pipeline(" lap ") == "/* O2 */ LAP"
    assert off.translate.key_for("lap") != pipeline.translate.key_for("lap")
    assert len(store) == 2


def test_replace_mixes_own_fields_and_forwarded_ones() -> None:
    cached = sc.CachedStep(Translate(), sc.MemoryStore())
    other = cached.replace(version="2", opt_level=3)
    assert other.version == "2"
    assert other.step == Translate(opt_level=3)
    assert cached.step == Translate()


def test_replace_with_an_unknown_name_names_both_sides() -> None:
    cached = sc.CachedStep(Translate(), sc.MemoryStore())
    with pytest.raises(TypeError, match=r"CachedStep field.*Translate.*'bogus'"):
        cached.replace(bogus=1)


def test_replace_on_a_step_without_replace_is_a_clear_type_error() -> None:
    cached = sc.CachedStep(len, sc.MemoryStore())
    with pytest.raises(TypeError, match="has no replace"):
        cached.replace(enable_itir_transforms=False)


def test_key_covers_configuration_version_and_input() -> None:
    store = sc.MemoryStore()
    base = sc.CachedStep(Translate(), store)
    keys = {
        base.key_for("a"),
        base.key_for("b"),
        base.replace(opt_level=3).key_for("a"),
        base.replace(version="1").key_for("a"),
        sc.CachedStep(Parse(), store).key_for("a"),
    }
    assert len(keys) == 5
    assert sc.CachedStep(Translate(), sc.MemoryStore()).key_for("a") == base.key_for("a")


def test_cached_step_requires_a_store() -> None:
    with pytest.raises(TypeError, match="open_store"):
        sc.CachedStep(Translate(), {})  # type: ignore[arg-type]


def test_entries_record_step_name_and_label() -> None:
    @dataclasses.dataclass(frozen=True)
    class Prog:
        name: str
        body: tuple[int, ...]

    store = sc.MemoryStore()
    cached = sc.CachedStep(sc.step(lambda p: sum(p.body)), store)
    cached(Prog("lap", (1, 2)))
    (header,) = store.headers()
    assert header.label == "lap"
    assert "lambda" in header.step
    assert any(path.startswith("input.") for path in header.info["manifest"])


def test_the_label_is_found_for_misses_and_writes_not_for_hits() -> None:
    labelled: list[str] = []

    def label(inp: str) -> str:
        labelled.append(inp)
        return inp.upper()

    store = sc.MemoryStore()
    cached = sc.CachedStep(sc.step(str.lower), store, label=label)
    assert [cached("A"), cached("A"), cached("A")] == ["a", "a", "a"]
    assert labelled == ["A"]  # the miss records it and the write reuses it
    (header,) = store.headers()
    assert header.label == "A"
    stats = store.stats()
    assert (stats.hits, stats.misses, stats.steps[cached.name].hits) == (2, 1, 2)
    assert [m.label for m in stats.recent_misses] == ["A"]


def test_explain_names_the_changed_setting_and_input_part() -> None:
    store = sc.MemoryStore()
    cached = sc.CachedStep(Translate(), store)
    cached("lap")
    assert cached.explain("lap").hit
    report = cached.replace(opt_level=3).explain("lap")
    assert not report.hit
    assert report.differences == ("step.opt_level",)
    assert "step.opt_level" in report.reason
    assert sc.CachedStep(Parse(), store).explain("x").nearest_key is None


def test_a_failing_step_stores_nothing_and_raises() -> None:
    store = sc.MemoryStore()

    def boom(_: object) -> None:
        raise RuntimeError("compiler exploded")

    with pytest.raises(RuntimeError, match="exploded"):
        sc.CachedStep(sc.step(boom), store)(1)
    assert len(store) == 0


@pytest.mark.parametrize(
    "inp",
    [
        "lap",
        ("prog1", {"shape": (4, 4), "dtype": "float32"}, 3),
        {"input": 1, "in": 2, "zeta": "\u00e9t\u00e9", 'a"b': [1.5, None]},
        [],
    ],
    ids=["str", "nested", "awkward-keys", "empty"],
)
def test_the_info_a_cached_step_encodes_is_the_json_of_its_mapping(inp: object) -> None:
    # A CachedStep's entry info encodes its fixed manifest once per step and
    # splices the input's around it: the bytes must be those of json.dumps.
    import json

    from stepcache.cached import _EntryInfo

    store = sc.MemoryStore()
    steps = [
        sc.CachedStep(sc.step(str), store, label=lambda x: "lab\u00e9l \"1\""),
        sc.CachedStep(
            Translate(opt_level=3), store, version="v2", code=("stepcache.step",),
            toolchain=sc.toolchain(env=("CFLAGS",)),
        ),
    ]  # fmt: skip
    for cached in steps:
        info = _EntryInfo(cached, inp)
        expected = json.dumps(dict(info), separators=(",", ":"), sort_keys=True).encode()
        assert info.info_json() == expected
        assert json.loads(expected)["manifest"] == cached.manifest_for(inp)
