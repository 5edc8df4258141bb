"""Lowering passes: pure functions ``Program -> Program``.

* :func:`inline_locals` substitutes every local into the result; the body empties.
* :func:`fold_constants` evaluates operations whose operands are all constants.
* :func:`simplify` applies exact algebraic rewrites (identities, strength
  reduction, canonical operand order) until nothing changes.
* :func:`lower` is what every pipeline runs: inlining, then folding.

Every rewrite here is exact in IEEE arithmetic (``x*2 -> x+x``, ``x/4 ->
x*0.25``, swapping operands of ``+``), so a transformed program computes the
same bits as the original, up to the sign of zero::

    >>> from stepcache.demo.dsl import stencil_from_source
    >>> from stepcache.demo.ir import format_expr
    >>> p = stencil_from_source("def f(a: Field, s: float):\\n    t = 1.0 * a[0, 0]\\n"
    ...                         "    return 2.0 * t + (3.0 - 3.0) * s")
    >>> format_expr(lower(p).result)
    '2.0 * (1.0 * a[0, 0]) + 0.0 * s'
    >>> format_expr(simplify(lower(p)).result)
    'a[0, 0] + a[0, 0] + s * 0.0'
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping

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
    UnOp,
    Where,
    rewrite,
)

__all__ = ["fold_constants", "inline_locals", "lower", "simplify"]

_ARITH: dict[Op, Callable[[float, float], float]] = {
    Op.ADD: lambda x, y: x + y,
    Op.SUB: lambda x, y: x - y,
    Op.MUL: lambda x, y: x * y,
    Op.DIV: lambda x, y: x / y,
    Op.LT: lambda x, y: float(x < y),
    Op.LE: lambda x, y: float(x <= y),
    Op.GT: lambda x, y: float(x > y),
    Op.GE: lambda x, y: float(x >= y),
    Op.EQ: lambda x, y: float(x == y),
    Op.NE: lambda x, y: float(x != y),
}
_MATH: dict[Fn, Callable[..., float]] = {
    Fn.SQRT: math.sqrt,
    Fn.ABS: abs,
    Fn.MIN: min,
    Fn.MAX: max,
    Fn.EXP: math.exp,
}


def _map_program(program: Program, fn: Callable[[Expr], Expr]) -> Program:
    body = tuple(dataclasses.replace(a, value=rewrite(a.value, fn)) for a in program.body)
    return dataclasses.replace(program, body=body, result=rewrite(program.result, fn))


def _fold_node(expr: Expr) -> Expr:
    try:
        if isinstance(expr, BinOp) and isinstance(expr.left, Const):
            if isinstance(expr.right, Const):
                value = _ARITH[expr.op](expr.left.value, expr.right.value)
                return Const(value) if math.isfinite(value) else expr
        elif isinstance(expr, UnaryOp) and isinstance(expr.operand, Const):
            return Const(-expr.operand.value)
        elif isinstance(expr, Call) and all(isinstance(a, Const) for a in expr.args):
            value = _MATH[expr.fn](*(a.value for a in expr.args if isinstance(a, Const)))
            return Const(float(value)) if math.isfinite(value) else expr
        elif isinstance(expr, Where) and isinstance(expr.cond, Const):
            return expr.a if expr.cond.value != 0.0 else expr.b
    except (ArithmeticError, ValueError):
        # 1/0, sqrt(-1), exp(1000): left for the target to compute (inf or nan).
        pass
    return expr


def fold_constants(program: Program) -> Program:
    """Replace operations on constants by their value; ``where(1.0, x, y)`` by ``x``.

    Results that would be inf or nan are not folded, so emitted literals stay finite.

    >>> from stepcache.demo.ir import format_expr
    >>> p = Program("f", (), ("s",), (), BinOp(Op.MUL, BinOp(Op.DIV, Const(1.0),
    ...             Const(4.0)), Scalar("s")))
    >>> format_expr(fold_constants(p).result)
    '0.25 * s'
    """
    return _map_program(program, _fold_node)


def _substitute(expr: Expr, env: Mapping[str, Expr]) -> Expr:
    def sub(node: Expr) -> Expr:
        return env[node.name] if isinstance(node, Local) else node

    return rewrite(expr, sub)


def inline_locals(program: Program) -> Program:
    """Substitute each local into later uses and the result; the body becomes empty.

    >>> from stepcache.demo.dsl import stencil_from_source
    >>> p = stencil_from_source("def f(a: Field):\\n    t = a[1, 0]\\n    return t * t")
    >>> q = inline_locals(p)
    >>> q.body, q.result == BinOp(Op.MUL, FieldAccess("a", 1, 0), FieldAccess("a", 1, 0))
    ((), True)
    """
    env: dict[str, Expr] = {}
    for assign in program.body:
        env[assign.target] = _substitute(assign.value, env)
    return dataclasses.replace(program, body=(), result=_substitute(program.result, env))


def lower(program: Program) -> Program:
    """The standard lowering: :func:`inline_locals`, then :func:`fold_constants`.

    >>> from stepcache.demo.dsl import stencil_from_source
    >>> lower(stencil_from_source("def f(a: Field):\\n    k = 2.0 * 3.0\\n    return k")).result
    Const(value=6.0)
    """
    return fold_constants(inline_locals(program))


def _is(expr: Expr, value: float) -> bool:
    return isinstance(expr, Const) and expr.value == value


def _power_of_two(expr: Expr) -> bool:
    if not isinstance(expr, Const) or expr.value == 0.0 or not math.isfinite(expr.value):
        return False
    mantissa, exponent = math.frexp(abs(expr.value))
    # |exponent| bounded so the reciprocal is a normal float32 as well.
    return mantissa == 0.5 and abs(exponent) < 100


def _sort_key(expr: Expr) -> tuple[int, str, int, int]:
    # Field accesses by (name, offset) first, then scalars, other expressions, constants.
    if isinstance(expr, FieldAccess):
        return (0, expr.name, expr.di, expr.dj)
    if isinstance(expr, Scalar):
        return (1, expr.name, 0, 0)
    if isinstance(expr, Const):
        return (3, "", 0, 0)
    return (2, "", 0, 0)


def _neg(expr: Expr) -> Expr:
    if isinstance(expr, UnaryOp):
        return expr.operand
    return UnaryOp(UnOp.NEG, expr)


def _simplify_binop(e: BinOp) -> Expr:
    left, right, op = e.left, e.right, e.op
    if op in (Op.ADD, Op.MUL, Op.EQ, Op.NE) and _sort_key(right) < _sort_key(left):
        return BinOp(op, right, left)
    if op is Op.MUL:
        if _is(right, 1.0):
            return left
        if _is(right, -1.0):
            return _neg(left)
        if _is(right, 2.0):
            return BinOp(Op.ADD, left, left)  # strength reduction
    if op is Op.DIV:
        if _is(right, 1.0):
            return left
        if isinstance(right, Const) and _power_of_two(right):
            return BinOp(Op.MUL, left, Const(1.0 / right.value))  # exact reciprocal
    if op is Op.ADD:
        if _is(right, 0.0):
            return left
        if isinstance(right, UnaryOp):
            return BinOp(Op.SUB, left, right.operand)
        if isinstance(left, UnaryOp):
            return BinOp(Op.SUB, right, left.operand)
    if op is Op.SUB:
        if _is(right, 0.0):
            return left
        if _is(left, 0.0):
            return _neg(right)
        if isinstance(right, UnaryOp):
            return BinOp(Op.ADD, left, right.operand)
    return e


def _simplify_node(expr: Expr) -> Expr:
    expr = _fold_node(expr)
    if isinstance(expr, BinOp):
        return _simplify_binop(expr)
    if isinstance(expr, UnaryOp) and isinstance(expr.operand, UnaryOp):
        return expr.operand.operand
    return expr


def simplify(program: Program, *, max_rounds: int = 20) -> Program:
    """Exact algebraic rewrites, to a fixed point (at most ``max_rounds`` sweeps).

    ``x*1, x/1, x+0, x-0 -> x``; ``x*-1, 0-x -> -x``; ``--x -> x``;
    ``x+(-y) -> x-y``; ``x*2 -> x+x``; ``x/2**k -> x*2**-k``; operands of
    ``+ * == !=`` in canonical order (fields, scalars, expressions, constants).

    >>> from stepcache.demo.dsl import stencil_from_source
    >>> from stepcache.demo.ir import format_expr
    >>> p = stencil_from_source("def f(a: Field):\\n    return 2.0 * a[0, 0] / 4.0 + 0.0")
    >>> format_expr(simplify(p).result)
    '(a[0, 0] + a[0, 0]) * 0.25'
    """
    for _ in range(max_rounds):
        new = _map_program(program, _simplify_node)
        if new == program:
            break
        program = new
    return program
