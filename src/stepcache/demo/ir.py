"""The stencil IR: frozen dataclasses, hashable and comparable by value.

A :class:`Program` computes one output field from input fields read at
relative offsets, scalar parameters and constants::

    >>> from stepcache.demo.ir import BinOp, Const, FieldAccess, Op, Program
    >>> body = BinOp(Op.MUL, Const(2.0), FieldAccess("a", 1, 0))
    >>> p = Program("twice", ("a",), (), (), body)
    >>> format_expr(p.result)
    '2.0 * a[1, 0]'
    >>> p == Program("twice", ("a",), (), (), body) and hash(p) == hash(p)
    True

Every container is a tuple, every operator an :class:`enum.Enum`, so two
programs built in different processes compare and fingerprint equal.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Callable, Iterator

__all__ = [
    "Assign",
    "BinOp",
    "Call",
    "Const",
    "Expr",
    "FieldAccess",
    "Fn",
    "Local",
    "Op",
    "Program",
    "Scalar",
    "UnOp",
    "UnaryOp",
    "Where",
    "children",
    "footprint",
    "format_expr",
    "format_program",
    "rewrite",
    "walk",
]


class Op(enum.Enum):
    """Binary operators; comparisons yield 1.0 or 0.0.

    >>> Op("<=").is_comparison, Op.ADD.value
    (True, '+')
    """

    ADD = "+"
    SUB = "-"
    MUL = "*"
    DIV = "/"
    LT = "<"
    LE = "<="
    GT = ">"
    GE = ">="
    EQ = "=="
    NE = "!="

    @property
    def is_comparison(self) -> bool:
        """True for ``< <= > >= == !=``."""
        return self not in (Op.ADD, Op.SUB, Op.MUL, Op.DIV)


class UnOp(enum.Enum):
    """Unary operators."""

    NEG = "-"


class Fn(enum.Enum):
    """The math functions a stencil may call.

    >>> Fn("max").arity
    2
    """

    SQRT = "sqrt"
    ABS = "abs"
    MIN = "min"
    MAX = "max"
    EXP = "exp"

    @property
    def arity(self) -> int:
        """Number of arguments the function takes."""
        return 2 if self in (Fn.MIN, Fn.MAX) else 1


@dataclasses.dataclass(frozen=True)
class FieldAccess:
    """Input field ``name`` read at offset ``(di, dj)`` from the output point."""

    name: str
    di: int
    dj: int


@dataclasses.dataclass(frozen=True)
class Scalar:
    """A scalar parameter of the program."""

    name: str


@dataclasses.dataclass(frozen=True)
class Const:
    """A floating-point literal."""

    value: float


@dataclasses.dataclass(frozen=True)
class Local:
    """A reference to a local assigned earlier in the body (gone after inlining)."""

    name: str


@dataclasses.dataclass(frozen=True)
class BinOp:
    """``left <op> right``."""

    op: Op
    left: Expr
    right: Expr


@dataclasses.dataclass(frozen=True)
class UnaryOp:
    """``<op> operand``."""

    op: UnOp
    operand: Expr


@dataclasses.dataclass(frozen=True)
class Call:
    """``fn(*args)`` for one of the functions in :class:`Fn`."""

    fn: Fn
    args: tuple[Expr, ...]


@dataclasses.dataclass(frozen=True)
class Where:
    """``cond ? a : b`` point by point (``cond`` is true when non-zero)."""

    cond: Expr
    a: Expr
    b: Expr


Expr = FieldAccess | Scalar | Const | Local | BinOp | UnaryOp | Call | Where


@dataclasses.dataclass(frozen=True)
class Assign:
    """``target = value`` in a program body."""

    target: str
    value: Expr


@dataclasses.dataclass(frozen=True)
class Program:
    """A stencil: signature, local assignments and the result expression.

    ``halo`` is the footprint declared by the source (the largest offset per
    axis over every access, including ones later folded away), so lowering
    never changes which output points a program writes. Example: the module
    docstring.
    """

    name: str
    fields: tuple[str, ...]
    scalars: tuple[str, ...]
    body: tuple[Assign, ...]
    result: Expr
    halo: tuple[int, int] = (0, 0)


def children(expr: Expr) -> tuple[Expr, ...]:
    """The direct sub-expressions of ``expr``, left to right.

    >>> children(BinOp(Op.ADD, Const(1.0), Scalar("s")))
    (Const(value=1.0), Scalar(name='s'))
    """
    if isinstance(expr, BinOp):
        return (expr.left, expr.right)
    if isinstance(expr, UnaryOp):
        return (expr.operand,)
    if isinstance(expr, Call):
        return expr.args
    if isinstance(expr, Where):
        return (expr.cond, expr.a, expr.b)
    return ()


def _with_children(expr: Expr, new: tuple[Expr, ...]) -> Expr:
    if isinstance(expr, BinOp):
        return BinOp(expr.op, new[0], new[1])
    if isinstance(expr, UnaryOp):
        return UnaryOp(expr.op, new[0])
    if isinstance(expr, Call):
        return Call(expr.fn, new)
    if isinstance(expr, Where):
        return Where(new[0], new[1], new[2])
    return expr


def rewrite(expr: Expr, fn: Callable[[Expr], Expr]) -> Expr:
    """Apply ``fn`` bottom-up: to every node after its children were rewritten.

    >>> double = lambda e: Const(e.value * 2) if isinstance(e, Const) else e
    >>> rewrite(BinOp(Op.ADD, Const(1.0), Const(2.0)), double)
    BinOp(op=<Op.ADD: '+'>, left=Const(value=2.0), right=Const(value=4.0))
    """
    kids = children(expr)
    if kids:
        new = tuple(rewrite(k, fn) for k in kids)
        if new != kids:
            expr = _with_children(expr, new)
    return fn(expr)


def walk(expr: Expr) -> Iterator[Expr]:
    """Every node of ``expr`` in pre-order.

    >>> [type(e).__name__ for e in walk(UnaryOp(UnOp.NEG, Scalar("s")))]
    ['UnaryOp', 'Scalar']
    """
    stack = [expr]
    while stack:
        node = stack.pop()
        yield node
        stack.extend(reversed(children(node)))


def footprint(exprs: tuple[Expr, ...]) -> tuple[int, int]:
    """Largest ``|di|`` and ``|dj|`` over the field accesses in ``exprs``.

    >>> footprint((FieldAccess("a", -2, 1), FieldAccess("b", 1, 0)))
    (2, 1)
    """
    hi = hj = 0
    for expr in exprs:
        for node in walk(expr):
            if isinstance(node, FieldAccess):
                hi, hj = max(hi, abs(node.di)), max(hj, abs(node.dj))
    return hi, hj


# Python precedence levels, so printed expressions parse back to the same IR.
_PRECEDENCE = {
    Op.LT: 1, Op.LE: 1, Op.GT: 1, Op.GE: 1, Op.EQ: 1, Op.NE: 1,
    Op.ADD: 2, Op.SUB: 2, Op.MUL: 3, Op.DIV: 3,
}  # fmt: skip
_UNARY_PRECEDENCE = 4
_ATOM = 5


def _fmt(expr: Expr) -> tuple[str, int]:
    if isinstance(expr, FieldAccess):
        return f"{expr.name}[{expr.di}, {expr.dj}]", _ATOM
    if isinstance(expr, (Scalar, Local)):
        return expr.name, _ATOM
    if isinstance(expr, Const):
        # A negative literal prints as a unary minus and parses back as one.
        return repr(expr.value), _ATOM if expr.value >= 0 else _UNARY_PRECEDENCE
    if isinstance(expr, Call):
        return f"{expr.fn.value}({', '.join(format_expr(a) for a in expr.args)})", _ATOM
    if isinstance(expr, Where):
        return f"where({', '.join(format_expr(a) for a in children(expr))})", _ATOM
    if isinstance(expr, UnaryOp):
        text, prec = _fmt(expr.operand)
        return f"-{_paren(text, prec, _UNARY_PRECEDENCE + 1)}", _UNARY_PRECEDENCE
    prec = _PRECEDENCE[expr.op]
    left, lprec = _fmt(expr.left)
    right, rprec = _fmt(expr.right)
    # Left-associative: the right operand needs parentheses at equal precedence;
    # comparisons never chain, so both sides need them at equal precedence.
    lmin = prec + 1 if expr.op.is_comparison else prec
    text = f"{_paren(left, lprec, lmin)} {expr.op.value} {_paren(right, rprec, prec + 1)}"
    return text, prec


def _paren(text: str, prec: int, minimum: int) -> str:
    return text if prec >= minimum else f"({text})"


def format_expr(expr: Expr) -> str:
    """DSL source text for ``expr`` that parses back to the same IR.

    >>> format_expr(BinOp(Op.MUL, BinOp(Op.ADD, Scalar("x"), Const(1.0)), Scalar("y")))
    '(x + 1.0) * y'
    """
    return _fmt(expr)[0]


def format_program(program: Program) -> str:
    """DSL source text (a ``def``) for ``program``; ``stencil_from_source`` reads it back.

    >>> print(format_program(Program("f", ("a",), ("s",), (), Scalar("s"))))
    def f(a: Field, s: float):
        return s
    """
    params = [f"{f}: Field" for f in program.fields] + [f"{s}: float" for s in program.scalars]
    lines = [f"def {program.name}({', '.join(params)}):"]
    lines += [f"    {a.target} = {format_expr(a.value)}" for a in program.body]
    lines.append(f"    return {format_expr(program.result)}")
    return "\n".join(lines)
