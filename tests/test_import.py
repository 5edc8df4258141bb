"""``import stepcache`` stays light: which modules it loads, and that every public name works.

Each check runs in a fresh interpreter, since this test process has long
imported everything.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import stepcache
from stepcache.testing.processes import run_python

SRC = str(Path(stepcache.__file__).resolve().parent.parent)

# What a CachedStep over a DirectoryStore needs, and nothing else.
EXPECTED = {
    "stepcache",
    "stepcache._log",
    "stepcache._record",
    "stepcache._values",
    "stepcache.cached",
    "stepcache.codec",
    "stepcache.errors",
    "stepcache.fingerprint",
    "stepcache.fingerprint._encode",
    "stepcache.fingerprint._functions",
    "stepcache.fingerprint._handlers",
    "stepcache.fingerprint._numpy",
    "stepcache.fingerprint._registry",
    "stepcache.fingerprint._resolve",
    "stepcache.fingerprint._tokens",
    "stepcache.step",
    "stepcache.stores",
    "stepcache.stores._core",
    "stepcache.stores._flight",
    "stepcache.stores._forks",
    "stepcache.stores._fsutil",
    "stepcache.stores._identity",
    "stepcache.stores._keys",
    "stepcache.stores._lockmode",
    "stepcache.stores._owner",
    "stepcache.stores._results",
    "stepcache.stores._stats",
    "stepcache.stores.backend",
    "stepcache.stores.base",
    "stepcache.stores.directory",
    "stepcache.stores.directory.backend",
    "stepcache.stores.directory.beneath",
    "stepcache.stores.directory.entryfile",
    "stepcache.stores.directory.eviction",
    "stepcache.stores.directory.sharedfs",
    "stepcache.stores.directory.statsfiles",
    "stepcache.stores.directory.store",
    "stepcache.stores.directory.sweep",
    "stepcache.stores.directory.trust",
}

# Third-party and heavy modules that only some uses need.
FORBIDDEN = [
    "boto3",
    "botocore",
    "click",
    "hypothesis",
    "numpy",
    "obstore",
    "platformdirs",
    "redis",
    "rich",
    "zstandard",
    "hmac",
    "sysconfig",
]

# Standard-library modules that neither the import nor opening a store and
# reading from it (counters written included) needs: each is imported where
# it is used (logging at the first message, json to read counters, fcntl at
# the first lock, hashlib for leases). Values are pickled and unpickled by
# the functions of the C module _pickle, without the pickle.py around them.
# Checked against what a bare interpreter loads, since site hooks vary.
NOT_ON_A_READ = [
    "copy",
    "dataclasses",
    "fcntl",
    "hashlib",
    "inspect",
    "json",
    "logging",
    "pickle",
    "random",
    "shutil",
    "tempfile",
    "traceback",
]


def _fresh(code: str) -> str:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([SRC, os.environ.get("PYTHONPATH", "")])}
    return run_python(code, env=env).stdout


def _modules_after(code: str) -> set[str]:
    listing = "import sys; print(*sys.modules, sep='\\n')"  # no import of its own
    return set(_fresh(f"{code}\n{listing}").split())


def _added(loaded: set[str], names: list[str]) -> list[str]:
    bare = _modules_after("")
    return sorted(m for m in names if m in loaded and m not in bare)


def test_import_loads_exactly_the_directory_store_path() -> None:
    loaded = _modules_after("import stepcache")
    assert {m for m in loaded if m.startswith("stepcache")} == EXPECTED
    tops = {m.partition(".")[0] for m in loaded} | loaded
    assert sorted(m for m in FORBIDDEN if m in tops) == []
    assert _added(loaded, NOT_ON_A_READ) == []


def test_a_hit_in_a_fresh_process_loads_nothing_more(tmp_path: Path) -> None:
    store = stepcache.DirectoryStore(tmp_path)
    step = stepcache.CachedStep(stepcache.step(str.upper), store)
    assert step("abc") == "ABC"
    code = (
        "import stepcache as sc\n"
        f"store = sc.DirectoryStore({str(tmp_path)!r})\n"
        "assert sc.CachedStep(sc.step(str.upper), store)('abc') == 'ABC'\n"
        "store.flush()  # what the process writes at exit\n"
    )
    loaded = _modules_after(code)
    assert {m for m in loaded if m.startswith("stepcache")} == EXPECTED
    assert _added(loaded, NOT_ON_A_READ) == []
    assert stepcache.DirectoryStore(tmp_path).stats().hits == 1


def test_values_round_trip_without_the_c_pickle_module(tmp_path: Path) -> None:
    code = (
        "import sys\n"
        "sys.modules['_pickle'] = None  # an interpreter without the accelerator\n"
        "import stepcache as sc\n"
        f"store = sc.DirectoryStore({str(tmp_path)!r})\n"
        "step = sc.CachedStep(sc.step(lambda s: {'up': s.upper()}), store)\n"
        "assert step('abc') == step('abc') == {'up': 'ABC'}\n"
        "assert store.stats().hits == 1\n"
        "print(sc.codec.pickle_loads.__module__)\n"
    )
    assert _fresh(code).split() == ["pickle"]


@pytest.mark.parametrize("name", stepcache.__all__)
def test_every_public_name_resolves(name: str) -> None:
    assert getattr(stepcache, name) is not None
    assert name in dir(stepcache)


def test_every_public_name_imports_in_a_fresh_process() -> None:
    # RedisStore needs redis-py, an extra: checked where the Redis tests run.
    names = ", ".join(n for n in stepcache.__all__ if n != "RedisStore")
    code = (
        "import stepcache, sys\n"
        "print(sorted(set(stepcache.__all__) - set(dir(stepcache))))\n"
        f"from stepcache import {names}\n"
        "print('redis' in sys.modules, MissReport.__name__, Toolchain.__name__)\n"
    )
    assert _fresh(code).splitlines() == ["[]", "False MissReport Toolchain"]


def test_unknown_names_still_raise() -> None:
    with pytest.raises(AttributeError, match="no attribute 'Nope'"):
        stepcache.Nope  # noqa: B018


def test_opening_an_s3_store_imports_its_client_only_on_first_use() -> None:
    opened = _modules_after(
        "import stepcache\nstepcache.open_store('s3://bucket/p?endpoint=http://127.0.0.1:9')"
    )
    assert not opened & {"obstore", "zstandard", "boto3", "botocore"}
