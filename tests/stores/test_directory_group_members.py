"""Members of one group share a group cache: each can read, write and lock what the others made.

Each test runs two child processes that switch to different unprivileged
users of one group (so the suite must run as root), under the umask 022 that
would otherwise take the group's write access away, in a group directory
reachable by them (the suite's own temp directories are private to root).
"""

from __future__ import annotations

import os
import shutil
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path

import group_workers as g
import pytest
import store_workers as w

from stepcache.stores.directory import DirectoryStore
from stepcache.testing import lock_files

pytestmark = [
    pytest.mark.timeout(60),
    pytest.mark.skipif(os.geteuid() != 0, reason="switching to other users needs root"),
]

HOLDER, OTHER = 65534, 65533  # two members of GROUP
GROUP = 65532  # the cache's group
PRIVATE = 65531  # a group of the first member only


@pytest.fixture(scope="module")
def switching() -> None:
    """Skip when this root may not switch users (a sandbox without CAP_SETUID)."""
    if not w.run_all(g.can_become, [(HOLDER, GROUP)], timeout=30)[0]:
        pytest.skip("this process may not switch to another user (no CAP_SETUID)")


@pytest.fixture
def group_dir(switching: None) -> Iterator[Path]:
    """A setgid directory of GROUP, mode 2770, that the members can reach."""
    base = Path(tempfile.mkdtemp(prefix="stepcache-group-"))
    try:
        if any(not p.stat().st_mode & stat.S_IXOTH for p in base.parents):
            pytest.skip("the temp directory's parents are private; other users cannot reach it")
        os.chown(base, -1, GROUP)
        base.chmod(0o2770)
        yield base
    finally:
        shutil.rmtree(base)


@pytest.mark.parametrize("backend", ["flock", "lease"])
def test_members_of_the_group_lock_each_others_keys(group_dir: Path, backend: str) -> None:
    leases = str(group_dir / "leases")
    holder, other = w.run_all(
        g.lock_as,
        [
            ("holder", HOLDER, GROUP, leases, backend),
            ("other", OTHER, GROUP, leases, backend),
        ],
        timeout=50,
    )
    # The holder's file is the group's: the other member could open it and found it held.
    assert holder == {"held": True, "mode": 0o660, "warnings": []}
    assert other == {"while_held": False, "after": True, "warnings": []}
    assert lock_files(leases) == []
    made = os.stat(leases)
    assert (stat.S_IMODE(made.st_mode), made.st_gid) == (0o2770, GROUP)


def test_members_read_the_entries_and_moved_trees_of_others(group_dir: Path) -> None:
    root = group_dir / "cache"
    DirectoryStore(root, shared=True, secret="team").close()
    builds = group_dir / "builds"  # the writer's own, outside the group
    builds.mkdir(mode=0o700)
    os.chown(builds, HOLDER, PRIVATE)
    writer, reader = w.run_all(
        g.share_as,
        [
            ("writer", HOLDER, PRIVATE, (PRIVATE, GROUP), str(root), str(builds / "tree")),
            ("reader", OTHER, GROUP, (GROUP,), str(root), ""),
        ],
        timeout=50,
    )
    assert reader == {"entry": "from the writer", "tree": b"ELF", "errors": 0}
    assert writer == {"theirs": "from the reader", "errors": 0}
    tree = DirectoryStore(root, shared=True, secret="team").get_dir("02" * 16)
    assert tree is not None
    assert {p.stat().st_gid for p in [tree, *tree.rglob("*")]} == {GROUP}
