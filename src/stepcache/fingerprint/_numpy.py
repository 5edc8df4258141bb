"""Encoders for numpy arrays, scalars and dtypes, without importing numpy.

numpy is looked up in ``sys.modules`` when a type is first seen: a numpy
value can only exist if numpy is already imported, so fingerprinting never
pays for the import. Arrays are keyed by dtype, shape and their contents in
C order, so a strided view and its contiguous copy get the same key.
"""

from __future__ import annotations

import marshal
import sys
from typing import Any

from stepcache.fingerprint import _tokens as tk
from stepcache.fingerprint._tokens import Handler


def dtype_tokens(dtype: Any) -> tuple[Any, ...]:
    """Tokens for a dtype: its ``str``, plus ``descr`` when it has fields or a subarray."""
    if dtype.names is None and dtype.subdtype is None:
        return (tk.DTYPE, dtype.str)
    # descr is plain nested tuples/lists of str and int, which marshal encodes exactly.
    return (tk.STRUCTURED_DTYPE, dtype.str, marshal.dumps(dtype.descr, 2))


def encode_array(obj: Any, out: list[Any], stack: list[Any]) -> None:
    """Arrays: dtype, shape and C-order bytes; object arrays walk their elements."""
    dtype = obj.dtype
    if dtype.hasobject:
        # The buffer of an object array holds addresses, so walk the values.
        out += (tk.OBJECT_ARRAY, obj.ndim, *obj.shape, *dtype_tokens(dtype))
        stack.append(obj.tolist())
    else:
        out += (tk.ARRAY, obj.ndim, *obj.shape, *dtype_tokens(dtype), obj.tobytes(order="C"))


def encode_scalar(obj: Any, out: list[Any], stack: list[Any]) -> None:
    """numpy scalars (``np.float64(1)`` and friends): dtype and raw bytes."""
    out += (tk.NUMPY_SCALAR, *dtype_tokens(obj.dtype), obj.tobytes())


def encode_dtype(obj: Any, out: list[Any], stack: list[Any]) -> None:
    """dtype objects themselves."""
    out += dtype_tokens(obj)


def numpy_handler(cls: type) -> Handler | None:
    """The handler for a numpy type, or ``None`` if ``cls`` is not one numpy encodes natively.

    ndarray subclasses (masked arrays, matrices) carry more than data and
    go through ``__reduce_ex__`` instead.
    """
    np = sys.modules.get("numpy")
    if np is None:
        return None
    if cls is np.ndarray:
        return encode_array
    if issubclass(cls, np.generic) and not issubclass(cls, np.object_):
        return encode_scalar
    if issubclass(cls, np.dtype):
        return encode_dtype
    return None
