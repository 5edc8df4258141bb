"""The stencil DSL front end and the IR it produces."""

from __future__ import annotations

import dataclasses
import inspect
import pickle

import pytest

from stepcache.demo.dsl import DSLSyntaxError, Field, exp, sqrt, stencil, stencil_from_source, where
from stepcache.demo.ir import (
    Assign,
    BinOp,
    Call,
    Const,
    FieldAccess,
    Fn,
    Local,
    Op,
    Program,
    Scalar,
    UnaryOp,
    UnOp,
    Where,
    format_program,
    walk,
)
from stepcache.demo.programs import suite


@stencil
def laplacian(a: Field, alpha: float):
    return alpha * (-4.0 * a[0, 0] + a[1, 0] + a[-1, 0] + a[0, 1] + a[0, -1])


@stencil(name="upwind")
def _upwind_fn(a: Field, u: Field, c: float):
    """A docstring is allowed."""
    flux = where(u[0, 0] > 0.0, u[0, 0] * (a[0, 0] - a[-1, 0]), u[0, 0] * (a[1, 0] - a[0, 0]))
    return a[0, 0] - c * flux


def test_decorator_parses_the_laplacian_example() -> None:
    assert isinstance(laplacian, Program)
    assert laplacian.name == "laplacian"
    assert laplacian.fields == ("a",)
    assert laplacian.scalars == ("alpha",)
    assert laplacian.body == ()
    assert laplacian.halo == (1, 1)
    assert isinstance(laplacian.result, BinOp)
    assert laplacian.result.op is Op.MUL
    assert laplacian.result.left == Scalar("alpha")
    accesses = [n for n in walk(laplacian.result) if isinstance(n, FieldAccess)]
    assert sorted((n.di, n.dj) for n in accesses) == [(-1, 0), (0, -1), (0, 0), (0, 1), (1, 0)]
    assert Const(-4.0) in list(walk(laplacian.result))


def test_decorator_with_name_parses_locals_where_and_comparisons() -> None:
    assert _upwind_fn.name == "upwind"
    assert _upwind_fn.fields == ("a", "u")
    assert _upwind_fn.scalars == ("c",)
    (assign,) = _upwind_fn.body
    assert assign.target == "flux"
    assert isinstance(assign.value, Where)
    assert assign.value.cond == BinOp(Op.GT, FieldAccess("u", 0, 0), Const(0.0))
    assert _upwind_fn.result == BinOp(
        Op.SUB, FieldAccess("a", 0, 0), BinOp(Op.MUL, Scalar("c"), Local("flux"))
    )


def test_stencil_as_a_call_names_the_program() -> None:
    def double(a: Field):
        return 2 * a[0, 0]

    program = stencil(double, name="twice")
    assert program.name == "twice"
    assert program.result == BinOp(Op.MUL, Const(2.0), FieldAccess("a", 0, 0))


def test_source_string_parses_math_calls_unary_minus_and_reassignment() -> None:
    src = (
        "def f(a: Field, b: Field, k: float):\n"
        "    t = a[1, 0] + a[-1, 0]\n"
        "    t = t * 0.5\n"
        "    return sqrt(abs(t)) + min(a[0, 2], b[-2, 0]) - max(t, k) + exp(-b[0, 0]) - -k\n"
    )
    program = stencil_from_source(src, "g")
    assert program.name == "g"
    assert [a.target for a in program.body] == ["t", "t"]
    assert program.body[1].value == BinOp(Op.MUL, Local("t"), Const(0.5))
    calls = {n.fn for n in walk(program.result) if isinstance(n, Call)}
    assert calls == {Fn.SQRT, Fn.ABS, Fn.MIN, Fn.MAX, Fn.EXP}
    assert UnaryOp(UnOp.NEG, FieldAccess("b", 0, 0)) in list(walk(program.result))
    assert UnaryOp(UnOp.NEG, Scalar("k")) in list(walk(program.result))
    assert program.halo == (2, 2)


def test_negative_literals_are_constants_not_operations() -> None:
    program = stencil_from_source("def f(a: Field):\n    return -3 * a[0, 0]")
    assert program.result == BinOp(Op.MUL, Const(-3.0), FieldAccess("a", 0, 0))


def test_halo_covers_accesses_in_locals_even_if_unused() -> None:
    program = stencil_from_source("def f(a: Field):\n    t = a[3, -2]\n    return a[0, 1]")
    assert program.halo == (3, 2)


UNSUPPORTED = [
    ("return a[0, 0] ** 2", "unsupported syntax"),
    ("return a[0]", "two integer offsets"),
    ("return a[0, 1, 2]", "two integer offsets"),
    ("return a[k, 0]", "integer literals"),
    ("return a[0.5, 0]", "integer literals"),
    ("return foo(a[0, 0])", "only calls to"),
    ("return sqrt(x=a[0, 0])", "only calls to"),
    ("return min(a[0, 0])", "min takes 2"),
    ("return where(a[0, 0], 1.0)", "where takes"),
    ("return a[0, 0] if k else 1.0", "unsupported syntax"),
    ("return a[0, 0] > 0 and k > 0", "unsupported syntax"),
    ("return 0 < a[0, 0] < 1", "single comparisons"),
    ("return a", "must be read at an offset"),
    ("return b[0, 0]", "only input fields"),
    ("return zeta", "unknown name"),
    ("return 'text'", "int and float literals"),
    ("return True", "int and float literals"),
    ("k[0, 0] = 1.0\n    return k", "assign to a plain local"),
    ("a = 1.0\n    return a", "shadows a parameter"),
    ("t = u = 1.0\n    return t", "only 'name = expression'"),
    ("for i in range(3):\n        pass\n    return 1.0", "only 'name = expression'"),
    ("t = 1.0", "must end with 'return"),
    ("return t + 1\n    t = 1.0", "must end with 'return"),
    ("return zeta + t\n", "unknown name"),
]


@pytest.mark.parametrize(("body", "message"), UNSUPPORTED)
def test_unsupported_syntax_raises_dsl_syntax_error_naming_the_line(
    body: str, message: str
) -> None:
    src = f"def bad(a: Field, k: float):\n    {body}\n"
    with pytest.raises(DSLSyntaxError, match=message) as info:
        stencil_from_source(src)
    assert "line " in str(info.value)
    assert "'bad'" in str(info.value)
    assert isinstance(info.value, ValueError)


def test_error_line_is_the_line_of_the_offending_statement() -> None:
    src = "def f(a: Field):\n    t = a[0, 0]\n    u = t ** 2\n    return u\n"
    with pytest.raises(DSLSyntaxError, match=r"line 3\b.*t \*\* 2"):
        stencil_from_source(src)


def test_decorator_errors_name_the_line_in_the_file() -> None:
    def bad(a: Field):
        t = a[0, 0]
        return t % 2

    line = inspect.getsourcelines(bad)[1] + 2
    with pytest.raises(DSLSyntaxError, match=rf"line {line}\b"):
        stencil(bad)


@pytest.mark.parametrize(
    "signature",
    ["a", "a: list", "*a: Field", "a: Field = None", "a: Field, *, k: float", "**kw: Field"],
)
def test_parameters_must_be_annotated_fields_or_floats(signature: str) -> None:
    with pytest.raises(DSLSyntaxError, match="line 1"):
        stencil_from_source(f"def f({signature}):\n    return 1.0")


def test_python_syntax_errors_and_missing_functions_are_dsl_errors() -> None:
    with pytest.raises(DSLSyntaxError, match="line 2"):
        stencil_from_source("def f(a: Field):\n    return a[0, 0] +\n")
    with pytest.raises(DSLSyntaxError, match="no function"):
        stencil_from_source("x = 1")
    with pytest.raises(DSLSyntaxError, match="not an identifier"):
        stencil_from_source("def f(a: Field):\n    return 1.0", "bad-name")


def test_lambdas_have_no_parsable_source() -> None:
    with pytest.raises(DSLSyntaxError):
        stencil(lambda a: a)


def test_dsl_helper_functions_refuse_to_run_in_python() -> None:
    for fn, args in ((where, (1, 2, 3)), (sqrt, (1,)), (exp, (1,))):
        with pytest.raises(TypeError, match="stencil DSL"):
            fn(*args)


def test_ir_is_frozen_hashable_and_compared_by_value() -> None:
    again = stencil_from_source(inspect.getsource(laplacian_source), "laplacian")
    assert again == laplacian
    assert hash(again) == hash(laplacian)
    assert len({again, laplacian}) == 1
    with pytest.raises(dataclasses.FrozenInstanceError):
        laplacian.name = "other"
    with pytest.raises(dataclasses.FrozenInstanceError):
        FieldAccess("a", 0, 0).di = 1
    assert pickle.loads(pickle.dumps(_upwind_fn)) == _upwind_fn


def laplacian_source(a: Field, alpha: float):
    return alpha * (-4.0 * a[0, 0] + a[1, 0] + a[-1, 0] + a[0, 1] + a[0, -1])


def test_ir_containers_are_tuples() -> None:
    program = stencil_from_source(
        "def f(a: Field, k: float):\n    t = min(a[0, 0], k)\n    return t"
    )
    assert isinstance(program.fields, tuple)
    assert isinstance(program.scalars, tuple)
    assert isinstance(program.body, tuple)
    assert all(isinstance(a, Assign) for a in program.body)
    value = program.body[0].value
    assert isinstance(value, Call)
    assert isinstance(value.args, tuple)


def test_format_program_parses_back_to_the_same_ir_for_every_suite_program() -> None:
    for spec in suite(100):
        program = spec.program()
        assert stencil_from_source(format_program(program), spec.name) == program, spec.name
