"""Export and import: entries moved between any two stores through one archive file.

The archive is a tar file, zstd-compressed when its name ends in ``.zst``::

    stepcache-export.json   {"format": 1, "entries": N, "trees": T}
    entries/<key>           the entry blob exactly as stored (signature kept)
    trees/<key>/...         the files of an artifact tree, where the source
                            keeps trees as files (a directory store)

Export reads each entry verified (length, key, checksum, and the signature
when the source has a secret); damaged ones are left out. Import verifies
again against the destination's secret and stores each blob byte for byte,
so the signature made where it was computed is kept, also for a tree whose
files travel in the same form (as files into a store that keeps files, as
the archive inside the entry into one that does not); a tree changing form
is published through the destination's ``put_dir`` with a new manifest.
Archive members are extracted into a private temporary directory, refusing
links, devices and paths outside it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import shutil
import tarfile
import tempfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, Final

from stepcache import codec
from stepcache.errors import ReadOnlyStoreError
from stepcache.stores import artifacts
from stepcache.stores.base import Store, validate_key

__all__ = ["ExportResult", "ImportResult", "export_entries", "import_entries"]

FORMAT: Final = 1
_MANIFEST: Final = "stepcache-export.json"


@dataclasses.dataclass(frozen=True)
class ExportResult:
    """What :func:`export_entries` wrote."""

    entries: int  #: entry blobs written
    trees: int  #: artifact trees written as files
    skipped: int  #: entries left out: they did not verify, or vanished meanwhile
    bytes: int  #: size of the archive file


@dataclasses.dataclass(frozen=True)
class ImportResult:
    """What :func:`import_entries` stored."""

    entries: int  #: entries stored (trees included)
    trees: int  #: of which artifact trees
    skipped: int  #: entries that did not verify for the destination, or could not be stored


@contextlib.contextmanager
def _open_archive(path: Path, mode: str) -> Iterator[tarfile.TarFile]:
    """A streaming tar reader or writer on ``path``, through zstd for ``*.zst``."""
    with open(path, mode + "b") as raw:
        if path.name.endswith(".zst"):
            import zstandard

            if mode == "w":
                with (
                    zstandard.ZstdCompressor(level=3).stream_writer(raw, closefd=False) as zw,
                    tarfile.open(fileobj=zw, mode="w|", format=tarfile.PAX_FORMAT) as tar,
                ):
                    yield tar
            else:
                with (
                    zstandard.ZstdDecompressor().stream_reader(raw, closefd=False) as zr,
                    tarfile.open(fileobj=zr, mode="r|") as tar,
                ):
                    yield tar
        elif mode == "w":
            with tarfile.open(fileobj=raw, mode="w|", format=tarfile.PAX_FORMAT) as tar:
                yield tar
        else:
            with tarfile.open(fileobj=raw, mode="r|") as tar:
                yield tar


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mode = len(data), 0o600
    tar.addfile(info, io.BytesIO(data))


def _tree_of(blob: bytes, key: str, secret: bytes | None) -> artifacts.TreeValue | None:
    """The tree in a verified tree entry, or ``None`` for a value entry."""
    if codec.read_header(blob, key=key).codec != "tree":
        return None
    payload = codec.unpack_entry(blob, key, secret=secret, allow_pickle=False)
    return artifacts.decode(payload)


def export_entries(
    store: Store,
    path: str | Path,
    keys: Iterable[str] | None = None,
    progress: Callable[[int], None] | None = None,
) -> ExportResult:
    """Write ``keys`` (default: all) of ``store`` to archive ``path``."""
    path = Path(path)
    written = trees = skipped = 0
    with _open_archive(path, "w") as tar:
        for key in list(store if keys is None else keys):
            blob = store.read_blob(key)
            if blob is None:
                skipped += 1
                continue
            tree = _tree_of(blob, key, store.secret)
            if tree is not None and tree.archive is None:  # the files are kept beside the entry
                files = store.get_dir(key, count=False)
                if files is None:
                    skipped += 1
                    continue
                tar.add(files, arcname=f"trees/{key}", recursive=True)
                trees += 1
            _add_bytes(tar, f"entries/{key}", blob)
            written += 1
            if progress is not None:
                progress(1)
        doc = {"format": FORMAT, "entries": written, "trees": trees}
        _add_bytes(tar, _MANIFEST, json.dumps(doc).encode())
    return ExportResult(written, trees, skipped, path.stat().st_size)


def _extract(path: Path, into: Path) -> None:
    with _open_archive(path, "r") as tar:
        for member in tar:
            name = member.name
            if not (member.isfile() or member.isdir()):
                raise ValueError(f"archive member {name!r} is not a file or directory")
            if name.startswith("/") or ".." in Path(name).parts:
                raise ValueError(f"archive member {name!r} would escape the target")
            member.mode = (member.mode & 0o755) | 0o600
            if hasattr(tarfile, "data_filter"):
                tar.extract(member, into, filter="data")
            else:  # pragma: no cover - Python without PEP 706; checked above
                tar.extract(member, into)


def import_entries(
    store: Store, path: str | Path, progress: Callable[[int], None] | None = None
) -> ImportResult:
    """Store every entry of archive ``path`` in ``store``; existing keys are overwritten."""
    if store.read_only:
        raise ReadOnlyStoreError(f"{store.spec} is open read-only; reopen it writable to import")
    scratch = Path(tempfile.mkdtemp(prefix="stepcache-import-"))
    try:
        _extract(Path(path), scratch)
        if not (scratch / _MANIFEST).is_file():
            raise ValueError(f"it has no {_MANIFEST}")
        manifest: dict[str, Any] = json.loads((scratch / _MANIFEST).read_text())
        if manifest.get("format") != FORMAT:
            raise ValueError(f"archive format {manifest.get('format')!r}, expected {FORMAT}")
        stored = trees = skipped = 0
        entries = scratch / "entries"
        for file in sorted(entries.iterdir()) if entries.is_dir() else []:
            ok, tree = _import_one(store, validate_key(file.name), file.read_bytes(), scratch)
            stored += ok
            trees += ok and tree
            skipped += not ok
            if progress is not None:
                progress(1)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return ImportResult(stored, trees, skipped)


def _import_one(store: Store, key: str, blob: bytes, scratch: Path) -> tuple[bool, bool]:
    """(stored, was a tree) for one entry of the archive."""
    try:
        codec.verify_entry(blob, key, secret=store.secret)
        header = codec.read_header(blob, key=key)
        tree = _tree_of(blob, key, store.secret)
    except (codec.CorruptEntry, ValueError):
        return False, False
    if tree is None:
        return store.write_blob(key, blob, step=header.step), False
    files = scratch / "trees" / key
    keeps_files = bool(getattr(store.backend, "keeps_files", False))
    if not keeps_files and tree.archive is not None:
        return store.write_blob(key, blob, step=header.step), True
    if keeps_files and tree.archive is None:
        if not files.is_dir() or artifacts.check_tree(files, tree.manifest) is not None:
            return False, True
        try:  # the same files and the same signed manifest
            store.backend.put_tree(key, files, move=True)
        except OSError:
            return False, True
        return store.write_blob(key, blob, step=header.step), True
    if tree.archive is not None:  # from a store without files into one with them
        files = artifacts.unpack(tree, scratch / "unpacked" / key)
    elif not files.is_dir():
        return False, True
    info = {k: v for k, v in header.info.items() if k != "kind"}
    try:
        store.put_dir(key, files, info=info, move=True)
    except (OSError, ValueError):
        return False, True
    return True, True
