"""GT4Py's compiled programs in a store: the compiler patch of :mod:`stepcache.integrations.gt4py`.

Of a compiled program only what loading needs is kept (the extension module
and ``gt4py.json``), keyed by GT4Py's build folder name plus compiler, build
environment, Python and platform. Imported by :func:`~stepcache.integrations.gt4py.enable`.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import functools
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path, PurePosixPath
from typing import Any

from stepcache.errors import StepCacheError
from stepcache.fingerprint import fingerprint
from stepcache.integrations import _gt4py_runner
from stepcache.integrations import gt4py as core
from stepcache.stores.base import Store

__all__ = ["patch_compiler"]


# -- compiled programs -----------------------------------------------------------------------
def _build_key(folder_name: str) -> str:
    """Key of a build folder: its name plus compiler, build environment, Python and platform."""
    if core._state.toolchain is None:
        from importlib import metadata

        from stepcache.errors import CompilerError
        from stepcache.identity import toolchain

        try:
            chain = toolchain(compiler=os.environ.get("CXX") or "c++", env=core._BUILD_ENV)
        except CompilerError:  # no compiler: stored programs still load, under their own key
            chain = toolchain(env=core._BUILD_ENV)
        versions = []
        for dist in core._BUILD_DISTRIBUTIONS:
            with contextlib.suppress(metadata.PackageNotFoundError):
                versions.append((dist, metadata.version(dist)))
        core._state.toolchain = (chain, tuple(versions))
    return fingerprint((core._KEY_VERSION, "build", folder_name, core._state.toolchain))


def _restore(gt: Any, store: Store, key: str, folder: Path, step: str) -> bool:
    """Copy a stored compiled program into ``folder``; return whether it is usable now."""
    stored = store.get_dir(key, info={"step": step})
    if stored is None:
        return False
    from stepcache.stores import _fsutil

    data = gt.build_data.read_data(stored)
    module = PurePosixPath(str(getattr(data, "module", "")))
    if module.is_absolute() or ".." in module.parts or not gt.compiler.is_usable(data, stored):
        core._say_once("bad-build", "stepcache: ignoring unusable stored GT4Py build %s", key)
        return False
    try:
        (folder / module).parent.mkdir(parents=True, exist_ok=True)
        for name in (module, core._DATAFILE):  # gt4py.json last: it makes GT4Py take the folder
            data_bytes = (stored / name).read_bytes()
            _fsutil.write_atomic(str(folder / name), data_bytes, str(folder))
    except OSError as exc:
        core._say_once(
            "restore", "stepcache: cannot restore a GT4Py build into %s: %s", folder, exc
        )
        return False
    return True


def _save(store: Store, key: str, artifact: Any, info: dict[str, str]) -> None:
    """Store the extension module and ``gt4py.json`` of a finished build (not objects, libs)."""
    src, module = Path(artifact.src_dir), PurePosixPath(str(artifact.module))
    try:
        with tempfile.TemporaryDirectory(prefix="stepcache-gt4py-") as tmp:
            (Path(tmp) / module).parent.mkdir(parents=True)
            shutil.copyfile(src / module, Path(tmp) / module)
            shutil.copyfile(src / core._DATAFILE, Path(tmp) / core._DATAFILE)
            store.put_dir(key, tmp, info=info)
    except (OSError, ValueError, StepCacheError) as exc:
        core._say_once("save", "stepcache: cannot store the GT4Py build in %s: %s", src, exc)


@dataclasses.dataclass
class _Build:
    """One compiler call: its build folder, once GT4Py asked for it, and whether to save it."""

    step: str
    folder: Path | None = None
    key: str = ""
    save: bool = False


_building: contextvars.ContextVar[_Build | None] = contextvars.ContextVar("_building", default=None)


def _cache_folder(original: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """``get_cache_folder``; a compiler's first call restores the folder from the store."""
    folder = original(*args, **kwargs)
    build, store, gt = _building.get(), core._state.store, core._state.gt
    if build is None or build.folder is not None or store is None:
        return folder  # not a compiler's own folder (compiledb template, DaCe, ...)
    build.folder, build.key = Path(folder), _build_key(Path(folder).name)
    with gt.locking.lock(folder):
        if gt.compiler.is_usable(gt.build_data.read_data(build.folder), build.folder):
            build.save = build.key not in store  # from GT4Py's own persistent cache
        elif _gt4py_runner.stored_only.get() and build.key not in store:
            # Building is work, a worker's; it counts the miss when it looks.
            raise _gt4py_runner.NotStored(build.key)
        else:
            build.save = not _restore(gt, store, build.key, build.folder, build.step)
            if build.save and _gt4py_runner.stored_only.get():
                raise _gt4py_runner.NotStored(build.key)  # stored, but damaged or unusable
    return folder


def _compile(original: Callable[[Any, Any], Any], compiler: Any, inp: Any) -> Any:
    """``CPPCompiler.__call__``, keeping in the store what it had to build."""
    store = core._state.store
    if store is None or compiler.force_recompile:
        return original(compiler, inp)
    backend = type(compiler).__name__.removesuffix("Compiler").lower() or "cpp"
    build = _Build(step=f"gt4py.build[{backend}]")
    token = _building.set(build)
    try:
        artifact = original(compiler, inp)
    finally:
        _building.reset(token)
    if build.folder is None:
        core._say_once("folder", "stepcache: GT4Py built without asking for a folder; not cached")
    elif build.save and not store.read_only and Path(artifact.src_dir) == build.folder:
        label = str(getattr(getattr(inp.program_source, "entry_point", None), "name", ""))
        _save(store, build.key, artifact, {"step": build.step, "label": label})
    # GT4Py's compile workers outlive their tasks: record what this one did now,
    # so a report made before they exit (pytest's) sees it.
    store.flush()
    return artifact


def patch_compiler(patches: core._Saved, gt: Any) -> None:
    """Route C++ compilers through the store; compiler instances switch workers on."""
    cls = gt.compiler.CPPCompiler
    original_call, original_folder = cls.__call__, gt.cache.get_cache_folder
    plain_reduce: Callable[..., Any] = cls.__reduce_ex__

    @functools.wraps(original_call)
    def __call__(self: Any, inp: Any) -> Any:
        return _compile(original_call, self, inp)

    @functools.wraps(original_folder)
    def get_cache_folder(*args: Any, **kwargs: Any) -> Any:
        return _cache_folder(original_folder, *args, **kwargs)

    def __reduce_ex__(self: Any, protocol: Any) -> Any:
        reduced = plain_reduce(self, protocol)
        if core._state.store is None or not isinstance(reduced, tuple) or len(reduced) < 2:
            return reduced
        state = reduced[2] if len(reduced) > 2 else None
        return (core._revive, (core._state.store, reduced[0], reduced[1], state))

    core._set_attr(patches, cls, "__call__", __call__)
    core._set_attr(patches, cls, "__reduce_ex__", __reduce_ex__)
    core._set_attr(patches, gt.cache, "get_cache_folder", get_cache_folder)
