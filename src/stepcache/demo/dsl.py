"""The stencil DSL front end: Python functions (or their source) to IR.

A stencil is a Python function whose parameters are input fields (annotated
``Field``) and scalars (annotated ``float``); it reads fields at relative
offsets, may assign locals, and returns one expression::

    >>> from stepcache.demo.dsl import Field, stencil
    >>> @stencil
    ... def laplacian(a: Field, alpha: float):
    ...     return alpha * (-4.0 * a[0, 0] + a[1, 0] + a[-1, 0] + a[0, 1] + a[0, -1])
    >>> laplacian.fields, laplacian.scalars, laplacian.halo
    (('a',), ('alpha',), (1, 1))

The function is never executed: only its source is read, so anything the
grammar does not cover raises :class:`DSLSyntaxError` naming the line.
"""

from __future__ import annotations

import ast
import textwrap
from collections.abc import Callable
from typing import Any, NoReturn, overload

from stepcache.demo.ir import (
    Assign,
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
    footprint,
)

__all__ = ["DSLSyntaxError", "Field", "exp", "sqrt", "stencil", "stencil_from_source", "where"]


class DSLSyntaxError(ValueError):
    """Source the stencil DSL does not support; the message names the line.

    >>> stencil_from_source("def f(a: Field):\\n    return a[0, 0] ** 2")
    Traceback (most recent call last):
    ...
    stepcache.demo.dsl.DSLSyntaxError: stencil 'f', line 2: unsupported syntax: 'a[0, 0] ** 2'
    """


class Field:
    """Annotation marking a stencil parameter as a 2-D input field: ``def f(a: Field)``."""


def where(cond: Any, a: Any, b: Any) -> Any:
    """``a`` where ``cond`` is non-zero, else ``b``: ``where(u[0, 0] > 0.0, x, y)``.

    A DSL name for linters and readers; stencils are parsed, never called.
    """
    raise TypeError("where() is stencil DSL: call the compiled kernel instead")


def sqrt(x: Any) -> Any:
    """Square root: ``sqrt(dx * dx + dy * dy)`` (a DSL name; never called)."""
    raise TypeError("sqrt() is stencil DSL: call the compiled kernel instead")


def exp(x: Any) -> Any:
    """Exponential: ``exp(-k * a[0, 0])`` (a DSL name; never called)."""
    raise TypeError("exp() is stencil DSL: call the compiled kernel instead")


_BINOPS: dict[type[ast.operator], Op] = {
    ast.Add: Op.ADD,
    ast.Sub: Op.SUB,
    ast.Mult: Op.MUL,
    ast.Div: Op.DIV,
}
_CMPOPS: dict[type[ast.cmpop], Op] = {
    ast.Lt: Op.LT,
    ast.LtE: Op.LE,
    ast.Gt: Op.GT,
    ast.GtE: Op.GE,
    ast.Eq: Op.EQ,
    ast.NotEq: Op.NE,
}
_FUNCTIONS = {fn.value: fn for fn in Fn}


class _Parser:
    """Turns one ``ast.FunctionDef`` into a :class:`Program`."""

    def __init__(self, name: str, line_offset: int) -> None:
        self.name = name
        self.line_offset = line_offset
        self.fields: tuple[str, ...] = ()
        self.scalars: tuple[str, ...] = ()
        self.locals: set[str] = set()

    def fail(self, node: ast.AST, what: str) -> NoReturn:
        line = getattr(node, "lineno", 0) + self.line_offset
        if isinstance(node, ast.FunctionDef):  # the signature, not the whole body
            text = f"def {node.name}({ast.unparse(node.args)})"
        else:
            text = ast.unparse(node)
        raise DSLSyntaxError(f"stencil {self.name!r}, line {line}: {what}: {text!r}")

    def program(self, fdef: ast.FunctionDef) -> Program:
        self.parameters(fdef)
        stmts = list(fdef.body)
        if stmts and isinstance(stmts[0], ast.Expr) and isinstance(stmts[0].value, ast.Constant):
            stmts = stmts[1:]  # docstring
        if not stmts or not isinstance(stmts[-1], ast.Return) or stmts[-1].value is None:
            self.fail(fdef, "a stencil must end with 'return <expression>'")
        body = tuple(self.assign(s) for s in stmts[:-1])
        result = self.expr(stmts[-1].value)
        halo = footprint((*(a.value for a in body), result))
        return Program(self.name, self.fields, self.scalars, body, result, halo)

    def parameters(self, fdef: ast.FunctionDef) -> None:
        args = fdef.args
        if args.vararg or args.kwarg or args.kwonlyargs or args.posonlyargs or args.defaults:
            self.fail(fdef, "parameters must be plain 'name: Field' or 'name: float'")
        fields, scalars = [], []
        for arg in args.args:
            ann = arg.annotation
            kind = ann.attr if isinstance(ann, ast.Attribute) else getattr(ann, "id", None)
            if kind == "Field":
                fields.append(arg.arg)
            elif kind in ("float", "int"):
                scalars.append(arg.arg)
            else:
                self.fail(arg, "annotate each parameter as Field or float")
        self.fields, self.scalars = tuple(fields), tuple(scalars)

    def assign(self, stmt: ast.stmt) -> Assign:
        if isinstance(stmt, ast.Assign) and len(stmt.targets) == 1:
            target, value = stmt.targets[0], stmt.value
        elif isinstance(stmt, ast.AnnAssign) and stmt.value is not None:
            target, value = stmt.target, stmt.value
        else:
            self.fail(stmt, "only 'name = expression' and a final return are allowed")
        if not isinstance(target, ast.Name):
            self.fail(stmt, "assign to a plain local name")
        if target.id in self.fields or target.id in self.scalars or target.id in _FUNCTIONS:
            self.fail(stmt, f"local {target.id!r} shadows a parameter or function")
        expr = self.expr(value)  # before binding: 't = t + 1' needs an earlier 't'
        self.locals.add(target.id)
        return Assign(target.id, expr)

    def expr(self, node: ast.expr) -> Expr:
        if isinstance(node, ast.Constant):
            if isinstance(node.value, bool) or not isinstance(node.value, (int, float)):
                self.fail(node, "only int and float literals are allowed")
            return Const(float(node.value))
        if isinstance(node, ast.Name):
            return self.name_ref(node)
        if isinstance(node, ast.Subscript):
            return self.field_access(node)
        if isinstance(node, ast.BinOp) and type(node.op) in _BINOPS:
            return BinOp(_BINOPS[type(node.op)], self.expr(node.left), self.expr(node.right))
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
            operand = self.expr(node.operand)
            if isinstance(node.op, ast.UAdd):
                return operand
            if isinstance(operand, Const) and isinstance(node.operand, ast.Constant):
                return Const(-operand.value)  # a negative literal, not an operation
            return UnaryOp(UnOp.NEG, operand)
        if isinstance(node, ast.Compare):
            if len(node.ops) != 1 or type(node.ops[0]) not in _CMPOPS:
                self.fail(node, "only single comparisons with < <= > >= == != are allowed")
            op = _CMPOPS[type(node.ops[0])]
            return BinOp(op, self.expr(node.left), self.expr(node.comparators[0]))
        if isinstance(node, ast.Call):
            return self.call(node)
        self.fail(node, "unsupported syntax")

    def name_ref(self, node: ast.Name) -> Expr:
        if node.id in self.locals:
            return Local(node.id)
        if node.id in self.scalars:
            return Scalar(node.id)
        if node.id in self.fields:
            self.fail(node, f"field {node.id!r} must be read at an offset, like {node.id}[0, 0]")
        self.fail(node, f"unknown name {node.id!r}")

    def field_access(self, node: ast.Subscript) -> FieldAccess:
        if not isinstance(node.value, ast.Name) or node.value.id not in self.fields:
            self.fail(node, "only input fields can be indexed")
        index = node.slice
        if not isinstance(index, ast.Tuple) or len(index.elts) != 2:
            self.fail(node, "index a field with two integer offsets, like a[1, 0]")
        di, dj = (self.offset(node, e) for e in index.elts)
        return FieldAccess(node.value.id, di, dj)

    def offset(self, parent: ast.AST, node: ast.expr) -> int:
        sign = 1
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
            sign, node = -1, node.operand
        if not isinstance(node, ast.Constant) or type(node.value) is not int:
            self.fail(parent, "offsets must be integer literals")
        return sign * node.value

    def call(self, node: ast.Call) -> Expr:
        name = node.func.id if isinstance(node.func, ast.Name) else None
        if node.keywords or name is None or (name not in _FUNCTIONS and name != "where"):
            allowed = ", ".join([*_FUNCTIONS, "where"])
            self.fail(node, f"only calls to {allowed} are allowed")
        args = tuple(self.expr(a) for a in node.args)
        if name == "where":
            if len(args) != 3:
                self.fail(node, "where takes (condition, value_if_true, value_if_false)")
            return Where(*args)
        fn = _FUNCTIONS[name]
        if len(args) != fn.arity:
            self.fail(node, f"{name} takes {fn.arity} argument(s)")
        return Call(fn, args)


def _parse(source: str, name: str | None, line_offset: int, def_name: str | None) -> Program:
    try:
        module = ast.parse(textwrap.dedent(source))
    except SyntaxError as exc:
        line = (exc.lineno or 0) + line_offset
        raise DSLSyntaxError(f"stencil {name!r}, line {line}: {exc.msg}") from None
    defs = [n for n in module.body if isinstance(n, ast.FunctionDef)]
    if def_name is not None:
        defs = [d for d in defs if d.name == def_name]
    if not defs:
        raise DSLSyntaxError(f"stencil {name!r}: the source defines no function")
    fdef = defs[-1]
    program_name = name or fdef.name
    if not program_name.isidentifier():
        raise DSLSyntaxError(f"stencil name {program_name!r} is not an identifier")
    return _Parser(program_name, line_offset).program(fdef)


def stencil_from_source(source: str, name: str | None = None) -> Program:
    """Parse DSL ``source`` (one ``def``) into a :class:`Program` called ``name``.

    Lines in errors count from the first line of ``source``.

    >>> p = stencil_from_source("def f(a: Field):\\n    return a[0, 1] * 2")
    >>> p.name, p.halo
    ('f', (0, 1))
    """
    return _parse(source, name, 0, None)


@overload
def stencil(fn: Callable[..., Any], *, name: str | None = None) -> Program: ...
@overload
def stencil(
    fn: None = None, *, name: str | None = None
) -> Callable[[Callable[..., Any]], Program]: ...
def stencil(
    fn: Callable[..., Any] | None = None, *, name: str | None = None
) -> Program | Callable[[Callable[..., Any]], Program]:
    """Decorator: parse a Python function into a :class:`Program`.

    Use bare (``@stencil``), with a name (``@stencil(name="lap")``) or as a
    call (``stencil(fn, name="lap")``). Lines in errors are the file's lines.

    >>> def double(a: Field):
    ...     return 2.0 * a[0, 0]
    >>> stencil(double, name="twice").name
    'twice'
    """

    def parse(f: Callable[..., Any]) -> Program:
        import inspect  # here: programs made from source text (the suite's) never need it

        try:
            lines, first = inspect.getsourcelines(f)
        except (OSError, TypeError) as exc:
            raise DSLSyntaxError(f"no source for {f!r}: use stencil_from_source") from exc
        return _parse("".join(lines), name or f.__name__, max(first - 1, 0), f.__name__)

    return parse if fn is None else parse(fn)
