"""Nobody else's bytes get unpickled: signed stores and the safe codec refuse planted pickles.

Every planted payload here, when unpickled, creates a marker file (it stands
for any code an attacker would run). Each test first proves the payload is
live, then that the store never runs it: the read is a miss, counted in
``stats().errors``, and the marker never appears.
"""

from __future__ import annotations

import logging
import pathlib
import pickle
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import stepcache as sc
from stepcache import codec
from stepcache.cli import main
from stepcache.stores.base import Store
from stepcache.stores.directory import DirectoryStore
from stepcache.stores.directory.eviction import entry_rel
from stepcache.stores.redis import RedisStore
from stepcache.stores.tiered import TieredStore
from stepcache.testing import key
from stepcache.testing.redis_server import RedisServer

OURS = "our-team-secret"


class Touch:
    """Unpickling an instance creates ``marker``: code of the attacker's choice."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, tuple[Path]]:
        return (pathlib.Path.touch, (self.marker,))


def live_payload(tmp_path: Path, marker: Path) -> bytes:
    """The pickle bytes that create ``marker``, after checking that they really do."""
    payload = pickle.dumps(Touch(marker))
    probe = tmp_path / "probe-marker"
    pickle.loads(pickle.dumps(Touch(probe)))
    assert probe.exists(), "the payload must be live, or these tests prove nothing"
    probe.unlink()
    return payload


def forgeries(k: str, marker: Path, payload: bytes) -> dict[str, bytes]:
    """Blobs an attacker without the secret can put under ``k``, each carrying the payload."""
    return {
        "signed-with-another-secret": codec.pack_entry(k, Touch(marker), secret=b"theirs"),
        "unsigned-entry": codec.pack_entry(k, Touch(marker)),
        "raw-pickle-file": payload,
        # A genuine signed entry of another key, replayed under this one.
        "replayed-entry-of-another-key": codec.pack_entry(
            key(99), Touch(marker), secret=OURS.encode()
        ),
    }


KINDS = sorted(forgeries(key(1), Path("m"), b""))


def entry_path(store: DirectoryStore, k: str) -> Path:
    return store.path / entry_rel(k)


def plant(store: DirectoryStore, k: str, blob: bytes) -> Path:
    path = entry_path(store, k)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(blob)
    return path


@pytest.mark.parametrize("kind", KINDS)
def test_planted_pickle_in_a_signed_directory_store_is_a_counted_miss(
    tmp_path: Path, kind: str
) -> None:
    marker = tmp_path / "pwned"
    blob = forgeries(key(1), marker, live_payload(tmp_path, marker))[kind]
    store = DirectoryStore(tmp_path / "cache", secret=OURS)
    path = plant(store, key(1), blob)

    assert store.get(key(1)) is None
    assert not marker.exists()
    assert not path.exists()  # dropped, so the next reader does not meet it again
    stats = store.stats()
    assert (stats.misses, stats.errors) == (1, 1)


@pytest.mark.parametrize("kind", KINDS)
def test_get_or_compute_recomputes_over_a_planted_pickle(tmp_path: Path, kind: str) -> None:
    marker = tmp_path / "pwned"
    blob = forgeries(key(1), marker, live_payload(tmp_path, marker))[kind]
    store = DirectoryStore(tmp_path / "cache", secret=OURS)
    plant(store, key(1), blob)

    assert store.get_or_compute(key(1), lambda: "honest") == "honest"
    assert store[key(1)] == "honest"
    assert not marker.exists()
    assert store.stats().errors == 1


def test_verify_and_the_cli_show_never_unpickle_a_forged_entry(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    marker = tmp_path / "pwned"
    payload = live_payload(tmp_path, marker)
    store = DirectoryStore(tmp_path / "cache", secret=OURS)
    for n, kind in enumerate(KINDS, start=1):
        plant(store, key(n), forgeries(key(n), marker, payload)[kind])

    result = store.verify()
    assert (result.checked, len(result.corrupt)) == (len(KINDS), len(KINDS))
    monkeypatch.setenv("STEPCACHE_SECRET", OURS)
    for kind in ("signed-with-another-secret", "unsigned-entry"):  # headers that parse
        code = main(["--store", str(store.path), "show", "--json", key(KINDS.index(kind) + 1)])
        assert code == 1
        err = capsys.readouterr().err
        assert "does not decode" in err
        assert "verify" in err
    assert not marker.exists()


def test_an_entry_signed_with_the_store_secret_still_reads(tmp_path: Path) -> None:
    store = DirectoryStore(tmp_path / "cache", secret=OURS)
    store[key(1)] = {"ok": True}
    blob = entry_path(store, key(1)).read_bytes()
    assert codec.read_header(blob).signed
    assert DirectoryStore(tmp_path / "cache", secret=OURS)[key(1)] == {"ok": True}


def test_the_secret_can_come_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    marker = tmp_path / "pwned"
    monkeypatch.setenv("STEPCACHE_SECRET", OURS)
    store = DirectoryStore(tmp_path / "cache")
    plant(store, key(1), codec.pack_entry(key(1), Touch(marker)))
    assert store.get(key(1)) is None
    assert not marker.exists()
    assert "secret" not in store.options()  # reread from the environment where it reopens


def test_an_empty_secret_is_refused_rather_than_silently_signing_nothing(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="secret must not be empty"):
        DirectoryStore(tmp_path / "cache", secret="")
    with pytest.raises(ValueError, match="secret must not be empty"):
        sc.MemoryStore(secret=b"")


# -- the safe codec -------------------------------------------------------------------
def test_a_safe_directory_store_refuses_pickles_even_without_a_secret(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    payload = live_payload(tmp_path, marker)
    store = DirectoryStore(tmp_path / "cache", codec="safe")
    plant(store, key(1), codec.pack_entry(key(1), Touch(marker)))
    plant(store, key(2), payload)

    assert store.get(key(1)) is None
    assert store.get(key(2)) is None
    assert not marker.exists()
    assert store.stats().errors == 2


def test_a_safe_directory_store_round_trips_json_values_and_bytes(tmp_path: Path) -> None:
    store = DirectoryStore(tmp_path / "cache", codec="safe")
    store[key(1)] = {"source": "int main(void) { return 0; }", "flags": ["-O2"], "n": 3}
    store[key(2)] = b"\x7fELF"
    reopened = DirectoryStore(tmp_path / "cache", codec="safe")
    assert reopened[key(1)] == {"source": "int main(void) { return 0; }", "flags": ["-O2"], "n": 3}
    assert reopened[key(2)] == b"\x7fELF"
    assert codec.read_header(entry_path(store, key(1)).read_bytes()).codec == "safe"
    with pytest.raises(TypeError, match="safe"):
        store[key(3)] = {1, 2}  # not JSON: refused at write time, never pickled


def test_the_safe_codec_travels_with_a_pickled_store(tmp_path: Path) -> None:
    store = sc.open_store(tmp_path / "cache", codec="safe")
    assert pickle.loads(pickle.dumps(store)).codec == "safe"


# -- shared tiers -------------------------------------------------------------------
@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    return f"{redis_server.url}?prefix=sec{uuid.uuid4().hex[:12]}:"


def redis_raw(store: Store) -> Callable[[str, bytes], None]:
    def put(k: str, blob: bytes) -> None:
        store.backend.client.set(f"{store.prefix}e:{k}", blob)

    return put


@pytest.mark.parametrize("kind", KINDS)
def test_planted_pickle_in_a_signed_redis_store_is_a_counted_miss(
    tmp_path: Path, redis_url: str, kind: str
) -> None:
    marker = tmp_path / "pwned"
    blob = forgeries(key(1), marker, live_payload(tmp_path, marker))[kind]
    store = RedisStore(redis_url, secret=OURS)
    redis_raw(store)(key(1), blob)

    assert store.get(key(1)) is None
    assert store.get_or_compute(key(1), lambda: "honest") == "honest"
    assert not marker.exists()
    assert store.stats().errors == 1
    store.close()


def test_planted_pickle_in_the_remote_tier_never_reaches_the_local_one(
    tmp_path: Path, redis_url: str
) -> None:
    marker = tmp_path / "pwned"
    live_payload(tmp_path, marker)
    remote = RedisStore(redis_url, secret=OURS)
    local = DirectoryStore(tmp_path / "local", secret=OURS)
    tiered = TieredStore([local, remote])
    redis_raw(remote)(key(1), codec.pack_entry(key(1), Touch(marker)))

    assert tiered.get(key(1)) is None
    assert not marker.exists()
    assert key(1) not in local  # nothing was backfilled
    assert tiered.stats().errors == 1
    tiered.close()


def test_shared_tiers_without_a_secret_warn_once(
    tmp_path: Path, redis_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="stepcache"):
        tiered = TieredStore([DirectoryStore(tmp_path / "local"), RedisStore(redis_url)])
        for n in range(3):
            tiered[key(n)] = n
            assert tiered[key(n)] == n
        tiered.close()
        signed = RedisStore(redis_url, secret=OURS)
        signed.close()
    warnings = [r for r in caplog.records if "no secret" in r.getMessage()]
    assert len(warnings) == 1
    assert "STEPCACHE_SECRET" in warnings[0].getMessage()


def test_a_shared_directory_without_a_secret_warns_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="stepcache"):
        store = DirectoryStore(tmp_path / "team", shared=True)
        store[key(1)] = 1
        DirectoryStore(tmp_path / "team", shared=True, secret=OURS)
        DirectoryStore(tmp_path / "mine")
    assert sum("no secret" in r.getMessage() for r in caplog.records) == 1
