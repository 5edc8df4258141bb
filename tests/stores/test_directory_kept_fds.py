"""A DirectoryStore keeps descriptors of ``v2/`` and ``tmp/``: fewer opens, same safety.

After the first write, a write opens its fanout directory and its temp
file only; a store removed under its writer is re-created, and a symlink
planted below the root, or a ``tmp/`` swapped for one, still never
receives a write.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

import stepcache as sc
from stepcache.stores.directory.eviction import entry_rel
from stepcache.testing.processes import run_python

SRC = str(Path(sc.__file__).resolve().parent.parent)

# Counts the file system calls Python reports for 20 writes into one fanout
# directory that exists already (the first write made the directories, the
# second kept their descriptors). The keys differ right after the fanout's two
# hex digits, where the two-level layout of earlier versions made a directory
# for each of them.
_COUNT = """
import json, sys
import stepcache as sc
store = sc.DirectoryStore(sys.argv[1])
store["abcd" + "0" * 28] = b"first"
store["abcd" + "f" * 28] = b"second"
counts = {}
def hook(event, args):
    if event in ("open", "os.mkdir", "os.rename"):
        counts[event] = counts.get(event, 0) + 1
sys.addaudithook(hook)
for i in range(20):
    store["ab" + f"{i + 1:02x}" + "0" * 28] = b"x" * 100
print(json.dumps(counts))
"""


def test_a_write_opens_its_fanout_and_temp_file_only(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([SRC, os.environ.get("PYTHONPATH", "")])}
    proc = run_python(_COUNT, str(tmp_path / "cache"), env=env)
    # Per write: ab/ and the temp file; one rename; no directory made.
    assert json.loads(proc.stdout) == {"open": 2 * 20, "os.rename": 20}


def test_a_store_removed_under_its_writer_is_made_again(tmp_path: Path) -> None:
    root = tmp_path / "cache"
    store = sc.DirectoryStore(root)
    store["ab" * 16] = 1
    store["ac" * 16] = 1  # its descriptors are kept now
    shutil.rmtree(root)
    store["cd" * 16] = 2  # the kept descriptors point at removed directories
    store["ce" * 16] = 3  # and this one goes through the new ones
    assert (store.get("cd" * 16), store.get("ce" * 16)) == (2, 3)
    assert (root / entry_rel("ce" * 16)).is_file()
    assert store.stats().errors == 0


def test_a_symlink_planted_in_the_fanout_after_a_write_is_refused(tmp_path: Path) -> None:
    root, elsewhere = tmp_path / "cache", tmp_path / "elsewhere"
    elsewhere.mkdir()
    store = sc.DirectoryStore(root)
    store["ab" * 16] = 1
    fanout = (root / entry_rel("ab" * 16)).parent
    shutil.rmtree(fanout)
    fanout.symlink_to(elsewhere, target_is_directory=True)
    store["abab" + "1" * 28] = 2
    assert list(elsewhere.iterdir()) == []
    assert store.stats().errors == 1


def test_a_tmp_swapped_for_a_symlink_after_a_write_receives_nothing(tmp_path: Path) -> None:
    root, elsewhere = tmp_path / "cache", tmp_path / "elsewhere"
    elsewhere.mkdir()
    store = sc.DirectoryStore(root)
    store["ab" * 16] = 1  # makes v2/ and tmp/
    store["ac" * 16] = 1  # keeps their descriptors
    (root / "tmp").rename(root / "tmp-old")
    (root / "tmp").symlink_to(elsewhere, target_is_directory=True)
    store["cd" * 16] = 2  # written through the kept tmp/, now tmp-old/
    assert list(elsewhere.iterdir()) == []
    assert store.get("cd" * 16) == 2
    assert os.listdir(root / "tmp-old") == []


def test_artifact_directories_are_published_through_the_kept_descriptors(tmp_path: Path) -> None:
    store = sc.DirectoryStore(tmp_path / "cache")
    store["ab" * 16] = 1
    for n, key in enumerate(("cd" * 16, "ef" * 16)):
        src = tmp_path / f"build{n}"
        src.mkdir()
        (src / "lib.so").write_bytes(b"ELF%d" % n)
        assert (store.put_dir(key, src, move=True) / "lib.so").read_bytes() == b"ELF%d" % n
        assert store.get_dir(key) == tmp_path / "cache" / (entry_rel(key) + ".d")
    assert os.listdir(tmp_path / "cache" / "tmp") == []


def test_a_tree_stored_after_the_store_was_removed_goes_into_the_new_one(tmp_path: Path) -> None:
    root = tmp_path / "cache"
    store = sc.DirectoryStore(root)

    def build(n: int) -> Path:
        src = tmp_path / f"build{n}"
        src.mkdir()
        (src / "lib.so").write_bytes(b"ELF%d" % n)
        return src

    store.put_dir("ab" * 16, build(0), move=True)  # keeps the descriptor of tmp/
    shutil.rmtree(root)
    for n, key in enumerate(("cd" * 16, "ef" * 16), start=1):
        path = store.put_dir(key, build(n), move=True)
        assert path.is_relative_to(root)
        assert store.get_dir(key) == path
        assert (path / "lib.so").read_bytes() == b"ELF%d" % n
    assert os.listdir(root / "tmp") == []
    assert store.stats().errors == 0


@pytest.mark.parametrize("kept", [True, False], ids=["kept", "not-kept"])
def test_a_tmp_swapped_for_a_symlink_never_receives_a_tree(tmp_path: Path, kept: bool) -> None:
    root, elsewhere = tmp_path / "cache", tmp_path / "elsewhere"
    elsewhere.mkdir()
    store = sc.DirectoryStore(root)
    store["ab" * 16] = 1  # makes v2/ and tmp/
    if kept:
        store["ac" * 16] = 1  # keeps their descriptors
    (root / "tmp").rename(root / "tmp-old")
    (root / "tmp").symlink_to(elsewhere, target_is_directory=True)
    src = tmp_path / "build"
    src.mkdir()
    (src / "lib.so").write_bytes(b"ELF")
    if kept:  # through the kept tmp/, now tmp-old/
        path = store.put_dir("cd" * 16, src, move=True)
        assert (path / "lib.so").read_bytes() == b"ELF"
    else:  # the path-based way refuses the symlink
        with pytest.raises(sc.StoreWriteError, match="symlink"):
            store.put_dir("cd" * 16, src, move=True)
        assert (src / "lib.so").read_bytes() == b"ELF"
    assert list(elsewhere.iterdir()) == []
    assert os.listdir(root / "tmp-old") == []
