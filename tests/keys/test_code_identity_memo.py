"""The code identity memo never misses an edit: each step runs in a fresh process.

The memo serves an unchanged tree without listing a directory or reading a
file; these tests check that every kind of change still reaches the digest:
edits in place (same size, mtime set back), edits in the racy window,
renames, a file renamed over another or replaced by a copy with its size and
mtime, deletions, added files and directories, dates a 64-bit nanosecond
count cannot hold, and that a revert gives the old digest back; and that a
damaged, truncated or foreign memo file is ignored and rewritten.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import pytest

from stepcache.testing.processes import run_python

# Prints the identity of a package, and how often the tree was walked again
# (0: served from the memo). argv: source root, racy window in ns, package.
CHILD = """
import json, sys
sys.path.insert(0, sys.argv[1])
import stepcache._srctree as srctree
srctree.RACY_NS = int(sys.argv[2])
walks = []
rebuild = srctree._rebuild
def counting(*args):
    walks.append(1)
    return rebuild(*args)
srctree._rebuild = counting
from stepcache.identity import code_identity
ident = code_identity(sys.argv[3])
print(json.dumps({"digest": ident.digest, "files": dict(ident.files), "walks": len(walks)}))
"""

HOUR_AGO = time.time() - 3600


def _age(*paths: Path) -> None:
    for path in paths:
        os.utime(path, (HOUR_AGO, HOUR_AGO))


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    pkg = tmp_path / "src" / "tree_pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("A = 1\n")
    (pkg / "b.py").write_text("B = 2\n")
    (pkg / "sub" / "c.py").write_text("C = 3\n")
    _age(*pkg.rglob("*.py"), pkg / "sub", pkg)
    return pkg


def identity(tree: Path, racy_ns: int = 0) -> dict[str, Any]:
    """Identity of the package at ``tree`` in a fresh process; racy_ns=0 trusts every stamp."""
    env = {**os.environ, "STEPCACHE_MEMO_DIR": str(tree.parent.parent / "memo")}
    proc = run_python(CHILD, str(tree.parent), str(racy_ns), tree.name, env=env)
    out: dict[str, Any] = json.loads(proc.stdout)
    return out


def test_an_unchanged_tree_is_served_from_the_memo(tree: Path) -> None:
    first = identity(tree)
    assert first["walks"] == 1
    assert sorted(first["files"]) == [
        "tree_pkg/__init__.py",
        "tree_pkg/a.py",
        "tree_pkg/b.py",
        "tree_pkg/sub/c.py",
    ]
    again = identity(tree)
    assert again == {**first, "walks": 0}


def test_an_edit_in_place_with_size_and_mtime_kept_is_seen(tree: Path) -> None:
    first = identity(tree)
    target = tree / "sub" / "c.py"
    stamp = target.stat().st_mtime_ns
    target.write_text("C = 4\n")  # same size, same directory entries
    os.utime(target, ns=(stamp, stamp))  # and the old mtime: only ctime tells
    edited = identity(tree)
    assert edited["digest"] != first["digest"]
    assert edited["files"]["tree_pkg/sub/c.py"] != first["files"]["tree_pkg/sub/c.py"]
    assert edited["walks"] == 1


def test_an_edit_in_the_racy_window_is_seen(tree: Path) -> None:
    # Written and identified within the window: stamps are not trusted, so a
    # second edit of the same size with the same mtime is still read.
    target = tree / "a.py"
    target.write_text("A = 5\n")
    stamp = target.stat().st_mtime_ns
    first = identity(tree, racy_ns=2_000_000_000)
    target.write_text("A = 6\n")
    os.utime(target, ns=(stamp, stamp))
    second = identity(tree, racy_ns=2_000_000_000)
    assert first["files"]["tree_pkg/a.py"] != second["files"]["tree_pkg/a.py"]
    assert second["digest"] != first["digest"]


def test_renames_are_seen(tree: Path) -> None:
    first = identity(tree)
    (tree / "a.py").rename(tree / "z.py")
    renamed = identity(tree)
    assert "tree_pkg/a.py" not in renamed["files"]
    assert renamed["files"]["tree_pkg/z.py"] == first["files"]["tree_pkg/a.py"]
    assert renamed["digest"] != first["digest"]


def test_a_file_renamed_over_another_with_the_same_stamps_is_seen(tree: Path) -> None:
    a, b = tree / "a.py", tree / "b.py"
    stamp = a.stat().st_mtime_ns
    os.utime(b, ns=(stamp, stamp))  # same size and mtime as a.py
    _age(tree)
    first = identity(tree)
    os.replace(b, a)
    replaced = identity(tree)
    assert replaced["files"]["tree_pkg/a.py"] == first["files"]["tree_pkg/b.py"]
    assert "tree_pkg/b.py" not in replaced["files"]


def test_deleted_files_are_seen(tree: Path) -> None:
    first = identity(tree)
    (tree / "sub" / "c.py").unlink()
    _age(tree / "sub")  # even with the directory's mtime set back
    deleted = identity(tree)
    assert "tree_pkg/sub/c.py" not in deleted["files"]
    assert deleted["digest"] != first["digest"]


def test_added_files_and_directories_are_seen(tree: Path) -> None:
    first = identity(tree)
    (tree / "sub" / "d.py").write_text("D = 1\n")
    added = identity(tree)
    assert added["files"]["tree_pkg/sub/d.py"]
    (tree / "sub" / "deeper").mkdir()
    (tree / "sub" / "deeper" / "e.py").write_text("E = 1\n")
    deeper = identity(tree)
    assert "tree_pkg/sub/deeper/e.py" in deeper["files"]
    assert len({first["digest"], added["digest"], deeper["digest"]}) == 3


def test_a_revert_gives_the_old_digest_back(tree: Path) -> None:
    first = identity(tree)
    target = tree / "b.py"
    target.write_text("B = 22\n")
    assert identity(tree)["digest"] != first["digest"]
    target.write_text("B = 2\n")
    assert identity(tree)["digest"] == first["digest"]


def test_a_file_added_behind_a_restored_directory_mtime_is_seen(tree: Path) -> None:
    first = identity(tree)
    (tree / "f.py").write_text("F = 1\n")
    _age(tree)  # the directory's mtime set back; its ctime cannot be
    added = identity(tree)
    assert "tree_pkg/f.py" in added["files"]
    assert added["digest"] != first["digest"]


def test_a_file_replaced_by_a_copy_with_its_size_and_mtime_is_seen(tree: Path) -> None:
    first = identity(tree)
    target = tree / "a.py"
    stamp = target.stat().st_mtime_ns
    copy = tree.parent / "a.py.new"
    copy.write_text("A = 9\n")  # same size, other contents
    os.utime(copy, ns=(stamp, stamp))
    os.replace(copy, target)
    _age(tree)  # the directory's mtime set back: its ctime and the file's inode tell
    replaced = identity(tree)
    assert replaced["files"]["tree_pkg/a.py"] != first["files"]["tree_pkg/a.py"]
    assert replaced["digest"] != first["digest"]


def test_dates_past_what_64_bit_nanoseconds_hold_are_checked_every_time(tree: Path) -> None:
    target = tree / "b.py"
    far = 10_500_000_000 * 10**9  # the year 2302; 2**63 ns runs out in 2262
    os.utime(target, ns=(far, far))
    if target.stat().st_mtime_ns != far:
        pytest.skip("the filesystem cannot store that date")
    first = identity(tree)
    assert identity(tree) == {**first, "walks": 1}  # such stamps are never trusted
    target.write_text("B = 3\n")
    os.utime(target, ns=(far, far))
    edited = identity(tree)
    assert edited["files"]["tree_pkg/b.py"] != first["files"]["tree_pkg/b.py"]


def _memo_file(tree: Path) -> Path:
    (memo,) = (tree.parent.parent / "memo").glob("code-*.memo")
    return memo


def _foreign_memo(tree: Path) -> bytes:
    """The memo of a package beside ``tree``: all its stamps still hold."""
    other = tree.parent / "other_pkg"
    other.mkdir()
    (other / "__init__.py").write_text("OTHER = 1\n")
    _age(other / "__init__.py", other, tree.parent)
    before = set((tree.parent.parent / "memo").glob("code-*.memo"))
    identity(other)
    (memo,) = set((tree.parent.parent / "memo").glob("code-*.memo")) - before
    return memo.read_bytes()


@pytest.mark.parametrize(
    "damage", ["garbage", "empty", "truncated", "one bit", "last byte", "json", "other root"]
)
def test_a_damaged_or_foreign_memo_is_ignored_and_rewritten(tree: Path, damage: str) -> None:
    first = identity(tree)
    memo = _memo_file(tree)
    data = memo.read_bytes()
    middle = len(data) // 2
    replacement = {
        "garbage": bytes(range(256)) * 8,
        "empty": b"",
        "truncated": data[:middle],
        "one bit": data[:middle] + bytes([data[middle] ^ 1]) + data[middle + 1 :],
        "last byte": data[:-1] + bytes([data[-1] ^ 0x80]),
        "json": json.dumps({"format": 2, "root": str(tree), "dirs": [], "digest": ""}).encode(),
        "other root": _foreign_memo(tree) if damage == "other root" else b"",
    }[damage]
    memo.write_bytes(replacement)
    again = identity(tree)
    assert again == {**first, "walks": 1}  # the tree was walked: same identity
    assert identity(tree) == {**first, "walks": 0}  # from the rewritten memo
