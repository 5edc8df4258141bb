"""stepcache: cache the steps of compile pipelines across runs, processes and machines.

>>> import stepcache as sc
>>> store = sc.open_store("memory://")
>>> parse = sc.CachedStep(sc.step(str.split), store)
>>> parse("a b c")
['a', 'b', 'c']
>>> parse("a b c"), store.stats().hits
(['a', 'b', 'c'], 1)

See the README and ``docs/`` for the design, the on-disk format and the CLI.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from stepcache.cached import CachedStep
from stepcache.codec import EntryHeader
from stepcache.errors import (
    CompilerError,
    InvalidKeyError,
    ReadOnlyStoreError,
    StepCacheError,
    StoreUnavailableError,
    StoreWriteError,
    UnfingerprintableError,
    UnsafeStoreError,
)
from stepcache.fingerprint import field, fingerprint, register_fingerprint
from stepcache.step import Chain, FunctionStep, NamedSteps, Step, StepBase, chain, step
from stepcache.stores._stats import MissRecord, Stats, StepStats
from stepcache.stores.backend import Backend, EntryStat
from stepcache.stores.base import Store, VerifyResult, validate_key
from stepcache.stores.directory.store import DirectoryStore

if TYPE_CHECKING:
    from stepcache._dirstep import CachedDirStep
    from stepcache.explain import MissReport
    from stepcache.identity import Toolchain, code_identity, toolchain
    from stepcache.stores.memory import MemoryStore
    from stepcache.stores.redis import RedisStore
    from stepcache.stores.registry import open_store, register_backend, reset_registry
    from stepcache.stores.s3 import S3Store
    from stepcache.stores.tiered import TieredStore

__version__ = "0.1.0.dev0"

__all__ = [
    "Backend",
    "CachedDirStep",
    "CachedStep",
    "Chain",
    "CompilerError",
    "DirectoryStore",
    "EntryHeader",
    "EntryStat",
    "FunctionStep",
    "InvalidKeyError",
    "MemoryStore",
    "MissRecord",
    "MissReport",
    "NamedSteps",
    "ReadOnlyStoreError",
    "RedisStore",
    "S3Store",
    "Stats",
    "Step",
    "StepBase",
    "StepCacheError",
    "StepStats",
    "Store",
    "TieredStore",
    "Toolchain",
    "StoreUnavailableError",
    "StoreWriteError",
    "UnfingerprintableError",
    "UnsafeStoreError",
    "VerifyResult",
    "__version__",
    "chain",
    "code_identity",
    "field",
    "fingerprint",
    "open_store",
    "register_backend",
    "register_fingerprint",
    "reset_registry",
    "step",
    "toolchain",
    "validate_key",
]


# Names a `CachedStep` over a directory store does not need: imported on first
# use, so `import stepcache` stays light (RedisStore would import redis-py; the
# registry behind open_store is not needed to open a DirectoryStore directly).
_LAZY = {
    "CachedDirStep": "stepcache._dirstep",
    "MemoryStore": "stepcache.stores.memory",
    "MissReport": "stepcache.explain",
    "RedisStore": "stepcache.stores.redis",
    "S3Store": "stepcache.stores.s3",
    "TieredStore": "stepcache.stores.tiered",
    "Toolchain": "stepcache.identity",
    "code_identity": "stepcache.identity",
    "open_store": "stepcache.stores.registry",
    "register_backend": "stepcache.stores.registry",
    "reset_registry": "stepcache.stores.registry",
    "toolchain": "stepcache.identity",
}


def __getattr__(name: str) -> object:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'stepcache' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
