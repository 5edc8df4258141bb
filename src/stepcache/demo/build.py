"""Compilation of generated C into a shared library with the system compiler.

A build directory holds ``<name>.c``, ``lib<name>.so`` and ``manifest.json``
(the kernel's calling convention plus the command that built it), so it can be
stored, copied and loaded on its own::

    >>> import tempfile
    >>> from stepcache.demo.codegen import CSource
    >>> code = "void sc_f(int ni, int nj, double* restrict out) {}\\n"
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     out = compile_source(CSource("f", code, "sc_f", (), (), (0, 0), "float64"), tmp)
    ...     sorted(p.name for p in out.iterdir())
    ['f.c', 'libf.so', 'manifest.json']

The compiler is ``$CC`` (split like a shell word list, so ``CC="gcc -m64"``
works) or ``cc``. A missing or failing compiler raises
:class:`~stepcache.errors.CompilerError` with the command and its stderr.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
from pathlib import Path
from typing import Any

from stepcache.demo.codegen import CSource
from stepcache.errors import CompilerError

__all__ = ["MANIFEST", "compile_source", "compiler_command"]

#: file name of the build manifest inside a build directory
MANIFEST = "manifest.json"


def compiler_command(cc: str | None = None) -> list[str]:
    """The compiler as an argument list: ``cc``, else ``$CC``, else ``["cc"]``.

    >>> compiler_command("gcc -m64")
    ['gcc', '-m64']
    """
    words = shlex.split(cc or os.environ.get("CC") or "cc")
    return words or ["cc"]


def _run(cmd: list[str], cwd: Path, timeout: float) -> None:
    shown = shlex.join(cmd)
    try:
        proc = subprocess.run(
            cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False
        )
    except FileNotFoundError:
        raise CompilerError(
            f"C compiler not found: {shown!r}; install one or point $CC at it"
        ) from None
    except subprocess.TimeoutExpired:
        raise CompilerError(f"C compiler timed out after {timeout:g} s: {shown}") from None
    except OSError as exc:
        raise CompilerError(f"cannot run C compiler {shown!r}: {exc}") from None
    if proc.returncode != 0:
        raise CompilerError(
            f"C compiler failed (exit status {proc.returncode}): {shown}\n{proc.stderr.strip()}"
        )


def compile_source(
    src: CSource,
    build_dir: str | os.PathLike[str],
    *,
    opt_level: int = 2,
    cc: str | None = None,
    timeout: float = 120.0,
) -> Path:
    """Write ``src`` into ``build_dir``, compile it to ``lib<name>.so``; return the directory.

    ``opt_level`` is passed as ``-O<level>`` (0 to 3) after any ``$CFLAGS``; the command runs in
    ``build_dir`` with ``timeout`` seconds to finish. Example: the module docstring.
    """
    if opt_level not in (0, 1, 2, 3):
        raise ValueError(f"opt_level must be 0, 1, 2 or 3, not {opt_level!r}")
    out = Path(build_dir)
    out.mkdir(parents=True, exist_ok=True)
    c_file, library = f"{src.name}.c", f"lib{src.name}.so"
    (out / c_file).write_text(src.code, encoding="utf-8")
    cmd = [
        *compiler_command(cc),
        # $CFLAGS first, so the step's own -O level wins where they overlap.
        *shlex.split(os.environ.get("CFLAGS", "")),
        f"-O{opt_level}",
        "-shared",
        "-fPIC",
        # No fused multiply-add contraction: results then match the numpy
        # reference bit for bit in float64 on every target, not only x86-64.
        "-ffp-contract=off",
        "-o",
        library,
        c_file,
        "-lm",
    ]
    _run(cmd, out, timeout)
    manifest: dict[str, Any] = {
        **src.metadata(),
        "library": library,
        "source": c_file,
        "opt_level": opt_level,
        "command": cmd,
    }
    (out / MANIFEST).write_text(json.dumps(manifest, indent=1, sort_keys=True), encoding="utf-8")
    return out
