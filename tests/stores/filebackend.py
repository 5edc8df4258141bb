"""A backend written the way a third party would: one file per key, the four required methods.

It imports nothing private of stepcache. Importable by spawned children (its
directory is on the parent's ``sys.path``), which never register its scheme.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import stepcache as sc


class FileBackend(sc.Backend):
    """``files:///some/dir``: each blob in ``<dir>/<key>``, replaced by rename."""

    def __init__(self, spec: str) -> None:
        self.spec = spec
        self.root = Path(spec.partition("://")[2])
        self.root.mkdir(parents=True, exist_ok=True)

    def load(self, key: str) -> bytes | None:
        try:
            return (self.root / key).read_bytes()
        except FileNotFoundError:
            return None

    def save(self, key: str, blob: bytes) -> None:
        tmp = self.root / f".{key}.{uuid.uuid4().hex}"
        tmp.write_bytes(blob)
        os.replace(tmp, self.root / key)

    def remove(self, key: str) -> bool:
        try:
            (self.root / key).unlink()
        except FileNotFoundError:
            return False
        return True

    def keys(self) -> Iterator[str]:
        return (name for name in os.listdir(self.root) if not name.startswith("."))
