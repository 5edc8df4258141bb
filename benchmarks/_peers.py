"""The contenders: stepcache, its peers and the floor, behind one small interface.

Every contender opens a cache in a directory and offers ``get`` (``None`` on
a miss), ``set`` and ``get_or_burn`` (the value for a key, running the
compilation stand-in :func:`burn` on a miss, the library's own way).
Libraries are imported on first use, so this module is cheap to import in a
fresh process and a missing peer only removes that contender::

    handle = CONTENDERS["diskcache"].open("/tmp/c")
    handle.set(key_of(1), value_for(key_of(1)))
    handle.get(key_of(1))

joblib has no mapping API: a value is the cached result of :func:`produce`
(or :func:`burn`), a hit is a call of the memoised function, a set forces a
call, and a miss is ``check_call_in_cache`` returning false.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import pickle
import time
from collections.abc import Callable
from typing import Any

__all__ = [
    "CONTENDERS",
    "Contender",
    "Handle",
    "burn",
    "computations",
    "key_of",
    "produce",
    "value_for",
]

COMPUTED = [0]  # computations of burn() in this process (a list: mutable without `global`)


def key_of(n: int, size: int = 1000) -> str:
    """A store key (32 hex digits) for the ``n``-th value of ``size`` bytes.

    The first 24 digits are a hash of ``n``, spread like fingerprints are (the
    directory fan-out depends on it); the last 8 are the size, so any process
    can rebuild the value a key stands for (:func:`value_for`) and check a read.

    >>> key_of(1, 1000)[24:], len(key_of(1))
    ('000003e8', 32)
    """
    return hashlib.blake2b(n.to_bytes(8, "little"), digest_size=12).hexdigest() + f"{size:08x}"


def value_for(key: str) -> bytes:
    """The deterministic value a :func:`key_of` key stands for: ``len(value_for(key_of(1, 9)))``

    is 9.
    """
    size = int(key[24:], 16)
    unit = (key + "\n").encode()
    return (unit * (size // len(unit) + 1))[:size]


def produce(key: str) -> bytes:
    """What joblib memoises in place of a set: returns :func:`value_for`."""
    return value_for(key)


def burn(key: str, seconds: float) -> bytes:
    """A compilation stand-in: ``seconds`` of CPU time, then :func:`value_for` ``key``."""
    COMPUTED[0] += 1
    end = time.process_time() + seconds
    while time.process_time() < end:
        pass
    return value_for(key)


def computations() -> int:
    """How many times :func:`burn` ran in this process."""
    return COMPUTED[0]


class Handle:
    """An open cache; subclasses implement ``get`` and ``set``."""

    def get(self, key: str) -> Any:
        """The value under ``key``, or ``None``."""
        raise NotImplementedError

    def set(self, key: str, value: bytes) -> None:
        """Store ``value`` under ``key``."""
        raise NotImplementedError

    def get_or_burn(self, key: str, seconds: float) -> Any:
        """The value for ``key``, running :func:`burn` on a miss: plain get-then-set here."""
        value = self.get(key)
        if value is None:
            value = burn(key, seconds)
            self.set(key, value)
        return value

    def close(self) -> None:
        """Release what the handle holds."""


class _Floor(Handle):
    # The least a file cache can do: pickle, temp file, rename; open, read, unpickle.
    def __init__(self, path: str) -> None:
        self.path = path
        os.makedirs(f"{path}/tmp", exist_ok=True)
        self.n = 0

    def _file(self, key: str) -> str:
        return f"{self.path}/{key[:2]}/{key[2:4]}/{key}"

    def get(self, key: str) -> Any:
        try:
            with open(self._file(key), "rb") as f:
                return pickle.loads(f.read())
        except FileNotFoundError:
            return None

    def set(self, key: str, value: bytes) -> None:
        data = pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
        self.n += 1
        tmp = f"{self.path}/tmp/{os.getpid()}-{self.n}"
        fd = os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
        try:
            os.write(fd, data)
        finally:
            os.close(fd)
        target = self._file(key)
        try:
            os.replace(tmp, target)
        except FileNotFoundError:
            os.makedirs(os.path.dirname(target), exist_ok=True)
            os.replace(tmp, target)


class _Stepcache(Handle):
    def __init__(self, path: str) -> None:
        from stepcache.stores.directory import DirectoryStore

        self.store = DirectoryStore(path)

    def get(self, key: str) -> Any:
        return self.store.get(key)

    def set(self, key: str, value: bytes) -> None:
        self.store.set(key, value)

    def get_or_burn(self, key: str, seconds: float) -> Any:
        return self.store.get_or_compute(key, lambda: burn(key, seconds))

    def close(self) -> None:
        self.store.close()


class _Diskcache(Handle):
    def __init__(self, path: str, *, locked: bool = False, recipe: str = "memoize") -> None:
        import diskcache

        if locked:  # the original recipe: serialise creation of the SQLite cache
            import filelock

            with filelock.FileLock(path.rstrip("/") + ".lock"):
                self.cache = diskcache.Cache(path)
        else:
            self.cache = diskcache.Cache(path)
        self.recipe = recipe

    def get(self, key: str) -> Any:
        return self.cache.get(key)

    def set(self, key: str, value: bytes) -> None:
        self.cache.set(key, value)

    def get_or_burn(self, key: str, seconds: float) -> Any:
        if self.recipe == "lock":  # diskcache's documented per-key Lock around get-then-set
            import diskcache

            with diskcache.Lock(self.cache, f"lock:{key}"):
                return super().get_or_burn(key, seconds)
        return self.cache.memoize(name="burn")(burn)(key, seconds)

    def close(self) -> None:
        self.cache.close()


class _Joblib(Handle):
    def __init__(self, path: str) -> None:
        import joblib

        self.memory = joblib.Memory(path, verbose=0)
        self.produce = self.memory.cache(produce)
        self.burn = self.memory.cache(burn)
        self.checked = False

    def get(self, key: str) -> Any:
        if not self.produce.check_call_in_cache(key):
            return None
        return self.produce(key)

    def hit(self, key: str) -> Any:
        """A memoised call known to hit (no separate existence check)."""
        return self.produce(key)

    def set(self, key: str, value: bytes) -> None:
        # joblib caches results of calls: storing a value is forcing produce(key),
        # which returns that same value (the key determines it). A forced call
        # does not record the function's code, without which other processes
        # treat every entry as stale: a first check records it.
        if not self.checked:
            self.checked = True
            self.produce.check_call_in_cache(key)
        self.produce.call(key)

    def get_or_burn(self, key: str, seconds: float) -> Any:
        # The memoised function itself: joblib takes no lock, every process may compute.
        return self.burn(key, seconds)


class Contender:
    """A named way of opening a cache; ``available()`` says whether its library is installed."""

    def __init__(self, name: str, opener: Callable[[str], Handle], needs: tuple[str, ...]) -> None:
        self.name = name
        self.opener = opener
        self.needs = needs

    def missing(self) -> str | None:
        """The first required module that is not installed, or ``None``."""
        return next((m for m in self.needs if importlib.util.find_spec(m) is None), None)

    def preload(self) -> None:
        """Import the libraries now, so that a timed section does not pay for it."""
        for module in self.needs:
            importlib.import_module(module)
        if self.name == "stepcache":
            importlib.import_module("stepcache.stores.directory")

    def open(self, path: str) -> Handle:
        """Open (creating if needed) the cache in directory ``path``."""
        return self.opener(path)


CONTENDERS: dict[str, Contender] = {
    c.name: c
    for c in (
        Contender("floor", _Floor, ()),
        Contender("stepcache", _Stepcache, ("stepcache",)),
        Contender("diskcache", _Diskcache, ("diskcache",)),
        Contender(
            "diskcache+filelock",
            lambda p: _Diskcache(p, locked=True),
            ("diskcache", "filelock"),
        ),
        Contender("diskcache+Lock", lambda p: _Diskcache(p, recipe="lock"), ("diskcache",)),
        Contender("joblib", _Joblib, ("joblib",)),
    )
}


def usable(names: list[str]) -> tuple[list[str], dict[str, str]]:
    """Split ``names`` into installed contenders and ``{name: reason}`` for the others."""
    ok, skipped = [], {}
    for name in names:
        gone = CONTENDERS[name].missing()
        if gone is None:
            ok.append(name)
        else:
            skipped[name] = f"{gone} is not installed (pip install -e '.[bench]')"
    return ok, skipped


def preload(index: int, names: list[str]) -> int:
    """A worker task (see ``_workers``): import the contenders' libraries; returns the pid."""
    for name in names:
        CONTENDERS[name].preload()
    return os.getpid()
