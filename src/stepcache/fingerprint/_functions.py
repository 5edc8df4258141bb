"""Encoders for functions and code: by name (``strict``) or by code (``lenient``).

``strict`` keys a function by module and qualified name, so editing its body
does not change the key (declare the module as step code for that). A
function without an importable name (a lambda, anything defined inside
another function) is also keyed by its code, so two lambdas in one module
differ. ``lenient`` keys every Python function by its code: bytecode,
constants (nested code included), referenced names, argument counts,
defaults and closure contents. Globals the code reads are not followed.
"""

from __future__ import annotations

import types
from typing import Any

from stepcache.fingerprint import _tokens as tk
from stepcache.fingerprint._tokens import Handler, Tokens

_EMPTY = Tokens(tk.EMPTY_CELL)
# A nested function that calls itself holds itself in a closure cell; that is
# recursion, not a cycle in the data, so it gets a marker instead of a walk.
_SELF = Tokens(tk.SELF_CELL)


def encode_code(obj: types.CodeType, out: list[Any], stack: list[Any]) -> None:
    """Code objects: bytecode, signature shape, constants and names (not line numbers)."""
    out += (
        tk.CODE,
        obj.co_argcount,
        obj.co_posonlyargcount,
        obj.co_kwonlyargcount,
        obj.co_flags,
        len(obj.co_varnames),
        len(obj.co_freevars),
        len(obj.co_cellvars),
        obj.co_code,
        getattr(obj, "co_exceptiontable", b""),
    )
    stack += (obj.co_names, obj.co_consts)


def _code_parts(func: types.FunctionType) -> tuple[Any, ...]:
    cells: list[Any] = []
    for cell in func.__closure__ or ():
        try:
            content = cell.cell_contents
        except ValueError:  # a cell not yet assigned
            content = _EMPTY
        cells.append(_SELF if content is func else content)
    return (func.__code__, func.__defaults__, func.__kwdefaults__, tuple(cells))


def encode_function_strict(obj: types.FunctionType, out: list[Any], stack: list[Any]) -> None:
    """Functions in strict mode: by name; by name and code when the name is not importable."""
    qualname = obj.__qualname__
    module = tk.module_name(obj.__module__)
    if "<" in qualname:  # <lambda>, <locals>: the name alone is ambiguous
        out += (tk.LOCAL_FUNCTION, module, qualname)
        stack.extend(reversed(_code_parts(obj)))
    else:
        out += (tk.FUNCTION, module, qualname)


def encode_function_lenient(obj: types.FunctionType, out: list[Any], stack: list[Any]) -> None:
    """Functions in lenient mode: by code, defaults and closure contents."""
    out.append(tk.FUNCTION_CODE)
    stack.extend(reversed(_code_parts(obj)))


def encode_builtin(obj: types.BuiltinFunctionType, out: list[Any], stack: list[Any]) -> None:
    """Built-in functions by name; built-in methods by name and the object bound."""
    owner = obj.__self__
    if owner is None or isinstance(owner, types.ModuleType):
        out += (tk.BUILTIN, obj.__module__, obj.__qualname__)
    else:
        out += (tk.BOUND_BUILTIN, obj.__qualname__)
        stack.append(owner)


def encode_method(obj: types.MethodType, out: list[Any], stack: list[Any]) -> None:
    """Bound methods: the function, then the object it is bound to."""
    out.append(tk.METHOD)
    stack += (obj.__self__, obj.__func__)


def function_handlers(mode: str) -> dict[type, Handler]:
    """Exact-type handlers for callables and code under ``mode``."""
    function = encode_function_lenient if mode == "lenient" else encode_function_strict
    return {
        types.FunctionType: function,
        types.BuiltinFunctionType: encode_builtin,
        types.MethodType: encode_method,
        types.CodeType: encode_code,
    }
