"""The GT4Py translation-cache adapter and switching on: the parts that need no GT4Py."""

from __future__ import annotations

import concurrent.futures
import importlib.util
import multiprocessing
import os
import pickle
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

import stepcache as sc
import stepcache.integrations.gt4py as sc_gt4py
from stepcache.integrations.gt4py import GT4PyIntegrationError, TranslationCache
from stepcache.testing.processes import run_python

GT4PY_KEY = "0123456789abcdef"
HAS_GT4PY = importlib.util.find_spec("gt4py") is not None


def _program(name: str) -> SimpleNamespace:
    """Shaped like GT4Py's ProgramSource as far as the adapter looks."""
    return SimpleNamespace(entry_point=SimpleNamespace(name=name), source_code="// C++")


def test_a_miss_raises_keyerror_with_gt4pys_key() -> None:
    cache = TranslationCache(sc.MemoryStore(), "gtfn")
    with pytest.raises(KeyError) as missed:
        cache[GT4PY_KEY]
    assert missed.value.args == (GT4PY_KEY,)
    assert GT4PY_KEY not in cache


def test_a_stored_translation_records_step_label_and_gt4pys_key() -> None:
    store = sc.MemoryStore()
    cache = TranslationCache(store, "gtfn")
    cache[GT4PY_KEY] = _program("laplacian")
    assert cache[GT4PY_KEY].entry_point.name == "laplacian"
    (header,) = store.headers()
    assert header.key == cache.store_key(GT4PY_KEY)
    assert (header.step, header.label) == ("gt4py.translation[gtfn]", "laplacian")
    assert header.info["gt4py_key"] == GT4PY_KEY
    assert sc.validate_key(header.key) == header.key


def test_store_keys_are_stable_and_distinct_per_backend_and_salt() -> None:
    store = sc.MemoryStore()
    keys = {
        TranslationCache(store, backend, salt).store_key(GT4PY_KEY)
        for backend in ("gtfn", "dace")
        for salt in ("", "code-v2")
    }
    assert len(keys) == 4
    again = TranslationCache(sc.MemoryStore(), "gtfn").store_key(GT4PY_KEY)
    assert again == TranslationCache(store, "gtfn").store_key(GT4PY_KEY)


def test_it_behaves_as_a_mapping_of_its_own_entries_only() -> None:
    store = sc.MemoryStore()
    gtfn, dace = TranslationCache(store, "gtfn"), TranslationCache(store, "dace")
    gtfn[GT4PY_KEY] = _program("a")
    gtfn["fedcba9876543210"] = _program("b")
    dace[GT4PY_KEY] = "an SDFG"
    assert sorted(gtfn) == [GT4PY_KEY, "fedcba9876543210"]
    assert (len(gtfn), len(dace)) == (2, 1)
    del gtfn[GT4PY_KEY]
    assert GT4PY_KEY not in gtfn
    assert dace[GT4PY_KEY] == "an SDFG"
    with pytest.raises(KeyError):
        del gtfn[GT4PY_KEY]


def test_a_read_only_store_serves_but_keeps_nothing_new(tmp_path: Path) -> None:
    TranslationCache(sc.open_store(tmp_path), "gtfn")[GT4PY_KEY] = "kept"
    read_only = TranslationCache(sc.open_store(tmp_path, read_only=True), "gtfn")
    read_only["fedcba9876543210"] = "not kept"
    assert read_only[GT4PY_KEY] == "kept"
    assert "fedcba9876543210" not in read_only


def _read(cache: TranslationCache, key: str) -> tuple[str, Any]:
    return cache.store.spec, cache[key]


def test_it_pickles_by_store_spec_into_a_spawned_process(tmp_path: Path) -> None:
    cache = TranslationCache(sc.open_store(tmp_path), "gtfn", "salt")
    cache[GT4PY_KEY] = "generated C++"
    twin = pickle.loads(pickle.dumps(cache))
    assert (twin.store, twin.backend, twin.salt) == (cache.store, "gtfn", "salt")
    spawn = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(1, mp_context=spawn) as pool:
        spec, value = pool.submit(_read, cache, GT4PY_KEY).result(timeout=60)
    assert (spec, value) == (cache.store.spec, "generated C++")


def test_importing_the_integration_imports_no_gt4py() -> None:
    code = "import sys, stepcache.integrations.gt4py; print('gt4py' in sys.modules)"
    assert run_python(code).stdout.strip() == "False"


@pytest.mark.parametrize("value", ["", "0", "off"])
def test_enable_from_env_is_off_without_a_spec(value: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(sc_gt4py.ENV_VAR, value)
    assert sc_gt4py.enable_from_env() is False
    assert sc_gt4py.active_store() is None


@pytest.mark.skipif(HAS_GT4PY, reason="GT4Py is installed; test_gt4py_enable covers enabling")
def test_enable_without_gt4py_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(sc_gt4py.ENV_VAR, raising=False)
    with pytest.raises(GT4PyIntegrationError, match=r"pip install 'stepcache\[gt4py\]'") as err:
        sc_gt4py.enable("memory://")
    assert isinstance(err.value, sc.StepCacheError)
    assert isinstance(err.value, RuntimeError)
    assert sc_gt4py.active_store() is None
    assert sc_gt4py.ENV_VAR not in os.environ
    if sys.version_info < (3, 12):  # no install of GT4Py can work here: say what can
        assert "GT4Py needs Python 3.12 or newer" in str(err.value)


def test_the_install_hint_suggests_only_an_install_that_can_work() -> None:
    assert sc_gt4py.install_hint((3, 12)) == "install it with: pip install 'stepcache[gt4py]'"
    old = sc_gt4py.install_hint((3, 11))
    assert old.startswith("GT4Py needs Python 3.12 or newer and this is Python 3.11")
    assert not old.startswith("install it with")
