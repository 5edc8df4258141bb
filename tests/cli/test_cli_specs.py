"""Store specs: a spec cut short, directories that are not stores, commands that only look.

Real CLI in subprocesses: ``dir:`` needs a path; a directory that holds other
files and is not a store (``/``, a home directory) is refused rather than
tagged as a cache; read-only commands create nothing, tiered specs included.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from cli_run import run_cli

import stepcache as sc
from stepcache.testing.processes import run_python

LOOKING = [["ls"], ["stats"], ["show", "abcdef12"], ["explain"], ["verify"]]


def snapshot(root: Path) -> dict[str, bytes | None]:
    return {
        str(p.relative_to(root)): (p.read_bytes() if p.is_file() else None)
        for p in sorted(root.rglob("*"))
    }


@pytest.mark.parametrize("spec", ["dir:", "DIR:", "dir://"])
def test_a_dir_spec_without_a_path_is_refused(spec: str, tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "stepcache.cli", "--store", spec, "ls"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 3
    [line] = proc.stderr.splitlines()
    assert "dir:///var/cache/stepcache" in line
    assert list(tmp_path.iterdir()) == []  # no directory named "dir:"


def test_the_filesystem_root_is_not_a_store() -> None:
    proc = run_cli("ls", store="dir:///")
    assert proc.returncode == 3
    [line] = proc.stderr.splitlines()
    assert "/ is not a stepcache store (no CACHEDIR.TAG) and holds other files" in line
    assert not Path("/CACHEDIR.TAG").exists()


def test_clear_yes_on_an_ordinary_directory_refuses_and_changes_nothing(tmp_path: Path) -> None:
    home = tmp_path / "home"
    (home / "notes").mkdir(parents=True)
    (home / "notes" / "todo.txt").write_text("keep me")
    (home / "thesis.tex").write_text("\\begin{document}")
    home.chmod(0o700)
    before = snapshot(home)
    for command in (["clear", "--yes"], ["prune"], ["ls"]):
        proc = run_cli(*command, store=home)
        assert proc.returncode == 3, proc.stderr
        [line] = proc.stderr.splitlines()
        assert f"{home} is not a stepcache store" in line
        assert "notes, thesis.tex" in line
        assert "new or empty directory" in line
    assert snapshot(home) == before


def test_an_empty_directory_becomes_a_store(tmp_path: Path) -> None:
    root = tmp_path / "empty"
    root.mkdir(mode=0o700)
    with sc.DirectoryStore(root) as store:  # type: ignore[attr-defined]
        store[sc.fingerprint(1)] = 1
    assert (root / "CACHEDIR.TAG").is_file()


def test_the_default_store_holding_only_the_identity_memo_is_not_refused(tmp_path: Path) -> None:
    # A CachedStep with code= memoises code identities in <default store>/memo,
    # which makes the default store's directory before the store exists.
    script = """
import stepcache as sc
step = sc.CachedStep(sc.step(len), sc.open_store(), code=("json",))
print(sc.open_store().spec)
"""
    home = tmp_path / "cache"
    env = {k: v for k, v in os.environ.items() if k != "STEPCACHE_MEMO_DIR"}
    env["STEPCACHE_DIR"] = str(home)
    memo_only = """
import stepcache as sc
sc.code_identity("json")
"""
    for code in (memo_only, script):
        run_python(code, env=env)
    assert (home / "memo").is_dir()
    assert (home / "CACHEDIR.TAG").is_file()
    assert run_cli("ls", store=home).returncode == 0


@pytest.mark.parametrize("command", LOOKING, ids=lambda c: c[0])
def test_commands_that_only_look_create_nothing(command: list[str], tmp_path: Path) -> None:
    missing = tmp_path / "missing"
    proc = run_cli(*command, store=missing)
    assert proc.returncode == 3
    assert f"no store at {missing}" in proc.stderr
    spec = f"tiered://?local={missing}&remote=memory://"
    run_cli(*command, store=spec)
    assert list(tmp_path.iterdir()) == []


def test_looking_at_a_tiered_store_creates_no_local_directory(tmp_path: Path) -> None:
    local = tmp_path / "local"
    proc = run_cli("stats", store=f"tiered://?local={local}&remote=memory://team")
    assert proc.returncode == 0, proc.stderr
    assert f"the local tier dir://{local} cannot be reached (no store at {local})" in proc.stderr
    assert not local.exists()


def test_a_new_users_default_store_says_how_to_start(tmp_path: Path) -> None:
    home = tmp_path / "cache"
    proc = run_cli("stats", env={"STEPCACHE_DIR": str(home)})
    assert proc.returncode == 3
    assert proc.stderr == (
        f"stepcache: error: no store at {home}; nothing was cached there yet: `stepcache demo` "
        "fills it, or choose a store with --store SPEC or $STEPCACHE_DIR\n"
    )
    assert not home.exists()
