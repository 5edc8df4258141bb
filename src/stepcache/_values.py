"""Values as entry payloads: the codecs (pickle, raw bytes, safe JSON) and tree payloads.

Part of :mod:`stepcache.codec`, which re-exports both functions.
"""

from __future__ import annotations

from typing import Any, Final

# Imported by stepcache.codec once these names exist there (see its last line).
from stepcache.codec import CODECS, PICKLE, RAW, SAFE, TREE, CorruptEntry, TreePayload

try:  # the C functions pickle.py re-exports: importing pickle.py would cost ~0.9 ms
    from _pickle import dumps as pickle_dumps
    from _pickle import loads as pickle_loads
except ImportError:  # an interpreter without CPython's accelerator module
    from pickle import dumps as pickle_dumps
    from pickle import loads as pickle_loads

__all__ = ["decode_value", "encode_value", "pickle_dumps", "pickle_loads"]

_PICKLE_PROTOCOL: Final = 5  # pickle.HIGHEST_PROTOCOL, without importing pickle.py


def encode_value(value: Any, codec: str) -> tuple[int, bytes]:
    """Serialise ``value``: bytes are stored raw; otherwise the store's codec."""
    if type(value) is bytes:
        return RAW, value
    if type(value) is TreePayload:
        return TREE, bytes(value)
    if codec == "pickle":
        return PICKLE, pickle_dumps(value, protocol=_PICKLE_PROTOCOL)
    if codec == "safe":
        import json

        problem = ""
        try:
            data = json.dumps(value, separators=(",", ":"), allow_nan=False)
        except (TypeError, ValueError) as exc:
            data, problem = None, f": {exc}"
        # JSON turns tuples into lists and int keys into strings: a value that
        # would come back different is refused, so a hit never differs from a miss.
        if data is None or json.loads(data) != value or not _json_exact(value):
            raise TypeError(
                f"the 'safe' codec stores bytes and JSON values (dict with str keys, list, "
                f"str, int, float, bool, None) only, not this {type(value).__name__}"
                f"{problem}; open the store with codec='pickle'"
            )
        return SAFE, data.encode()
    raise ValueError(f"unknown codec {codec!r}; choose one of {sorted(CODECS)}")


def _json_exact(value: Any) -> bool:
    """Whether ``value`` is made only of types JSON gives back unchanged."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            if not all(type(k) is str for k in item):
                return False
            stack.extend(item.values())
        elif type(item) is list:
            stack.extend(item)
        elif item is not None and type(item) not in (str, int, float, bool):
            return False
    return True


def decode_value(codec_id: int, payload: bytes | memoryview, *, allow_pickle: bool = True) -> Any:
    """Deserialise a verified payload; ``allow_pickle=False`` refuses pickles."""
    if codec_id == RAW:
        return bytes(payload)
    if codec_id == SAFE:
        import json

        return json.loads(bytes(payload))
    if codec_id == TREE:
        return TreePayload(payload)
    if codec_id == PICKLE:
        if not allow_pickle:
            raise CorruptEntry("pickled entry in a store that only accepts the safe codec")
        return pickle_loads(payload)
    raise CorruptEntry(f"unknown codec id {codec_id}")
