"""Reads that never destroy where a directory store's filesystem is shared with other machines.

On NFS, SMB, sshfs and other network or FUSE filesystems one machine's view
of a file can lag another's: attribute caches serve stale sizes for a
while, and inode, size and mtime do not identify a version of a file. So a
reader there cannot prove that the damaged file it read is the one now at
the path, and must not remove it: a read that fails verification is read
again from a fresh open to the end of the file, and if that fails too it is
a counted miss and the key is noted for ``prune``, which (like ``verify
--repair``) removes an entry only after taking the file away and checking
that very file. On a local filesystem a damaged entry is removed at once.
"""

from __future__ import annotations

from typing import Any

from stepcache import codec
from stepcache.stores.base import Store
from stepcache.stores.directory.backend import DirectoryBackend

__all__ = ["SharedFsStore"]


class SharedFsStore(Store):
    """A store over a :class:`DirectoryBackend` whose readers never destroy on a shared fs."""

    backend: DirectoryBackend

    @property
    def on_shared_fs(self) -> bool:
        """Whether the store is on a filesystem other machines may serve too (NFS, FUSE...)."""
        return self.backend.on_shared_fs

    def _unverified(self, key: str, blob: bytes, reason: str) -> tuple[bytes, Any] | None:
        if not self.backend.on_shared_fs:  # decided only now: a hit never pays for it
            return super()._unverified(key, blob, reason)
        # A file replaced from another machine can be read torn (sshfs serves a
        # stale cached size for about a second): that is no damage yet.
        try:
            fresh = self.backend.load_fresh(key)
        except (OSError, codec.CorruptEntry) as exc:
            fresh, reason = None, str(exc)
        if fresh is not None:
            try:
                value = codec.unpack_entry(
                    fresh, key, secret=self.secret, allow_pickle=self.codec == "pickle"
                )
            except codec.CorruptEntry as exc:
                reason = str(exc)
            else:
                return fresh, value
        self.discard(key, reason)
        return None

    def discard(self, key: str, reason: str) -> None:
        """Count an unusable entry and log once; remove it only where that is safe.

        On a shared filesystem no reader can tell that the file it found
        damaged is the one at the path now, so the key is noted instead and
        left for the next publish, ``verify --repair`` or ``prune``.
        """
        if self.read_only or not self.backend.on_shared_fs:
            super().discard(key, reason)
            return
        self.counters.add("errors")
        self.say_once(
            "corrupt", "stepcache: ignoring unusable entry %s in %s: %s", key, self.spec, reason
        )
        self.backend.note_damaged(key)

    def _check(self, key: str) -> str | None:
        reason = super()._check(key)
        if reason is None or not self.backend.on_shared_fs:
            return reason
        try:  # a fresh open: the first read may have been torn
            blob = self.backend.load_fresh(key)
        except (OSError, codec.CorruptEntry) as exc:
            return str(exc)
        return None if blob is None else self._check_blob(key, blob)

    def _repair(self, key: str) -> bool:
        if self.backend.on_shared_fs:
            return self.remove_damaged(key)
        return super()._repair(key)

    def remove_damaged(self, key: str) -> bool:
        """Remove ``key``'s entry if it is damaged, judged on the very file taken away.

        The entry is renamed into ``tmp/`` first (:meth:`DirectoryBackend.claim`);
        a good one is put back (every good entry of a key is as good as any other).
        """
        claimed = self.backend.claim(key)
        if claimed is None:
            return False
        try:
            blob = self.backend.read_claimed(claimed)
            bad = blob is None or self._check_blob(key, blob) is not None
        except (OSError, codec.CorruptEntry):
            bad = True
        if not bad:
            self.backend.give_back(claimed, key)
            return False
        self.backend.drop_claimed(claimed, key)
        return True

    def remove_noted_damage(self) -> int:
        """Check the entries readers found damaged; remove those still damaged. How many."""
        noted = self.backend.noted_damage()
        removed = sum(self.remove_damaged(key) for key in noted)
        self.backend.forget_damage(noted)
        return removed
