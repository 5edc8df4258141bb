"""Code and toolchain identity: what a cached result depends on besides its input.

A result is only valid for the code and the compiler that produced it.
:func:`code_identity` turns module names into a digest of their sources, and
:func:`toolchain` captures a compiler, environment variables, Python and
platform, so that :class:`~stepcache.CachedStep` keys change when any of them
does, and come back when the change is reverted.

Sources are identified cheaply:

* a distribution installed from a wheel by the file hashes its ``RECORD``
  lists (no source file is read);
* an editable install or a plain source tree by hashing its ``.py`` files,
  memoised in-process and, across processes, in a memo file per tree that
  records each file's size, mtime, ctime and inode and each directory's
  mtime and ctime, like git's index: when none changed, the recorded digest
  is used without listing a directory or reading a file
  (:mod:`stepcache._srctree`).
  Stamps younger than two seconds are never trusted: a second edit could
  still share them.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
import sys
import threading
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import xxhash

from stepcache._srctree import tree_digests
from stepcache.errors import CompilerError

__all__ = [
    "CodeIdentity",
    "Toolchain",
    "code_identity",
    "code_modules",
    "memo_directory",
    "toolchain",
]

_lock = threading.Lock()
_version_memo: dict[tuple[str, int, int], str] = {}


def memo_directory() -> Path:
    """Where identity memo files live: ``$STEPCACHE_MEMO_DIR`` or ``<default dir>/memo``."""
    return Path(_memo_dir())


def _memo_dir() -> str:
    env = os.environ.get("STEPCACHE_MEMO_DIR")
    if env:
        return env
    from stepcache.stores.registry import default_directory

    return str(default_directory() / "memo")


def _load_memo(name: str) -> dict[str, Any]:
    try:
        data = json.loads((memo_directory() / name).read_bytes())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _save_memo(name: str, data: Mapping[str, Any]) -> None:
    from stepcache.stores import _fsutil

    target = memo_directory()
    try:
        target.mkdir(parents=True, exist_ok=True, mode=0o700)
        _fsutil.write_atomic(str(target / name), json.dumps(data).encode(), str(target))
    except OSError:
        pass  # a memo that cannot be written only costs time in the next process


Files = tuple[tuple[str, str], ...]


class _LazyFiles:
    """The ``files`` field of :class:`CodeIdentity`: given as a tuple or a function giving it.

    The function is called on first read: a key needs only the digest, and
    decoding a thousand paths and digests from the memo costs about a tenth
    of checking that none of the files changed.
    """

    def __get__(self, obj: object | None, owner: type | None = None) -> Files:
        if obj is None:
            return ()  # the field's default
        files: Files | Callable[[], Files] = obj.__dict__["_files"]
        if callable(files):
            files = obj.__dict__["_files"] = files()
        return files

    def __set__(self, obj: object, value: Files | Callable[[], Files]) -> None:
        obj.__dict__["_files"] = value


@dataclasses.dataclass(frozen=True)
class CodeIdentity:
    """Digest of one declared module or package, and of each of its files.

    ``files`` (``(path, digest)`` pairs) may be given as a function returning
    them, called when ``files`` is first read.
    """

    name: str
    digest: str
    source: str  # "record", "files", "interpreter" or "missing"
    files: _LazyFiles = _LazyFiles()

    def __stepcache_fingerprint__(self) -> tuple[str, str]:
        return (self.name, self.digest)

    def __reduce__(self) -> tuple[type[CodeIdentity], tuple[str, str, str, Files]]:
        # With the files decoded: the function decoding them reads a view of the memo.
        return (CodeIdentity, (self.name, self.digest, self.source, self.files))


def _site_dirs() -> tuple[str, ...]:
    # From sys.path and the site module, not sysconfig: importing sysconfig
    # costs more than the rest of an identity (a wheel's files are importable
    # only through one of these directories).
    paths = {p for p in sys.path if p.endswith(("site-packages", "dist-packages"))}
    site = sys.modules.get("site")
    if site is not None and hasattr(site, "getsitepackages"):
        paths.update(site.getsitepackages())
    return tuple(sorted(paths))


def _record_lines(name: str, found: str) -> list[str] | None:
    """RECORD lines of the wheel that installed ``name``, found at ``found``, or None (no wheel)."""
    site = next((s for s in _site_dirs() if found.startswith(s + os.sep)), None)
    if site is None:
        return None
    origin = Path(found)
    rel = origin.relative_to(site)
    parts = name.split(".")
    prefix = "/".join(rel.parts[: len(parts)])
    if rel.name == "__init__.py" or origin.is_dir():
        prefix += "/"
    top = rel.parts[0].split(".")[0].lower()
    infos = sorted(Path(site).glob("*.dist-info"))
    infos.sort(key=lambda p: p.name.split("-")[0].lower().replace("-", "_") != top)
    for info in infos:
        try:
            record = (info / "RECORD").read_text()
        except OSError:
            continue
        lines = [ln for ln in record.splitlines() if ln.startswith(prefix)]
        if lines:
            direct = info / "direct_url.json"
            if direct.exists() and '"editable": true' in direct.read_text():
                return None
            return sorted(lines)
    return None


_found: set[str] = set()
# importable name -> file of a script run as __main__ (see code_modules)
_scripts: dict[str, str] = {}


def code_modules(names: Iterable[str]) -> tuple[str, ...]:
    """``names`` as :func:`code_identity` needs them; a name that cannot be found is an error.

    ``__main__`` becomes the script's importable name, so editing the script
    re-keys its steps. A misspelled name would otherwise be identified as
    "missing" for ever, and editing the real module would never re-key.

    >>> code_modules(["stepcache.step"])
    ('stepcache.step',)
    >>> code_modules(["stepcache.stpe"])
    Traceback (most recent call last):
    ...
    ModuleNotFoundError: code= names 'stepcache.stpe', which cannot be found: ...
    """
    from stepcache.fingerprint._tokens import module_name

    out = []
    for given in names:
        name = module_name(given)
        script = getattr(sys.modules.get(given), "__file__", None)
        if given != name and isinstance(script, str):
            # The script may not be importable from here (python pkg/mod.py
            # does not put pkg's parent on sys.path): identify it by its file.
            _scripts[name] = script
        elif name not in _found and name not in sys.modules:
            try:
                spec = importlib.util.find_spec(name)
            except (ImportError, ValueError):
                spec = None
            if spec is None:
                raise ModuleNotFoundError(
                    f"code= names {given!r}, which cannot be found: no such module or package "
                    "on sys.path; check the spelling (code= takes importable module names, "
                    "e.g. code=('mydsl.passes',))",
                    name=name,
                )
            _found.add(name)
        out.append(name)
    return tuple(out)


def code_identity(name: str) -> CodeIdentity:
    """Identify the sources of module or package ``name`` (imported if needed to locate it).

    >>> import stepcache.identity as ident
    >>> ident.code_identity("stepcache.step").source in ("files", "record")
    True
    """
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        spec = None
    if spec is None and name in _scripts:
        spec = importlib.util.spec_from_file_location(name, _scripts[name])
    if spec is None or not (spec.origin or spec.submodule_search_locations):
        return CodeIdentity(name, "missing", "missing")
    if spec.origin in ("built-in", "frozen"):
        # Compiled into the interpreter (sys, and os when frozen): its code is
        # the build's, so the build identifies it.
        build = f"{sys.implementation.name} {sys.implementation.cache_tag} {sys.version}"
        return CodeIdentity(name, xxhash.xxh3_128_hexdigest(build.encode()), "interpreter")
    # Strings, not Paths: this runs in every fresh process that declares code.
    roots = list(map(os.path.normpath, spec.submodule_search_locations or [str(spec.origin)]))
    record = _record_lines(name, os.path.normpath(spec.origin or roots[0]))
    if record is not None:
        digest = xxhash.xxh3_128_hexdigest("\n".join(record).encode())
        return CodeIdentity(name, digest, "record")
    memo_dir = _memo_dir()
    parts = [tree_digests(root, memo_dir) for root in roots]
    if len(parts) == 1:  # the usual case: the memo holds the digest of its listing
        listing, digest = parts[0]
        return CodeIdentity(name, digest, "files", listing)
    files = tuple(item for listing, _ in parts for item in listing())
    digest = xxhash.xxh3_128_hexdigest(json.dumps(files).encode())
    return CodeIdentity(name, digest, "files", files)


@dataclasses.dataclass(frozen=True)
class Toolchain:
    """A compiler, environment variables, Python and platform: part of a key.

    Made by :func:`toolchain`; frozen and fingerprintable.
    """

    compiler: str = ""
    compiler_version: str = ""
    env: tuple[tuple[str, str | None], ...] = ()
    python: str = ""
    platform: str = ""

    def manifest(self) -> dict[str, str]:
        """Readable parts for explaining misses (values, not digests)."""
        out = {
            "toolchain.compiler": self.compiler,
            "toolchain.compiler_version": self.compiler_version.splitlines()[0][:120]
            if self.compiler_version
            else "",
            "toolchain.python": self.python,
            "toolchain.platform": self.platform,
        }
        out.update({f"toolchain.env[{k}]": repr(v) for k, v in self.env})
        return out


def _compiler_version(path: str) -> str:
    st = os.stat(path)
    memo_key = (path, st.st_size, st.st_mtime_ns)
    with _lock:
        if memo_key in _version_memo:
            return _version_memo[memo_key]
    disk = _load_memo("compilers.json")
    entry = disk.get(path)
    if entry and entry[:2] == [st.st_size, st.st_mtime_ns]:
        version = str(entry[2])
    else:
        import subprocess

        try:
            proc = subprocess.run(
                [path, "--version"], capture_output=True, text=True, timeout=60, check=False
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise CompilerError(f"cannot run compiler {path} --version: {exc}") from exc
        version = (proc.stdout + proc.stderr).strip()
        disk[path] = [st.st_size, st.st_mtime_ns, version]
        _save_memo("compilers.json", disk)
    with _lock:
        _version_memo[memo_key] = version
    return version


def toolchain(
    *, compiler: str | os.PathLike[str] | None = None, env: Iterable[str] = ()
) -> Toolchain:
    """Capture the toolchain a step's results depend on.

    ``compiler``: a command name or path; resolved on ``PATH`` and identified
    by its ``--version`` output (memoised by path, size and mtime). ``env``:
    names of environment variables whose values join the key (unset and empty
    differ). Python implementation and version and the platform always do.

    >>> import stepcache as sc
    >>> tc = sc.toolchain(env=("CFLAGS",))
    >>> tc.env[0][0]
    'CFLAGS'
    """
    import platform
    import shutil

    path = version = ""
    if compiler is not None:
        found = shutil.which(os.fspath(compiler))
        if found is None:
            raise CompilerError(f"compiler {os.fspath(compiler)!r} not found on PATH")
        path = os.path.abspath(found)
        version = _compiler_version(path)
    env_values = tuple((name, os.environ.get(name)) for name in sorted(set(env)))
    impl = f"{sys.implementation.name}-{'.'.join(map(str, sys.version_info[:3]))}"
    plat = f"{sys.platform}-{platform.machine()}"
    return Toolchain(os.path.basename(path), version, env_values, impl, plat)
