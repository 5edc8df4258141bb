"""Stencil families for the program suite, written as DSL source templates.

Operators are built from "shiftable" expressions (offset -> source text), so
fused stencils such as the laplacian of a laplacian expand to plain field
accesses the DSL accepts.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Callable, Iterator

__all__ = ["FAMILIES", "Template", "random_template"]

Shiftable = Callable[[int, int], str]


@dataclasses.dataclass(frozen=True)
class Template:
    """One stencil without a name or dtype: parameters and body lines.

    >>> print(Template("x", "v", ("a",), (("s", 1.0),), ("return s * a[0, 0]",)).source("f"))
    def f(a: Field, s: float):
        return s * a[0, 0]
    """

    family: str
    variant: str
    fields: tuple[str, ...]
    scalars: tuple[tuple[str, float], ...]
    lines: tuple[str, ...]

    def source(self, name: str) -> str:
        """The DSL ``def`` for this template under ``name``."""
        params = [f"{f}: Field" for f in self.fields] + [f"{s}: float" for s, _ in self.scalars]
        return "\n".join([f"def {name}({', '.join(params)}):", *(f"    {x}" for x in self.lines)])


def _t(family: str, variant: str, fields: str, scalars: dict[str, float], *lines: str) -> Template:
    return Template(family, variant, tuple(fields.split()), tuple(scalars.items()), lines)


def field(name: str) -> Shiftable:
    """Accesses of field ``name`` at a given offset.

    >>> field("a")(1, -2)
    'a[1, -2]'
    """
    return lambda di, dj: f"{name}[{di}, {dj}]"


A = field("a")


def lap(g: Shiftable, r: int = 1) -> Shiftable:
    """The 5-point laplacian of ``g`` with arm length ``r``."""
    return lambda i, j: (
        f"(-4.0 * {g(i, j)} + {g(i + r, j)} + {g(i - r, j)} + {g(i, j + r)} + {g(i, j - r)})"
    )


def box(g: Shiftable, r: int = 1) -> Shiftable:
    """The mean of ``g`` over a ``(2r+1) x (2r+1)`` square."""
    n = (2 * r + 1) ** 2
    offsets = [(di, dj) for di in range(-r, r + 1) for dj in range(-r, r + 1)]
    return lambda i, j: f"({' + '.join(g(i + di, j + dj) for di, dj in offsets)}) * (1.0 / {n}.0)"


def nested(fn: str, terms: list[str]) -> str:
    """``fn`` applied pairwise: ``nested('max', [x, y, z])`` is ``max(max(x, y), z)``."""
    out = terms[0]
    for term in terms[1:]:
        out = f"{fn}({out}, {term})"
    return out


def laplacians() -> Iterator[Template]:
    """Laplacians of radius 1 and 2 and the 9-point isotropic one."""
    for r in (1, 2):
        yield _t("lap", f"r{r}", "a", {"alpha": 0.25}, f"return alpha * {lap(A, r)(0, 0)}")
    sides = " + ".join(A(i, j) for i, j in ((1, 0), (-1, 0), (0, 1), (0, -1)))
    corners = " + ".join(A(i, j) for i, j in ((1, 1), (-1, -1), (1, -1), (-1, 1)))
    yield _t("lap", "9pt", "a", {}, f"return (4.0 * ({sides}) + {corners} - 20.0 * a[0, 0]) / 6.0")


def gradients() -> Iterator[Template]:
    """Gradient magnitudes: central (radius 1, 2), forward and Sobel."""
    for r in (1, 2):
        yield _t(
            "gradmag", f"central{r}", "a", {"inv_2h": 0.5 / r},
            f"dx = (a[{r}, 0] - a[{-r}, 0]) * inv_2h",
            f"dy = (a[0, {r}] - a[0, {-r}]) * inv_2h",
            "return sqrt(dx * dx + dy * dy)",
        )  # fmt: skip
    yield _t(
        "gradmag", "forward", "a", {"inv_h": 2.0},
        "dx = a[1, 0] - a[0, 0]", "dy = a[0, 1] - a[0, 0]",
        "return sqrt(dx * dx + dy * dy) * inv_h",
    )  # fmt: skip
    yield _t(
        "gradmag", "sobel", "a", {},
        "gx = a[1, -1] + 2.0 * a[1, 0] + a[1, 1] - (a[-1, -1] + 2.0 * a[-1, 0] + a[-1, 1])",
        "gy = a[-1, 1] + 2.0 * a[0, 1] + a[1, 1] - (a[-1, -1] + 2.0 * a[0, -1] + a[1, -1])",
        "return sqrt(gx * gx + gy * gy) / 8.0",
    )  # fmt: skip


def filters() -> Iterator[Template]:
    """Box and binomial blur filters of radius 1 and 2."""
    for r in (1, 2):
        yield _t("box", f"r{r}", "a", {}, f"return {box(A, r)(0, 0)}")
    for r, weights in ((1, (1, 2, 1)), (2, (1, 4, 6, 4, 1))):
        total = sum(weights) ** 2
        terms = [
            f"{float(wi * wj)} * {A(i - r, j - r)}"
            for i, wi in enumerate(weights)
            for j, wj in enumerate(weights)
        ]
        yield _t("blur", f"r{r}", "a", {}, f"return ({' + '.join(terms)}) / {float(total)}")


def upwinds() -> Iterator[Template]:
    """Upwind advection with ``where``: per axis, in 2-D and second order."""
    for axis, (fwd, bwd) in {"i": ("1, 0", "-1, 0"), "j": ("0, 1", "0, -1")}.items():
        yield _t(
            "upwind", axis, "a u", {"c": 0.4},
            f"flux = where(u[0, 0] > 0.0, u[0, 0] * (a[0, 0] - a[{bwd}]),"
            f" u[0, 0] * (a[{fwd}] - a[0, 0]))",
            "return a[0, 0] - c * flux",
        )  # fmt: skip
    yield _t(
        "upwind", "2d", "a u v", {"c": 0.3},
        "fx = where(u[0, 0] > 0.0, u[0, 0] * (a[0, 0] - a[-1, 0]), u[0, 0] * (a[1, 0] - a[0, 0]))",
        "fy = where(v[0, 0] > 0.0, v[0, 0] * (a[0, 0] - a[0, -1]), v[0, 0] * (a[0, 1] - a[0, 0]))",
        "return a[0, 0] - c * (fx + fy)",
    )  # fmt: skip
    yield _t(
        "upwind", "second", "a u", {"c": 0.2},
        "up = (3.0 * a[0, 0] - 4.0 * a[-1, 0] + a[-2, 0]) * 0.5",
        "down = (-a[2, 0] + 4.0 * a[1, 0] - 3.0 * a[0, 0]) * 0.5",
        "return a[0, 0] - c * u[0, 0] * where(u[0, 0] > 0.0, up, down)",
    )  # fmt: skip


def diffusions() -> Iterator[Template]:
    """Explicit diffusion steps: isotropic, anisotropic, variable coefficient."""
    yield _t("diffusion", "explicit", "a", {"nu": 0.1}, f"return a[0, 0] + nu * {lap(A)(0, 0)}")
    yield _t(
        "diffusion", "aniso", "a", {"kx": 0.1, "ky": 0.05},
        "ddx = a[1, 0] - 2.0 * a[0, 0] + a[-1, 0]", "ddy = a[0, 1] - 2.0 * a[0, 0] + a[0, -1]",
        "return a[0, 0] + kx * ddx + ky * ddy",
    )  # fmt: skip
    yield _t(
        "diffusion",
        "varcoef",
        "a k",
        {"dt": 0.05},
        f"return a[0, 0] + dt * (1.0 + k[0, 0] * k[0, 0]) * {lap(A)(0, 0)}",
    )


def skewed() -> Iterator[Template]:
    """Stencils with diagonal and knight's-move offsets."""
    yield _t("skew", "diag", "a", {}, "return 0.5 * (a[1, 1] - a[-1, -1])")
    yield _t("skew", "anti", "a", {}, "return 0.5 * (a[1, -1] - a[-1, 1])")
    yield _t(
        "skew", "knight", "a", {},
        "return (a[2, 1] + a[-2, -1] + a[1, -2] + a[-1, 2]) * 0.25 - a[0, 0]",
    )  # fmt: skip
    yield _t(
        "skew", "onesided", "a", {"w": 0.5}, "return (3.0 * a[0, 0] - 4.0 * a[1, 1] + a[2, 2]) * w"
    )


def fused() -> Iterator[Template]:
    """Operators applied to operators: laplacian of laplacian, of a box filter..."""
    yield _t("fused", "laplap", "a", {"alpha": 0.05}, f"return alpha * {lap(lap(A))(0, 0)}")
    yield _t("fused", "lapbox", "a", {}, f"return {lap(box(A))(0, 0)}")
    yield _t("fused", "boxbox", "a", {}, f"return {box(box(A))(0, 0)}")


def extrema() -> Iterator[Template]:
    """Min and max filters, a morphological gradient and a clamp."""
    square = [A(i, j) for i in (-1, 0, 1) for j in (-1, 0, 1)]
    cross = [A(i, j) for i, j in ((0, 0), (1, 0), (-1, 0), (0, 1), (0, -1))]
    yield _t("extrema", "max3x3", "a", {}, f"return {nested('max', square)}")
    yield _t("extrema", "mincross", "a", {}, f"return {nested('min', cross)}")
    yield _t(
        "extrema", "morph", "a", {},
        f"hi = {nested('max', cross)}", f"lo = {nested('min', cross)}", "return hi - lo",
    )  # fmt: skip
    yield _t("extrema", "clamp", "a", {"lo": -0.5, "hi": 0.5}, "return min(max(a[0, 0], lo), hi)")


def nonlinear() -> Iterator[Template]:
    """Exponential decay, square roots, Perona-Malik and a reaction term."""
    yield _t("nonlin", "expdecay", "a b", {"k": 0.7}, "return a[0, 0] * exp(-k * b[0, 0])")
    yield _t(
        "nonlin", "sqrtabs", "a", {}, "return sqrt(abs(a[0, 0] * a[1, 0])) - sqrt(abs(a[0, -1]))"
    )
    yield _t(
        "nonlin", "peronamalik", "a", {"dt": 0.1, "inv_k2": 4.0},
        "gx = a[1, 0] - a[-1, 0]", "gy = a[0, 1] - a[0, -1]",
        "g = 1.0 / (1.0 + (gx * gx + gy * gy) * inv_k2)",
        f"return a[0, 0] + dt * g * {lap(A)(0, 0)}",
    )  # fmt: skip
    yield _t(
        "nonlin", "reaction", "a", {"dt": 0.1, "th": 0.25, "d": 0.05},
        "r = a[0, 0] * (1.0 - a[0, 0]) * (a[0, 0] - th)",
        f"return a[0, 0] + dt * r + d * {lap(A)(0, 0)}",
    )  # fmt: skip


def vectors() -> Iterator[Template]:
    """Divergence, curl and advection of a vector field ``(u, v)``."""
    yield _t(
        "vector", "div", "u v", {"inv_2h": 0.5},
        "return (u[1, 0] - u[-1, 0]) * inv_2h + (v[0, 1] - v[0, -1]) * inv_2h",
    )  # fmt: skip
    yield _t(
        "vector", "curl", "u v", {"inv_2h": 0.5},
        "return (v[1, 0] - v[-1, 0] - (u[0, 1] - u[0, -1])) * inv_2h",
    )  # fmt: skip
    yield _t(
        "vector", "advect", "a u v", {"dt": 0.1},
        "return a[0, 0] - dt * (u[0, 0] * (a[1, 0] - a[-1, 0]) + v[0, 0] * (a[0, 1] - a[0, -1]))"
        " / 2.0",
    )  # fmt: skip


def limiters() -> Iterator[Template]:
    """``where``-based limiters and comparisons used as values."""
    yield _t("limit", "relu", "a", {"thr": 0.1}, "return where(a[0, 0] > thr, a[0, 0], 0.0)")
    yield _t(
        "limit", "localmax", "a", {},
        "m = max(max(a[1, 0], a[-1, 0]), max(a[0, 1], a[0, -1]))",
        "return where(a[0, 0] >= m, 1.0, 0.0)",
    )  # fmt: skip
    yield _t(
        "limit", "minmod", "a", {},
        "dl = a[0, 0] - a[-1, 0]", "dr = a[1, 0] - a[0, 0]",
        "return where(dl * dr > 0.0, where(abs(dl) < abs(dr), dl, dr), 0.0)",
    )  # fmt: skip
    yield _t(
        "limit", "step", "a", {}, "return (a[0, 0] > 0.0) * a[1, 0] + (a[0, 0] <= 0.0) * a[-1, 0]"
    )


def foldable() -> Iterator[Template]:
    """Programs full of constants and identities for the passes to remove."""
    yield _t(
        "fold", "identity", "a", {},
        "return (a[0, 0] * 1.0 + 0.0) / 1.0 * (2.0 - 1.0) - 0.0 * 3.0",
    )  # fmt: skip
    yield _t(
        "fold", "poly", "a", {},
        "c = 2.0 * 0.25",
        "return c + 3.0 * a[0, 0] - -1.0 * a[0, 0] * a[0, 0] + 0.5 * 2.0 * a[1, 0]",
    )  # fmt: skip
    yield _t(
        "fold", "horner", "a", {},
        "return ((0.25 * a[0, 0] + 0.5) * a[0, 0] + 1.0) * a[0, 0] + 2.0",
    )  # fmt: skip


FAMILIES: tuple[Callable[[], Iterator[Template]], ...] = (
    laplacians, gradients, filters, upwinds, diffusions, skewed, fused,
    extrema, nonlinear, vectors, limiters, foldable,
)  # fmt: skip


def _random_term(rng: random.Random, fields: list[str], r: int) -> str:
    def acc() -> str:
        return f"{rng.choice(fields)}[{rng.randint(-r, r)}, {rng.randint(-r, r)}]"

    kind = rng.randrange(6)
    coef = round(rng.uniform(-2.0, 2.0), 2)
    if kind == 0:
        return f"{coef} * {acc()}"
    if kind == 1:
        return f"{acc()} * {acc()}"
    if kind == 2:
        return f"sqrt(abs({acc()} - {acc()}))"
    if kind == 3:
        return f"exp({round(coef / 2.0, 2)} * {acc()})"
    if kind == 4:
        return f"{rng.choice(['min', 'max'])}({acc()}, {acc()})"
    return f"where({acc()} > {acc()}, {acc()}, {coef})"


def random_template(rng: random.Random, index: int) -> Template:
    """A random mix of terms (radius 1-2, 1-2 fields, 0-2 scalars), drawn from ``rng``."""
    fields = ["a", "b"][: rng.randint(1, 2)]
    scalars = {s: round(rng.uniform(0.1, 1.0), 2) for s in ["s", "t"][: rng.randint(0, 2)]}
    r = rng.randint(1, 2)
    terms = [_random_term(rng, fields, r) for _ in range(rng.randint(2, 5))]
    lines = [f"x = {' + '.join(terms[:2])}"]
    rest = " - ".join(["x", *terms[2:]])
    scale = " * ".join([*scalars, f"({rest})"]) if scalars else rest
    lines.append(f"return {scale} / (1.0 + x * x)")
    return Template("mix", f"{index:03d}", tuple(fields), tuple(scalars.items()), tuple(lines))
