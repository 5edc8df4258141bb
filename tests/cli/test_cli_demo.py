"""`stepcache demo`: the reference toolchain run without cache, cold and warm."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from stepcache.cli import _demo
from stepcache.stores.directory.eviction import ENTRIES

REPORT = {
    "runs": [
        {"name": "no-cache", "wall_s": 4.0, "compiles": 6, "translations": 6, "hits": 0,
         "misses": 0, "instances": 0, "entries": 0, "new_keys": 0},
        {"name": "cold", "wall_s": 5.0, "compiles": 6, "translations": 6, "hits": 0,
         "misses": 12, "instances": 2, "entries": 12, "new_keys": 12},
        {"name": "warm", "wall_s": 1.25, "compiles": 0, "translations": 0, "hits": 12,
         "misses": 0, "instances": 2, "entries": 12, "new_keys": 0},
    ],
    "verified": True,
    "programs": 6,
}  # fmt: skip


@pytest.mark.slow
@pytest.mark.skipif(
    shutil.which(os.environ.get("CC", "cc").split()[0]) is None,
    reason="the demo compiles C and no C compiler ($CC or cc) is on PATH",
)
def test_demo_json_uses_the_store_given_and_the_warm_run_adds_no_key(tmp_path: Path) -> None:
    root = tmp_path / "cache"
    env = {k: v for k, v in os.environ.items() if k != "STEPCACHE_DIR"}
    cmd = [sys.executable, "-m", "stepcache.cli", "--store", str(root)]
    proc = subprocess.run(
        [*cmd, "demo", "--programs", "2", "--workers", "1", "--json"],
        capture_output=True, text=True, timeout=180, env=env, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert set(doc) == {"runs", "verified", "programs", "store", "kept"}
    assert doc["store"] == f"dir://{root}"
    assert doc["verified"] is True
    runs = {run["name"]: run for run in doc["runs"]}
    assert list(runs) == ["no-cache", "cold", "warm"]
    assert runs["no-cache"]["compiles"] == runs["cold"]["compiles"] == 2
    warm = runs["warm"]
    assert (warm["compiles"], warm["translations"], warm["misses"], warm["new_keys"]) == (
        0,
        0,
        0,
        0,
    )
    assert warm["entries"] == runs["cold"]["entries"] == runs["cold"]["new_keys"] > 0
    listed = subprocess.run(
        [*cmd, "ls", "--json"], capture_output=True, text=True, timeout=60, env=env, check=True
    )
    assert len(json.loads(listed.stdout)) == warm["entries"]


def test_demo_table_has_a_row_per_run_and_the_ratios(capsys: pytest.CaptureFixture[str]) -> None:
    _demo._print_report(REPORT)
    lines = capsys.readouterr().out.splitlines()
    header = next(line for line in lines if line.startswith("run"))
    columns = "run wall compiled translated hits misses opened entries new keys"
    assert header.split() == columns.split(" ")
    cells = [line.split() for line in lines]
    rows = {c[0]: c[1:] for c in cells if len(c) == 9 and c[0] in ("cold", "warm")}
    assert rows["cold"] == ["5.00s", "6", "6", "0", "12", "2", "12", "12"]
    assert rows["warm"] == ["1.25s", "0", "0", "12", "0", "2", "12", "0"]
    assert "cold run: 1.2x slower than without a cache (the cost of filling the cache)" in lines
    assert "warm run: 3.2x faster than without a cache, 4.0x faster than the cold run" in lines
    assert "verified: yes" in lines


def test_demo_ratios_below_one_read_as_slower_and_a_warm_store_is_not_cold(
    capsys: pytest.CaptureFixture[str],
) -> None:
    runs = [dict(REPORT["runs"][0], wall_s=1.0)]  # type: ignore[index]
    runs += [dict(REPORT["runs"][2], wall_s=w) for w in (1.25, 0.98)]  # type: ignore[index]
    _demo._print_report({"runs": runs, "verified": True, "programs": 1})
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "1 program"
    assert "warm run 1: 1.2x slower than without a cache" in lines
    assert "warm run 2: 2% faster than without a cache" in lines
    assert not [line for line in lines if "cold" in line or re.search(r"\b0\.\d+x", line)]


@pytest.mark.slow
@pytest.mark.skipif(
    shutil.which(os.environ.get("CC", "cc").split()[0]) is None,
    reason="the demo compiles C and no C compiler ($CC or cc) is on PATH",
)
def test_demo_recompiles_a_program_whose_stored_library_was_truncated(tmp_path: Path) -> None:
    root = tmp_path / "cache"
    cmd = [sys.executable, "-m", "stepcache.cli", "--store", str(root), "demo"]
    args = ["--programs", "3", "--workers", "1", "--json"]
    subprocess.run([*cmd, *args], capture_output=True, text=True, timeout=300, check=True)
    libraries = sorted(root.glob(f"{ENTRIES}/*/*.d/*.so"))
    assert len(libraries) == 3
    with open(libraries[0], "r+b") as f:
        f.truncate(10)
    proc = subprocess.run([*cmd, *args], capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr
    cold = json.loads(proc.stdout)["runs"][1]
    assert (cold["compiles"], cold["translations"]) == (1, 0)  # only the damaged one, rebuilt
    assert json.loads(proc.stdout)["verified"] is True
