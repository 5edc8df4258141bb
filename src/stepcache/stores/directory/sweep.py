"""Sweeping leftovers without trusting clocks: dead writers' temp work, orphan trees.

A temp file or tree of a process of this host is removed once that process
has exited (pid *and* start time, :mod:`stepcache.stores._owner`), and kept
while it runs. Anything else -- another host's temp work, a name without an
owner, an artifact directory whose entry never came -- is removed only after
it was seen *unchanged* for ``stale_after`` seconds.

"Unchanged for so long" is measured without any process's clock. Another
host's file times say nothing about our clock (a sweeper a day ahead would
find every live tree a day old), and a file's mtime can be set from a
writer's skewed clock (``utime``). So each host keeps a record,
``tmp/seen.<host>``, of what it saw at each sweep: a signature of every
candidate (mtime, ctime, size, links) and when it was first seen with that
signature, in the *filesystem's* time: the mtime the record file itself got
when it was written. A candidate is abandoned when its signature in this
sweep equals the recorded one and the record written since its first
sighting is ``stale_after`` newer than that sighting. Removal thus takes
at least ``stale_after`` plus one sweep, and any change restarts the count.

Attribute caches of network filesystems (about 20 s on sshfs) can hide a
change for that long, so ``stale_after`` should stay far above it; the
default is an hour.

>>> import pathlib, tempfile
>>> tmp = pathlib.Path(tempfile.mkdtemp())
>>> _ = (tmp / "someone-elses.tmp").write_bytes(b"...")
>>> sweep = Observer(str(tmp), stale_after=0)
>>> sweep_temp(str(tmp), sweep), sweep_temp(str(tmp), sweep), sorted(p.name for p in tmp.iterdir())
(0, 1, [])
"""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Mapping
from typing import Final

from stepcache.stores import _fsutil
from stepcache.stores._owner import host, owner_alive, parse_owner
from stepcache.stores.directory.beneath import open_leaf, rmtree_at

__all__ = ["STALE_AFTER", "Observer", "signature", "sweep_temp"]

#: seconds another host's temp work must stay unchanged before a sweep removes it
STALE_AFTER: Final = 3600.0
RECORD: Final = "seen."  # + host identity: a name no owner pattern matches
_READ: Final = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)

Signature = list[int]


def signature(st: os.stat_result) -> Signature:
    """What must stay the same for a file or directory to count as untouched.

    ctime is set by the filesystem itself on every change, ``utime`` included.
    """
    return [st.st_mtime_ns, st.st_ctime_ns, st.st_size, st.st_nlink]


class Observer:
    """This host's record of candidates for removal, kept in ``tmp_dir`` (see the module doc)."""

    def __init__(self, tmp_dir: str, *, stale_after: float = STALE_AFTER) -> None:
        if not stale_after >= 0:
            raise ValueError(f"stale_after must be >= 0, not {stale_after!r}")
        self.tmp_dir = tmp_dir
        self.stale_after = stale_after

    @property
    def name(self) -> str:
        """The record's file name in ``tmp_dir``: one per host (found at first use)."""
        return RECORD + host()

    def _read(self, name: str | None = None) -> tuple[dict[str, list[object]], float]:
        """The record's entries and its mtime (filesystem time of the last sweep)."""
        try:
            fd = os.open(os.path.join(self.tmp_dir, name or self.name), _READ)
        except OSError:
            return {}, 0.0
        with open(fd, "rb") as f:
            try:
                mtime = os.fstat(fd).st_mtime
                import json  # here: a process that never sweeps never needs it

                seen = json.loads(f.read())
                if isinstance(seen, dict):
                    return seen, mtime
            except (OSError, ValueError):
                pass  # torn or foreign: start observing afresh, which only delays removal
        return {}, 0.0

    def abandoned(
        self, scope: str, candidates: Mapping[str, Signature], *, dry_run: bool = False
    ) -> set[str]:
        """The ``candidates`` unchanged for ``stale_after``; records the others.

        ``candidates`` maps paths (relative to the store root, starting with
        ``scope``) to their signature now. Recorded paths in ``scope`` that are
        no candidates any more are forgotten; the rest of the record is kept.
        """
        seen, last = self._read()
        if not candidates and not any(k.startswith(scope) for k in seen):
            return set()
        out: set[str] = set()
        keep = {k: v for k, v in seen.items() if not k.startswith(scope)}
        for path, sig in candidates.items():
            old = seen.get(path)
            first: object = None
            if isinstance(old, list) and len(old) == 2 and old[0] == sig:
                # Pending since the last sweep: first seen no later than that record's time.
                first = last if old[1] is None else old[1]
                if isinstance(first, float) and last - first >= self.stale_after:
                    out.add(path)
                    continue
            keep[path] = [sig, first]
        if not dry_run:
            self._write(keep)
        return out

    def note(self, path: str) -> None:
        """Record ``path`` (such as ``damaged/<key>``) for a later :meth:`noted`; best effort."""
        seen, _ = self._read()
        if path not in seen:
            seen[path] = [[], None]
            self._write(seen)

    def noted(self, prefix: str) -> set[str]:
        """The paths under ``prefix`` that any host's record has noted."""
        try:
            names = [n for n in os.listdir(self.tmp_dir) if n.startswith(RECORD)]
        except OSError:
            return set()
        return {p for n in names for p in self._read(n)[0] if p.startswith(prefix)}

    def forget(self, paths: set[str]) -> None:
        """Drop ``paths`` from this host's record."""
        seen, _ = self._read()
        if paths & seen.keys():
            self._write({k: v for k, v in seen.items() if k not in paths})

    def _write(self, seen: dict[str, list[object]]) -> None:
        path = os.path.join(self.tmp_dir, self.name)
        # Best effort: a record that cannot be written only delays removals.
        with contextlib.suppress(OSError):
            if seen:
                import json

                data = json.dumps(seen, separators=(",", ":")).encode()
                _fsutil.write_atomic(path, data, self.tmp_dir)
            else:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(path)


def sweep_temp(tmp_dir: str, observer: Observer, *, dry_run: bool = False) -> int:
    """Remove temp files and trees whose writer is gone; return how many (would) go.

    This host's: when their process exited. Others': when ``observer`` has
    seen them unchanged for its ``stale_after``.
    """
    try:
        # By fd: a temp dir replaced by a symlink must not get a sweep of its target.
        fd = open_leaf(tmp_dir)
    except FileNotFoundError:
        return 0
    removed = 0
    try:
        with os.scandir(fd) as found:
            entries = list(found)
        candidates: dict[str, Signature] = {}
        dead: list[os.DirEntry[str]] = []
        for entry in entries:
            if entry.name == observer.name:
                continue
            owner = parse_owner(entry.name)
            alive = None if owner is None else owner_alive(owner)
            if alive is False:
                dead.append(entry)
            elif alive is None:
                with contextlib.suppress(FileNotFoundError):
                    st = entry.stat(follow_symlinks=False)
                    candidates[f"tmp/{entry.name}"] = signature(st)
        gone = observer.abandoned("tmp/", candidates, dry_run=dry_run)
        dead += [e for e in entries if f"tmp/{e.name}" in gone]
        for entry in dead:
            if not dry_run:
                _remove(fd, entry, tmp_dir)
            removed += 1
    finally:
        os.close(fd)
    return removed


def _remove(dir_fd: int, entry: os.DirEntry[str], tmp_dir: str) -> None:
    # Failing here (another user's file in a group cache) must not fail the write
    # whose clean-up this is.
    with contextlib.suppress(OSError):
        st = os.stat(entry.name, dir_fd=dir_fd, follow_symlinks=False)
        if stat.S_ISDIR(st.st_mode):
            rmtree_at(dir_fd, entry.name, os.path.join(tmp_dir, entry.name))
        else:
            os.unlink(entry.name, dir_fd=dir_fd)
