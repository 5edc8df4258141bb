"""Digests of the ``.py`` files of a source tree, in a millisecond or two when nothing changed.

A memo file per tree records, like git's index, each file's ``(size,
mtime_ns, ctime_ns, inode)`` and each directory's ``(mtime_ns, ctime_ns)``,
packed in walk order, with the tree's listing (each file's path and digest,
kept encoded until someone asks for it: keys need only its digest) and the
digest of that listing. A fresh process then:

* stats every recorded directory: adding, removing or renaming an entry
  changes its directory's mtime and ctime (which no tool can set back), so
  when none changed the recorded file list is still the tree's, and no
  directory is listed again;
* stats every recorded file: an edit in place changes no directory, but it
  changes the file's mtime and ctime (ctime cannot be set back by tools that
  restore mtimes, and a file renamed over another has another inode);
* packs what it saw the way the memo did and compares the two byte strings;
  when they are equal it returns the recorded listing and digest without
  reading a file or hashing anything.

Anything else (a changed directory, a changed or vanished file) falls back
to walking the tree, hashing what is new and rewriting the memo. Entries
are trusted only when older than :data:`RACY_NS` at the time they are
recorded: a file written in the same clock tick as the memo, or on a
filesystem with coarse timestamps, could change again without its stamps
changing ("racily clean" in git's terms), so such a file or directory is
recorded with stamps no file can have, and checked in full the next time.

The memo file is :data:`_MAGIC` (which names its format), the XXH3-64 of the
rest, and the rest: a head in ``marshal`` (root, digest, directories and
their files' names: strings, bytes, booleans and tuples), the packed stamps
and the listing in ``marshal``. A file of another format, truncated or
damaged fails the magic or the checksum and is ignored (the tree is walked
and the memo rewritten), so ``marshal`` only ever reads bytes this module
wrote. Loading it decodes only the head; the listing is decoded from the
bytes read when it is first asked for.
"""

from __future__ import annotations

import json
import marshal
import os
import struct
import time
from collections.abc import Callable
from functools import partial

import xxhash

__all__ = ["RACY_NS", "tree_digests"]

RACY_NS = 2_000_000_000  # stamps this recent may be shared by a second change
_MAGIC = b"stepcache code memo 3\n"
_DIR = struct.Struct("=qq")  # a directory's mtime_ns, ctime_ns
_FILE = struct.Struct("=qqqQ")  # a file's size, mtime_ns, ctime_ns, inode
# Stamps no directory or file can have: recorded for racily clean ones.
_UNTRUSTED_DIR = _DIR.pack(0, -1)
_UNTRUSTED_FILE = _FILE.pack(-1, 0, 0, 0)
_LEN = struct.Struct("=I")  # length of the memo file's marshalled head

Listing = tuple[tuple[str, str], ...]
# (directory relative to the root's parent, whether its stamps are recorded,
# its files' names as bytes)
Dirs = tuple[tuple[str, bool, tuple[bytes, ...]], ...]
# (root, digest of the listing, directories, packed stamps, marshalled listing)
Memo = tuple[str, str, Dirs, bytes, memoryview]

# root -> memo, for a second call in the same process.
_memos: dict[str, Memo] = {}


def tree_digests(root: str, memo_dir: str | None) -> tuple[Callable[[], Listing], str]:
    """``(path, digest)`` of each ``.py`` file of ``root`` (a directory or a file), and a digest.

    The listing comes as a function that decodes it. Paths are relative to
    the parent of ``root`` with ``/`` separators, sorted; the digest is
    XXH3-128 of their JSON. ``memo_dir`` holds the memo file across
    processes (``None``: in-process only).
    """
    name = f"code-{xxhash.xxh3_64_hexdigest(root.encode())}.memo"
    memo = _memos.get(root)
    if memo is None:
        memo = _load(memo_dir, name, root)
    base = root[: len(os.path.dirname(root)) + 1]
    if memo is not None and _unchanged(base, memo):
        _memos[root] = memo
        return partial(marshal.loads, memo[4]), memo[1]
    fresh = _rebuild(root, base, memo)
    _memos[root] = fresh
    if memo_dir is not None and fresh != memo:
        _save(memo_dir, name, fresh)
    return partial(marshal.loads, fresh[4]), fresh[1]


def _load(memo_dir: str | None, name: str, root: str) -> Memo | None:
    if memo_dir is None:
        return None
    try:
        fd = os.open(os.path.join(memo_dir, name), os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
    except OSError:
        return None
    try:
        data = os.read(fd, os.fstat(fd).st_size)
    except OSError:
        return None
    finally:
        os.close(fd)
    return _decode(data, root)


def _encode(memo: Memo) -> bytes:
    """The memo file: magic, checksum, then the marshalled head, the stamps and the listing."""
    root, digest, dirs, stamps, listing = memo
    head = marshal.dumps((root, digest, dirs, len(stamps)), 4)
    rest = b"".join((_LEN.pack(len(head)), head, stamps, listing))
    return _MAGIC + xxhash.xxh3_64_digest(rest) + rest


def _decode(data: bytes, root: str) -> Memo | None:
    """The memo in ``data``, or None if it is not a memo of ``root`` in this format.

    The listing stays a view of ``data``, decoded only when asked for.
    """
    start = len(_MAGIC) + 8
    view = memoryview(data)
    checksum = data[start - 8 : start]
    if not data.startswith(_MAGIC) or xxhash.xxh3_64_digest(view[start:]) != checksum:
        return None  # another format, or damaged
    try:
        (size,) = _LEN.unpack_from(data, start)
        at = start + _LEN.size + size
        recorded, digest, dirs, length = marshal.loads(view[start + _LEN.size : at])
    except (EOFError, ValueError, TypeError, struct.error):
        return None
    ok = (
        recorded == root
        and isinstance(digest, str)
        and isinstance(dirs, tuple)
        and isinstance(length, int)
    )
    if not ok:
        return None  # a hash collision of two roots
    return (root, digest, dirs, data[at : at + length], view[at + length :])


def _save(memo_dir: str, name: str, memo: Memo) -> None:
    from stepcache.stores import _fsutil

    try:
        os.makedirs(memo_dir, mode=0o700, exist_ok=True)
        _fsutil.write_atomic(os.path.join(memo_dir, name), _encode(memo), memo_dir)
    except OSError:
        pass  # a memo that cannot be written only costs time in the next process


_DIR_FLAGS = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | getattr(os, "O_CLOEXEC", 0)


def _unchanged(base: str, memo: Memo) -> bool:
    """Whether every recorded directory and file still has its recorded stamps.

    Files are stat'ed relative to their directory's descriptor: the kernel
    resolves one name per file instead of the whole path. What is seen is
    packed as the memo packed it and compared once, at the end.
    """
    stat, pack_dir, pack_file = os.stat, _DIR.pack, _FILE.pack
    seen = bytearray()
    try:
        for rel, checked, names in memo[2]:
            fd = os.open(base + rel, _DIR_FLAGS)
            try:
                if checked:
                    st = os.fstat(fd)
                    seen += pack_dir(st.st_mtime_ns, st.st_ctime_ns)
                for name in names:
                    st = stat(name, dir_fd=fd)
                    seen += pack_file(st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)
            finally:
                os.close(fd)
    except (OSError, ValueError, TypeError, struct.error):  # vanished, or stamps out of range
        return False
    return seen == memo[3]


Found = list[tuple[str, "os.stat_result | None", list[tuple[str, os.stat_result]]]]


def _walk(root: str) -> Found:
    """(directory, its stat, [(file name, stat)]) for each directory of the tree.

    Each directory is stat'ed before it is listed: an entry added while the
    listing runs leaves it with newer stamps than the recorded ones. A root
    that is a file is recorded in its parent, whose stamps are not checked.
    """
    st = os.stat(root)
    if not os.path.isdir(root):
        return [(os.path.dirname(root), None, [(os.path.basename(root), st)])]
    found: Found = []
    stack = [(root, st)]
    while stack:
        path, dir_st = stack.pop()
        files: list[tuple[str, os.stat_result]] = []
        found.append((path, dir_st, files))
        with os.scandir(path) as it:
            for entry in it:
                name = entry.name
                if name.endswith(".py"):
                    files.append((name, entry.stat()))
                elif (
                    name != "__pycache__"
                    and not name.startswith(".")
                    and entry.is_dir(follow_symlinks=False)
                ):
                    stack.append((entry.path, entry.stat()))
    return found


def _known(memo: Memo | None) -> dict[str, tuple[bytes, str]]:
    """path -> (packed stamps, digest) of each file a memo records."""
    if memo is None:
        return {}
    _, _, dirs, stamps, listing = memo
    digests = dict(marshal.loads(listing))
    out = {}
    at = 0
    for rel, checked, names in dirs:
        at += _DIR.size if checked else 0
        for name in names:
            path = f"{rel}/{os.fsdecode(name)}" if rel else os.fsdecode(name)
            out[path] = (stamps[at : at + _FILE.size], digests[path])
            at += _FILE.size
    return out


def _stamps(st: os.stat_result, trusted_before: int, is_dir: bool) -> bytes:
    """``st`` packed as :func:`_unchanged` packs it, or untrusted stamps if too recent to trust."""
    if max(st.st_mtime_ns, st.st_ctime_ns) < trusted_before:
        try:
            if is_dir:
                return _DIR.pack(st.st_mtime_ns, st.st_ctime_ns)
            return _FILE.pack(st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)
        except struct.error:
            pass  # a date past 2262: never served from the memo, always checked
    return _UNTRUSTED_DIR if is_dir else _UNTRUSTED_FILE


def _rebuild(root: str, base: str, old: Memo | None) -> Memo:
    """Walk ``root``, hash what the old memo cannot vouch for, and return the new memo."""
    try:
        known = _known(old)
    except (KeyError, EOFError, ValueError, TypeError):
        known = {}  # a memo that does not add up vouches for nothing
    trusted_before = time.time_ns() - RACY_NS
    dirs = []
    stamps = bytearray()
    listing = []
    for path, dir_st, found in sorted(_walk(root), key=lambda d: d[0]):
        rel_dir = path[len(base) :].replace(os.sep, "/")
        if dir_st is not None:
            stamps += _stamps(dir_st, trusted_before, True)
        names = []
        for name, st in sorted(found, key=lambda f: f[0]):
            rel = f"{rel_dir}/{name}" if rel_dir else name
            packed = _stamps(st, trusted_before, False)
            prev = known.get(rel)
            if prev is not None and prev[0] == packed and packed != _UNTRUSTED_FILE:
                digest = prev[1]
            else:
                with open(os.path.join(path, name), "rb") as fh:
                    digest = xxhash.xxh3_128_hexdigest(fh.read())
            stamps += packed
            names.append(os.fsencode(name))
            listing.append((rel, digest))
        dirs.append((rel_dir, dir_st is not None, tuple(names)))
    listing.sort()
    digest = xxhash.xxh3_128_hexdigest(json.dumps(listing).encode())
    encoded = marshal.dumps(tuple(listing), 4)
    return (root, digest, tuple(dirs), bytes(stamps), memoryview(encoded))
