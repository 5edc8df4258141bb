"""fingerprint: type tags, containers, floats, dataclasses, enums, paths, numpy."""

from __future__ import annotations

import collections
import dataclasses
import enum
import math
import pathlib
import re
import struct
from typing import Any, NamedTuple

import numpy as np
import pytest

from stepcache.fingerprint import field, fingerprint


def keys(*values: Any) -> list[str]:
    return [fingerprint(v) for v in values]


def test_key_is_32_lowercase_hex_digits() -> None:
    assert re.fullmatch(r"[0-9a-f]{32}", fingerprint({"a": [1, 2.0, "x"]}))


def test_equal_values_give_equal_keys() -> None:
    value = {"a": (1, 2.5, "x", b"y", None, True, 3j), "b": [frozenset({1, 2})]}
    same = {"a": (1, 2.5, "x", b"y", None, True, 3j), "b": [frozenset({2, 1})]}
    assert fingerprint(value) == fingerprint(same)


def test_scalars_of_different_types_that_compare_equal_get_different_keys() -> None:
    values = [1, True, 1.0, "1", b"1", bytearray(b"1"), memoryview(b"1"), 1 + 0j, (1,), [1]]
    assert len(set(keys(*values))) == len(values)


def test_none_ellipsis_notimplemented_and_empty_values_differ() -> None:
    values = [None, ..., NotImplemented, 0, "", b"", (), [], {}, set(), frozenset(), False]
    assert len(set(keys(*values))) == len(values)


def test_length_prefixes_keep_concatenations_apart() -> None:
    assert fingerprint(("ab", "c")) != fingerprint(("a", "bc"))
    assert fingerprint((b"ab", b"c")) != fingerprint((b"a", b"bc"))
    assert fingerprint(((1, 2), 3)) != fingerprint((1, (2, 3)))
    assert fingerprint([[], [1]]) != fingerprint([[1], []])


def test_large_ints_and_negative_ints_are_distinct() -> None:
    values = [2**64, 2**64 + 1, -(2**64), 2**1000, -1, 2**31, -(2**31) - 1]
    assert len(set(keys(*values))) == len(values)


def test_negative_zero_differs_from_zero() -> None:
    assert fingerprint(-0.0) != fingerprint(0.0)
    assert fingerprint(complex(0.0, -0.0)) != fingerprint(0j)


def test_nan_is_keyed_by_bit_pattern() -> None:
    quiet = struct.unpack("<d", struct.pack("<Q", 0x7FF8000000000000))[0]
    payload = struct.unpack("<d", struct.pack("<Q", 0x7FF8000000000001))[0]
    assert fingerprint(math.nan) == fingerprint(float("nan")) == fingerprint(quiet)
    assert fingerprint(payload) != fingerprint(quiet)
    assert fingerprint([math.nan]) == fingerprint([float("nan")])


def test_strings_with_lone_surrogates_are_fingerprintable() -> None:
    assert fingerprint("\udc80") != fingerprint("\udc81")
    assert fingerprint("é") != fingerprint("e\u0301")


def test_tuple_and_list_differ_but_each_is_ordered() -> None:
    assert fingerprint((1, 2)) != fingerprint([1, 2])
    assert fingerprint((1, 2)) != fingerprint((2, 1))


def test_dicts_are_independent_of_insertion_order() -> None:
    forward = {f"k{i}": [i, {"x": i}] for i in range(50)}
    backward = dict(reversed(list(forward.items())))
    assert fingerprint(forward) == fingerprint(backward)
    assert fingerprint({"a": 1, "b": 2}) != fingerprint({"a": 2, "b": 1})


def test_sets_are_order_independent_and_differ_from_frozensets() -> None:
    items = [("t", i) for i in range(40)] + [f"s{i}" for i in range(40)]
    assert fingerprint(set(items)) == fingerprint(set(reversed(items)))
    assert fingerprint(frozenset(items)) == fingerprint(frozenset(reversed(items)))
    assert fingerprint(set(items)) != fingerprint(frozenset(items))
    assert fingerprint({1, 2}) != fingerprint({1, 3})


def test_dict_items_are_not_confused_across_keys() -> None:
    assert fingerprint({"a": "b", "c": "d"}) != fingerprint({"a": "d", "c": "b"})
    assert fingerprint({("a", "b"): 1}) != fingerprint({"a": ("b", 1)})


def test_ordered_dict_keeps_order_and_defaultdict_does_not() -> None:
    a, b = [("a", 1), ("b", 2)], [("b", 2), ("a", 1)]
    assert fingerprint(collections.OrderedDict(a)) != fingerprint(collections.OrderedDict(b))
    assert fingerprint(collections.defaultdict(list, a)) == fingerprint(
        collections.defaultdict(list, b)
    )
    assert fingerprint(collections.OrderedDict(a)) != fingerprint(dict(a))


def test_range_slice_and_memoryview_are_keyed_by_content() -> None:
    assert fingerprint(range(0, 10, 2)) != fingerprint(range(0, 10, 3))
    assert fingerprint(slice(1, None)) != fingerprint(slice(None, 1))
    data = bytes(range(12))
    assert fingerprint(memoryview(data).cast("B", (3, 4))) != fingerprint(memoryview(data))
    assert fingerprint(memoryview(data)) == fingerprint(memoryview(bytearray(data)))


class Color(enum.Enum):
    RED = 1
    GREEN = 2


class Shade(enum.Enum):
    RED = 1


class Perm(enum.Flag):
    R = 4
    W = 2


def test_enums_are_keyed_by_type_and_member_name() -> None:
    assert fingerprint(Color.RED) == fingerprint(Color(1))
    assert len(set(keys(Color.RED, Color.GREEN, Shade.RED, 1))) == 4
    assert fingerprint(Perm.R | Perm.W) != fingerprint(Perm.R)
    assert fingerprint(Perm(0)) != fingerprint(Perm.R)


def test_paths_are_keyed_by_flavour_and_string() -> None:
    assert fingerprint(pathlib.Path("a/b")) == fingerprint(pathlib.PurePosixPath("a/b"))
    assert fingerprint(pathlib.PurePosixPath("a/b")) != fingerprint(pathlib.PurePosixPath("a/c"))
    assert fingerprint(pathlib.PureWindowsPath("a/b")) != fingerprint(pathlib.PurePosixPath("a/b"))
    assert fingerprint(pathlib.PurePosixPath("a/b")) != fingerprint("a/b")


def test_types_and_modules_are_keyed_by_name() -> None:
    assert fingerprint(int) != fingerprint(float)
    assert fingerprint(Color) != fingerprint(Shade)
    assert fingerprint(math) != fingerprint(re)
    assert fingerprint(Color) == fingerprint(Color)


@dataclasses.dataclass(frozen=True)
class Node:
    op: str
    args: tuple[Any, ...] = ()
    cache: dict[str, Any] = field(fingerprint=False, default_factory=dict)
    scratch: list[Any] = dataclasses.field(
        default_factory=list, metadata={"stepcache.fingerprint": False}
    )


@dataclasses.dataclass(frozen=True)
class OtherNode:
    op: str
    args: tuple[Any, ...] = ()


@dataclasses.dataclass(frozen=True)
class Renamed:
    name: str
    args: tuple[Any, ...] = ()


def test_dataclasses_are_keyed_by_type_and_fields() -> None:
    assert fingerprint(Node("add", (1, 2))) == fingerprint(Node("add", (1, 2)))
    assert fingerprint(Node("add", (1, 2))) != fingerprint(Node("add", (2, 1)))
    assert fingerprint(Node("add")) != fingerprint(OtherNode("add"))
    assert fingerprint(OtherNode("add")) != fingerprint(Renamed("add"))
    assert fingerprint(Node("add")) != fingerprint(("add", ()))


def test_opted_out_dataclass_fields_do_not_change_the_key() -> None:
    plain = Node("add")
    noisy = Node("add", cache={"anything": object()}, scratch=[1, 2, 3])
    assert fingerprint(plain) == fingerprint(noisy)


def test_field_keeps_other_metadata_and_options() -> None:
    made = field(fingerprint=False, default=3, metadata={"unit": "m"}, repr=False)
    assert made.metadata == {"unit": "m", "stepcache.fingerprint": False}
    assert made.default == 3
    assert not made.repr
    assert dict(field(default=1).metadata) == {}


class Point(NamedTuple):
    x: int
    y: int


def test_named_tuples_differ_from_tuples_and_from_each_other() -> None:
    Pair = collections.namedtuple("Pair", "x y")
    assert fingerprint(Point(1, 2)) == fingerprint(Point(1, 2))
    assert len(set(keys(Point(1, 2), (1, 2), Pair(1, 2), Point(2, 1)))) == 4


def test_numpy_equal_arrays_get_equal_keys() -> None:
    a = np.arange(24, dtype=np.float64).reshape(4, 6)
    assert fingerprint(a) == fingerprint(a.copy())
    assert fingerprint(a) == fingerprint(np.asfortranarray(a))


def test_numpy_non_contiguous_view_equals_its_copy() -> None:
    view = np.arange(24, dtype=np.int32).reshape(4, 6)[::2, 1::2]
    assert not view.flags.c_contiguous
    assert fingerprint(view) == fingerprint(view.copy())


def test_numpy_dtype_shape_and_data_changes_change_the_key() -> None:
    a = np.arange(12, dtype=np.float64).reshape(3, 4)
    changed = a.copy()
    changed[1, 2] = -1
    variants = [a, a.astype(np.float32), a.astype(">f8"), a.reshape(4, 3), a.ravel(), changed]
    assert len(set(keys(*variants))) == len(variants)
    assert fingerprint(a) != fingerprint(a.tolist())


def test_numpy_structured_and_object_arrays() -> None:
    xy = np.zeros(3, dtype=[("x", "<f8"), ("y", "<i4")])
    xz = np.zeros(3, dtype=[("x", "<f8"), ("z", "<i4")])
    assert fingerprint(xy) != fingerprint(xz)
    objects = np.array([1, "two", None], dtype=object)
    assert fingerprint(objects) == fingerprint(np.array([1, "two", None], dtype=object))
    assert fingerprint(objects) != fingerprint(np.array([1, "two", 3], dtype=object))


def test_numpy_scalars_and_dtypes() -> None:
    assert fingerprint(np.float64(1.0)) != fingerprint(1.0)
    assert fingerprint(np.float64(1.0)) != fingerprint(np.float32(1.0))
    assert fingerprint(np.float64(1.0)) == fingerprint(np.float64(1.0))
    assert fingerprint(np.dtype("f8")) == fingerprint(np.dtype(np.float64))
    assert fingerprint(np.dtype("f8")) != fingerprint(np.dtype("f4"))


def test_numpy_masked_arrays_include_the_mask() -> None:
    a = np.ma.masked_array([1, 2, 3], mask=[0, 1, 0])
    b = np.ma.masked_array([1, 2, 3], mask=[0, 0, 0])
    assert fingerprint(a) != fingerprint(b)


@pytest.mark.parametrize("mode", ["", "STRICT", "fast", None])
def test_unknown_mode_is_a_value_error(mode: Any) -> None:
    with pytest.raises(ValueError, match="mode"):
        fingerprint(1, mode=mode)


def test_keys_survive_the_per_type_cache_being_dropped(monkeypatch: pytest.MonkeyPatch) -> None:
    from stepcache.fingerprint import _resolve

    values = [Node("a", (Color.RED, Point(1, 2))), pathlib.PurePosixPath("x"), {1: Perm.R}]
    expected = keys(*values)
    monkeypatch.setattr(_resolve, "_MAX_TYPES", 0)  # every new type clears the cache
    many_types = [type(f"T{i}", (), {})() for i in range(20)]
    assert keys(*values) == expected
    assert len(set(keys(*many_types))) == 20
