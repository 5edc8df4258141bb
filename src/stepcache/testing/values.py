"""Keys, trees and self-checking values for store tests; light enough for child processes.

>>> v = checked_value(key(1), "writer-1", 100)
>>> is_whole(key(1), v), is_whole(key(2), v)
(True, False)
"""

from __future__ import annotations

import hashlib
import random
from pathlib import Path
from typing import Any

__all__ = ["checked_value", "is_whole", "key", "tree"]


def key(n: int) -> str:
    """A valid store key derived from ``n`` (32 hex characters, well spread)."""
    return hashlib.sha256(str(n).encode()).hexdigest()[:32]


def tree(root: Path) -> dict[str, bytes | None]:
    """Relative path -> file content (``None`` for a directory) of everything under ``root``."""
    return {
        p.relative_to(root).as_posix(): (None if p.is_dir() else p.read_bytes())
        for p in sorted(root.rglob("*"))
    }


def checked_value(k: str, tag: object, size: int) -> tuple[str, str, bytes, str]:
    """A value for key ``k`` carrying its key, a ``tag`` and a checksum of a ``size``-byte payload.

    A reader that got part of a write, or another key's value, fails :func:`is_whole`.
    """
    payload = random.Random(f"{k}/{tag}").randbytes(size)
    return (k, str(tag), payload, hashlib.sha256(k.encode() + payload).hexdigest())


def is_whole(k: str, value: Any) -> bool:
    """Whether ``value`` is a complete :func:`checked_value` made for key ``k``."""
    try:
        vk, _, payload, digest = value
        return bool(vk == k and hashlib.sha256(k.encode() + payload).hexdigest() == digest)
    except (TypeError, ValueError, AttributeError):
        return False
