"""The public backend seam: a backend from outside the package gets every promise of a store."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import pytest
from filebackend import FileBackend

import stepcache as sc
from stepcache.stores import registry
from stepcache.testing import StoreContract, key


@pytest.fixture(autouse=True)
def _files_scheme(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(registry._factories, "files", FileBackend)  # restored afterwards


class TestOutOfPackageBackend(StoreContract):
    @pytest.fixture
    def store(self, tmp_path: Path) -> sc.Store:
        sc.register_backend("files", FileBackend)
        return sc.open_store(f"files://{tmp_path}/cache")


class TestSignedOutOfPackageBackend(StoreContract):
    @pytest.fixture
    def store(self, tmp_path: Path) -> sc.Store:
        sc.register_backend("files", FileBackend)
        return sc.open_store(f"files://{tmp_path}/cache", secret="team")


def test_an_unregistered_backend_wrapped_by_hand_pickles_with_its_data(tmp_path: Path) -> None:
    store = sc.Store(FileBackend(f"nowhere://{tmp_path}/cache"))
    store[key(1)] = "kept"
    clone = pickle.loads(pickle.dumps(store))
    assert clone[key(1)] == "kept"


def test_store_options_go_to_the_store_and_the_rest_to_the_factory(tmp_path: Path) -> None:
    seen: dict[str, Any] = {}

    def factory(spec: str, **options: Any) -> sc.Backend:
        seen.update(options)
        return FileBackend(spec)

    sc.register_backend("opts", factory)
    store = sc.open_store(f"opts://{tmp_path}/c", secret="s", codec="safe", lock_timeout=5)
    assert seen == {}
    assert (store.signed, store.codec, store.lock_timeout) == (True, "safe", 5)
    sc.open_store(f"opts://{tmp_path}/d", extra=1, read_only=True)
    assert seen == {"extra": 1}


def test_a_factory_must_return_a_backend(tmp_path: Path) -> None:
    sc.register_backend("bad", lambda spec, **o: object())
    with pytest.raises(TypeError, match=r"not a stepcache\.Backend"):
        sc.open_store("bad://x")


def test_unknown_schemes_are_found_in_entry_points_else_refused(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from importlib import metadata

    class EP:
        name, value = "viaep", "filebackend:FileBackend"

    real = metadata.entry_points

    def entry_points(**kw: Any) -> Any:
        return [EP()] if kw.get("group") == "stepcache.backends" else real(**kw)

    monkeypatch.setattr(metadata, "entry_points", entry_points)
    store = sc.open_store(f"viaep://{tmp_path}/c")
    assert isinstance(store.backend, FileBackend)
    with pytest.raises(sc.StoreUnavailableError, match=r"unknown store scheme nope://"):
        sc.open_store("nope://x")


@pytest.mark.parametrize("scheme", ["", "1abc", "a b"])
def test_invalid_schemes_are_refused(scheme: str) -> None:
    with pytest.raises(ValueError, match="invalid scheme"):
        sc.register_backend(scheme, FileBackend)
