"""``CachedDirStep``: single-flight caching of steps that produce build directories.

Kept out of :mod:`stepcache.cached` so that ``import stepcache`` does not
build it; ``stepcache.CachedDirStep`` loads it on first use.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from stepcache.cached import CachedStep

__all__ = ["CachedDirStep"]


class CachedDirStep(CachedStep):
    """A :class:`CachedStep` for steps that return a new directory (a build tree).

    The directory is handed to the store with ``put_dir`` (moved there when
    it is on the same filesystem) and later calls return the stored copy, via
    single-flight :meth:`~stepcache.Store.get_or_compute_dir`: of many
    processes building the same program at once, one compiles.

    >>> import dataclasses, pathlib, tempfile, stepcache as sc
    >>> @dataclasses.dataclass(frozen=True)
    ... class Build(sc.StepBase):
    ...     def __call__(self, name: str) -> pathlib.Path:
    ...         out = pathlib.Path(tempfile.mkdtemp())
    ...         _ = (out / f"lib{name}.so").write_bytes(b"ELF")
    ...         return out
    >>> build = sc.CachedDirStep(Build(), sc.DirectoryStore(tempfile.mkdtemp()))
    >>> build("lap") == build("lap"), sorted(p.name for p in build("lap").iterdir())
    (True, ['liblap.so'])
    """

    def _present(self, key: str) -> bool:
        return self.store.get_dir(key, count=False) is not None

    def __call__(self, inp: Any, /) -> Path:
        return self.store.get_or_compute_dir(
            self.key_for(inp), lambda: self.step(inp), timeout=self.timeout, info=self._info(inp)
        )
