"""Durations and sizes as the command line reads and prints them."""

from __future__ import annotations

import pytest

from stepcache.cli._units import format_bytes, format_duration, parse_duration, parse_size


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90s", 90), ("30m", 1800), ("12h", 43200), ("7d", 604800), ("2w", 1209600),
     ("1h30m", 5400), ("1.5h", 5400), ("45", 45), (" 7D ", 604800)],
)  # fmt: skip
def test_parse_duration_reads_units_and_combinations(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize(
    ("text", "nbytes"),
    [("10k", 10240), ("500M", 500 * 2**20), ("2G", 2 * 2**30), ("1T", 2**40), ("123", 123),
     ("1.5GiB", 3 * 2**29), ("64kb", 65536)],
)  # fmt: skip
def test_parse_size_uses_binary_units(text: str, nbytes: int) -> None:
    assert parse_size(text) == nbytes


@pytest.mark.parametrize("text", ["", "soon", "7x", "d7", "1h 2", "-3d"])
def test_parse_duration_rejects_what_it_cannot_read(text: str) -> None:
    with pytest.raises(ValueError, match="not a duration"):
        parse_duration(text)


@pytest.mark.parametrize("text", ["", "lots", "5Q", "M5", "-1k"])
def test_parse_size_rejects_what_it_cannot_read(text: str) -> None:
    with pytest.raises(ValueError, match="not a size"):
        parse_size(text)


def test_format_bytes_and_duration_are_short() -> None:
    assert [format_bytes(n) for n in (0, 1023, 1024, 5 * 2**20)] == [
        "0 B",
        "1023 B",
        "1.0 KiB",
        "5.0 MiB",
    ]
    assert [format_duration(s) for s in (0.25, 59, 3600, 86400 + 7200 + 60)] == [
        "0.2s",
        "59s",
        "1h",
        "1d 2h",
    ]
