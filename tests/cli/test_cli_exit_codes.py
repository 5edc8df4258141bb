"""Every command tells the truth about the store: one exit-code table, one line per error.

Real CLI in subprocesses. A store that cannot be reached is exit 3 for every
command, with one line naming the store and the cause; ``--debug`` shows the
traceback that line hides; messages use the command line's spellings.
"""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from cli_run import run_cli

import stepcache as sc
from stepcache.testing.processes import run_python

COMMANDS = [
    ["stats"],
    ["explain"],
    ["ls"],
    ["show", "abcdef12"],
    ["clear", "--yes"],
    ["prune"],
    ["verify"],
]
NOBODY = 65534
SECRET = {"STEPCACHE_SECRET": "s3cret"}  # keeps the unsigned-store warning out of the way


@pytest.fixture(scope="module")
def dead_redis() -> str:
    """A redis:// URL on a local port where nothing listens."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"redis://127.0.0.1:{port}/0"


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("stepcache: error:")]


def test_help_shows_the_exit_code_table() -> None:
    proc = run_cli("--help")
    assert proc.returncode == 0
    text = " ".join(proc.stdout.split())
    for code, meaning in (
        ("0", "done"),
        ("1", "found problems"),
        ("2", "usage error"),
        ("3", "the store cannot be reached or used"),
    ):
        assert f"{code} {meaning}" in text


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: c[0])
def test_an_unreachable_store_is_exit_3_for_every_command(
    command: list[str], dead_redis: str
) -> None:
    pytest.importorskip("redis")
    proc = run_cli(*command, store=dead_redis, env=SECRET)
    assert proc.returncode == 3, proc.stderr
    assert proc.stdout == ""
    assert error_lines(proc.stderr) == proc.stderr.splitlines()
    [line] = error_lines(proc.stderr)
    assert f"cannot reach store {dead_redis}" in line
    assert "Connection refused" in line
    assert "Traceback" not in proc.stderr


def test_debug_shows_the_traceback_the_one_line_hides(dead_redis: str) -> None:
    pytest.importorskip("redis")
    proc = run_cli("--debug", "--store", dead_redis, "ls", env=SECRET)
    assert proc.returncode == 3
    assert "Traceback (most recent call last)" in proc.stderr
    assert len(error_lines(proc.stderr)) == 1


def test_tiered_store_with_its_remote_down_says_so(tmp_path: Path, dead_redis: str) -> None:
    pytest.importorskip("redis")
    local = tmp_path / "local"
    with sc.DirectoryStore(local) as store:  # type: ignore[attr-defined]
        store.set(sc.fingerprint(1), "one", info={"step": "Parse"})
    spec = f"tiered://?local={local}&remote={dead_redis}"
    proc = run_cli("stats", store=spec, env=SECRET)
    assert proc.returncode == 0, proc.stderr
    assert f"unreachable  {dead_redis} (" in proc.stdout
    assert "entries      1 " in proc.stdout
    assert f"the remote tier {dead_redis} cannot be reached" in proc.stderr
    proc = run_cli("explain", store=spec, env=SECRET)
    assert proc.returncode == 0, proc.stderr
    assert f"the remote tier {dead_redis} cannot be reached" in proc.stderr


def test_tiered_store_with_nothing_reachable_is_exit_3(tmp_path: Path, dead_redis: str) -> None:
    pytest.importorskip("redis")
    spec = f"tiered://?local={tmp_path / 'none'}&remote={dead_redis}"
    for command in (["stats"], ["ls"], ["explain"]):
        proc = run_cli(*command, store=spec, env=SECRET)
        assert proc.returncode == 3, proc.stderr
        [line] = error_lines(proc.stderr)
        assert "cannot reach store tiered://" in line
        assert f"no store at {tmp_path / 'none'}" in line
    assert not (tmp_path / "none").exists()  # looking created nothing


def test_the_unsigned_warning_is_printed_once_per_process(dead_redis: str) -> None:
    pytest.importorskip("redis")
    script = (
        "import stepcache as sc\n"
        f"stores = [sc.RedisStore({dead_redis!r}) for _ in range(4)]\n"
        f"stores += [sc.open_store({dead_redis!r}, lock_timeout=t) for t in (1, 2)]\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "STEPCACHE_SECRET"}
    proc = run_python(script, env=env)
    assert proc.stderr.count("is shared but has no secret") == 1


def test_the_cli_spells_the_fix_as_the_cli_does(dead_redis: str) -> None:
    pytest.importorskip("redis")
    proc = run_cli("stats", store=dead_redis, env={"STEPCACHE_SECRET": ""})
    assert proc.stderr.count("is shared but has no secret") == 1
    assert "set STEPCACHE_SECRET" in proc.stderr
    assert "secret=" not in proc.stderr


@pytest.fixture
def public_dir() -> Iterator[Path]:
    """A directory every user can reach (pytest's own temp dirs are private to root)."""
    path = Path(tempfile.mkdtemp(prefix="stepcache-public-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


root_only = pytest.mark.skipif(os.geteuid() != 0, reason="needs root to act as another user")


@root_only
def test_a_foreign_root_is_refused_in_cli_words(public_dir: Path) -> None:
    root = public_dir / "cache"
    sc.DirectoryStore(root).close()  # type: ignore[attr-defined]
    os.chown(root, NOBODY, -1)
    proc = run_cli("ls", store=root)
    assert proc.returncode == 3
    [line] = error_lines(proc.stderr)
    assert "belongs to another user" in line
    assert "--shared" in line
    assert "shared=True" not in line


def test_a_group_writable_root_is_refused_in_whole_words(tmp_path: Path) -> None:
    root = tmp_path / "cache"
    sc.DirectoryStore(root).close()  # type: ignore[attr-defined]
    root.chmod(0o770)
    proc = run_cli("ls", store=root)
    assert proc.returncode == 3
    [line] = error_lines(proc.stderr)
    assert "writable by its group, whose members could plant entries" in line
    assert f"chmod g-w {root}" in line
    assert "pass --shared" in line


@root_only
@pytest.mark.parametrize("command", [["prune"], ["clear", "--yes"], ["verify", "--repair"]])
def test_commands_that_write_refuse_a_store_they_cannot_write(
    public_dir: Path, command: list[str]
) -> None:
    root = public_dir / "cache"
    with sc.DirectoryStore(root) as store:  # type: ignore[attr-defined]
        store.set(sc.fingerprint(1), "one")
    for path in [root, *root.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    before = sorted(p.relative_to(root) for p in root.rglob("*"))
    proc = run_cli(*command, store=root, user=NOBODY)
    assert proc.returncode == 3, proc.stderr
    [line] = error_lines(proc.stderr)
    assert f"{command[0]}" in line
    assert f"needs write access to {root}, which is read-only for you" in line
    assert "unlocked" not in proc.stderr
    assert "lease" not in proc.stderr
    assert sorted(p.relative_to(root) for p in root.rglob("*")) == before
