"""The entry format every store shares: header, checksum, optional HMAC, payload.

An entry is one ``bytes`` blob, the same on disk and in Redis::

    offset  size  field
    0       4     magic b"\\x93SCE"
    4       1     format version (1)
    5       1     flags (bit 0: signed, bit 1: payload zstd-compressed)
    6       1     codec id (0 pickle, 1 raw bytes, 2 safe JSON)
    7       1     key length K
    8       4     info length I  (UTF-8 JSON: step, label, manifest, ...)
    12      8     payload length P
    20      8     created (float seconds since the epoch)
    28      8     xxh3-64 checksum of every other byte of the entry
    36      K     key (ASCII hex)
    36+K    I     info JSON
    ...     32    HMAC-SHA256 of all bytes before it and the payload (signed only)
    ...     P     payload

Readers verify length, key, checksum and (when a secret is set) the HMAC
*before* decoding the payload; anything that does not verify raises
:class:`CorruptEntry`, which stores turn into a counted miss. The parsers
raise nothing else, whatever the bytes (a property test feeds them arbitrary
and mutated entries). The checksum catches damage, not forgery: only the HMAC
proves who wrote an entry, so a store reading entries that others can write
needs a secret (see ``docs/security.md``). The info JSON is plain text, so
labels and step names are readable (and greppable) without unpickling
anything.

A payload may be stored zstd-compressed (``compress="zstd"``): flag bit 1
says so, so readers need no option, and the payload length, checksum and
HMAC cover the compressed bytes as stored. Entries without the flag read as
before.
"""

from __future__ import annotations

import struct
import time
from collections.abc import Mapping
from typing import Any, Final

import xxhash

from stepcache._record import Record

__all__ = [
    "CODECS",
    "CorruptEntry",
    "EntryHeader",
    "TreePayload",
    "compress_entry",
    "decode_value",
    "header_size",
    "pack_entry",
    "read_header",
    "unpack_entry",
    "verify_entry",
]

MAGIC: Final = b"\x93SCE"
FORMAT_VERSION: Final = 1
_PREFIX = struct.Struct("<4sBBBBIQdQ")
PREFIX_SIZE: Final = _PREFIX.size  # 36
_SIG_SIZE: Final = 32
_FLAG_SIGNED: Final = 1
_FLAG_ZSTD: Final = 2
_KNOWN_FLAGS: Final = _FLAG_SIGNED | _FLAG_ZSTD
#: compressed payloads may expand to at most this (a bomb is damage, not a value)
MAX_DECOMPRESSED: Final = 2**32
COMPRESSIONS: Final = ("zstd",)
#: where the checksum sits in the prefix (it covers every other byte of the entry)
CHECKSUM_AT: Final = PREFIX_SIZE - 8
#: what unpack_entry takes a blob shorter than the prefix for: bad magic
_SHORT: Final = (b"", 0, 0, 0, 0, 0, 0, 0.0, 0)
#: creation times past this (the year 5138) are damage, and would break date formatting
MAX_CREATED: Final = 1e11

PICKLE, RAW, SAFE, TREE = 0, 1, 2, 3

#: The prefix as a hit path reads a plain entry (unsigned, uncompressed, pickled): its
#: first 8 bytes (magic, version, flags, codec id, key length) as one string, compared
#: with ``PLAIN_HEADS[len(key)]``, then info length, payload length, created, checksum.
#: What :func:`unpack_entry` checks of such an entry is left to the creation time, the
#: length, the key and the checksum (see ``DirectoryStore._read``).
PLAIN_PREFIX: Final = struct.Struct("<8sIQdQ")
#: the first 8 bytes of a plain entry, by key length
PLAIN_HEADS: Final = tuple(
    _PREFIX.pack(MAGIC, FORMAT_VERSION, 0, PICKLE, n, 0, 0, 0.0, 0)[:8] for n in range(256)
)
CODECS: Final[Mapping[str, int]] = {"pickle": PICKLE, "raw": RAW, "safe": SAFE, "tree": TREE}
_CODEC_NAMES: Final = {v: k for k, v in CODECS.items()}


class CorruptEntry(Exception):
    """An entry failed verification; ``reason`` says which check."""


class EntryHeader(Record):
    """What an entry says about itself, readable without decoding its payload."""

    __slots__ = (  # noqa: RUF023 - field order
        "key", "codec", "created", "payload_bytes", "total_bytes", "signed", "info", "compressed"
    )  # fmt: skip
    key: str
    codec: str
    created: float
    payload_bytes: int
    total_bytes: int
    signed: bool
    info: Mapping[str, Any]
    compressed: bool  #: the payload is stored zstd-compressed (see ``pack_entry``)

    def __init__(
        self,
        key: str,
        codec: str,
        created: float,
        payload_bytes: int,
        total_bytes: int,
        signed: bool,
        info: Mapping[str, Any],
        compressed: bool = False,
    ) -> None:
        self._set(key=key, codec=codec, created=created, payload_bytes=payload_bytes,
                  total_bytes=total_bytes, signed=signed, info=info,
                  compressed=compressed)  # fmt: skip

    @property
    def step(self) -> str:
        """Name of the step that produced the entry ("" if not from a step)."""
        return str(self.info.get("step", ""))

    @property
    def label(self) -> str:
        """Human-readable label of the input (program name), or ""."""
        return str(self.info.get("label", ""))


class TreePayload(bytes):
    """The payload of an artifact tree entry (see :mod:`stepcache.stores.artifacts`).

    Stored under its own codec id, so a tree entry is never mistaken for a
    value, whatever the store's codec.
    """


def _mac(secret: bytes, *parts: bytes | bytearray | memoryview) -> bytes:
    # hmac pulls in OpenSSL (~4 ms): imported on first use, so unsigned
    # stores never pay for it.
    import hashlib
    import hmac

    mac = hmac.new(secret, digestmod=hashlib.sha256)
    for part in parts:
        mac.update(part)
    return mac.digest()


def _sign(secret: bytes, blob: bytes | bytearray | memoryview, sig_at: int) -> bytes:
    # The MAC covers every byte but the checksum (which is computed over the
    # MAC itself) and the MAC's own slot.
    view = memoryview(blob)
    return _mac(
        secret, view[: PREFIX_SIZE - 8], view[PREFIX_SIZE:sig_at], view[sig_at + _SIG_SIZE :]
    )


def pack_entry(
    key: str,
    value: Any,
    *,
    codec: str = "pickle",
    info: Mapping[str, Any] | None = None,
    secret: bytes | None = None,
    created: float | None = None,
    compress: str | None = None,
) -> bytes:
    """Return the entry blob for ``value`` under ``key``; ``compress="zstd"`` compresses it.

    ``info`` is stored as sorted, compact JSON; an ``info`` with an
    ``info_json()`` method gives those bytes itself (a ``CachedStep``'s
    does, with the part that is the same for all its entries encoded once).
    """
    codec_id, payload = encode_value(value, codec)
    kb = key.encode("ascii")
    info_json = getattr(info, "info_json", None)
    if info_json is not None:
        ib: bytes = info_json()
    else:
        import json  # here, not at the top: a process that only reads never needs it

        ib = json.dumps(dict(info or {}), separators=(",", ":"), sort_keys=True).encode()
    flags = _FLAG_SIGNED if secret else 0
    if compress is not None:
        packed = _compress(payload, compress)
        if len(packed) < len(payload):  # small or dense payloads are kept as they are
            payload = packed
            flags |= _FLAG_ZSTD
    stamp = time.time() if created is None else created
    return _assemble(kb, ib, payload, codec_id, flags, stamp, secret)


def _assemble(
    kb: bytes,
    ib: bytes,
    payload: bytes,
    codec_id: int,
    flags: int,
    stamp: float,
    secret: bytes | None,
) -> bytes:
    fields = (MAGIC, FORMAT_VERSION, flags, codec_id, len(kb), len(ib), len(payload), stamp)
    prefix = bytearray(_PREFIX.pack(*fields, 0))
    parts = [kb, ib, payload]
    if secret:
        # Same bytes as _sign() covers: the prefix without its checksum, then the rest.
        parts.insert(2, _mac(secret, prefix[: PREFIX_SIZE - 8], *parts))
    # Hash and join the parts once: a 1 MB payload is never copied but into the blob.
    digest = xxhash.xxh3_64(prefix[:CHECKSUM_AT])
    for part in parts:
        digest.update(part)
    struct.pack_into("<Q", prefix, CHECKSUM_AT, digest.intdigest())
    return b"".join((prefix, *parts))


def compress_entry(blob: bytes, key: str, *, secret: bytes | None, method: str = "zstd") -> bytes:
    """The same entry with its payload compressed (re-signed with ``secret``), or ``blob`` itself.

    ``blob`` itself when it is compressed already, when compressing would not
    shrink it, or when it is signed and no ``secret`` is given to sign the
    result. Raises :class:`CorruptEntry` if ``blob`` does not verify.
    """
    start = verify_entry(blob, key, secret=secret)
    flags, codec_id, klen, ilen, _, created, _ = _parse_prefix(blob)
    if flags & _FLAG_ZSTD or (flags & _FLAG_SIGNED and secret is None):
        return blob
    payload = blob[start:]
    packed = _compress(payload, method)
    if len(packed) >= len(payload):
        return blob
    kb, ib = (
        blob[PREFIX_SIZE : PREFIX_SIZE + klen],
        blob[PREFIX_SIZE + klen : PREFIX_SIZE + klen + ilen],
    )
    signing = secret if flags & _FLAG_SIGNED else None
    return _assemble(kb, ib, packed, codec_id, flags | _FLAG_ZSTD, created, signing)


def _compress(payload: bytes, method: str) -> bytes:
    if method not in COMPRESSIONS:
        raise ValueError(f"compress must be one of {COMPRESSIONS} or None, not {method!r}")
    import zstandard

    # Level 3, zstd's default: the demo's entries shrink tenfold at 170 MB/s
    # (docs/object-stores.md); higher levels would slow every write.
    return zstandard.ZstdCompressor(level=3, write_content_size=True).compress(payload)


def _decompress(payload: bytes | memoryview) -> bytes:
    try:
        import zstandard
    except ImportError as exc:
        raise CorruptEntry(
            "zstd-compressed entry, and the zstandard package is not installed "
            "(pip install 'stepcache[s3]')"
        ) from exc
    try:
        return zstandard.ZstdDecompressor().decompress(payload, max_output_size=MAX_DECOMPRESSED)
    except zstandard.ZstdError as exc:
        raise CorruptEntry(f"compressed payload does not decompress: {exc}") from None


def header_size(prefix: bytes | memoryview) -> int:
    """Bytes from the start of an entry to the end of its info, read from its first 12 bytes."""
    if len(prefix) < 12:
        raise CorruptEntry("truncated: shorter than the header")
    return PREFIX_SIZE + prefix[7] + int.from_bytes(prefix[8:12], "little")


def _parse_prefix(blob: bytes | memoryview) -> tuple[int, int, int, int, int, float, int]:
    problem = _prefix_problem(blob)
    if problem is not None:
        raise problem
    _, _, flags, codec_id, klen, ilen, plen, created, checksum = _PREFIX.unpack_from(blob)
    return flags, codec_id, klen, ilen, plen, created, checksum


def _prefix_problem(blob: bytes | memoryview) -> CorruptEntry | None:
    """Why the first bytes of ``blob`` are no entry's prefix this version reads, or ``None``."""
    if len(blob) < PREFIX_SIZE:
        return CorruptEntry(f"truncated: {len(blob)} bytes, shorter than the header")
    magic, version, flags, _, _, _, _, created, _ = _PREFIX.unpack_from(blob)
    if magic != MAGIC:
        return CorruptEntry("foreign file: bad magic")
    if version != FORMAT_VERSION:
        return CorruptEntry(f"entry format {version}, this stepcache reads {FORMAT_VERSION}")
    if flags & ~_KNOWN_FLAGS:
        return CorruptEntry(f"unknown flags {flags:#x}: written by a newer stepcache")
    if not 0.0 <= created < MAX_CREATED:  # also false for NaN
        return CorruptEntry(f"implausible creation time {created!r}")
    return None


def read_header(blob: bytes | memoryview, *, key: str | None = None) -> EntryHeader:
    """Parse the header (and info) of an entry; the blob may end after the info."""
    flags, codec_id, klen, ilen, plen, created, _ = _parse_prefix(blob)
    end = PREFIX_SIZE + klen + ilen
    if len(blob) < end:
        raise CorruptEntry("truncated header")
    entry_key = bytes(blob[PREFIX_SIZE : PREFIX_SIZE + klen]).decode("ascii", "replace")
    if key is not None and entry_key != key:
        raise CorruptEntry(f"entry is for key {entry_key!r}, not {key!r}")
    import json

    try:
        info = json.loads(bytes(blob[PREFIX_SIZE + klen : end]))
    except (ValueError, RecursionError) as exc:  # RecursionError: "[[[[..." nested too deep
        raise CorruptEntry(f"unreadable info: {type(exc).__name__}: {exc}") from None
    if not isinstance(info, dict):
        raise CorruptEntry("info is not an object")
    signed = bool(flags & _FLAG_SIGNED)
    total = end + (_SIG_SIZE if signed else 0) + plen
    name = _CODEC_NAMES.get(codec_id, f"unknown-{codec_id}")
    compressed = bool(flags & _FLAG_ZSTD)
    return EntryHeader(entry_key, name, created, plen, total, signed, info, compressed)


def verify_entry(blob: bytes | memoryview, key: str, *, secret: bytes | None = None) -> int:
    """Check an entry's length, key, checksum and (with ``secret``) signature; return the
    offset of its payload. Raise :class:`CorruptEntry` if it does not verify; decodes nothing.
    """
    start: int = unpack_entry(blob, key, secret=secret, decode=False)
    return start


def unpack_entry(
    blob: bytes | memoryview,
    key: str,
    *,
    secret: bytes | None = None,
    allow_pickle: bool = True,
    decode: bool = True,
) -> Any:
    """Verify an entry and return its value; raise :class:`CorruptEntry` if it does not verify.

    ``decode=False`` only verifies and returns the payload's offset (see
    :func:`verify_entry`). Every hit runs this: the prefix checks, checksum
    and unpickling are in this one frame; only a failed check calls out (to
    say why), and only a signed, compressed or non-pickle entry calls more.
    """
    magic, version, flags, codec_id, klen, ilen, plen, created, checksum = (
        _PREFIX.unpack_from(blob) if len(blob) >= PREFIX_SIZE else _SHORT
    )
    if (
        magic != MAGIC
        or version != FORMAT_VERSION
        or flags & ~_KNOWN_FLAGS
        or not 0.0 <= created < MAX_CREATED  # also false for NaN
    ):
        raise _prefix_problem(blob) or CorruptEntry("bad prefix")
    signed = flags & _FLAG_SIGNED
    start = PREFIX_SIZE + klen + ilen + (_SIG_SIZE if signed else 0)
    if len(blob) != start + plen:
        raise CorruptEntry(f"length {len(blob)} != {start + plen} recorded in the header")
    if blob[PREFIX_SIZE : PREFIX_SIZE + klen] != key.encode():
        raise CorruptEntry("entry belongs to another key")
    # The checksum covers every byte but its own: a damaged codec id or length
    # field must not turn one valid entry into another (raw bytes read as JSON).
    view = memoryview(blob)
    digest = xxhash.xxh3_64(view[:CHECKSUM_AT])
    digest.update(view[PREFIX_SIZE:])
    if digest.intdigest() != checksum:
        raise CorruptEntry("checksum mismatch")
    if secret is not None:
        if not signed:
            raise CorruptEntry("unsigned entry in a store that requires signatures")
        sig_at = start - _SIG_SIZE
        expected = _sign(secret, view, sig_at)
        import hmac

        if not hmac.compare_digest(expected, bytes(view[sig_at:start])):
            raise CorruptEntry("signature mismatch")
    if not decode:
        return start
    payload: bytes | memoryview = view[start:]
    try:
        if codec_id == PICKLE and allow_pickle and not flags & _FLAG_ZSTD:
            return pickle_loads(payload)  # the common case, without decode_value's frame
        if flags & _FLAG_ZSTD:
            payload = _decompress(payload)
        return decode_value(codec_id, payload, allow_pickle=allow_pickle)
    except CorruptEntry:
        raise
    except Exception as exc:  # a payload that passed the checksum can still fail to load
        raise CorruptEntry(f"payload does not decode: {type(exc).__name__}: {exc}") from None


# The value codecs live apart to keep this module about the entry format.
from stepcache._values import decode_value, encode_value, pickle_loads  # noqa: E402
