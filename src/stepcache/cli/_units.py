"""Durations (``7d``, ``12h``) and sizes (``500M``, ``2G``) as typed on the command line.

Sizes use binary units: ``k`` is 1024 bytes, ``M`` 1024², ``G`` 1024³, ``T``
1024⁴ (upper or lower case, with an optional ``B`` or ``iB``). Durations take
``s``, ``m``, ``h``, ``d`` and ``w`` and may be combined (``1h30m``); a bare
number is seconds for a duration and bytes for a size.
"""

from __future__ import annotations

import re
import time
from datetime import datetime, timezone
from typing import Final

__all__ = [
    "format_age",
    "format_bytes",
    "format_duration",
    "iso_time",
    "parse_duration",
    "parse_size",
    "plural",
]

_DURATION_UNITS: Final = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_DURATION_PART: Final = re.compile(r"(\d+(?:\.\d+)?)\s*([smhdw])", re.IGNORECASE)
_SIZE: Final = re.compile(r"(\d+(?:\.\d+)?)\s*([kmgt]?)(?:i?b)?", re.IGNORECASE)
_SIZE_UNITS: Final = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


def parse_duration(text: str) -> float:
    """Seconds in a duration such as ``90s``, ``30m``, ``12h``, ``7d``, ``2w`` or ``1h30m``.

    >>> parse_duration("7d"), parse_duration("1h30m"), parse_duration("45")
    (604800.0, 5400.0, 45.0)
    """
    text = text.strip()
    if re.fullmatch(r"\d+(?:\.\d+)?", text):
        return float(text)
    pos, total = 0, 0.0
    for match in _DURATION_PART.finditer(text):
        if match.start() != pos:
            break
        total += float(match.group(1)) * _DURATION_UNITS[match.group(2).lower()]
        pos = match.end()
    if pos != len(text) or not text:
        raise ValueError(f"not a duration: {text!r} (use e.g. 90s, 30m, 12h, 7d, 2w or 1h30m)")
    return total


def parse_size(text: str) -> int:
    """Bytes in a size such as ``10k``, ``500M``, ``2G`` or ``1.5GiB`` (binary units).

    >>> parse_size("10k"), parse_size("500M"), parse_size("2G"), parse_size("123")
    (10240, 524288000, 2147483648, 123)
    """
    match = _SIZE.fullmatch(text.strip())
    if match is None:
        raise ValueError(f"not a size: {text!r} (use e.g. 10k, 500M or 2G; binary units)")
    return int(float(match.group(1)) * _SIZE_UNITS[match.group(2).lower()])


def format_bytes(n: int) -> str:
    """A byte count for people, in binary units.

    >>> format_bytes(512), format_bytes(1536), format_bytes(3 * 1024**3)
    ('512 B', '1.5 KiB', '3.0 GiB')
    """
    if n < 1024:
        return f"{n} B"
    value = float(n)
    for unit in ("KiB", "MiB", "GiB", "TiB"):
        value /= 1024
        if value < 1024 or unit == "TiB":
            break
    return f"{value:.1f} {unit}"


def format_duration(seconds: float) -> str:
    """A duration for people: the two largest units.

    >>> format_duration(42), format_duration(5400), format_duration(90061)
    ('42s', '1h 30m', '1d 1h')
    """
    seconds = max(0.0, seconds)
    if seconds < 60:
        return f"{seconds:.0f}s" if seconds >= 10 or seconds == int(seconds) else f"{seconds:.1f}s"
    parts: list[str] = []
    rest = int(seconds)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        count, rest = divmod(rest, size)
        if count or parts:
            parts.append(f"{count}{unit}")
    return " ".join(p for p in parts[:2] if not p.startswith("0")) or parts[0]


def format_age(created: float, now: float | None = None) -> str:
    """How long ago ``created`` (seconds since the epoch) was, e.g. ``3h 12m``.

    >>> format_age(1000.0, now=1090.0)
    '1m 30s'
    """
    return format_duration((time.time() if now is None else now) - created)


def iso_time(stamp: float) -> str:
    """Seconds since the epoch as ISO 8601 in UTC, to the second.

    >>> iso_time(0.0)
    '1970-01-01T00:00:00+00:00'
    """
    return datetime.fromtimestamp(stamp, tz=timezone.utc).isoformat(timespec="seconds")


def plural(n: int, one: str, many: str | None = None) -> str:
    """``n`` and the noun that goes with it.

    >>> plural(1, "entry", "entries"), plural(3, "entry", "entries"), plural(0, "program")
    ('1 entry', '3 entries', '0 programs')
    """
    return f"{n:,} {one if n == 1 else (many or one + 's')}"
