"""The demo's program suite: about a hundred distinct stencils with references.

    >>> specs = suite(100)
    >>> len(specs), len({s.name for s in specs}), specs[0].name
    (100, 100, 'lap_f64_r1')

The suite is a pure function of ``n`` and ``seed``: the same names, sources,
shapes and inputs in every process, which is what lets a warm cache serve a
second run. Families are interleaved, so a prefix of the suite mixes operator
families and both dtypes; random mixes fill the suite past the fixed families.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import random
import zlib
from typing import TYPE_CHECKING, Any

from stepcache.demo._families import FAMILIES, Template, random_template
from stepcache.demo.dsl import stencil_from_source
from stepcache.demo.ir import Program

if TYPE_CHECKING:
    import numpy.typing as npt

__all__ = ["DTYPES", "TOLERANCES", "ProgramSpec", "suite", "verify"]

DTYPES = ("float64", "float32")
#: relative tolerance per dtype, scaled by the largest expected magnitude
TOLERANCES = {"float64": 1e-10, "float32": 1e-5}
_SHAPES = ((24, 32), (31, 29), (40, 24), (17, 45), (32, 32), (48, 20))
_SHORT = {"float64": "f64", "float32": "f32"}


@dataclasses.dataclass(frozen=True)
class ProgramSpec:
    """One program of the suite: DSL source, arguments and a numpy reference.

    Picklable and cheap: inputs and the reference are computed on demand,
    deterministically from the name.

    >>> spec = suite(1)[0]
    >>> spec.name, spec.dtype, spec.shape, spec.scalar_args()
    ('lap_f64_r1', 'float64', (24, 32), {'alpha': 0.25})
    >>> sorted(spec.inputs()), spec.reference().shape
    (['a'], (24, 32))
    """

    name: str
    source: str
    dtype: str
    shape: tuple[int, int]
    scalars: tuple[tuple[str, float], ...]
    family: str

    def program(self) -> Program:
        """The parsed IR (before lowering), parsed once per process.

        The demo's workers hand it to the pipeline (whose Parse step passes a
        Program on), so the pipeline, the inputs and the reference share one
        parse, as they would for a decorated stencil.
        """
        return _parsed(self.source, self.name)

    def scalar_args(self) -> dict[str, float]:
        """Scalar arguments by name."""
        return dict(self.scalars)

    def inputs(self) -> dict[str, npt.NDArray[Any]]:
        """Input fields by name: uniform in [-1, 1), seeded by the program and field names."""
        return {
            f: _uniform(f"{self.name}:{f}", self.shape).astype(self.dtype)
            for f in self.program().fields
        }

    def reference(self, inputs: dict[str, npt.NDArray[Any]] | None = None) -> npt.NDArray[Any]:
        """Expected output, from the numpy interpreter on the unlowered IR."""
        from stepcache.demo.interp import evaluate

        fields = self.inputs() if inputs is None else inputs
        return evaluate(self.program(), fields, self.scalar_args(), dtype=self.dtype)


def _uniform(seed: str, shape: tuple[int, int]) -> npt.NDArray[Any]:
    """Floats uniform in [-1, 1) from SplitMix64 seeded with the CRC-32 of ``seed``.

    (numpy's ``random`` package would do as well; importing it costs a
    worker 11 ms, more than generating every input of the suite.)
    """
    import numpy as np

    # SplitMix64's states seed + k * golden (k = 1, 2, ...), wrapping modulo 2**64, then its mix
    z = np.arange(1, shape[0] * shape[1] + 1, dtype=np.uint64)
    z *= np.uint64(0x9E3779B97F4A7C15)
    z += np.uint64(zlib.crc32(seed.encode()))
    z ^= z >> np.uint64(30)
    z *= np.uint64(0xBF58476D1CE4E5B9)
    z ^= z >> np.uint64(27)
    z *= np.uint64(0x94D049BB133111EB)
    z ^= z >> np.uint64(31)
    unit: npt.NDArray[Any] = (z >> np.uint64(11)).astype(np.float64) * 2.0**-53
    return (2.0 * unit - 1.0).reshape(shape)


@functools.lru_cache(maxsize=1024)
def _parsed(source: str, name: str) -> Program:
    # Inputs and reference both need the IR; Program is immutable, so one parse serves both.
    return stencil_from_source(source, name)


def verify(
    spec: ProgramSpec,
    result: npt.NDArray[Any],
    inputs: dict[str, npt.NDArray[Any]] | None = None,
) -> bool:
    """Whether ``result`` matches ``spec.reference(inputs)`` within the dtype's tolerance.

    >>> spec = suite(1)[0]
    >>> verify(spec, spec.reference()), verify(spec, spec.reference() + 1e-3)
    (True, False)
    """
    import numpy as np

    expected = spec.reference(inputs)
    if result.shape != expected.shape or result.dtype != expected.dtype:
        return False
    finite = np.abs(expected[np.isfinite(expected)])
    scale = max(1.0, float(finite.max())) if finite.size else 1.0
    rtol = TOLERANCES[spec.dtype]
    return bool(np.allclose(result, expected, rtol=rtol, atol=rtol * scale, equal_nan=True))


def _templates() -> list[list[Template]]:
    return [list(family()) for family in FAMILIES]


def _fixed_specs() -> list[tuple[Template, str]]:
    # Round-robin over families; odd families start with float32 so any
    # prefix of the suite has both dtypes.
    per_family = []
    for index, templates in enumerate(_templates()):
        dtypes = DTYPES if index % 2 == 0 else DTYPES[::-1]
        per_family.append([(t, dt) for t in templates for dt in dtypes])
    interleaved = itertools.zip_longest(*per_family)
    return [item for row in interleaved for item in row if item is not None]


def _spec(template: Template, dtype: str, position: int) -> ProgramSpec:
    name = f"{template.family}_{_SHORT[dtype]}_{template.variant}"
    return ProgramSpec(
        name=name,
        source=template.source(name),
        dtype=dtype,
        shape=_SHAPES[position % len(_SHAPES)],
        scalars=template.scalars,
        family=template.family,
    )


def suite(n: int = 100, *, seed: int = 0) -> list[ProgramSpec]:
    """The first ``n`` programs of the suite (``seed`` varies only the random mixes).

    >>> [s.name for s in suite(3)]
    ['lap_f64_r1', 'gradmag_f32_central1', 'box_f64_r1']
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, not {n}")
    chosen = _fixed_specs()[:n]
    specs = [_spec(t, dt, i) for i, (t, dt) in enumerate(chosen)]
    rng = random.Random(seed)
    seen = {s.source.split("\n", 1)[1] for s in specs}
    index = 0
    while len(specs) < n:
        template = random_template(rng, index)
        index += 1
        body = template.source("_").split("\n", 1)[1]
        if body in seen:
            continue
        seen.add(body)
        specs.append(_spec(template, DTYPES[len(specs) % 2], len(specs)))
    return specs
