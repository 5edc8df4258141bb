"""Descriptors of a store's own top directories (``v2/``, ``tmp/``), opened once and kept.

Every write below a store's root walks from a directory descriptor with
``O_NOFOLLOW`` (:mod:`stepcache.stores._beneath`). Re-opening the root,
``v2/`` and ``tmp/`` for each entry cost six system calls per write; a
:class:`DirFds` kept by the store opens each once. Only the walk below
them (``ab``) is repeated, so a symlink planted there is still refused
on every write.

A kept descriptor outlives its path: if the directory is removed (a cache
deleted under a running process), creating a file through it fails with
``ENOENT``, the writer forgets it and takes the path-based way again,
which re-creates the directory.
"""

from __future__ import annotations

import contextlib
import os
import threading

from stepcache.stores import _fsutil
from stepcache.stores.directory.beneath import common_dir, descend, is_group_dir, open_leaf

__all__ = ["DirFds"]

_MAX_TOPS = 4096  # remembered splits: 257 per store (its fanout and tmp/)


class DirFds:
    """Open directories by path, each with whether it is a group directory.

    >>> import tempfile
    >>> fds = DirFds()
    >>> fd, group = fds.get(tempfile.mkdtemp())
    >>> fds.get(tempfile.gettempdir())[0] != fd, group
    (True, False)
    >>> fds.close()
    """

    def __init__(self) -> None:
        self._open: dict[str, tuple[int, bool]] = {}
        # Forgotten descriptors stay open until close(): another thread may be
        # using one, and a closed number could be reused for another file.
        self._retired: list[int] = []
        self._lock = threading.Lock()
        # (parent, kept) -> (top directory, parent below it): the path work of
        # common_dir, done once per fanout directory instead of once per write.
        self._tops: dict[tuple[str, str], tuple[str, str] | None] = {}

    def get(self, path: str) -> tuple[int, bool]:
        """The fd of existing directory ``path`` (not itself a symlink), and its group bit."""
        kept = self._open.get(path)
        if kept is not None:
            return kept
        fd = open_leaf(path)
        try:
            item = (fd, is_group_dir(os.fstat(fd).st_mode))
        except BaseException:
            os.close(fd)
            raise
        with self._lock:
            kept = self._open.setdefault(path, item)
        if kept is not item:  # another thread opened it meanwhile
            os.close(fd)
        return kept

    def publish(self, parent: str, name: str, data: bytes, tmp_dir: str, durable: bool) -> bool:
        """:func:`~stepcache.stores._fsutil.write_atomic` through kept descriptors.

        ``False``: take the path-based way instead, which creates what is
        missing, re-opens what was removed and raises what is wrong (a
        planted symlink, say); so every failure here falls back to it.
        """
        reached = self._reach(parent, tmp_dir, durable)
        if reached is None:
            return False
        top_dir, dest_fd, tmp_fd, group = reached
        try:
            _fsutil.publish(data, tmp_fd, dest_fd, name, durable, group)
        except FileNotFoundError:  # a directory removed since its descriptor was kept
            self.forget(top_dir, tmp_dir)
            return False
        finally:
            os.close(dest_fd)
        return True

    def rename(self, src: str, dest: str, durable: bool) -> bool:
        """Rename ``src`` (in a kept directory) to ``dest`` below another; ``False``: not done.

        For publishing artifact directories from ``tmp/``. As with
        :meth:`publish`, a failure to reach the directories falls back to
        the path-based way; a failed rename itself (``dest`` exists) raises.
        """
        (src_dir, src_name), (parent, name) = os.path.split(src), os.path.split(dest)
        reached = self._reach(parent, src_dir, durable)
        if reached is None:
            return False
        top_dir, dest_fd, src_fd, _ = reached
        try:
            os.rename(src_name, name, src_dir_fd=src_fd, dst_dir_fd=dest_fd)
            if durable:
                with contextlib.suppress(OSError):  # some filesystems refuse it on directories
                    os.fsync(dest_fd)
        except FileNotFoundError:  # a directory removed since its descriptor was kept
            self.forget(top_dir, src_dir)
            return False
        finally:
            os.close(dest_fd)
        return True

    def _reach(self, parent: str, kept: str, durable: bool) -> tuple[str, int, int, bool] | None:
        """(top directory, new fd of ``parent``, kept fd of ``kept``, its group bit), or None.

        ``parent`` is reached below the kept descriptor of the top directory
        both share; ``None`` where that fails (the caller takes the path-based way).
        """
        try:
            split = self._tops[parent, kept]
        except KeyError:
            split = self._split(parent, kept)
            if len(self._tops) >= _MAX_TOPS:
                self._tops.clear()
            self._tops[parent, kept] = split
        if split is None:
            return None
        top_dir, below = split
        try:
            top_fd, top_group = self.get(top_dir)
            kept_fd, group = self.get(kept)
            dest_fd = descend(top_fd, top_dir, below, create=True, durable=durable, group=top_group)
        except OSError:
            self.forget(top_dir, kept)
            return None
        return top_dir, dest_fd, kept_fd, group

    @staticmethod
    def _split(parent: str, kept: str) -> tuple[str, str] | None:
        """The top directory holding ``parent`` beside ``kept``, and ``parent`` below it."""
        common, rel, _ = common_dir(parent, kept)
        top, _, below = rel.partition(os.sep)
        return (os.path.join(common, top), below) if top else None

    def forget(self, *paths: str) -> None:
        """Open ``paths`` again on next use (their directories may have been removed)."""
        with self._lock:
            for path in paths:
                item = self._open.pop(path, None)
                if item is not None:
                    self._retired.append(item[0])

    def close(self) -> None:
        """Close every descriptor; later calls of :meth:`get` open them again."""
        with self._lock:
            fds = [fd for fd, _ in self._open.values()] + self._retired
            self._open.clear()
            self._retired.clear()
        for fd in fds:
            os.close(fd)
