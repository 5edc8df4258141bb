"""TieredStore: the store contract over a real Redis, back-filling, read-only remotes, outages."""

from __future__ import annotations

import logging
import pickle
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import stepcache as sc
from stepcache.errors import StoreUnavailableError
from stepcache.stores.directory import DirectoryStore
from stepcache.stores.redis import RedisStore
from stepcache.stores.tiered import TieredStore
from stepcache.testing import StoreContract, damage
from stepcache.testing.contract import key, tree
from stepcache.testing.redis_server import RedisServer, redis_server_fixture

pytestmark = pytest.mark.timeout(60)

redis_server = redis_server_fixture()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    return f"{redis_server.url}?prefix=t{uuid.uuid4().hex[:12]}:"


@pytest.fixture
def machines(redis_url: str, tmp_path: Path) -> Iterator[tuple[TieredStore, TieredStore]]:
    """Two machines of a team: each its own local directory, both one Redis."""
    pair = tuple(
        TieredStore([DirectoryStore(tmp_path / name), RedisStore(redis_url)]) for name in "ab"
    )
    yield pair  # type: ignore[misc]
    for store in pair:
        store.close()


class _TieredContract(StoreContract):
    def corrupt(self, store: Any, k: str, kind: str) -> None:
        # A bad entry in the shared tier, which this machine does not have yet.
        blob = store.remote.backend.load(k)
        store.local.backend.remove(k)
        store.remote.backend.save(k, damage(blob, kind))


class TestTieredDirectoryOverRedis(_TieredContract):
    @pytest.fixture
    def store(self, redis_url: str, tmp_path: Path) -> Iterator[TieredStore]:
        store = TieredStore([DirectoryStore(tmp_path / "local"), RedisStore(redis_url)])
        yield store
        store.close()


class TestTieredMemoryOverRedis(_TieredContract):
    @pytest.fixture
    def store(self, redis_url: str) -> Iterator[TieredStore]:
        store = TieredStore([sc.MemoryStore(), RedisStore(redis_url)])
        yield store
        store.close()


# -- two machines, one Redis ------------------------------------------------------
def test_value_written_on_one_machine_is_found_and_backfilled_on_another(
    machines: tuple[TieredStore, TieredStore],
) -> None:
    a, b = machines
    assert a.get_or_compute(key(1), lambda: "built on a") == "built on a"
    assert key(1) not in b.local
    assert b.get_or_compute(key(1), lambda: "built on b") == "built on a"
    stats = b.stats()
    assert (stats.hits, stats.misses, stats.backfills) == (1, 0, 1)
    assert b.local[key(1)] == "built on a"
    b.remote.close()  # b now reads its own copy, without the remote
    assert b[key(1)] == "built on a"


def test_directory_put_on_one_machine_is_backfilled_as_a_directory_on_another(
    machines: tuple[TieredStore, TieredStore], tmp_path: Path
) -> None:
    a, b = machines
    src = tmp_path / "build"
    (src / "include").mkdir(parents=True)
    (src / "libstencil.so").write_bytes(b"\x7fELF" * 100)
    (src / "include" / "stencil.h").write_text("void run(double *);\n")
    a.put_dir(key(1), src, info={"label": "laplacian"})
    got = b.get_dir(key(1))
    assert got is not None
    assert tree(got) == tree(src)
    assert got.is_relative_to(b.local.path)  # type: ignore[attr-defined]
    header = b.local.header(key(1))
    assert header is not None
    assert header.label == "laplacian"
    stats = b.stats()
    assert (stats.hits, stats.misses, stats.backfills) == (1, 0, 1)


def test_intact_remote_copy_replaces_a_damaged_local_one(
    machines: tuple[TieredStore, TieredStore],
) -> None:
    a, _ = machines
    a[key(1)] = {"value": 1}
    a.local.backend.save(key(1), damage(a.local.backend.load(key(1)), "flip"))  # type: ignore[arg-type]
    assert a[key(1)] == {"value": 1}
    stats = a.stats()
    assert (stats.errors, stats.backfills) == (1, 1)
    assert a.local[key(1)] == {"value": 1}


def test_remote_read_only_tier_is_read_but_never_written(redis_url: str, tmp_path: Path) -> None:
    ci = RedisStore(redis_url)
    ci[key(1)] = "warmed by CI"
    laptop = TieredStore(
        [DirectoryStore(tmp_path / "laptop"), RedisStore(redis_url)], remote_read_only=True
    )
    assert laptop[key(1)] == "warmed by CI"
    assert laptop.get_or_compute(key(2), lambda: "local only") == "local only"
    del laptop[key(1)]
    assert key(2) not in ci
    assert ci[key(1)] == "warmed by CI"
    assert "remote_read_only=1" in laptop.spec
    laptop.close()
    ci.close()


# -- the remote failing ---------------------------------------------------------------
def test_dead_remote_is_logged_once_skipped_and_never_fails_a_computation(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    dead = RedisStore(f"unix://{tmp_path}/no-server.sock")
    store = TieredStore([DirectoryStore(tmp_path / "local"), dead], remote_backoff=600)
    with caplog.at_level(logging.WARNING, logger="stepcache"):
        values = [store.get_or_compute(key(n), lambda n=n: n * n) for n in range(20)]
        values += [store.get_or_compute(key(n), lambda: -1) for n in range(20)]
    assert values == [n * n for n in range(20)] * 2
    stats = store.stats()
    assert (stats.misses, stats.hits, stats.writes) == (20, 20, 20)
    assert stats.remote_errors == 1  # then skipped for the back-off period
    assert sum("remote tier" in r.getMessage() for r in caplog.records) == 1
    store.close()


def test_remote_is_used_again_after_the_backoff(tmp_path: Path) -> None:
    with RedisServer() as server:
        store = TieredStore(
            [DirectoryStore(tmp_path / "local"), RedisStore(server.url)], remote_backoff=600
        )
        server.kill()
        store[key(1)] = "while down"
        server.start()
        store[key(2)] = "backing off"
        assert key(2) not in store.remote
        store.reset_backoff()  # the back-off period is over
        store[key(3)] = "after"
        assert store.remote[key(3)] == "after"
        assert store.stats().remote_errors == 1
        store.close()


def test_remote_too_small_for_a_directory_keeps_it_locally(redis_url: str, tmp_path: Path) -> None:
    src = tmp_path / "build"
    src.mkdir()
    (src / "big.so").write_bytes(bytes(50_000))
    store = TieredStore(
        [DirectoryStore(tmp_path / "local"), RedisStore(redis_url, max_entry_bytes=10_000)]
    )
    path = store.put_dir(key(1), src)
    assert tree(path) == tree(src)
    assert key(1) not in store.remote
    assert store.get_dir(key(1)) == path
    stats = store.stats()
    assert (stats.errors, stats.remote_errors) == (1, 0)  # the entry, not the remote, failed
    assert store.remote_up()
    store.close()


# -- specs, options, secrets ----------------------------------------------------------
def test_spec_opens_both_tiers_and_round_trips(redis_url: str, tmp_path: Path) -> None:
    local = tmp_path / "local"
    spec = f"tiered://?local={local}&remote={redis_url}&remote_backoff=5"
    store = sc.open_store(spec)
    assert isinstance(store, TieredStore)
    assert isinstance(store.local, DirectoryStore)
    assert isinstance(store.remote, RedisStore)
    assert store.remote.prefix == redis_url.rpartition("prefix=")[2]
    assert store.remote_backoff == 5
    store[key(1)] = "via spec"
    again = sc.open_store(store.spec)
    assert again.spec == store.spec
    assert again[key(1)] == "via spec"


def test_keywords_win_over_spec_flags(redis_url: str) -> None:
    spec = f"tiered://?local=memory://&remote={redis_url}&remote_read_only=1"
    assert TieredStore(spec).remote_read_only is True
    assert TieredStore(spec, remote_read_only=False).remote_read_only is False


@pytest.mark.parametrize(
    "spec",
    ["tiered://", "tiered://?local=memory://", "tiered://?local=a&remote=b&color=red"],
)
def test_bad_spec_says_what_is_expected(spec: str) -> None:
    with pytest.raises(StoreUnavailableError, match=r"tiered://\?local=<spec>&remote=<spec>"):
        TieredStore(spec)


def test_pickled_store_reopens_its_tiers_with_their_options(redis_url: str, tmp_path: Path) -> None:
    store = TieredStore(
        [DirectoryStore(tmp_path / "local", max_bytes=10**6), RedisStore(redis_url, ttl=60)],
        remote_backoff=7,
    )
    clone = pickle.loads(pickle.dumps(store))
    assert (clone.local.max_bytes, clone.remote.ttl, clone.remote_backoff) == (10**6, 60, 7)
    store.close()


def test_tiers_with_different_secrets_are_refused(redis_url: str) -> None:
    with pytest.raises(ValueError, match="different secrets"):
        TieredStore([sc.MemoryStore(secret="one"), RedisStore(redis_url, secret="two")])


def test_secret_of_the_remote_signs_what_the_tiered_store_writes(redis_url: str) -> None:
    remote = RedisStore(redis_url, secret="team")
    store = TieredStore([sc.MemoryStore(), remote])
    store[key(1)] = "signed"
    header = remote.header(key(1))
    assert header is not None
    assert header.signed
    assert RedisStore(redis_url, secret="team")[key(1)] == "signed"
    store.close()
