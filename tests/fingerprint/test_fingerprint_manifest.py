"""manifest / diff_manifests: which part of a value changed, within a bounded size."""

from __future__ import annotations

import dataclasses
import enum
import re
from typing import Any

import pytest

from stepcache.fingerprint import diff_manifests, field, fingerprint, manifest


class Op(enum.Enum):
    ADD = "+"
    SUB = "-"


@dataclasses.dataclass(frozen=True)
class Stmt:
    target: str
    op: Op
    args: tuple[Any, ...] = ()


@dataclasses.dataclass(frozen=True)
class Kernel:
    name: str
    body: tuple[Stmt, ...]
    params: dict[str, Any]
    opt_level: int = 2
    log: list[str] = field(fingerprint=False, default_factory=list)


def kernel(**changes: Any) -> Kernel:
    body = tuple(Stmt(f"t{i}", Op.ADD, (i, "x")) for i in range(6))
    base = Kernel("lap", body, {"alpha": 0.5, "shape": (8, 8)})
    return dataclasses.replace(base, **changes)


def with_stmt(index: int, **changes: Any) -> Kernel:
    body = list(kernel().body)
    body[index] = dataclasses.replace(body[index], **changes)
    return kernel(body=tuple(body))


def test_manifest_maps_paths_to_16_hex_digits_or_short_values() -> None:
    entries = manifest(kernel())
    assert {"name", "body", "body[3]", "body[3].op", "params", "params['alpha']"} <= set(entries)
    assert all(re.fullmatch(r"[0-9a-f]{16}|=.{1,40}", entry) for entry in entries.values())
    assert entries["opt_level"] == "=2"  # a short scalar is recorded as its value
    assert "" not in entries
    assert not any(path.startswith("log") for path in entries)


def test_changed_leaf_deep_in_the_body_is_named_exactly() -> None:
    assert diff_manifests(manifest(kernel()), manifest(with_stmt(3, op=Op.SUB))) == ["body[3].op"]


def test_changed_top_level_field_is_named() -> None:
    assert diff_manifests(manifest(kernel()), manifest(kernel(opt_level=3))) == ["opt_level"]


def test_changed_dict_entry_is_named() -> None:
    new = kernel(params={"alpha": 0.25, "shape": (8, 8)})
    assert diff_manifests(manifest(kernel()), manifest(new)) == ["params['alpha']"]


def test_equal_values_give_equal_manifests_whatever_the_dict_order() -> None:
    reordered = kernel(params={"shape": (8, 8), "alpha": 0.5})
    assert manifest(reordered) == manifest(kernel())
    assert diff_manifests(manifest(reordered), manifest(kernel())) == []


def test_deeper_subtrees_get_one_digest() -> None:
    entries = manifest(kernel(), depth=2)
    assert "body[3]" in entries
    assert "body[3].op" not in entries
    changed = diff_manifests(entries, manifest(with_stmt(3, op=Op.SUB), depth=2))
    assert changed == ["body[3]"]


def test_added_and_removed_items_are_the_paths_reported() -> None:
    longer = kernel(body=(*kernel().body, Stmt("t6", Op.ADD)))
    assert diff_manifests(manifest(kernel()), manifest(longer)) == ["body[6]"]
    assert diff_manifests(manifest(longer), manifest(kernel())) == ["body[6]"]


def test_container_type_change_shows_at_the_container() -> None:
    old = {"shape": (8, 8)}
    new = {"shape": [8, 8]}
    assert diff_manifests(manifest(old), manifest(new)) == ["['shape']"]


def test_sets_are_named_by_element() -> None:
    old, new = {"tags": {"a", "b"}}, {"tags": {"a", "c"}}
    assert diff_manifests(manifest(old), manifest(new)) == ["['tags']{'b'}", "['tags']{'c'}"]


@pytest.mark.parametrize("limit", [0, 1, 5, 20, 40])
def test_manifest_size_is_bounded_by_max_entries(limit: int) -> None:
    big = {"rows": [list(range(10)) for _ in range(10)], "cols": tuple(range(30))}
    entries = manifest(big, depth=5, max_entries=limit)
    assert len(entries) <= limit
    if limit >= 2:
        assert {"['rows']", "['cols']"} <= set(entries)  # top levels come first


def test_bounded_manifest_still_detects_every_change() -> None:
    big = {"rows": [list(range(10)) for _ in range(10)]}
    changed = {"rows": [list(range(10)) for _ in range(10)]}
    changed["rows"][7][3] = -1
    diff = diff_manifests(manifest(big, max_entries=12), manifest(changed, max_entries=12))
    assert diff == ["['rows'][7]"]


def test_leaf_root_and_depth_zero_give_an_empty_manifest() -> None:
    assert manifest(42) == {}
    assert manifest(kernel(), depth=0) == {}


def test_diff_reports_added_and_removed_paths_sorted() -> None:
    old = {"a": "1", "b": "2", "c.x": "3"}
    new = {"a": "1", "b": "9", "d": "4"}
    assert diff_manifests(old, new) == ["b", "c.x", "d"]


def test_diff_omits_a_parent_explained_by_its_children() -> None:
    old = {"body": "1", "body[0]": "2", "body[0].op": "3", "bodyx": "4"}
    new = {"body": "9", "body[0]": "8", "body[0].op": "7", "bodyx": "5"}
    assert diff_manifests(old, new) == ["body[0].op", "bodyx"]


def test_manifest_digests_match_fingerprints_of_unexpanded_parts() -> None:
    entries = manifest(kernel(), depth=1)
    assert entries["body"] == fingerprint(kernel().body)[:16]


@pytest.mark.parametrize(
    ("value", "entry"),
    [(2, "=2"), (2.0, "=2.0"), (True, "=True"), (None, "=None"), ("O3", "='O3'"), ("", "=''")],
)
def test_short_scalars_and_strings_are_recorded_as_values(value: object, entry: str) -> None:
    assert manifest({"x": value})["['x']"] == entry


@pytest.mark.parametrize("value", [b"O3", "x" * 41, 10**50, Op.SUB])
def test_large_binary_or_other_leaves_are_recorded_as_digests(value: object) -> None:
    assert manifest({"x": value})["['x']"] == fingerprint(value)[:16]


def test_values_that_differ_in_type_only_differ_in_the_manifest() -> None:
    entries = [manifest({"x": v})["['x']"] for v in (1, 1.0, True, "1")]
    assert len(set(entries)) == 4


def test_manifest_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="depth"):
        manifest(1, depth=-1)
    with pytest.raises(ValueError, match="max_entries"):
        manifest(1, max_entries=-1)
    with pytest.raises(ValueError, match="mode"):
        manifest(1, mode="loose")


def test_a_value_and_the_digest_of_the_same_value_are_no_difference() -> None:
    # Entries written before short leaves were recorded as values carry digests.
    new = manifest(kernel())
    old = {
        path: fingerprint(eval(e[1:]))[:16] if e.startswith("=") else e for path, e in new.items()
    }
    assert old != new
    assert diff_manifests(old, new) == []
    assert diff_manifests(old, manifest(kernel(opt_level=3))) == ["opt_level"]


def test_registering_a_fingerprint_after_a_manifest_changes_how_the_next_one_expands() -> None:
    from stepcache.fingerprint import register_fingerprint
    from stepcache.fingerprint._registry import unregister_fingerprint

    @dataclasses.dataclass(frozen=True)
    class Box:
        inner: tuple[int, ...]

    value = {"box": Box((1, 2))}
    assert "['box'].inner" in manifest(value)  # a dataclass: expanded, the answer remembered
    register_fingerprint(Box, lambda box: box.inner)
    try:
        registered = manifest(value)
        assert set(registered) == {"['box']"}  # a custom fingerprint: one leaf
        assert registered["['box']"] == fingerprint(Box((1, 2)))[:16]
    finally:
        unregister_fingerprint(Box)
    assert "['box'].inner" in manifest(value)
