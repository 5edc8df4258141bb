"""Directory trees as single entries: for stores that have no local directory.

Archives are uncompressed tar (build trees are mostly already-dense shared
objects; compression would cost more than it saves). Extraction refuses
links, devices and any member that would land outside the target.
"""

from __future__ import annotations

import io
import os
import shutil
import tarfile
import tempfile
from pathlib import Path

__all__ = ["pack_tree", "unpack_tree"]


def pack_tree(src: Path) -> bytes:
    """Archive the files and directories under ``src`` (symlinks are rejected)."""
    if not src.is_dir():
        raise NotADirectoryError(f"put_dir needs a directory, {src} is not one")
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for path in sorted(src.rglob("*")):
            if path.is_symlink():
                raise ValueError(f"put_dir stores regular files only; {path} is a symlink")
            tar.add(path, arcname=path.relative_to(src).as_posix(), recursive=False)
    return buf.getvalue()


def _safe_members(tar: tarfile.TarFile) -> list[tarfile.TarInfo]:
    members = []
    for member in tar.getmembers():
        name = member.name
        if name.startswith(("/", "\\")) or ".." in Path(name).parts:
            raise ValueError(f"archive member {name!r} would escape the target")
        if not (member.isfile() or member.isdir()):
            raise ValueError(f"archive member {name!r} is not a file or directory")
        member.mode = (member.mode & 0o755) | 0o600
        members.append(member)
    return members


def unpack_tree(payload: bytes, dest: Path) -> Path:
    """Extract ``payload`` to ``dest`` (published by rename); reuse ``dest`` if present."""
    if dest.is_dir():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=dest.parent))
    try:
        with tarfile.open(fileobj=io.BytesIO(payload), mode="r:") as tar:
            members = _safe_members(tar)
            if hasattr(tarfile, "data_filter"):
                tar.extractall(tmp, members=members, filter="data")
            else:  # pragma: no cover - Python without PEP 706
                tar.extractall(tmp, members=members)
        os.rename(tmp, dest)
    except OSError:
        if not dest.is_dir():
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dest
