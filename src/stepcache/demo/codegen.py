"""Translation of a lowered :class:`~stepcache.demo.ir.Program` to C source.

The kernel for program ``lap`` with field ``a`` and scalar ``alpha`` is::

    void sc_lap(int ni, int nj, const double* restrict f_a, double s_alpha,
                double* restrict out)

looping over the interior ``[hi, ni-hi) x [hj, nj-hj)`` of row-major arrays,
where ``(hi, hj)`` is the halo. Parameters get ``f_``/``s_`` prefixes so no DSL
name can collide with a C keyword or a loop variable::

    >>> from stepcache.demo.dsl import stencil_from_source
    >>> src = translate(stencil_from_source("def twice(a: Field):\\n    return 2.0 * a[0, 1]"))
    >>> src.function, src.halo, src.dtype
    ('sc_twice', (0, 1), 'float64')
    >>> "out[k] = 2.0 * f_a[k + 1];" in src.code
    True

Output is a pure function of its arguments: no timestamps, no paths.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, ClassVar

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

__all__ = ["CTYPES", "CSource", "translate"]

#: numpy dtype name -> C type
CTYPES = {"float32": "float", "float64": "double"}

# C function names per dtype: the float32 versions avoid silent promotion to double.
_C_FUNCTIONS = {
    "float32": {
        Fn.SQRT: "sqrtf",
        Fn.ABS: "fabsf",
        Fn.MIN: "fminf",
        Fn.MAX: "fmaxf",
        Fn.EXP: "expf",
    },
    "float64": {Fn.SQRT: "sqrt", Fn.ABS: "fabs", Fn.MIN: "fmin", Fn.MAX: "fmax", Fn.EXP: "exp"},
}


@dataclasses.dataclass(frozen=True)
class CSource:
    """C source for one kernel plus what a loader needs to call it.

    ``fields`` and ``scalars`` give the argument order after ``ni, nj``; the
    output pointer comes last (``translate`` in the module docstring makes one).
    """

    name: str
    code: str
    function: str
    fields: tuple[str, ...]
    scalars: tuple[str, ...]
    halo: tuple[int, int]
    dtype: str

    def metadata(self) -> dict[str, Any]:
        """JSON-ready description of the kernel's calling convention.

        >>> CSource("f", "", "sc_f", ("a",), (), (1, 0), "float32").metadata()["halo"]
        [1, 0]
        """
        return {
            "name": self.name,
            "function": self.function,
            "fields": list(self.fields),
            "scalars": list(self.scalars),
            "halo": list(self.halo),
            "dtype": self.dtype,
        }


def _literal(value: float, dtype: str) -> str:
    if not math.isfinite(value):
        raise ValueError(f"cannot emit non-finite constant {value!r}")
    text = repr(float(value))
    return f"{text}f" if dtype == "float32" else text


def _offset(access: FieldAccess) -> str:
    terms = []
    if access.di:
        row = "nj" if abs(access.di) == 1 else f"{abs(access.di)} * nj"
        terms.append(f"{'-' if access.di < 0 else '+'} {row}")
    if access.dj:
        terms.append(f"{'-' if access.dj < 0 else '+'} {abs(access.dj)}")
    return f"f_{access.name}[k{''.join(' ' + t for t in terms)}]"


class _Emitter:
    """Emits a C expression with the parentheses C precedence requires."""

    # C precedence, higher binds tighter; ?: is lowest here.
    _PREC: ClassVar[dict[Op, int]] = {
        Op.MUL: 13, Op.DIV: 13, Op.ADD: 12, Op.SUB: 12,
        Op.LT: 10, Op.LE: 10, Op.GT: 10, Op.GE: 10, Op.EQ: 9, Op.NE: 9,
    }  # fmt: skip
    _UNARY, _ATOM, _COND = 14, 16, 3

    def __init__(self, dtype: str) -> None:
        self.dtype = dtype
        self.functions = _C_FUNCTIONS[dtype]

    def emit(self, expr: Expr) -> str:
        return self._emit(expr)[0]

    def _emit(self, expr: Expr) -> tuple[str, int]:
        if isinstance(expr, FieldAccess):
            return _offset(expr), self._ATOM
        if isinstance(expr, Scalar):
            return f"s_{expr.name}", self._ATOM
        if isinstance(expr, Const):
            text = _literal(expr.value, self.dtype)
            return text, self._ATOM if expr.value >= 0 else self._UNARY
        if isinstance(expr, Local):
            raise ValueError(f"local {expr.name!r} reached codegen: run inline_locals first")
        if isinstance(expr, Call):
            args = ", ".join(self.emit(a) for a in expr.args)
            return f"{self.functions[expr.fn]}({args})", self._ATOM
        if isinstance(expr, Where):
            # A comparison is a fine C condition as it is: no cast to the field type.
            c = expr.cond
            if isinstance(c, BinOp) and c.op.is_comparison:
                cond = self._compare(c)[0]
            else:
                cond = self._wrap(c, self._COND + 1)
            a, b = (self._wrap(e, self._COND + 1) for e in (expr.a, expr.b))
            return f"{cond} ? {a} : {b}", self._COND
        if isinstance(expr, UnaryOp):
            inner = self._wrap(expr.operand, self._UNARY)
            # A space keeps "- -x" from becoming the decrement operator.
            return f"-{' ' if inner.startswith('-') else ''}{inner}", self._UNARY
        return self._binop(expr)

    def _compare(self, expr: BinOp) -> tuple[str, int]:
        prec = self._PREC[expr.op]
        # Comparisons do not chain: both operands need parentheses at equal precedence.
        left, right = self._wrap(expr.left, prec + 1), self._wrap(expr.right, prec + 1)
        return f"{left} {expr.op.value} {right}", prec

    def _binop(self, expr: BinOp) -> tuple[str, int]:
        if expr.op.is_comparison:
            # A comparison is an int in C; the cast keeps arithmetic on it in the field type.
            return f"({CTYPES[self.dtype]})({self._compare(expr)[0]})", self._UNARY
        prec = self._PREC[expr.op]
        return (
            f"{self._wrap(expr.left, prec)} {expr.op.value} {self._wrap(expr.right, prec + 1)}",
            prec,
        )

    def _wrap(self, expr: Expr, minimum: int) -> str:
        text, prec = self._emit(expr)
        return text if prec >= minimum else f"({text})"


def _bound(n: str, halo: int) -> str:
    return f"{n} - {halo}" if halo else n


def translate(program: Program, *, dtype: str = "float64", unroll: int = 0) -> CSource:
    """C source for ``program`` (locals must already be inlined).

    ``unroll`` > 0 adds ``#pragma GCC unroll <n>`` to the inner loop.

    >>> from stepcache.demo.ir import Scalar
    >>> translate(Program("f", (), ("s",), (), Scalar("s")), dtype="float32").code.count("float")
    2
    """
    if dtype not in CTYPES:
        raise ValueError(f"dtype must be one of {sorted(CTYPES)}, not {dtype!r}")
    if program.body:
        raise ValueError(f"program {program.name!r} has locals: run inline_locals first")
    hi, hj = (max(a, b) for a, b in zip(program.halo, footprint((program.result,)), strict=True))
    ctype = CTYPES[dtype]
    function = f"sc_{program.name}"
    params = ["int ni", "int nj"]
    params += [f"const {ctype}* restrict f_{f}" for f in program.fields]
    params += [f"{ctype} s_{s}" for s in program.scalars]
    params.append(f"{ctype}* restrict out")
    pragma = [f"        #pragma GCC unroll {unroll}"] if unroll > 0 else []
    lines = [
        f"/* stencil {program.name}: generated by stepcache.demo */",
        "#include <math.h>",
        "",
        f"void {function}({', '.join(params)})",
        "{",
        f"    for (int i = {hi}; i < {_bound('ni', hi)}; ++i) {{",
        *pragma,
        f"        for (int j = {hj}; j < {_bound('nj', hj)}; ++j) {{",
        "            const long k = (long)i * nj + j;",
        f"            out[k] = {_Emitter(dtype).emit(program.result)};",
        "        }",
        "    }",
        "}",
        "",
    ]
    return CSource(
        name=program.name,
        code="\n".join(lines),
        function=function,
        fields=program.fields,
        scalars=program.scalars,
        halo=(hi, hj),
        dtype=dtype,
    )
