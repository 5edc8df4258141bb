"""Fingerprint speed on an IR tree, against the floor ``xxh3_128(pickle.dumps(tree))``.

The tree is what a compiler front end produces: about 10,000 nested frozen
dataclasses holding tuples, strings, ints, floats and enums. The floor is
the cheapest way to hash such a tree at all (C pickling, no canonical form);
the goal is for ``fingerprint`` to stay within 1.5 times the floor.

Usage::

    python benchmarks/bench_fingerprint.py [--quick] [--json]

``run(quick)`` returns the figures as a dict. Runs of both are interleaved
so that load on the machine hits both alike; min and median are reported.
"""

from __future__ import annotations

import dataclasses
import enum
import os
import pickle
import random
import sys
from typing import Any

import xxhash

from stepcache.fingerprint import fingerprint

if not __package__:  # run as a script: the checkout is not on sys.path
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks import _harness as h

NODES = 10_000


class Op(enum.Enum):
    ADD = "+"
    SUB = "-"
    MUL = "*"
    DIV = "/"


class DType(enum.Enum):
    F32 = "float32"
    F64 = "float64"
    I32 = "int32"


@dataclasses.dataclass(frozen=True)
class Literal:
    value: float
    dtype: DType


@dataclasses.dataclass(frozen=True)
class FieldAccess:
    name: str
    offset: tuple[int, int, int]


@dataclasses.dataclass(frozen=True)
class BinOp:
    op: Op
    left: Any
    right: Any


@dataclasses.dataclass(frozen=True)
class Assign:
    target: str
    value: Any
    horizontal_only: bool


@dataclasses.dataclass(frozen=True)
class Stencil:
    name: str
    params: tuple[str, ...]
    body: tuple[Assign, ...]
    opt_level: int


def _expr(rng: random.Random, depth: int) -> tuple[Any, int]:
    if depth == 0 or rng.random() < 0.3:
        if rng.random() < 0.5:
            return Literal(rng.random(), rng.choice(list(DType))), 1
        offset = (rng.randint(-2, 2), rng.randint(-2, 2), 0)
        return FieldAccess(rng.choice(["u", "v", "w", "phi", "lap"]), offset), 1
    left, n_left = _expr(rng, depth - 1)
    right, n_right = _expr(rng, depth - 1)
    return BinOp(rng.choice(list(Op)), left, right), 1 + n_left + n_right


def make_tree(nodes: int = NODES, seed: int = 0) -> tuple[Stencil, int]:
    """A reproducible stencil IR of at least ``nodes`` dataclass nodes; returns (tree, count)."""
    rng = random.Random(seed)
    body: list[Assign] = []
    total = 1
    while total < nodes:
        value, count = _expr(rng, 6)
        body.append(Assign(f"out{len(body)}", value, rng.random() < 0.5))
        total += count + 1
    return Stencil("lap", ("u", "v", "w"), tuple(body), 3), total


def _floor(tree: Any) -> str:
    return xxhash.xxh3_128(pickle.dumps(tree)).hexdigest()


def run(quick: bool = False) -> dict[str, Any]:
    """Measure and return nodes, ns per node (min, median) for both, and the ratios."""
    tree, nodes = make_tree()
    fingerprint(tree)  # resolve per-type handlers once, as any long run would
    times = h.interleaved(
        {"fingerprint": lambda i: fingerprint(tree), "floor": lambda i: _floor(tree)},
        repeat=5 if quick else 30,
    )
    mine, floor = (h.summarize(times[n], 1e9 / nodes) for n in ("fingerprint", "floor"))
    return {
        "nodes": nodes,
        "repeat": floor.n,
        "fingerprint_ns_per_node_min": round(mine.min, 1),
        "fingerprint_ns_per_node_median": round(mine.median, 1),
        "floor_ns_per_node_min": round(floor.min, 1),
        "floor_ns_per_node_median": round(floor.median, 1),
        "ratio_min": round(mine.min / floor.min, 3),
        "ratio_median": round(mine.median / floor.median, 3),
    }


def table(figures: dict[str, Any]) -> str:
    """The figures as a small markdown table."""
    rows = [
        "| measure | ns/node (min) | ns/node (median) |",
        "|---|---:|---:|",
        f"| fingerprint | {figures['fingerprint_ns_per_node_min']} "
        f"| {figures['fingerprint_ns_per_node_median']} |",
        f"| floor: xxh3_128(pickle.dumps) | {figures['floor_ns_per_node_min']} "
        f"| {figures['floor_ns_per_node_median']} |",
        f"| ratio | {figures['ratio_min']} | {figures['ratio_median']} |",
    ]
    return f"{figures['nodes']} nodes, {figures['repeat']} runs each\n\n" + "\n".join(rows)


def main(argv: list[str] | None = None) -> None:
    """Command line: print the table, or the figures as JSON with ``--json``."""
    h.standalone(run, table, "Fingerprint speed against its floor.", argv)


if __name__ == "__main__":
    main()
