"""A numpy interpreter for the IR: the reference the compiled kernels are checked against.

It shares nothing with the C path but the IR: locals are evaluated in order
(not inlined), each field access is a shifted slice of the input, and
operations are numpy's. So a bug in lowering, codegen or loading shows up as a
mismatch::

    >>> import numpy as np
    >>> from stepcache.demo.dsl import stencil_from_source
    >>> p = stencil_from_source("def dx(a: Field):\\n    return a[0, 1] - a[0, -1]")
    >>> evaluate(p, {"a": np.arange(8.0).reshape(2, 4)}, {})
    array([[0., 2., 2., 0.],
           [0., 2., 2., 0.]])
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import numpy.typing as npt

from stepcache.demo.ir import (
    BinOp,
    Call,
    Const,
    Expr,
    FieldAccess,
    Fn,
    Local,
    Op,
    Program,
    Scalar,
    UnaryOp,
    Where,
    footprint,
)

__all__ = ["evaluate"]

Array = npt.NDArray[Any]

_NP_OPS: dict[Op, Callable[[Any, Any], Any]] = {
    Op.ADD: np.add,
    Op.SUB: np.subtract,
    Op.MUL: np.multiply,
    Op.DIV: np.divide,
    Op.LT: np.less,
    Op.LE: np.less_equal,
    Op.GT: np.greater,
    Op.GE: np.greater_equal,
    Op.EQ: np.equal,
    Op.NE: np.not_equal,
}
_NP_FUNCTIONS: dict[Fn, Callable[..., Any]] = {
    Fn.SQRT: np.sqrt,
    Fn.ABS: np.abs,
    Fn.MIN: np.minimum,
    Fn.MAX: np.maximum,
    Fn.EXP: np.exp,
}


class _Evaluator:
    def __init__(
        self,
        fields: Mapping[str, Array],
        scalars: Mapping[str, Any],
        halo: tuple[int, int],
        dtype: np.dtype[Any],
    ) -> None:
        self.fields = fields
        self.scalars = {k: dtype.type(v) for k, v in scalars.items()}
        self.halo = halo
        self.dtype = dtype
        self.locals: dict[str, Any] = {}

    def shifted(self, access: FieldAccess) -> Array:
        array = self.fields[access.name]
        (ni, nj), (hi, hj) = array.shape, self.halo
        return array[hi + access.di : ni - hi + access.di, hj + access.dj : nj - hj + access.dj]

    def eval(self, expr: Expr) -> Any:
        if isinstance(expr, FieldAccess):
            return self.shifted(expr)
        if isinstance(expr, Scalar):
            return self.scalars[expr.name]
        if isinstance(expr, Const):
            return self.dtype.type(expr.value)
        if isinstance(expr, Local):
            return self.locals[expr.name]
        if isinstance(expr, BinOp):
            value = _NP_OPS[expr.op](self.eval(expr.left), self.eval(expr.right))
            # Comparisons are 1.0/0.0 in the field type, as in the C kernel.
            return value.astype(self.dtype) if expr.op.is_comparison else value
        if isinstance(expr, UnaryOp):
            return np.negative(self.eval(expr.operand))
        if isinstance(expr, Call):
            return _NP_FUNCTIONS[expr.fn](*(self.eval(a) for a in expr.args))
        if isinstance(expr, Where):
            return np.where(self.eval(expr.cond) != 0, self.eval(expr.a), self.eval(expr.b))
        raise TypeError(f"not an IR expression: {expr!r}")


def evaluate(
    program: Program,
    fields: Mapping[str, Array],
    scalars: Mapping[str, float],
    *,
    dtype: str | None = None,
) -> Array:
    """Evaluate ``program`` on numpy ``fields``; the halo of the result is zero.

    ``dtype`` defaults to the first field's dtype; scalars and constants are
    converted to it, so float32 programs are computed in float32.

    >>> from stepcache.demo.dsl import stencil_from_source
    >>> p = stencil_from_source("def f(a: Field, s: float):\\n    return s * a[0, 0]")
    >>> evaluate(p, {"a": np.ones((1, 2))}, {"s": 3.0}, dtype="float32")
    array([[3., 3.]], dtype=float32)
    """
    if not program.fields:
        raise ValueError(f"program {program.name!r} has no input field to take the shape from")
    first = np.asarray(fields[program.fields[0]])
    np_dtype = np.dtype(dtype) if dtype is not None else first.dtype
    arrays = {f: np.asarray(fields[f], dtype=np_dtype) for f in program.fields}
    shape = first.shape
    out = np.zeros(shape, dtype=np_dtype)
    used = footprint((*(a.value for a in program.body), program.result))
    hi, hj = (max(a, b) for a, b in zip(program.halo, used, strict=True))
    ni, nj = shape
    if ni <= 2 * hi or nj <= 2 * hj:
        return out
    ev = _Evaluator(arrays, {s: scalars[s] for s in program.scalars}, (hi, hj), np_dtype)
    # Inf/nan are legitimate stencil results; the kernel computes them silently too.
    with np.errstate(all="ignore"):
        for assign in program.body:
            ev.locals[assign.target] = ev.eval(assign.value)
        out[hi : ni - hi, hj : nj - hj] = ev.eval(program.result)
    return out
