"""Artifact trees in one format for every store: a signed manifest, and the files.

A tree entry's payload is a :class:`Manifest` (relative path, mode, size and
content digest of every file, and the directories) followed, in stores that
do not keep trees as files, by an uncompressed tar of the files. The entry's
checksum and HMAC cover both, so whoever cannot sign entries cannot change
what a tree must contain. :func:`check_tree` compares a tree on disk with its
manifest (names, sizes, contents) before a store serves it; a tree that
differs is a miss. Digests are ``xxh3_128`` for unsigned stores (damage) and
``sha256`` for signed ones (forgery), recorded in the manifest.

Only regular files and directories enter a tree: a symlink could point
anywhere, so :func:`build_manifest` refuses one (and devices, fifos) with
:class:`ValueError`.

>>> import pathlib, tempfile
>>> src = pathlib.Path(tempfile.mkdtemp()); _ = (src / "lib.so").write_bytes(b"ELF")
>>> manifest = build_manifest(src)
>>> [(f.path, f.size) for f in manifest.files], check_tree(src, manifest)
([('lib.so', 3)], None)
>>> _ = (src / "lib.so").write_bytes(b"ELG")
>>> check_tree(src, manifest)
"file 'lib.so' differs from the manifest (contents)"
"""

from __future__ import annotations

import io
import json
import os
import shutil
import stat
import struct
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final

from stepcache._record import Record

__all__ = [
    "FileRecord",
    "Manifest",
    "TreeValue",
    "build_manifest",
    "check_tree",
    "decode",
    "encode",
    "hash_fd",
    "new_hasher",
    "unpack",
]

_READ: Final = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)
_CHUNK: Final = 1 << 20
_LEN: Final = struct.Struct("<I")
_MEMO_MAX: Final = 65536
# Digests of files already checked, by everything that changes when a file
# does: a rewrite of the same size within one mtime tick still changes ctime,
# which nobody can set. Only this process's own checks are remembered.
_memo: dict[tuple[Any, ...], str] = {}
_memo_lock = threading.Lock()


class FileRecord(Record):
    """One file of a tree: where it is, its mode bits, size and content digest."""

    __slots__ = ("path", "mode", "size", "digest")  # noqa: RUF023 - field order
    path: str  #: relative, ``/``-separated
    mode: int  #: permission bits (``0o755`` for an executable)
    size: int
    digest: str  #: hex digest under the manifest's ``algo``

    def __init__(self, path: str, mode: int, size: int, digest: str) -> None:
        self._set(path=path, mode=mode, size=size, digest=digest)


def _path_of(record: FileRecord) -> str:
    return record.path


class Manifest(Record):
    """What a stored tree must contain: every file and directory, with digests."""

    __slots__ = ("files", "dirs", "algo")  # noqa: RUF023 - field order
    files: tuple[FileRecord, ...]
    dirs: tuple[str, ...]
    algo: str

    def __init__(
        self, files: tuple[FileRecord, ...], dirs: tuple[str, ...] = (), algo: str = "xxh3_128"
    ) -> None:
        self._set(files=files, dirs=dirs, algo=algo)

    @classmethod
    def listed(cls, files: list[FileRecord], dirs: list[str], algo: str) -> Manifest:
        """The manifest of ``files`` and ``dirs`` as found, in path order (the canonical one)."""
        return cls(tuple(sorted(files, key=_path_of)), tuple(sorted(dirs)), algo)

    @property
    def nbytes(self) -> int:
        """Bytes of all files."""
        return sum(f.size for f in self.files)

    def to_json(self) -> bytes:
        """The canonical JSON form stored in entries."""
        data = {
            "v": 1,
            "algo": self.algo,
            "dirs": list(self.dirs),
            "files": [[f.path, f.mode, f.size, f.digest] for f in self.files],
        }
        return json.dumps(data, separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, raw: bytes) -> Manifest:
        """Parse :meth:`to_json` output; :class:`ValueError` on anything else."""
        try:
            data = json.loads(raw)
            if data.get("v") != 1 or data.get("algo") not in _ALGOS:
                raise ValueError("unknown manifest version or digest")
            files = tuple(
                FileRecord(str(p), int(m), int(s), str(d)) for p, m, s, d in data["files"]
            )
            dirs = tuple(str(d) for d in data["dirs"])
        except (KeyError, TypeError, AttributeError, RecursionError) as exc:
            raise ValueError(f"malformed manifest: {exc}") from None
        for name in (*dirs, *(f.path for f in files)):
            _check_name(name)
        return cls(files, dirs, str(data["algo"]))


class TreeValue(Record):
    """A decoded tree entry: its manifest and, in stores without files, the archive."""

    __slots__ = ("manifest", "archive")  # noqa: RUF023 - field order
    manifest: Manifest
    archive: bytes | None

    def __init__(self, manifest: Manifest, archive: bytes | None) -> None:
        self._set(manifest=manifest, archive=archive)


def _check_name(name: str) -> None:
    parts = name.split("/")
    if not name or name.startswith("/") or any(p in ("", ".", "..") for p in parts):
        raise ValueError(f"manifest path {name!r} would leave the tree")


def new_hasher(algo: str) -> Any:
    """A fresh hash object of manifest digest ``algo`` (``xxh3_128`` or ``sha256``)."""
    if algo == "sha256":
        import hashlib

        return hashlib.sha256()
    import xxhash

    return xxhash.xxh3_128()


_ALGOS: Final = ("xxh3_128", "sha256")


def hash_fd(fd: int, size: int, algo: str, *, copy_to: int | None = None) -> tuple[str, int]:
    """(hex digest under ``algo``, bytes read) of the file open at ``fd``, read to its end.

    ``size`` is what its stat said: the first read asks for one byte more,
    so a file of that size is read whole in one call and its end seen at once.
    ``copy_to``: a descriptor that every byte read is also written to.
    """
    h = new_hasher(algo)
    # Plain reads, not a file object (whose set-up costs four system calls):
    # a read asking for more than is left returns what is left, so a file
    # read short of the request has ended.
    want, nbytes = min(size + 1, _CHUNK), 0
    while chunk := os.read(fd, want):
        h.update(chunk)
        nbytes += len(chunk)
        if copy_to is not None:  # a write may take less than it is given
            view = memoryview(chunk)
            while view:
                view = view[os.write(copy_to, view) :]
        if len(chunk) < want:
            break
        want = _CHUNK
    return h.hexdigest(), nbytes


def _digest(path: str, st: os.stat_result, algo: str) -> str | None:
    """The content digest of the regular file ``path`` (lstat ``st``), memoised; None if gone."""
    ident = (path, st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns, algo)
    found = _memo.get(ident)
    if found is not None:
        return found
    try:
        fd = os.open(path, _READ)
    except OSError:
        return None
    try:
        opened = os.fstat(fd)
        if not stat.S_ISREG(opened.st_mode) or opened.st_ino != st.st_ino:
            return None  # replaced since it was listed
        digest = hash_fd(fd, st.st_size, algo)[0]
    except OSError:
        return None
    finally:
        os.close(fd)
    with _memo_lock:
        if len(_memo) >= _MEMO_MAX:
            _memo.clear()
        _memo[ident] = digest
    return digest


def _walk(root: str) -> Iterator[tuple[str, os.DirEntry[str], os.stat_result]]:
    """(relative path, entry, lstat) of everything below ``root``, depth first, sorted."""
    stack = [""]
    while stack:
        rel = stack.pop()
        with os.scandir(os.path.join(root, rel) if rel else root) as found:
            entries = sorted(found, key=lambda e: e.name)
        for entry in entries:
            name = f"{rel}/{entry.name}" if rel else entry.name
            st = entry.stat(follow_symlinks=False)
            yield name, entry, st
            if stat.S_ISDIR(st.st_mode):
                stack.append(name)


def _kind(mode: int) -> str:
    return "a symlink" if stat.S_ISLNK(mode) else "not a regular file"


def build_manifest(root: str | os.PathLike[str], *, algo: str = "xxh3_128") -> Manifest:
    """The manifest of the tree under ``root``; :class:`ValueError` for a symlink or device."""
    top = os.fspath(root)
    if not os.path.isdir(top):
        raise NotADirectoryError(f"put_dir needs a directory, {top} is not one")
    files, dirs = [], []
    for name, entry, st in _walk(top):
        if stat.S_ISDIR(st.st_mode):
            dirs.append(name)
        elif stat.S_ISREG(st.st_mode):
            digest = _digest(entry.path, st, algo)
            if digest is None:
                raise ValueError(f"put_dir: {name!r} changed while it was read")
            files.append(FileRecord(name, stat.S_IMODE(st.st_mode), st.st_size, digest))
        else:
            raise ValueError(f"put_dir stores regular files only; {name!r} is {_kind(st.st_mode)}")
    return Manifest.listed(files, dirs, algo)


def check_tree(root: str | os.PathLike[str], manifest: Manifest) -> str | None:
    """What differs between the tree at ``root`` and ``manifest``, or ``None`` if nothing does."""
    top = os.fspath(root)
    expected = {f.path: f for f in manifest.files}
    dirs = set(manifest.dirs)
    try:
        found = list(_walk(top))
    except OSError as exc:
        return f"the tree cannot be read: {exc.strerror or exc}"
    for name, entry, st in found:
        if stat.S_ISDIR(st.st_mode):
            if name not in dirs:
                return f"directory {name!r} is not in the manifest"
            continue
        record = expected.pop(name, None)
        if record is None:
            return f"file {name!r} is not in the manifest"
        if not stat.S_ISREG(st.st_mode):
            return f"{name!r} is {_kind(st.st_mode)}"
        if st.st_size != record.size:
            return f"file {name!r} differs from the manifest (size {st.st_size} != {record.size})"
        if _digest(entry.path, st, manifest.algo) != record.digest:
            return f"file {name!r} differs from the manifest (contents)"
    if expected:
        return f"file {min(expected)!r} is missing"
    if dirs - {name for name, _, st in found if stat.S_ISDIR(st.st_mode)}:
        return "a directory of the manifest is missing"
    return None


# -- the entry payload -----------------------------------------------------------
def encode(manifest: Manifest, root: str | os.PathLike[str] | None) -> bytes:
    """A tree entry's payload: the manifest, then (given ``root``) a tar of its files."""
    head = manifest.to_json()
    if root is None:
        return _LEN.pack(len(head)) + head
    import tarfile  # here: checking a tree (every get_dir) needs no archive code

    buf = io.BytesIO()
    buf.write(_LEN.pack(len(head)) + head)
    top = os.fspath(root)
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for d in manifest.dirs:
            info = tarfile.TarInfo(d)
            info.type, info.mode = tarfile.DIRTYPE, 0o700
            tar.addfile(info)
        for f in manifest.files:
            with open(os.open(os.path.join(top, f.path), _READ), "rb") as fh:
                info = tarfile.TarInfo(f.path)
                info.size, info.mode = f.size, f.mode
                tar.addfile(info, fh)
    return buf.getvalue()


def decode(payload: bytes | memoryview) -> TreeValue:
    """Parse :func:`encode`'s output; :class:`ValueError` if it is not one."""
    if len(payload) < _LEN.size:
        raise ValueError("tree payload shorter than its manifest length")
    (n,) = _LEN.unpack_from(payload)
    if _LEN.size + n > len(payload):
        raise ValueError("tree payload shorter than its manifest")
    manifest = Manifest.from_json(bytes(payload[_LEN.size : _LEN.size + n]))
    rest = bytes(payload[_LEN.size + n :])
    return TreeValue(manifest, rest or None)


def unpack(value: TreeValue, dest: Path) -> Path:
    """Extract ``value``'s archive to ``dest`` (published by rename) and return it.

    Only the manifest's files and directories are taken from the archive,
    each written below ``dest`` with no-follow opens, so an archive cannot
    place anything elsewhere. An existing ``dest`` is replaced.
    """
    if value.archive is None:
        raise ValueError("this tree entry holds no archive")
    import tarfile

    dest.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = Path(tempfile.mkdtemp(prefix=".unpack-", dir=dest.parent))
    try:
        wanted = {f.path: f for f in value.manifest.files}
        for d in value.manifest.dirs:
            (tmp / d).mkdir(mode=0o700, parents=True, exist_ok=True)
        with tarfile.open(fileobj=io.BytesIO(value.archive), mode="r:") as tar:
            for member in tar:
                record = wanted.pop(member.name, None)
                if record is None or not member.isfile():
                    continue
                src = tar.extractfile(member)
                if src is None:  # pragma: no cover - isfile() members always have data
                    continue
                flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
                with open(os.open(tmp / record.path, flags, 0o600), "wb") as out:
                    shutil.copyfileobj(src, out, _CHUNK)
                os.chmod(tmp / record.path, (record.mode & 0o700) | 0o600)
        if wanted:
            raise ValueError(f"archive lacks {min(wanted)!r}")
        if dest.exists():
            shutil.rmtree(dest, ignore_errors=True)
        os.rename(tmp, dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dest
