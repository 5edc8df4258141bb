"""The shared-filesystem tests run on two sshfs mounts of one directory (two "machines")."""

from __future__ import annotations

from stepcache.testing.sshfs import sshfs_pair_fixture

# One sshd and two mounts per test worker, started on first use.
sshfs_pair = sshfs_pair_fixture()
