"""Reference toolchain: a small stencil DSL compiled to C, built with ``cc``, loaded by ctypes.

The stages, each a module and each a pure function of its input::

    dsl.py       @stencil / stencil_from_source: Python source -> IR (ir.py)
    passes.py    inline locals, fold constants, exact algebraic simplification
    codegen.py   IR -> C source for one kernel
    build.py     C source -> lib<name>.so with $CC (or cc), plus a manifest
    load.py      build directory -> a callable taking numpy arrays

``pipeline.py`` makes them stepcache steps (translate and compile cached),
``programs.py`` generates the ~100-program suite with numpy references, and
``runner.py`` runs it in worker processes without a cache, cold and warm::

    >>> from stepcache.demo import Field, make_pipeline, stencil
    >>> @stencil
    ... def double(a: Field):
    ...     return 2.0 * a[0, 0]
    >>> import numpy as np
    >>> make_pipeline()(double)(np.ones((2, 2))).tolist()
    [[2.0, 2.0], [2.0, 2.0]]

Importing this package does not import numpy; loading a kernel does.
"""

from __future__ import annotations

from stepcache.demo.dsl import DSLSyntaxError, Field, stencil, stencil_from_source
from stepcache.demo.pipeline import Pipeline, Source, counters, make_pipeline, reset_counters
from stepcache.demo.programs import ProgramSpec, suite, verify
from stepcache.demo.runner import DemoReport, RunResult, run_demo, run_suite

__all__ = [
    "DSLSyntaxError",
    "DemoReport",
    "Field",
    "Pipeline",
    "ProgramSpec",
    "RunResult",
    "Source",
    "counters",
    "make_pipeline",
    "reset_counters",
    "run_demo",
    "run_suite",
    "stencil",
    "stencil_from_source",
    "suite",
    "verify",
]
