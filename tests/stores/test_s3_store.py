"""S3Store against a real S3 server (SeaweedFS): the store contract, specs, signing, outages."""

from __future__ import annotations

import logging
import uuid
from pathlib import Path

import pytest

from stepcache import open_store
from stepcache.codec import pack_entry, read_header
from stepcache.stores.s3 import S3Backend, S3ConfigError, S3Store, parse_spec
from stepcache.testing import StoreContract
from stepcache.testing.contract import key, tree
from stepcache.testing.s3_server import S3Server

pytest.importorskip("obstore", reason="the s3 extra is not installed: pip install -e '.[s3]'")
pytestmark = [pytest.mark.timeout(90), pytest.mark.usefixtures("s3_credentials")]


@pytest.fixture
def s3_spec(s3_server: S3Server) -> str:
    """A prefix of this test's own on the shared server."""
    return f"s3://{s3_server.bucket}/t{uuid.uuid4().hex[:12]}?endpoint={s3_server.endpoint}"


class TestS3Store(StoreContract):
    @pytest.fixture
    def store(self, s3_spec: str) -> S3Store:
        return S3Store(s3_spec)


class TestS3StoreCompressed(StoreContract):
    @pytest.fixture
    def store(self, s3_spec: str) -> S3Store:
        return S3Store(s3_spec + "&compress=zstd", secret="team")


def raw(store: S3Store, k: str) -> bytes | None:
    return store.backend.load(k)


# -- specs -------------------------------------------------------------------------
def test_spec_options_and_keywords(s3_server: S3Server) -> None:
    spec = f"s3://{s3_server.bucket}/a/b?endpoint={s3_server.endpoint}&compress=zstd&secret=x"
    store = open_store(spec)
    assert isinstance(store, S3Store)
    assert store.spec == f"s3://{s3_server.bucket}/a/b?endpoint={s3_server.endpoint}&compress=zstd"
    assert store.compress == "zstd"
    assert store._secret == b"x"
    assert S3Store(spec, compress=None).compress == "zstd"  # None: the spec decides
    assert S3Store(f"s3://{s3_server.bucket}/a", read_only=True).read_only
    with pytest.raises(ValueError, match="unknown option"):
        parse_spec("s3://bucket/p?password=hunter2")
    with pytest.raises(ValueError, match="bad S3 spec"):
        parse_spec("s3://ab/p")
    for endpoint in ("http://127.0.0.1:99999", "127.0.0.1:8333", "ftp://host"):
        with pytest.raises(ValueError, match="bad S3 endpoint"):  # never a crash of the client
            S3Store(f"s3://bucket/p?endpoint={endpoint}")


def test_credentials_come_from_the_aws_config_files(
    s3_server: S3Server, s3_spec: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    creds = tmp_path / "credentials"
    creds.write_text(
        "[ci]\n"
        f"aws_access_key_id = {s3_server.env['AWS_ACCESS_KEY_ID']}\n"
        f"aws_secret_access_key = {s3_server.env['AWS_SECRET_ACCESS_KEY']}\n"
    )
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(creds))
    monkeypatch.setenv("AWS_PROFILE", "ci")
    store = S3Store(s3_spec)
    store[key(1)] = "via the profile"
    assert store[key(1)] == "via the profile"
    assert store.stats().remote_errors == 0


# -- set-up errors -------------------------------------------------------------------
def test_wrong_credentials_are_one_clear_error_and_a_counted_miss(
    s3_spec: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wrong")
    store = S3Store(s3_spec)
    with caplog.at_level(logging.WARNING, logger="stepcache"):
        assert store.get_or_compute(key(1), lambda: "computed") == "computed"
        assert store.get(key(2)) is None
    assert store.stats().remote_errors == 1  # then backed off: no further requests
    messages = [r.getMessage() for r in caplog.records if "credentials" in r.getMessage()]
    assert len(messages) == 1
    with pytest.raises(S3ConfigError, match="credentials"):
        list(S3Backend(s3_spec).keys())


def test_missing_bucket_is_a_clear_error(s3_server: S3Server) -> None:
    backend = S3Backend(f"s3://no-such-bucket/p?endpoint={s3_server.endpoint}")
    with pytest.raises(S3ConfigError, match="does not exist"):
        backend.load(key(1))


# -- entries -------------------------------------------------------------------------
def test_compressed_entries_are_smaller_and_read_without_the_option(s3_spec: str) -> None:
    value = b"stencil " * 4000
    packed = S3Store(s3_spec + "&compress=zstd")
    packed[key(1)] = value
    plain = S3Store(s3_spec)
    plain[key(2)] = value
    assert plain[key(1)] == value  # a reader needs no option
    blob1, blob2 = raw(plain, key(1)), raw(plain, key(2))
    assert blob1 is not None
    assert blob2 is not None
    assert read_header(blob1).compressed
    assert not read_header(blob2).compressed
    assert len(blob1) < len(blob2) / 10


def test_header_reads_a_long_info_whole_and_entries_list_sizes(s3_spec: str) -> None:
    store = S3Store(s3_spec)
    manifest = {f"path/{n}": "f" * 32 for n in range(400)}  # ~20 KB of info
    store.set(key(1), 1, info={"step": "lower", "manifest": manifest})
    store[key(2)] = bytes(1000)
    header = store.header(key(1))
    assert header is not None
    assert header.info["manifest"] == manifest
    stats = {e.key: e for e in store.entries()}
    assert set(stats) == {key(1), key(2)}
    assert stats[key(2)].size == len(raw(store, key(2)) or b"")
    assert store.stats().entries == 2
    assert store.stats().bytes == sum(e.size for e in stats.values())


def test_tampered_objects_are_counted_misses_never_unpickled(s3_spec: str) -> None:
    store = S3Store(s3_spec, secret="ours")
    store.backend.save(key(1), pack_entry(key(1), {"evil": True}, secret=b"theirs"))
    store.backend.save(key(2), pack_entry(key(2), {"evil": True}))
    good = pack_entry(key(3), "fine", secret=b"ours")
    store.backend.save(key(3), good[:-1] + bytes([good[-1] ^ 1]))
    assert [store.get(key(n)) for n in (1, 2, 3)] == [None, None, None]
    assert store.stats().errors == 3
    assert raw(store, key(1)) is None  # dropped from the shared tier


def test_directory_round_trips_through_another_client(s3_spec: str, tmp_path: Path) -> None:
    src = tmp_path / "build"
    (src / "sub").mkdir(parents=True)
    (src / "sub" / "lib.so").write_bytes(b"\x7fELF" * 1000)
    S3Store(s3_spec, compress="zstd").put_dir(key(1), src)
    got = S3Store(s3_spec).get_dir(key(1))
    assert got is not None
    assert tree(got) == tree(src)


def test_a_hit_on_an_old_entry_records_its_use_once(
    s3_spec: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = S3Store(s3_spec, touch_after=0.0)
    store[key(1)] = "old"
    rewrites: list[str | None] = []
    replace = S3Backend._replace

    def spy(self: S3Backend, name: str, body: bytes, etag: str) -> str | None:
        rewrites.append(replace(self, name, body, etag))
        return rewrites[-1]

    monkeypatch.setattr(S3Backend, "_replace", spy)
    assert store[key(1)] == "old"
    assert len(rewrites) == 1
    assert rewrites[0] is not None  # rewritten, If-Match the ETag it read
    assert S3Store(s3_spec, touch_after=0.0, read_only=True)[key(1)] == "old"
    assert S3Store(s3_spec)[key(1)] == "old"  # written just now: no rewrite
    assert len(rewrites) == 1


def test_a_damaged_tree_archive_is_a_counted_miss_never_served(
    s3_spec: str, tmp_path: Path
) -> None:
    src = tmp_path / "build"
    src.mkdir()
    (src / "lib.so").write_bytes(b"\x7fELF" * 100)
    store = S3Store(s3_spec, secret="team")
    store.put_dir(key(1), src)
    blob = raw(store, key(1))
    assert blob is not None
    store.backend.save(key(1), blob[:-10] + b"x" * 10)  # damage inside the archive
    reader = S3Store(s3_spec, secret="team")
    assert reader.get_dir(key(1)) is None
    assert reader.stats().errors == 1
    assert raw(reader, key(1)) is None


def test_a_stopped_server_times_out_into_counted_misses_and_is_used_again(
    s3_server: S3Server, s3_spec: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(S3Backend, "backoff", 0.0)  # retry at once: this test sees each call
    store = S3Store(s3_spec, timeout=0.5, connect_timeout=0.5)
    store[key(1)] = "before"
    s3_server.pause()  # connections are accepted, requests never answered
    try:
        assert store.get(key(1), "default") == "default"
        assert store.get_or_compute(key(2), lambda: "computed") == "computed"
    finally:
        s3_server.resume()
    stats = store.stats()
    assert stats.remote_errors >= 2
    assert stats.hits == 0
    assert store[key(1)] == "before"
