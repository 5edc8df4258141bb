"""The entry format: round trips, and every kind of damage is a CorruptEntry."""

from __future__ import annotations

import pytest

from stepcache import codec

KEY = "ab" * 16


def test_round_trip_keeps_value_and_info() -> None:
    blob = codec.pack_entry(KEY, {"x": (1, 2.5)}, info={"step": "Translate", "label": "lap"})
    assert codec.unpack_entry(blob, KEY) == {"x": (1, 2.5)}
    header = codec.read_header(blob, key=KEY)
    assert (header.step, header.label, header.codec) == ("Translate", "lap", "pickle")
    assert header.total_bytes == len(blob)


def test_bytes_are_stored_raw() -> None:
    blob = codec.pack_entry(KEY, b"\x00raw")
    assert codec.read_header(blob).codec == "raw"
    assert blob.endswith(b"\x00raw")


def test_labels_are_plain_text_in_the_entry() -> None:
    blob = codec.pack_entry(KEY, "payload", info={"label": "laplap"})
    assert b'"label":"laplap"' in blob


@pytest.mark.parametrize("cut", [0, 1, 20, 35, 40, -1])
def test_truncated_entries_are_corrupt(cut: int) -> None:
    blob = codec.pack_entry(KEY, list(range(100)))
    with pytest.raises(codec.CorruptEntry):
        codec.unpack_entry(blob[:cut], KEY)


def test_every_flipped_byte_is_detected() -> None:
    blob = codec.pack_entry(KEY, "hello world" * 3, info={"step": "s"})
    for i in range(len(blob)):
        damaged = bytearray(blob)
        damaged[i] ^= 0x41
        with pytest.raises(codec.CorruptEntry):
            codec.unpack_entry(bytes(damaged), KEY)


def test_entry_for_another_key_is_refused() -> None:
    blob = codec.pack_entry(KEY, 1)
    with pytest.raises(codec.CorruptEntry, match="another key"):
        codec.unpack_entry(blob, "cd" * 16)


def test_signed_entries_verify_only_with_the_right_secret() -> None:
    blob = codec.pack_entry(KEY, [1, 2], secret=b"s3cret")
    assert codec.unpack_entry(blob, KEY, secret=b"s3cret") == [1, 2]
    with pytest.raises(codec.CorruptEntry, match="signature"):
        codec.unpack_entry(blob, KEY, secret=b"other")
    unsigned = codec.pack_entry(KEY, [1, 2])
    with pytest.raises(codec.CorruptEntry, match="unsigned"):
        codec.unpack_entry(unsigned, KEY, secret=b"s3cret")


def test_safe_codec_refuses_pickles_and_non_json_values() -> None:
    blob = codec.pack_entry(KEY, {"a": [1, "b"]}, codec="safe")
    assert codec.unpack_entry(blob, KEY, allow_pickle=False) == {"a": [1, "b"]}
    pickled = codec.pack_entry(KEY, {"a": 1})
    with pytest.raises(codec.CorruptEntry, match="safe codec"):
        codec.unpack_entry(pickled, KEY, allow_pickle=False)
    with pytest.raises(TypeError, match="safe"):
        codec.pack_entry(KEY, {1, 2}, codec="safe")


class _FailsToLoad:
    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (int, ("not a number",))


def test_a_payload_that_fails_to_unpickle_is_corrupt_not_a_crash() -> None:
    blob = codec.pack_entry(KEY, _FailsToLoad())
    with pytest.raises(codec.CorruptEntry, match="does not decode"):
        codec.unpack_entry(blob, KEY)
