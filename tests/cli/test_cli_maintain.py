"""clear, verify, prune, errors and exit codes, run as the real CLI in subprocesses."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from cli_run import run_cli, run_json

import stepcache as sc
from stepcache.cli import main
from stepcache.stores.directory.eviction import entry_rel

LABELS = ("alpha", "beta", "gamma", "delta")


def entry_path(root: Path, key: str) -> Path:
    return root / entry_rel(key)


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """A store with 8 entries: steps Parse and Translate, one per label."""
    root = tmp_path / "cache"
    store = sc.DirectoryStore(root)  # type: ignore[attr-defined]
    for step in ("Parse", "Translate"):
        for label in LABELS:
            key = sc.fingerprint((step, label))
            store.set(key, f"{step}({label})" * 20, info={"step": step, "label": label})
    store.close()
    return root


def keys_of(root: Path, **filters: str) -> list[str]:
    args = [a for name, value in filters.items() for a in (f"--{name}", value)]
    return [e["key"] for e in run_json("ls", *args, store=root)]


def test_clear_without_a_terminal_refuses_unless_yes(root: Path) -> None:
    proc = run_cli("clear", store=root)
    assert proc.returncode == 1
    assert proc.stderr.startswith("stepcache: error: refusing to clear 8 entries")
    assert "--yes" in proc.stderr
    assert len(keys_of(root)) == 8


def test_clear_step_removes_only_that_steps_entries(root: Path) -> None:
    doc = run_json("clear", "--step", "Parse", "--yes", store=root)
    assert doc["removed"] == 4
    assert doc["bytes"] > 0
    assert {e["step"] for e in run_json("ls", store=root)} == {"Translate"}


def test_clear_label_pattern_is_a_shell_glob(root: Path) -> None:
    doc = run_json("clear", "--label", "*ta", "--yes", store=root)
    assert doc["removed"] == 4  # beta and delta of both steps
    assert {e["label"] for e in run_json("ls", store=root)} == {"alpha", "gamma"}


def test_clear_yes_empties_the_store(root: Path) -> None:
    proc = run_cli("clear", "--yes", store=root)
    assert proc.returncode == 0, proc.stderr
    assert "removed 8 entries" in proc.stdout
    assert keys_of(root) == []


def test_verify_finds_a_damaged_entry_and_repair_removes_it(root: Path) -> None:
    key = sc.fingerprint(("Parse", "beta"))
    path = entry_path(root, key)
    blob = bytearray(path.read_bytes())
    blob[-1] ^= 0xFF
    path.write_bytes(bytes(blob))

    proc = run_cli("verify", "--json", store=root)
    assert proc.returncode == 1
    doc = json.loads(proc.stdout)
    assert (doc["checked"], doc["ok"]) == (8, 7)
    assert [bad["key"] for bad in doc["corrupt"]] == [key]
    assert path.exists(), "verify without --repair must not change the store"

    repaired = run_cli("verify", "--repair", store=root)
    assert repaired.returncode == 0, repaired.stderr
    assert "1 damaged, 1 removed" in repaired.stdout
    assert run_json("verify", store=root)["checked"] == 7


def test_prune_max_age_removes_entries_unused_for_longer(root: Path) -> None:
    two_days_ago = time.time() - 2 * 86400
    stale = [sc.fingerprint(("Translate", label)) for label in ("alpha", "beta")]
    for key in stale:
        os.utime(entry_path(root, key), (two_days_ago, two_days_ago))
    doc = run_json("prune", "--max-age", "1d", store=root)
    assert (doc["removed"], doc["entries"]) == (2, 6)
    assert not set(stale) & set(keys_of(root))


def test_prune_max_size_evicts_down_to_the_budget(root: Path) -> None:
    doc = run_json("prune", "--max-size", "1k", store=root)
    assert doc["bytes"] <= 1024
    assert doc["removed"] >= 1
    assert len(keys_of(root)) == doc["entries"] == 8 - doc["removed"]


def test_prune_dry_run_removes_nothing(root: Path) -> None:
    doc = run_json("prune", "--max-size", "1", "--dry-run", store=root)
    assert doc["removed"] == 8
    assert len(keys_of(root)) == 8


def test_prune_needs_a_directory_store() -> None:
    proc = run_cli("prune", store="memory://")
    assert proc.returncode == 2
    assert proc.stderr.startswith("stepcache: error: prune is for directory and S3 stores")


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["--store", "bogus://x", "stats"], 3, "unknown store scheme bogus://"),
        (["ls", "--sort", "nope"], 2, "Invalid value for '--sort'"),
        (["ls", "--older-than", "soon"], 2, "not a duration"),
        (["prune", "--max-size", "lots"], 2, "not a size"),
        (["frobnicate"], 2, "No such command"),
    ],
)
def test_errors_are_one_line_with_an_exit_code(
    root: Path, args: list[str], code: int, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    store = [] if args[0] == "--store" else ["--store", str(root)]
    assert main([*store, *args]) == code
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith("stepcache: error: ")
    assert message in err
    assert len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("command", [["stats"], ["clear", "--yes"], ["prune"]])
def test_a_missing_store_directory_is_unavailable_not_created(
    tmp_path: Path, command: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--store", str(tmp_path / "typo"), *command]) == 3
    assert f"no store at {tmp_path / 'typo'}" in capsys.readouterr().err
    assert not (tmp_path / "typo").exists()


def test_store_defaults_to_stepcache_dir(root: Path) -> None:
    env = {**os.environ, "STEPCACHE_DIR": str(root), "NO_COLOR": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "stepcache.cli", "ls", "--json"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert len(json.loads(proc.stdout)) == 8


def test_version_is_the_packages() -> None:
    version = run_cli("--version")
    assert version.returncode == 0
    assert version.stdout.strip() == f"stepcache {sc.__version__}"


@pytest.mark.parametrize(
    "command", ["stats", "ls", "show", "explain", "prune", "clear", "verify", "demo", "bench"]
)
def test_every_command_has_help_with_examples(
    command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([command, "--help"]) == 0
    out = capsys.readouterr().out
    assert "Examples:" in out
    assert f"stepcache {command}" in out
    assert "--json" in out
