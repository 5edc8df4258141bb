"""The exception tree: one root, each leaf also a builtin where one fits.

::

    StepCacheError(Exception)
    ├── UnfingerprintableError(StepCacheError, TypeError)
    │       a value has no stable identity (only its address identifies it)
    ├── InvalidKeyError(StepCacheError, ValueError)
    │       a key is not the hex form ``fingerprint`` produces
    ├── StoreUnavailableError(StepCacheError, OSError)
    │   │   a store cannot be opened or reached at all
    │   └── UnsafeStoreError(StoreUnavailableError, PermissionError)
    │           a cache directory others could write to (owner, mode or symlinks)
    ├── ReadOnlyStoreError(StepCacheError, PermissionError)
    │       a write to a store opened ``read_only=True``
    └── CompilerError(StepCacheError, RuntimeError)
            an external compiler is missing or failed

Catch :class:`StepCacheError` to catch everything stepcache raises on purpose,
or the builtin to treat it like any other error of that kind::

    >>> import stepcache as sc
    >>> try:
    ...     sc.fingerprint(object.__new__(type("Opaque", (), {"__reduce_ex__": None})))
    ... except TypeError as exc:
    ...     isinstance(exc, sc.StepCacheError)
    True

Every exception here pickles and unpickles to an equal message, so errors
raised in worker processes reach the parent intact.
"""

from __future__ import annotations

__all__ = [
    "CompilerError",
    "InvalidKeyError",
    "ReadOnlyStoreError",
    "StepCacheError",
    "StoreUnavailableError",
    "UnfingerprintableError",
    "UnsafeStoreError",
]


class StepCacheError(Exception):
    """Root of every exception stepcache raises on purpose."""

    def __reduce__(self) -> tuple[type[StepCacheError], tuple[str]]:
        # Builtins such as OSError reconstruct from their own args; a single
        # message argument keeps every subclass picklable the same way.
        return (type(self), (str(self),))


class UnfingerprintableError(StepCacheError, TypeError):
    """A value cannot be given a key that is stable across processes.

    Raised instead of silently keying by ``id()`` or ``repr()``, which would
    produce a new key every run. Fix it by giving the type a
    ``__stepcache_fingerprint__`` method or calling
    :func:`stepcache.register_fingerprint`.
    """


class InvalidKeyError(StepCacheError, ValueError):
    """A store key is not a lowercase hex string of 16 to 64 characters."""


class StoreUnavailableError(StepCacheError, OSError):
    """A store cannot be opened or reached (bad spec, missing server, no access)."""


class UnsafeStoreError(StoreUnavailableError, PermissionError):
    """A cache directory that someone else could write to is refused.

    Whoever can write a cache's entries can run code in every process that
    reads them (a pickle is a program), so a :class:`~stepcache.DirectoryStore`
    refuses a root owned by another user, or writable by group or others
    (unless opened with ``shared=True``), and a tree holding symlinks where
    its own directories belong. The message says what to change; see
    ``docs/security.md``.

    >>> import stepcache.errors as errors
    >>> issubclass(errors.UnsafeStoreError, (errors.StoreUnavailableError, PermissionError))
    True
    """


class ReadOnlyStoreError(StepCacheError, PermissionError):
    """A write, delete or clear on a store opened with ``read_only=True``."""


class CompilerError(StepCacheError, RuntimeError):
    """An external compiler is missing or exited with an error; the message has its stderr."""
