"""One size for an entry in every command, plurals that agree, progress bars with totals."""

from __future__ import annotations

import os
import pty
import re
import subprocess
import sys
from pathlib import Path

import pytest
from cli_run import run_cli, run_json

import stepcache as sc
from stepcache.cli._units import format_bytes
from stepcache.stores.directory.eviction import ENTRIES


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """Three values and two builds (entries with artifact directories)."""
    root = tmp_path / "cache"
    src = tmp_path / "build"
    src.mkdir()
    (src / "lib.so").write_bytes(b"\x7fELF" + bytes(5000))
    (src / "gt4py.json").write_text("{}")
    with sc.DirectoryStore(root) as store:  # type: ignore[attr-defined]
        for n in range(3):
            store.set(sc.fingerprint(n), "x" * (100 * n), info={"step": "Parse"})
        for n in (3, 4):
            store.put_dir(sc.fingerprint(n), src, info={"step": "Compile"})
    return root


def bytes_on_disk(root: Path) -> int:
    return sum(p.stat().st_size for p in (root / ENTRIES).rglob("*") if p.is_file())


def test_stats_ls_and_clear_count_the_same_bytes(root: Path) -> None:
    on_disk = bytes_on_disk(root)
    assert run_json("stats", store=root)["bytes"] == on_disk
    listed = run_json("ls", store=root)
    assert sum(e["bytes"] for e in listed) == on_disk
    builds = [e for e in listed if e["kind"] == "dir"]
    assert all(e["bytes"] > 5000 for e in builds)  # the artifact directory counts
    text = run_cli("ls", store=root).stdout
    assert text.splitlines()[-1] == f"5 entries, {format_bytes(on_disk)}"
    assert f"entries    5 ({format_bytes(on_disk)})" in run_cli("stats", store=root).stdout
    assert run_json("clear", "--yes", store=root) == {"removed": 5, "bytes": on_disk}


def test_clear_leaves_no_empty_fanout_directories(root: Path) -> None:
    assert len(list((root / ENTRIES).iterdir())) == 5
    proc = run_cli("clear", "--yes", store=root)
    assert proc.returncode == 0, proc.stderr
    assert list((root / ENTRIES).iterdir()) == []
    assert (root / "CACHEDIR.TAG").is_file()  # still a store


def test_stats_name_an_earlier_versions_entries_until_prune_removes_them(root: Path) -> None:
    old = root / "v1" / "ab" / "cd"  # the two-level layout of earlier versions
    old.mkdir(parents=True)
    (old / ("abcd" * 8)).write_bytes(b"an entry of an earlier version")
    assert run_json("stats", store=root)["earlier_layout"] == str(root / "v1")
    text = run_cli("stats", store=root).stdout
    assert re.search(r"earlier layout +.*v1: never read; `stepcache prune` removes it", text)
    assert run_json("stats", store=root)["entries"] == 5  # not counted as entries
    assert run_cli("prune", store=root).returncode == 0
    assert "earlier_layout" not in run_json("stats", store=root)
    assert not (root / "v1").exists()


def test_one_entry_is_one_entry(tmp_path: Path) -> None:
    root = tmp_path / "cache"
    with sc.DirectoryStore(root) as store:  # type: ignore[attr-defined]
        store.set(sc.fingerprint(1), "one", info={"step": "Parse"})
    out = run_cli("ls", store=root).stdout
    assert out.splitlines()[-1].startswith("1 entry, ")
    assert run_cli("verify", store=root).stdout.startswith("1 entry checked, 1 ok")
    assert "; 1 entry (" in run_cli("prune", "--dry-run", store=root).stdout
    assert run_cli("clear", "--yes", store=root).stdout.startswith("removed 1 entry (")
    stats = run_cli("stats", store=root).stdout
    assert "(0 hits, 0 misses)" in stats
    for text in (out, stats):
        assert "1 entries" not in text
    with sc.DirectoryStore(root) as store:  # type: ignore[attr-defined]
        assert store.get(sc.fingerprint(1)) is None
        store.set(sc.fingerprint(1), "one")
        assert store.get(sc.fingerprint(1)) == "one"
    assert "(1 hit, 1 miss)" in run_cli("stats", store=root).stdout


def on_a_terminal(*args: str) -> str:
    """The command's output as a terminal receives it (progress bars are drawn only there)."""
    leader, follower = pty.openpty()
    env = {**os.environ, "COLUMNS": "100", "TERM": "xterm", "NO_COLOR": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "stepcache.cli", *args],
        stdin=follower, stdout=follower, stderr=follower, env=env, close_fds=True,
    )  # fmt: skip
    os.close(follower)
    out = b""
    try:
        while chunk := os.read(leader, 65536):
            out += chunk
    except OSError:  # EIO: the command closed the terminal
        pass
    finally:
        os.close(leader)
        assert proc.wait(timeout=60) == 0
    return out.decode(errors="replace")


@pytest.mark.parametrize("command", [["verify"], ["prune", "--max-age", "30d"]])
def test_progress_bars_have_their_total(root: Path, command: list[str]) -> None:
    out = on_a_terminal("--store", str(root), *command)
    assert "5/5" in out
    assert not re.search(r"[1-9]\d*/\?", out)  # no frame with a count but no total
    assert "5 entries" in out  # the bar is transient: the summary line follows it
