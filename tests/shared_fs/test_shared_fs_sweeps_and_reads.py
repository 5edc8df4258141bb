"""On two sshfs mounts of one directory (two machines): sweeps and reads destroy nothing.

- Both machines publish trees while sweepers on both mounts prune and sweep
  temp files, one of them a day ahead, one claiming the publisher's host id
  from the other mount: no published tree misses a file, no entry is lost.
- 10,000 reads race re-publishes of the same keys from the other mount: no
  wrong value, and no reader removes an entry (a torn read is not damage).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import shared_workers as w

from stepcache.stores.directory import DirectoryStore
from stepcache.testing import key
from stepcache.testing.sshfs import Machine, SshfsPair

pytestmark = pytest.mark.timeout(300)
WORKERS = str(Path(__file__).with_name("shared_workers.py"))
TREES = 30  # per publisher


def start(machine: Machine, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        machine.command([sys.executable, WORKERS, *args]),
        env=machine.env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def result(proc: subprocess.Popen[str]) -> dict[str, object]:
    out, err = proc.communicate(timeout=240)
    assert proc.returncode == 0, err
    found: dict[str, object] = json.loads(out.strip().splitlines()[-1])
    return found


@pytest.fixture
def roots(sshfs_pair: SshfsPair, request: pytest.FixtureRequest) -> tuple[Path, Path]:
    """A fresh store directory, as seen from each mount, and a clean STOP flag."""
    name = request.node.name[:40]
    a, b = (m / name for m in sshfs_pair.mounts)
    DirectoryStore(a / "cache")
    (a / "STOP").unlink(missing_ok=True)
    return a / "cache", b / "cache"


def test_sweeps_on_both_mounts_with_skewed_clocks_break_no_published_tree(
    roots: tuple[Path, Path],
) -> None:
    root_a, root_b = roots
    a = Machine(root_a.parent, "host-a")
    b = Machine(root_b.parent, "host-b")
    sweepers = [
        start(a, "sweep", str(root_a)),
        start(Machine(root_b.parent, "host-b", clock="+1d"), "sweep", str(root_b)),
        # Host a's id on the other mount, a day ahead: judges a's temp work by pid.
        start(Machine(root_b.parent, "host-a", clock="+1d"), "sweep", str(root_b)),
    ]
    publishers = [
        start(a, "publish", str(root_a), "a", str(TREES)),
        start(b, "publish", str(root_b), "b", str(TREES)),
    ]
    published = [result(p) for p in publishers]
    (root_a.parent / "STOP").touch()
    swept = [result(p) for p in sweepers]
    assert [p["failed"] for p in published] == [0, 0]
    assert all(isinstance(s["rounds"], int) and s["rounds"] > 0 for s in swept)
    checker = DirectoryStore(root_a)
    assert checker.prune().removed == 0  # a last sweep after all writers are done
    trees = {"ok": 0, "missing": 0, "incomplete": 0, "wrong": 0}
    values_wrong = entries_missing = 0
    for publisher in "ab":
        for n in range(TREES):
            k = w.tree_key(publisher, n)
            trees[w.check_tree(checker.get_dir(k), k)] += 1
            value = checker.get(k[::-1])
            entries_missing += value is None
            values_wrong += value is not None and value != {"key": k, "n": n}
    assert trees == {"ok": 2 * TREES, "missing": 0, "incomplete": 0, "wrong": 0}
    assert (entries_missing, values_wrong) == (0, 0)
    print("publishers", published, "sweepers", swept)


def test_reads_racing_republishes_from_the_other_mount_remove_nothing(
    roots: tuple[Path, Path],
) -> None:
    root_a, root_b = roots
    keys = [key(n) for n in range(8)]
    seed = DirectoryStore(root_b)
    for k in keys:
        seed.set(k, w.value_of(k, 0))
    writer = start(Machine(root_b.parent, "host-b"), "republish", str(root_b), *keys)
    reader = start(Machine(root_a.parent, "host-a"), "read", str(root_a), "10000", *keys)
    read = result(reader)
    (root_a.parent / "STOP").touch()
    written = result(writer)
    assert read["shared"] is True
    assert read["wrong"] == 0
    assert read["removals"] == 0
    assert read["hits"] + read["misses"] == 10_000  # type: ignore[operator]
    assert read["errors"] == read["misses"]  # every miss was a read that did not verify
    assert isinstance(written["generations"], int)
    assert written["generations"] > 1
    print("reader", read, "writer", written)
    check = DirectoryStore(root_a)
    assert sorted(check) == sorted(keys)  # every good entry is still there
    assert all(check.get(k)["key"] == k for k in keys)
