"""Loading a built kernel with ctypes and calling it on numpy arrays.

    >>> import tempfile
    >>> import numpy as np
    >>> from stepcache.demo.build import compile_source
    >>> from stepcache.demo.codegen import translate
    >>> from stepcache.demo.dsl import stencil_from_source
    >>> prog = stencil_from_source("def shift(a: Field, s: float):\\n    return s * a[0, 1]")
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     kernel = load(compile_source(translate(prog), tmp))
    >>> kernel(np.arange(6.0).reshape(2, 3), s=10.0)
    array([[ 0., 20.,  0.],
           [ 0., 50.,  0.]])

The output is allocated with zeros, so the halo (points whose neighbourhood
leaves the array) stays zero. The library stays mapped after its directory
is removed, as above.
"""

from __future__ import annotations

import ctypes
import dataclasses
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from stepcache.demo.build import MANIFEST

__all__ = ["Kernel", "KernelInfo", "load"]

_SCALAR_CTYPES = {"float32": ctypes.c_float, "float64": ctypes.c_double}


@dataclasses.dataclass(frozen=True)
class KernelInfo:
    """A kernel's calling convention, as written to a build's manifest (``Kernel.info``)."""

    name: str
    function: str
    fields: tuple[str, ...]
    scalars: tuple[str, ...]
    halo: tuple[int, int]
    dtype: str
    library: str

    @classmethod
    def read(cls, build_dir: str | os.PathLike[str]) -> KernelInfo:
        """Read ``manifest.json`` from ``build_dir``."""
        data = json.loads((Path(build_dir) / MANIFEST).read_text(encoding="utf-8"))
        halo = tuple(int(h) for h in data["halo"])
        return cls(
            name=str(data["name"]),
            function=str(data["function"]),
            fields=tuple(str(f) for f in data["fields"]),
            scalars=tuple(str(s) for s in data["scalars"]),
            halo=(halo[0], halo[1]),
            dtype=str(data["dtype"]),
            library=str(data["library"]),
        )


class Kernel:
    """A compiled stencil callable like the DSL function: fields, then scalars.

    Arguments bind by position or name; arrays are converted to contiguous
    arrays of the kernel's dtype and must all have the same 2-D shape. Made
    by :func:`load` (example in the module docstring).
    """

    def __init__(self, build_dir: str | os.PathLike[str]) -> None:
        self.info = KernelInfo.read(build_dir)
        self.path = Path(build_dir) / self.info.library
        if self.info.dtype not in _SCALAR_CTYPES:
            raise ValueError(f"{self.path}: unsupported dtype {self.info.dtype!r}")
        self._lib = ctypes.CDLL(str(self.path))
        fn = getattr(self._lib, self.info.function)
        scalar = _SCALAR_CTYPES[self.info.dtype]
        fn.argtypes = [
            ctypes.c_int,
            ctypes.c_int,
            *([ctypes.c_void_p] * len(self.info.fields)),
            *([scalar] * len(self.info.scalars)),
            ctypes.c_void_p,
        ]
        fn.restype = None
        self._fn = fn

    def __repr__(self) -> str:
        params = ", ".join((*self.info.fields, *self.info.scalars))
        return f"<Kernel {self.info.name}({params}) {self.info.dtype}>"

    def _bind(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
        names = (*self.info.fields, *self.info.scalars)
        if len(args) > len(names):
            raise TypeError(f"{self.info.name}() takes {len(names)} arguments, got {len(args)}")
        bound = dict(zip(names, args, strict=False))
        for key, value in kwargs.items():
            if key not in names or key in bound:
                raise TypeError(f"{self.info.name}() got an unexpected or repeated {key!r}")
            bound[key] = value
        missing = [n for n in names if n not in bound]
        if missing:
            raise TypeError(f"{self.info.name}() missing arguments: {', '.join(missing)}")
        return bound

    def __call__(self, *args: Any, **kwargs: Any) -> npt.NDArray[Any]:
        """Run the kernel; returns a new array (zeros outside the interior)."""
        bound = self._bind(args, kwargs)
        dtype = np.dtype(self.info.dtype)
        arrays = [np.ascontiguousarray(bound[f], dtype=dtype) for f in self.info.fields]
        if not arrays:
            raise TypeError(f"{self.info.name}() has no input field to take the shape from")
        shape = arrays[0].shape
        if len(shape) != 2 or any(a.shape != shape for a in arrays):
            raise ValueError(f"{self.info.name}(): fields must be 2-D of one shape")
        out = np.zeros(shape, dtype=dtype)
        self._fn(
            shape[0],
            shape[1],
            *(a.ctypes.data for a in arrays),
            *(float(bound[s]) for s in self.info.scalars),
            out.ctypes.data,
        )
        return out


def load(build_dir: str | os.PathLike[str]) -> Kernel:
    """Load the kernel built in ``build_dir`` (see the module docstring)."""
    return Kernel(build_dir)
