"""The demo toolchain as stepcache steps: parse -> lower -> translate -> compile -> load.

    >>> from stepcache.demo.dsl import Field, stencil
    >>> @stencil
    ... def lap(a: Field):
    ...     return -4.0 * a[0, 0] + a[1, 0] + a[-1, 0] + a[0, 1] + a[0, -1]
    >>> kernel = make_pipeline()(lap)
    >>> import numpy as np
    >>> x2 = np.arange(4.0) ** 2
    >>> float(kernel(np.add.outer(x2, x2))[1, 1])  # the laplacian of i**2 + j**2
    4.0

With a store, translation results and build directories are cached, and a
variant is one ``replace`` away; settings of the wrapped step pass through
the cache wrapper::

    pipeline = make_pipeline(stepcache.open_store("memory://"))
    no_tx = pipeline.replace(translate=pipeline.translate.replace(enable_transforms=False))

:func:`counters` says how much real work (not cache hits) this process did.
"""

from __future__ import annotations

import atexit
import dataclasses
import functools
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from stepcache.cached import CachedDirStep, CachedStep
from stepcache.demo.build import compile_source, compiler_command
from stepcache.demo.codegen import CSource, translate
from stepcache.demo.dsl import stencil_from_source
from stepcache.demo.ir import Program
from stepcache.demo.passes import lower, simplify
from stepcache.fingerprint import field
from stepcache.identity import toolchain
from stepcache.step import NamedSteps, StepBase
from stepcache.stores.base import Store

__all__ = [
    "Compile",
    "Load",
    "Lower",
    "Parse",
    "Pipeline",
    "Source",
    "Translate",
    "counters",
    "make_pipeline",
    "reset_counters",
]

# The code each cached step runs, so that editing it re-keys the step's entries.
_TRANSLATE_CODE = ("stepcache.demo.passes", "stepcache.demo.codegen")
_COMPILE_CODE = ("stepcache.demo.build",)

# Work done by this process, for reports: cache hits never reach these.
_COUNTERS = {"translations": 0, "compiles": 0}


def counters() -> dict[str, int]:
    """Translations and compiles actually run in this process since the last reset.

    >>> reset_counters(); counters()
    {'translations': 0, 'compiles': 0}
    """
    return dict(_COUNTERS)


def reset_counters() -> None:
    """Set every counter of :func:`counters` back to zero (see :func:`counters`)."""
    for name in _COUNTERS:
        _COUNTERS[name] = 0


@dataclasses.dataclass(frozen=True)
class Source:
    """DSL source text of one stencil and the name to give it.

    >>> Parse()(Source("twice", "def f(a: Field):\\n    return 2.0 * a[0, 0]")).name
    'twice'
    """

    name: str
    text: str


@dataclasses.dataclass(frozen=True)
class Parse(StepBase):
    """``Source`` -> ``Program``; a ``Program`` (from ``@stencil``) passes through.

    >>> Parse()(Source("f", "def f(a: Field):\\n    return a[1, 0]")).halo
    (1, 0)
    """

    def __call__(self, inp: Source | Program, /) -> Program:
        if isinstance(inp, Program):
            return inp
        return stencil_from_source(inp.text, inp.name)


@dataclasses.dataclass(frozen=True)
class Lower(StepBase):
    """Inline locals and fold constants (:func:`stepcache.demo.passes.lower`).

    >>> Lower()(Parse()(Source("f", "def f(a: Field):\\n    t = 2.0 * 3.0\\n    return t"))).result
    Const(value=6.0)
    """

    def __call__(self, program: Program, /) -> Program:
        return lower(program)


@dataclasses.dataclass(frozen=True)
class Translate(StepBase):
    """``Program`` -> ``CSource``; ``enable_transforms`` runs the algebraic simplifier first.

    >>> program = Parse()(Source("f", "def f(a: Field):\\n    return a[0, 0] * 1.0"))
    >>> "out[k] = f_a[k];" in Translate()(program).code
    True
    >>> plain = Translate(enable_transforms=False, dtype="float32")
    >>> "out[k] = f_a[k] * 1.0f;" in plain(program).code
    True
    """

    enable_transforms: bool = True
    dtype: str = "float64"
    unroll: int = 0

    def __call__(self, program: Program, /) -> CSource:
        _COUNTERS["translations"] += 1
        if self.enable_transforms:
            program = simplify(program)
        return translate(program, dtype=self.dtype, unroll=self.unroll)


@functools.cache
def _default_build_root() -> Path:
    root = Path(tempfile.mkdtemp(prefix="stepcache-demo-"))
    atexit.register(shutil.rmtree, root, ignore_errors=True)
    return root


@dataclasses.dataclass(frozen=True)
class Compile(StepBase):
    """``CSource`` -> a new build directory under ``build_root`` holding ``lib<name>.so``.

    ``cc`` defaults to ``$CC`` or ``cc``; ``build_root`` to a temporary
    directory removed at exit. Where a build happens does not change what it
    produces, so ``build_root`` is left out of cache keys.

    >>> from stepcache.fingerprint import fingerprint
    >>> fingerprint(Compile(build_root="/a")) == fingerprint(Compile(build_root="/b"))
    True
    """

    opt_level: int = 2
    cc: str | None = None
    build_root: str | None = field(fingerprint=False, default=None)

    def __call__(self, src: CSource, /) -> Path:
        _COUNTERS["compiles"] += 1
        root = Path(self.build_root) if self.build_root else _default_build_root()
        root.mkdir(parents=True, exist_ok=True)
        # A fresh directory per build: rebuilding over a library that is
        # already loaded in this process would change code under its feet.
        build_dir = tempfile.mkdtemp(prefix=f"{src.name}-", dir=root)
        return compile_source(src, build_dir, opt_level=self.opt_level, cc=self.cc)


@dataclasses.dataclass(frozen=True)
class Load(StepBase):
    """Build directory -> callable :class:`~stepcache.demo.load.Kernel` (see the module example)."""

    def __call__(self, build_dir: Path, /) -> Any:
        from stepcache.demo.load import load

        return load(build_dir)


@dataclasses.dataclass(frozen=True)
class Pipeline(NamedSteps):
    """The five stages; ``translate`` and ``compile`` are cached when a store is given.

    >>> [type(stage).__name__ for stage in vars(make_pipeline()).values()]
    ['Parse', 'Lower', 'Translate', 'Compile', 'Load']
    """

    parse: Callable[[Any], Any] = Parse()
    lower: Callable[[Any], Any] = Lower()
    translate: Any = Translate()
    compile: Any = Compile()
    load: Callable[[Any], Any] = Load()


def make_pipeline(
    store: Store | str | None = None,
    *,
    opt_level: int = 2,
    enable_transforms: bool = True,
    dtype: str = "float64",
    cc: str | None = None,
    build_root: str | os.PathLike[str] | None = None,
    version: str = "",
) -> Pipeline:
    """A :class:`Pipeline`; with ``store`` (a Store or a spec) translate and compile are cached.

    Cache keys cover the step settings, the demo modules each step runs
    (editing a pass re-keys translations) and, for builds, the compiler
    (``--version``, ``$CC``, ``$CFLAGS``), Python and platform; so with a store the
    compiler must exist here, or :class:`~stepcache.errors.CompilerError`
    is raised. ``version`` salts the keys (bump it to drop old entries).

    >>> import stepcache as sc
    >>> pipeline = make_pipeline(sc.MemoryStore(), dtype="float32", opt_level=3)
    >>> pipeline.translate.step.dtype, pipeline.compile.step.opt_level
    ('float32', 3)
    """
    root = os.fspath(build_root) if build_root is not None else None
    translate_step: Any = Translate(enable_transforms=enable_transforms, dtype=dtype)
    compile_step: Any = Compile(opt_level=opt_level, cc=cc, build_root=root)
    if store is not None:
        if isinstance(store, str):
            from stepcache.stores.registry import open_store

            store = open_store(store)
        translate_step = CachedStep(translate_step, store, version=version, code=_TRANSLATE_CODE)
        compiler = toolchain(compiler=compiler_command(cc)[0], env=("CC", "CFLAGS"))
        compile_step = CachedDirStep(
            compile_step, store, version=version, code=_COMPILE_CODE, toolchain=compiler
        )
    return Pipeline(translate=translate_step, compile=compile_step)
