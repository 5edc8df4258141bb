"""IR-like values whose keys must be identical in every process.

Imported under the same module name by the tests in this directory and by
the subprocesses they start with different PYTHONHASHSEED values (the module
name is part of the keys of the classes defined here).
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import math
import pathlib
from typing import Any

import numpy as np

from stepcache.fingerprint import field, fingerprint


class Op(enum.Enum):
    ADD = "+"
    MUL = "*"


class Kind(enum.IntEnum):
    SCALAR = 1
    FIELD = 2


@dataclasses.dataclass(frozen=True)
class Ref:
    name: str
    offset: tuple[int, int, int] = (0, 0, 0)


@dataclasses.dataclass(frozen=True)
class BinOp:
    op: Op
    left: Any
    right: Any


@dataclasses.dataclass(frozen=True)
class Assign:
    target: str
    value: Any
    kind: Kind = Kind.FIELD


@dataclasses.dataclass(frozen=True)
class Program:
    name: str
    body: tuple[Assign, ...]
    params: dict[str, Any]
    symbols: frozenset[str]
    opt_level: int = 2
    notes: list[str] = field(fingerprint=False, default_factory=list)


def scale(x: float, factor: float = 2.0) -> float:
    """A module-level function: keyed by name in strict mode."""
    return x * factor


def program() -> Program:
    """A small stencil program touching most kinds of value."""
    lap = BinOp(Op.ADD, Ref("u", (1, 0, 0)), BinOp(Op.MUL, Ref("u"), Ref("u", (-1, 0, 0))))
    body = tuple(Assign(f"out{i}", lap if i % 2 else Ref("v", (0, i, 0))) for i in range(6))
    params = {
        "alpha": 0.5,
        "nan": math.nan,
        "negzero": -0.0,
        "weights": np.linspace(0.0, 1.0, 7),
        "mask": np.eye(3, dtype=bool)[:, ::2],
        "blob": b"\x00\xff",
        "cplx": 1 - 2j,
        "big": 2**200,
        "tags": {"fast", "exact", "sse"},
        "path": pathlib.PurePosixPath("build/out.c"),
    }
    return Program("lap", body, params, frozenset({"u", "v", "out0"}))


def corpus() -> dict[str, Any]:
    """Named values; keys are compared across processes."""
    return {
        "program": program(),
        "sets": ({"a", "b", "c", "d"}, frozenset({("x", 1), ("y", 2)}), {1.5, -2, "z"}),
        "dicts": {"z": {"nested": [1, 2]}, "a": {3: "x", "y": None}, (1, "k"): ...},
        "function": scale,
        "lambda": lambda x: x + 1,
        "partial": functools.partial(scale, factor=3.0),
        "builtin": math.sqrt,
        "types": (int, Program, Op, np.float32),
        "numpy_scalars": (np.float64(1.25), np.int8(-3), np.dtype([("x", "<f4"), ("y", "<i2")])),
        "object_array": np.array([1, "two", (3,)], dtype=object),
    }


def keys() -> dict[str, str]:
    """Keys of the corpus in both modes."""
    values = corpus()
    return {
        f"{mode}:{name}": fingerprint(value, mode=mode)
        for name, value in values.items()
        for mode in ("strict", "lenient")
    }
