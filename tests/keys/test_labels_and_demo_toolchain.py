"""Entries found by name without unpickling; the demo recompiles when its toolchain changes."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

import stepcache as sc
from stepcache.demo.pipeline import Source, counters, make_pipeline, reset_counters
from stepcache.demo.programs import suite, verify
from stepcache.stores.directory.eviction import ENTRIES
from stepcache.testing.faults import Unloadable

pytestmark = pytest.mark.timeout(120)

LAP = "def f(a: Field):\n    return -4.0 * a[0, 0] + a[1, 0] + a[-1, 0] + a[0, 1] + a[0, -1]"
LAPLAP = (
    "def f(a: Field):\n"
    "    t = -4.0 * a[0, 0] + a[1, 0] + a[-1, 0] + a[0, 1] + a[0, -1]\n"
    "    return t * t"
)
SKEWED = "def f(a: Field):\n    return a[1, 1] + a[-1, -1] - 2.0 * a[0, 0]"


def _cli(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "stepcache.cli", "--store", str(root), *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def _ls(root: Path, *args: str) -> list[dict[str, object]]:
    proc = _cli(root, "ls", "--json", *args)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)  # type: ignore[no-any-return]


@pytest.fixture
def labelled(tmp_path: Path) -> Path:
    """Three programs through the cached demo pipeline, plus an entry that cannot be unpickled."""
    root = tmp_path / "cache"
    store = sc.DirectoryStore(root)
    pipeline = make_pipeline(store, build_root=str(tmp_path / "builds"))
    for name, text in (("lap", LAP), ("laplap", LAPLAP), ("skewedlap", SKEWED)):
        pipeline(Source(name, text))
    poison = sc.fingerprint("poison")
    store.set(poison, Unloadable(), info={"step": "Poison", "label": "lap-poison"})
    store.close()
    return root


def test_ls_by_exact_label_and_glob_reads_headers_only(labelled: Path) -> None:
    lap = _ls(labelled, "--label", "lap")
    assert sorted(e["step"] for e in lap) == ["Compile", "Translate"]
    assert {e["label"] for e in lap} == {"lap"}
    assert {e["label"] for e in _ls(labelled, "--label", "*lap")} == {"lap", "laplap", "skewedlap"}
    assert len(_ls(labelled, "--label", "*lap")) == 6
    # The poisoned entry was listed (not decoded, so not dropped as corrupt).
    assert [e["label"] for e in _ls(labelled, "--step", "Poison")] == ["lap-poison"]
    assert len(_ls(labelled)) == 7


def test_clear_by_label_removes_only_that_programs_entries(labelled: Path) -> None:
    proc = _cli(labelled, "clear", "--label", "lap", "--yes")
    assert proc.returncode == 0, proc.stderr
    left = _ls(labelled)
    assert sorted(str(e["label"]) for e in left) == sorted(
        ["laplap", "laplap", "skewedlap", "skewedlap", "lap-poison"]
    )


def test_labels_are_plain_text_in_the_entry_files(labelled: Path) -> None:
    entries = [p for p in (labelled / ENTRIES).glob("*/*") if p.is_file()]
    found = [p for p in entries if b'"label":"laplap"' in p.read_bytes()]
    assert len(found) == 2


def _wrapper(path: Path, version: str) -> Path:
    path.write_text(
        f'#!/bin/sh\nif [ "$1" = --version ]; then echo "{version}"; exit 0; fi\nexec cc "$@"\n'
    )
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


def _compiles(store: sc.Store, tmp_path: Path) -> int:
    reset_counters()
    pipeline = make_pipeline(store, build_root=str(tmp_path / "builds"))
    for spec in [s for s in suite(100) if s.dtype == "float64"][:2]:
        kernel = pipeline(Source(spec.name, spec.source))
        inputs = spec.inputs()
        assert verify(spec, kernel(**inputs, **spec.scalar_args()), inputs)
    return counters()["compiles"]


def test_demo_recompiles_when_cflags_or_the_compiler_change_and_hits_when_restored(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STEPCACHE_MEMO_DIR", str(tmp_path / "memo"))
    monkeypatch.delenv("CC", raising=False)
    monkeypatch.setenv("CFLAGS", "-O2")
    store = sc.DirectoryStore(tmp_path / "cache")
    assert _compiles(store, tmp_path) == 2
    assert _compiles(store, tmp_path) == 0

    monkeypatch.setenv("CFLAGS", "-O3")
    assert _compiles(store, tmp_path) == 2
    monkeypatch.setenv("CFLAGS", "-O2")
    assert _compiles(store, tmp_path) == 0

    monkeypatch.setenv("CC", str(_wrapper(tmp_path / "wrapped-cc", "wrapped-cc 99.0")))
    assert _compiles(store, tmp_path) == 2
    monkeypatch.delenv("CC")
    assert _compiles(store, tmp_path) == 0
    assert os.environ["CFLAGS"] == "-O2"
