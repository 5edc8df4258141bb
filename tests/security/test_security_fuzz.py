"""The entry parser under fuzzing: any bytes give the right value or CorruptEntry, nothing else.

``codec.unpack_entry`` and ``codec.read_header`` are the boundary between the
bytes anyone may have written and this process; they raise only the
documented :class:`~stepcache.codec.CorruptEntry`. Stores turn that into a
counted miss, so arbitrary bytes at an entry's place never raise either.
Pickle payloads are never fuzzed directly (unpickling random bytes could
import anything): arbitrary payloads are framed with the other codec ids.
"""

from __future__ import annotations

import contextlib
import json
import math
import struct
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import xxhash
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from stepcache import codec
from stepcache.cli import main
from stepcache.stores.directory import DirectoryStore
from stepcache.stores.directory.eviction import entry_rel
from stepcache.stores.redis import RedisStore
from stepcache.testing import key
from stepcache.testing.redis_server import RedisServer

KEY = key(1)
SECRET = b"fuzz-secret"
# The prefix as the codec's docstring lays it out: magic, version, flags, codec id,
# key length, info length, payload length, created, checksum.
PREFIX = struct.Struct("<4sBBBBIQdQ")
FIXTURES_OK = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)

values = st.one_of(
    st.binary(max_size=48),
    st.text(max_size=24),
    st.integers(),
    st.floats(allow_nan=False, allow_infinity=False),  # the safe codec refuses both
    st.lists(st.integers(), max_size=5),
    st.dictionaries(st.text(max_size=4), st.one_of(st.integers(), st.text(max_size=4)), max_size=3),
)


def frame(
    payload: bytes,
    *,
    codec_id: int = 1,
    info: bytes = b"{}",
    created: float = 1.7e9,
    k: str = KEY,
    flags: int = 0,
) -> bytes:
    """A well-formed unsigned entry around any payload and info, with a correct checksum."""
    kb = k.encode()
    head = PREFIX.pack(b"\x93SCE", 1, flags, codec_id, len(kb), len(info), len(payload), created, 0)
    digest = xxhash.xxh3_64(head[:28])
    for part in (kb, info, payload):
        digest.update(part)
    return head[:28] + struct.pack("<Q", digest.intdigest()) + kb + info + payload


def test_frame_builds_what_the_codec_reads() -> None:
    # frame() is how the other tests reach the decoders; it must match the real format.
    assert codec.unpack_entry(frame(b"raw"), KEY) == b"raw"
    assert frame(b"raw", created=5.0) == codec.pack_entry(KEY, b"raw", created=5.0)


# -- the parsers ------------------------------------------------------------------------
shaped = st.builds(
    lambda flags, codec_id, klen, ilen, plen, tail: (
        PREFIX.pack(b"\x93SCE", 1, flags, codec_id, klen, ilen, plen, 1.7e9, 0) + tail
    ),
    st.integers(0, 255),
    st.integers(0, 255),
    st.integers(0, 40),
    st.integers(0, 40),
    st.integers(0, 40),
    st.binary(max_size=120),
)
anything = st.one_of(st.binary(max_size=200), st.binary(max_size=200).map(b"\x93SCE\x01".__add__))


def only_corrupt_or(expected: Any, fn: Any, *args: Any, **kwargs: Any) -> None:
    """``fn(*args)`` returns ``expected`` (when given) or raises CorruptEntry; nothing else."""
    try:
        result = fn(*args, **kwargs)
    except codec.CorruptEntry:
        return
    if expected is not None:
        assert type(result) is type(expected)
        assert result == expected


@settings(max_examples=300, deadline=None)
@given(blob=st.one_of(anything, shaped), signed=st.booleans())
@example(blob=b"", signed=False)
@example(blob=frame(b"1", info=b"[" * 100_000), signed=False)  # nested past the recursion limit
@example(blob=frame(b"1", created=math.inf), signed=False)  # unprintable creation time
def test_arbitrary_bytes_are_corrupt_for_every_parser(blob: bytes, signed: bool) -> None:
    secret = SECRET if signed else None
    # allow_pickle=False: fuzz is never unpickled (see the module docstring).
    only_corrupt_or(None, codec.unpack_entry, blob, KEY, secret=secret, allow_pickle=False)
    only_corrupt_or(None, codec.read_header, blob)
    only_corrupt_or(None, codec.read_header, blob, key=KEY)
    only_corrupt_or(None, codec.header_size, blob)
    with contextlib.suppress(codec.CorruptEntry):
        header = codec.read_header(blob)
        assert isinstance(header.step, str)
        assert isinstance(header.label, str)
        assert math.isfinite(header.created)


@settings(max_examples=300, deadline=None)
@given(
    payload=st.binary(max_size=64),
    codec_id=st.integers(0, 255),
    info=st.one_of(st.just(b"{}"), st.binary(max_size=24), st.text(max_size=24).map(str.encode)),
)
def test_any_payload_under_any_codec_id_decodes_or_is_corrupt(
    payload: bytes, codec_id: int, info: bytes
) -> None:
    blob = frame(payload, codec_id=codec_id, info=info)
    only_corrupt_or(None, codec.unpack_entry, blob, KEY, allow_pickle=False)
    only_corrupt_or(None, codec.read_header, blob, key=KEY)


def mutate(blob: bytes, edits: list[tuple[str, int, int]]) -> bytes:
    out = bytearray(blob)
    for kind, where, byte in edits:
        at = where % (len(out) + 1)
        if kind == "flip" and out:
            out[at % len(out)] ^= byte  # byte is never 0: something changes
        elif kind == "cut":
            del out[at:]
        elif kind == "drop" and out:
            del out[at % len(out)]
        elif kind == "insert":
            out.insert(at, byte)
        elif kind == "append":
            out.append(byte)
    return bytes(out)


edits = st.lists(
    st.tuples(
        st.sampled_from(["flip", "cut", "drop", "insert", "append"]),
        st.integers(0, 2**16),
        st.integers(1, 255),
    ),
    min_size=1,
    max_size=4,
)


@settings(max_examples=300, deadline=None)
@given(value=values, changes=edits, signed=st.booleans(), kind=st.sampled_from(["pickle", "safe"]))
def test_mutated_entries_give_the_original_value_or_corrupt(
    value: Any, changes: list[tuple[str, int, int]], signed: bool, kind: str
) -> None:
    secret = SECRET if signed else None
    blob = codec.pack_entry(KEY, value, codec=kind, secret=secret, info={"step": "s"})
    damaged = mutate(blob, changes)
    expected = (
        json.loads(json.dumps(value)) if kind == "safe" and type(value) is not bytes else value
    )
    # A damaged pickle never reaches pickle.loads: the checksum and length checks come first.
    only_corrupt_or(expected, codec.unpack_entry, damaged, KEY, secret=secret)
    only_corrupt_or(None, codec.read_header, damaged, key=KEY)
    if damaged != blob:
        with pytest.raises(codec.CorruptEntry):
            codec.unpack_entry(damaged, KEY, secret=secret)


# -- the stores ---------------------------------------------------------------------------
@pytest.fixture
def dir_store(tmp_path: Path) -> Iterator[DirectoryStore]:
    store = DirectoryStore(tmp_path / "cache", secret=SECRET)
    yield store
    store.close()


def garbage() -> st.SearchStrategy[bytes]:
    valid = codec.pack_entry(KEY, {"v": 1}, secret=SECRET)
    mutated = edits.map(lambda e: mutate(valid, e)).filter(lambda b: b != valid)
    return st.one_of(anything, shaped, mutated)


@FIXTURES_OK
@given(blob=garbage())
def test_arbitrary_bytes_at_a_directory_entry_path_are_a_miss(
    dir_store: DirectoryStore, blob: bytes
) -> None:
    path = dir_store.path / entry_rel(KEY)
    path.parent.mkdir(parents=True, exist_ok=True)
    before = dir_store.stats().errors
    path.write_bytes(blob)
    assert dir_store.get(KEY) is None
    assert dir_store.stats().errors == before + 1
    path.write_bytes(blob)
    dir_store.header(KEY)  # parses or is dropped; it never raises
    list(dir_store.headers())
    path.write_bytes(blob)
    assert dir_store.get_or_compute(KEY, lambda: "recomputed") == "recomputed"
    path.write_bytes(blob)
    assert dir_store.verify().corrupt[0][0] == KEY


@pytest.fixture
def redis_store(redis_server: RedisServer) -> Iterator[RedisStore]:
    store = RedisStore(f"{redis_server.url}?prefix=fuzz{uuid.uuid4().hex[:12]}:", secret=SECRET)
    yield store
    store.clear()
    store.close()


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(blob=garbage())
def test_arbitrary_bytes_in_a_redis_entry_are_a_miss(redis_store: RedisStore, blob: bytes) -> None:
    redis_store.backend.client.set(f"{redis_store.prefix}e:{KEY}", blob)
    before = redis_store.stats().errors
    assert redis_store.get(KEY) is None
    assert redis_store.stats().errors == before + 1
    redis_store.backend.client.set(f"{redis_store.prefix}e:{KEY}", blob)
    redis_store.header(KEY)  # parses or is dropped; it never raises
    list(redis_store.headers())


def test_listing_a_store_full_of_hostile_headers_never_fails(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = DirectoryStore(tmp_path / "cache")
    store[key(9)] = "a good entry"
    planted = {
        key(1): frame(b"1", k=key(1), info=b"[" * 100_000),
        key(2): frame(b"1", k=key(2), created=math.inf),
        key(3): frame(b"1", k=key(3), created=-1e300),
        key(4): frame(b"1", k=key(4), info=b'{"step": {"nested": []}, "label": 7}'),
        key(5): b"\x93SCE\x01" + b"\xff" * 40,
    }
    for k, blob in planted.items():
        path = store.path / entry_rel(k)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(blob)
    for command in (["ls"], ["ls", "--json"], ["stats"], ["verify"]):
        code = main(["--store", str(store.path), *command])
        out = capsys.readouterr().out
        assert code in (0, 1), (command, out)  # verify finds damage: 1
    assert main(["--store", str(store.path), "ls", "--json"]) == 0
    listed = {e["key"] for e in json.loads(capsys.readouterr().out)}
    assert key(9) in listed
    assert key(4) in listed  # odd info types are shown as text, not a crash
    assert not {key(1), key(2), key(3), key(5)} & listed
