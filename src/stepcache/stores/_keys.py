"""Store keys and secrets: what a key may look like, the signing key, a missing value."""

from __future__ import annotations

import os
from typing import Final

from stepcache.errors import InvalidKeyError

__all__ = ["HEX_DIGITS", "MISSING", "is_key", "resolve_secret", "validate_key"]

#: the characters of a key
HEX_DIGITS: Final = "0123456789abcdef"


def is_key(key: str) -> bool:
    """Whether the string ``key`` is 16-64 lowercase hex characters, what
    :func:`stepcache.fingerprint` produces: :func:`validate_key`'s check, without raising.

    No regular expression: compiling one would cost every fresh process
    about 0.1 ms, and stripping the hex digits is as fast as matching.

    >>> is_key("0123456789abcdef"), is_key("0123456789ABCDEF"), is_key("../../etc/passwd")
    (True, False, False)
    """
    return 16 <= len(key) <= 64 and not key.strip(HEX_DIGITS)


class _Missing:
    def __repr__(self) -> str:
        return "MISSING"


MISSING: Final = _Missing()


def validate_key(key: object) -> str:
    """Return ``key`` if it is 16-64 lowercase hex characters, else raise :class:`InvalidKeyError`.

    Only keys of the form :func:`stepcache.fingerprint` produces reach a
    backend, so no key can name a path outside the store.

    >>> validate_key("0123456789abcdef")
    '0123456789abcdef'
    """
    if type(key) is not str or not is_key(key):
        shown = repr(key) if len(repr(key)) < 80 else repr(key)[:77] + "..."
        raise InvalidKeyError(
            f"invalid store key {shown}: keys are 16-64 lowercase hex characters, "
            "as stepcache.fingerprint() produces"
        )
    return key


def resolve_secret(secret: bytes | str | None) -> bytes | None:
    """``secret``, else ``$STEPCACHE_SECRET``, as bytes; ``None`` for unsigned entries."""
    if secret is None:
        secret = os.environ.get("STEPCACHE_SECRET") or None
    if isinstance(secret, str):
        secret = secret.encode()
    if secret is not None and not secret:
        # An empty key would sign nothing yet demand signatures: every read a miss.
        raise ValueError("secret must not be empty; pass None (or unset it) for unsigned entries")
    return secret
