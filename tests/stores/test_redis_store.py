"""RedisStore against a real redis-server: the store contract, specs, limits, outages, signing."""

from __future__ import annotations

import logging
import pickle
import uuid
from pathlib import Path
from typing import Any

import pytest

from stepcache import StoreUnavailableError, open_store
from stepcache.codec import pack_entry
from stepcache.stores.redis import RedisStore
from stepcache.testing import StoreContract
from stepcache.testing.contract import key, tree
from stepcache.testing.redis_server import RedisServer, redis_server_fixture

pytestmark = pytest.mark.timeout(60)

redis_server = redis_server_fixture()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """The shared server's URL with a prefix of this test's own."""
    return f"{redis_server.url}?prefix=t{uuid.uuid4().hex[:12]}:"


class TestRedisStore(StoreContract):
    @pytest.fixture
    def store(self, redis_url: str) -> RedisStore:
        return RedisStore(redis_url)


def raw(store: RedisStore, k: str) -> Any:
    return store.backend.client.get(store.backend.entry_name(k))


# -- opening and specs -------------------------------------------------------
def test_open_store_is_lazy_and_a_dead_server_is_a_counted_miss(tmp_path: Path) -> None:
    store = open_store(f"unix://{tmp_path}/no-server.sock")
    assert isinstance(store, RedisStore)
    assert store.get(key(1), "default") == "default"
    assert store.set(key(1), 1) is False
    assert store.get_or_compute(key(2), lambda: "computed") == "computed"
    assert key(1) not in store
    stats = store.stats()
    assert stats.remote_errors == 1  # then the server is skipped for the back-off period
    assert (stats.hits, stats.writes, stats.entries) == (0, 0, 0)


def test_listing_a_dead_server_raises_store_unavailable(tmp_path: Path) -> None:
    store = RedisStore(f"unix://{tmp_path}/no-server.sock")
    with pytest.raises(StoreUnavailableError, match="SCAN"):
        list(store)


def test_bad_url_is_refused_at_open() -> None:
    with pytest.raises(StoreUnavailableError, match="cannot use Redis URL"):
        RedisStore("redis://host:notaport/0")


def test_password_stays_out_of_the_spec_and_travels_as_an_option(redis_server: RedisServer) -> None:
    store = RedisStore("redis://:hunter2@localhost:6379/0?prefix=team:")
    assert store.spec == "redis://localhost:6379/0?prefix=team:"
    assert "hunter2" not in repr(store)
    assert store.options()["password"] == "hunter2"
    user = RedisStore("redis://alice:hunter2@localhost/1")
    assert user.spec == "redis://alice@localhost/1"


def test_prefix_and_ttl_come_from_the_url_and_keywords_win(redis_url: str) -> None:
    store = RedisStore(redis_url + "&ttl=3600")
    assert store.prefix == redis_url.rpartition("prefix=")[2]
    assert store.ttl == 3600.0
    store[key(1)] = 1
    assert 0 < store.backend.client.pttl(store.backend.entry_name(key(1))) <= 3_600_000
    assert RedisStore(redis_url, prefix="other:", ttl=5).ttl == 5


def test_entries_without_ttl_never_expire(redis_url: str) -> None:
    store = RedisStore(redis_url)
    store[key(1)] = 1
    assert store.backend.client.pttl(store.backend.entry_name(key(1))) == -1


def test_prefixes_keep_stores_apart_even_with_glob_characters(redis_server: RedisServer) -> None:
    tag = uuid.uuid4().hex[:8]
    star = RedisStore(redis_server.url, prefix=f"{tag}*:")
    plain = RedisStore(redis_server.url, prefix=f"{tag}x:")
    plain[key(1)] = "plain"
    star[key(2)] = "star"
    assert list(star) == [key(2)]
    assert list(plain) == [key(1)]
    assert star.stats().entries == 1


def test_pickled_store_reopens_with_its_options(redis_url: str) -> None:
    store = open_store(redis_url, lock_lease=2.0, max_entry_bytes=1000, ttl=60)
    store[key(1)] = "shared"
    clone = pickle.loads(pickle.dumps(store))
    assert clone is store
    assert (clone.backend.lock_lease, clone.backend.max_entry_bytes, clone.ttl) == (2.0, 1000, 60)


def test_usage_counts_entry_bytes(redis_url: str) -> None:
    store = RedisStore(redis_url)
    for n in range(3):
        store[key(n)] = bytes(1000)
    stats = store.stats()
    assert stats.entries == 3
    assert stats.bytes == sum(len(raw(store, key(n))) for n in range(3))


def test_header_of_an_entry_with_a_long_info_is_read_whole(redis_url: str) -> None:
    store = RedisStore(redis_url)
    manifest = {f"path/{n}": "f" * 32 for n in range(400)}  # ~20 KB of info
    store.set(key(1), 1, info={"step": "lower", "manifest": manifest})
    header = store.header(key(1))
    assert header is not None
    assert header.info["manifest"] == manifest
    assert store.stats().errors == 0


# -- size limits ------------------------------------------------------------------
def test_entry_over_the_size_limit_is_skipped_counted_and_logged_once(
    redis_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    store = RedisStore(redis_url, max_entry_bytes=10_000)
    with caplog.at_level(logging.WARNING, logger="stepcache"):
        assert store.set(key(1), bytes(20_000)) is False
        assert store.get_or_compute(key(2), lambda: bytes(20_000)) == bytes(20_000)
    assert key(1) not in store
    assert key(2) not in store
    assert store.stats().errors == 2
    assert sum("max_entry_bytes" in r.getMessage() for r in caplog.records) == 1


def test_directory_over_the_size_limit_is_not_stored_and_says_why(
    redis_url: str, tmp_path: Path
) -> None:
    src = tmp_path / "build"
    src.mkdir()
    (src / "big.so").write_bytes(bytes(50_000))
    store = RedisStore(redis_url, max_entry_bytes=10_000)
    with pytest.raises(OSError, match="max_entry_bytes"):
        store.put_dir(key(1), src)
    assert (src / "big.so").exists()
    assert store.get_dir(key(1)) is None
    assert store.stats().errors == 1
    built = store.get_or_compute_dir(key(2), lambda: src)  # the build is never lost
    assert built == src


def test_directory_round_trips_through_another_client(redis_url: str, tmp_path: Path) -> None:
    src = tmp_path / "build"
    (src / "sub").mkdir(parents=True)
    (src / "sub" / "lib.so").write_bytes(b"\x7fELF")
    RedisStore(redis_url).put_dir(key(1), src)
    got = RedisStore(redis_url).get_dir(key(1))
    assert got is not None
    assert tree(got) == tree(src)


# -- signing ---------------------------------------------------------------------
def test_missing_secret_is_warned_about_once(
    redis_url: str, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("STEPCACHE_SECRET", raising=False)
    with caplog.at_level(logging.WARNING, logger="stepcache"):
        store = RedisStore(redis_url)
        store[key(1)] = 1
        store.get(key(1))
        RedisStore(redis_url, secret="s3cret")
    assert sum("no secret" in r.getMessage() for r in caplog.records) == 1


def test_entry_signed_with_another_secret_is_never_unpickled(redis_url: str) -> None:
    store = RedisStore(redis_url, secret="ours")
    forged = pack_entry(key(1), {"evil": True}, secret=b"theirs")
    store.backend.client.set(store.backend.entry_name(key(1)), forged)
    unsigned = pack_entry(key(2), {"evil": True})
    store.backend.client.set(store.backend.entry_name(key(2)), unsigned)
    assert store.get(key(1)) is None
    assert store.get(key(2)) is None
    assert store.stats().errors == 2
    assert raw(store, key(1)) is None  # dropped from the shared tier


def test_secret_from_the_environment_signs_entries(
    redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STEPCACHE_SECRET", "team-secret")
    store = RedisStore(redis_url)
    store[key(1)] = "signed"
    header = store.header(key(1))
    assert header is not None
    assert header.signed
    assert "secret" not in store.options()  # the environment provides it wherever it reopens


# -- outages ----------------------------------------------------------------------
def test_server_restart_is_survived_by_pooled_connections(tmp_path: Path) -> None:
    with RedisServer() as server:
        store = RedisStore(server.url)
        store[key(1)] = "before"
        server.restart()  # empty again: nothing is persisted
        assert store.get(key(1)) is None
        assert store.set(key(2), "after") is True
        assert store[key(2)] == "after"
        assert store.stats().remote_errors == 0


def test_server_killed_mid_use_turns_into_misses_and_skipped_writes() -> None:
    with RedisServer() as server:
        store = RedisStore(server.url)
        store[key(1)] = "before"
        server.kill()
        assert store.get(key(1), "default") == "default"
        assert store.get_or_compute(key(2), lambda: "computed") == "computed"
        assert key(1) not in store
        stats = store.stats()
        assert stats.remote_errors == 1  # then skipped for the back-off period
        assert stats.writes == 1


def test_rejected_password_is_a_counted_miss_and_the_right_one_works() -> None:
    with RedisServer(config=["requirepass s3cret"]) as server:
        wrong = RedisStore(server.url.replace("unix://", "unix://:nope@"))
        assert wrong.get_or_compute(key(1), lambda: "computed") == "computed"
        assert wrong.stats().remote_errors >= 1
        right = RedisStore(server.url, password="s3cret")
        right[key(1)] = "stored"
        assert right[key(1)] == "stored"
        assert right.stats().remote_errors == 0
        wrong.close()
        right.close()


def test_unresponsive_server_times_out_into_a_miss() -> None:
    with RedisServer() as server:
        store = RedisStore(server.url, socket_timeout=0.2, backoff=0)
        store[key(1)] = "before"
        server.pause()
        try:
            assert store.get(key(1), "default") == "default"
            assert store.set(key(2), 2) is False
        finally:
            server.resume()
        assert store.stats().remote_errors == 2
        assert store[key(1)] == "before"
        store.close()


def test_a_silent_server_costs_one_timeout_per_back_off_period() -> None:
    with RedisServer() as server:
        store = RedisStore(server.url, socket_timeout=0.2, backoff=600)
        server.pause()
        try:
            got = [store.get(key(n), "miss") for n in range(21)]
            got.append(store.get_or_compute(key(99), lambda: "computed"))
            assert store.set(key(1), 1) is False
        finally:
            server.resume()
        assert got == ["miss"] * 21 + ["computed"]
        assert store.stats().remote_errors == 1  # one timeout, then no network time at all
        with pytest.raises(StoreUnavailableError, match="backing off"):
            list(store)
        store.close()
