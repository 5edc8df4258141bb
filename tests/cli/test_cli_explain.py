"""Explaining recorded misses: the search behind `stepcache explain` and the pytest report."""

from __future__ import annotations

import stepcache as sc
from stepcache.explain import explain_misses, nearest


def header(key: str, step: str, label: str, created: float, manifest: str) -> sc.EntryHeader:
    """An entry header; ``manifest`` is "path=digest path=digest ..."."""
    paths = dict(item.split("=") for item in manifest.split())
    info = {"step": step, "label": label, "manifest": paths}
    return sc.EntryHeader(key * 32, "pickle", created, 1, 100, False, info)


def test_nearest_prefers_the_same_label_over_a_closer_manifest() -> None:
    headers = [
        header("a", "T", "lap", 1.0, "step.o=1 input.x=1 input.y=1"),
        header("b", "T", "other", 2.0, "step.o=2 input.x=2 input.y=2"),
    ]
    me = header("c", "T", "lap", 3.0, "step.o=2 input.x=2 input.y=3")
    report = nearest([*headers, me], me)
    assert report.nearest_key == "a" * 32
    assert report.differences == ("input.x", "input.y", "step.o")


def test_nearest_ignores_other_steps_itself_and_later_entries() -> None:
    headers = [
        header("a", "Other", "lap", 1.0, "step.o=2"),
        header("b", "T", "lap", 2.0, "step.o=1"),
        header("c", "T", "lap", 3.0, "step.o=2"),
        header("d", "T", "lap", 4.0, "step.o=2"),
    ]
    assert nearest(headers, headers[2], before=1.5).nearest_key is None
    assert nearest(headers, headers[2], before=3.0).nearest_key == "b" * 32
    assert nearest(headers, headers[2]).nearest_key == "d" * 32  # identical manifest


def test_explain_misses_tells_cold_new_label_changed_and_unstored_apart() -> None:
    headers = [
        header("a", "T", "lap", 1.0, "step.o=1 input.name=lap"),
        header("b", "T", "copy", 2.0, "step.o=1 input.name=copy"),
        header("c", "T", "lap", 3.0, "step.o=2 input.name=lap"),
        header("e", "T", "lap", 4.0, "step.o=2 input.name=lap"),
    ]
    misses = [
        sc.MissRecord(0.5, "T", "lap", "a" * 32),
        sc.MissRecord(1.5, "T", "copy", "b" * 32),
        sc.MissRecord(2.5, "T", "lap", "c" * 32),
        sc.MissRecord(3.5, "T", "lap", "d" * 32),
        sc.MissRecord(3.9, "T", "lap", "e" * 32),
    ]
    explained = explain_misses(misses, headers)
    assert [e.summary for e in explained] == [
        "first entry of its step",
        "new input label (no earlier entry with this label)",
        "changed step.o",
        "entry not in the store (not written, or removed since)",
        "same manifest: the key function changed",
    ]
    assert explained[1].reason == f"new label; nearest entry {'a' * 12} (lap)"
    assert explained[2].reason == f"changed step.o (vs {'a' * 12})"
    doc = explained[2].to_dict()
    assert (doc["nearest_key"], doc["nearest_label"]) == ("a" * 32, "lap")
    assert doc["differences"] == ["step.o"]


def test_a_toolchain_change_is_named_with_both_values() -> None:
    headers = [
        header("a", "T", "lap", 1.0, "toolchain.compiler_version=gcc_12"),
        header("b", "T", "lap", 2.0, "toolchain.compiler_version=gcc_13"),
    ]
    (explained,) = explain_misses([sc.MissRecord(1.5, "T", "lap", "b" * 32)], headers)
    assert explained.reason == f"toolchain.compiler_version: gcc_12 -> gcc_13 (vs {'a' * 12})"


def test_cached_step_explain_and_the_command_agree() -> None:
    store = sc.MemoryStore()
    base = sc.CachedStep(sc.step(str.upper), store, "version=1")
    base("lap")
    changed = base.replace(version="2")
    before = changed.explain("lap")
    changed("lap")
    (miss,) = [m for m in store.stats().recent_misses if m.key == changed.key_for("lap")]
    (explained,) = explain_misses([miss], store.headers())
    assert explained.report is not None
    assert explained.report.nearest_key == before.nearest_key == base.key_for("lap")
    assert explained.report.differences == before.differences == ("version",)
