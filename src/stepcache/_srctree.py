"""Digests of the ``.py`` files of a source tree, in about a millisecond when nothing changed.

A memo file per tree records, like git's index, each file's ``(size,
mtime_ns, ctime_ns, inode)`` with its digest, grouped by directory with the
directory's ``mtime_ns`` and ``ctime_ns``, and the digest of the whole
listing. A fresh process then:

* stats every recorded directory: adding, removing or renaming an entry
  changes its directory's mtime and ctime (which no tool can set back), so
  when none changed the recorded file list is still the tree's, and no
  directory is listed again;
* stats every recorded file: an edit in place changes no directory, but it
  changes the file's mtime and ctime (ctime cannot be set back by tools that
  restore mtimes, and a file renamed over another has another inode);
* returns the recorded listing and digest when all of these match, without
  reading a file or hashing anything.

Anything else (a changed directory, a changed or vanished file) falls back
to walking the tree, hashing what is new and rewriting the memo. Entries
are trusted only when older than :data:`RACY_NS` at the time they are
recorded: a file written in the same clock tick as the memo, or on a
filesystem with coarse timestamps, could change again without its stamps
changing ("racily clean" in git's terms), so such a file or directory is
recorded as untrusted and checked in full the next time.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

import xxhash

__all__ = ["RACY_NS", "tree_digests"]

RACY_NS = 2_000_000_000  # stamps this recent may be shared by a second change
_FORMAT = 2
_UNTRUSTED = -1  # a recorded size or mtime that never matches
# root -> memo, for a second call in the same process.
_memos: dict[str, dict[str, Any]] = {}

Listing = list[tuple[str, str]]


def tree_digests(root: str, memo_dir: str | None) -> tuple[Listing, str]:
    """``[(path, digest)]`` of the ``.py`` files of ``root`` (a directory or a file), and a digest.

    Paths are relative to the parent of ``root`` with ``/`` separators,
    sorted; the digest is XXH3-128 of their JSON. ``memo_dir`` holds the memo
    file across processes (``None``: in-process only).
    """
    name = f"code-{xxhash.xxh3_64_hexdigest(root.encode())}.json"
    memo = _memos.get(root)
    if memo is None:
        memo = _load(memo_dir, name, root)
    base = root[: len(os.path.dirname(root)) + 1]
    if memo is not None and _unchanged(base, memo):
        _memos[root] = memo
        return _listing(memo), memo["digest"]
    fresh = _rebuild(root, base, memo)
    _memos[root] = fresh
    if memo_dir is not None and fresh != memo:
        _save(memo_dir, name, fresh)
    return _listing(fresh), fresh["digest"]


def _load(memo_dir: str | None, name: str, root: str) -> dict[str, Any] | None:
    if memo_dir is None:
        return None
    try:
        with open(os.path.join(memo_dir, name), "rb") as fh:
            memo = json.loads(fh.read())
    except (OSError, ValueError):
        return None
    ok = (
        isinstance(memo, dict)
        and memo.get("format") == _FORMAT
        and memo.get("root") == root
        and isinstance(memo.get("digest"), str)
    )
    return memo if ok else None  # another format, or a hash collision of two roots


def _save(memo_dir: str, name: str, memo: dict[str, Any]) -> None:
    from stepcache.stores import _fsutil

    try:
        os.makedirs(memo_dir, mode=0o700, exist_ok=True)
        data = json.dumps(memo, separators=(",", ":")).encode()
        _fsutil.write_atomic(os.path.join(memo_dir, name), data, memo_dir)
    except OSError:
        pass  # a memo that cannot be written only costs time in the next process


_DIR_FLAGS = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | getattr(os, "O_CLOEXEC", 0)


def _unchanged(base: str, memo: dict[str, Any]) -> bool:
    """Whether every recorded directory and file still has its recorded stamps.

    Files are stat'ed relative to their directory's descriptor: the kernel
    resolves one name per file instead of the whole path.
    """
    stat = os.stat
    try:
        for rel, dir_stamps, entries in memo["dirs"]:
            fd = os.open(base + rel, _DIR_FLAGS)
            try:
                if dir_stamps is not None:
                    st = os.fstat(fd)
                    if [st.st_mtime_ns, st.st_ctime_ns] != dir_stamps:
                        return False
                for name, size, mtime, ctime, ino, _ in entries:
                    st = stat(name, dir_fd=fd)
                    if (
                        st.st_mtime_ns != mtime
                        or st.st_size != size
                        or st.st_ctime_ns != ctime
                        or st.st_ino != ino
                    ):
                        return False
            finally:
                os.close(fd)
    except (OSError, ValueError, TypeError):  # vanished, or a damaged memo
        return False
    return True


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


def _rebuild(root: str, base: str, old: dict[str, Any] | None) -> dict[str, Any]:
    """Walk ``root``, hash what the old memo cannot vouch for, and return the new memo."""
    known = {}
    if old is not None:
        known = {f"{rel}/{e[0]}": e for rel, _, entries in old["dirs"] for e in entries}
    trusted_before = time.time_ns() - RACY_NS
    dirs = []
    for path, dir_st, found in sorted(_walk(root), key=lambda d: d[0]):
        rel_dir = path[len(base) :].replace(os.sep, "/")
        entries = []
        for name, st in sorted(found, key=lambda f: f[0]):
            stamps = [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino]
            prev = known.get(f"{rel_dir}/{name}")
            if prev is not None and prev[1:5] == stamps:
                digest = prev[5]
            else:
                with open(os.path.join(path, name), "rb") as fh:
                    digest = xxhash.xxh3_128_hexdigest(fh.read())
            if max(st.st_mtime_ns, st.st_ctime_ns) >= trusted_before:
                stamps[0] = _UNTRUSTED  # racily clean: check its contents next time
            entries.append([name, *stamps, digest])
        dir_stamps = None
        if dir_st is not None:
            dir_stamps = [dir_st.st_mtime_ns, dir_st.st_ctime_ns]
            if max(dir_stamps) >= trusted_before:
                dir_stamps[0] = _UNTRUSTED  # racily clean: list it again next time
        dirs.append([rel_dir, dir_stamps, entries])
    memo = {"format": _FORMAT, "root": root, "dirs": dirs, "digest": ""}
    memo["digest"] = xxhash.xxh3_128_hexdigest(json.dumps(_listing(memo)).encode())
    return memo


def _listing(memo: dict[str, Any]) -> Listing:
    """``[(path, digest)]`` sorted by path, from a memo."""
    out = [
        (f"{rel}/{e[0]}" if rel else e[0], e[5])
        for rel, _, entries in memo["dirs"]
        for e in entries
    ]
    out.sort()
    return out
