"""``show`` and ``verify`` on entries that do not decode: exit 1 and the command that repairs."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from cli_run import run_cli

import stepcache as sc
from stepcache.stores.directory.eviction import entry_rel


def entry_path(root: Path, key: str) -> Path:
    return root / entry_rel(key)


@pytest.fixture
def root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A store with an entry whose class only this test can import, and a plain one."""
    (tmp_path / "mods").mkdir()
    (tmp_path / "mods" / "vanishing_mod.py").write_text("class Thing:\n    pass\n")
    monkeypatch.syspath_prepend(str(tmp_path / "mods"))
    import vanishing_mod  # type: ignore[import-not-found]

    root = tmp_path / "cache"
    with sc.DirectoryStore(root) as store:  # type: ignore[attr-defined]
        store.set(sc.fingerprint("thing"), vanishing_mod.Thing(), info={"step": "Parse"})
        store.set(sc.fingerprint("list"), [1, 2, 3], info={"step": "Parse"})
    sys.modules.pop("vanishing_mod")
    return root


def damage(root: Path, key: str) -> None:
    path = entry_path(root, key)
    blob = bytearray(path.read_bytes())
    blob[-1] ^= 0xFF
    path.write_bytes(bytes(blob))


def test_show_of_a_value_whose_class_does_not_import_exits_1(root: Path) -> None:
    key = sc.fingerprint("thing")
    proc = run_cli("show", key[:12], store=root)
    assert proc.returncode == 1
    assert f"key      {key}" in proc.stdout  # the header is still shown
    [line] = proc.stderr.splitlines()
    assert line.startswith(f"stepcache: error: entry {key[:12]} does not decode")
    assert "No module named 'vanishing_mod'" in line
    assert f"show {key[:12]} --no-value" in line
    assert run_cli("show", key[:12], "--no-value", store=root).returncode == 0


def test_show_json_of_an_undecodable_value_exits_1_with_the_document(root: Path) -> None:
    key = sc.fingerprint("thing")
    proc = run_cli("show", key[:12], "--json", store=root)
    assert proc.returncode == 1
    assert "vanishing_mod" in json.loads(proc.stdout)["value"]["error"]


def test_show_of_a_damaged_entry_suggests_verify_repair(root: Path) -> None:
    key = sc.fingerprint("list")
    damage(root, key)
    proc = run_cli("show", key[:12], store=root)
    assert proc.returncode == 1
    [line] = proc.stderr.splitlines()
    assert "checksum mismatch" in line
    assert f"stepcache --store {root} verify --repair" in line
    assert "--no-value" not in line
    assert entry_path(root, key).exists()  # looking removed nothing


def test_verify_suggests_repair_and_repair_ends_the_damage(root: Path) -> None:
    damage(root, sc.fingerprint("list"))
    proc = run_cli("verify", store=root)
    assert proc.returncode == 1
    assert "2 entries checked, 0 ok, 2 damaged" in proc.stdout
    assert proc.stderr.strip() == (
        f"stepcache: 2 damaged entries; remove them with: stepcache --store {root} verify --repair"
    )
    proc = run_cli("verify", "--repair", store=root)
    assert proc.returncode == 0, proc.stderr
    assert "2 removed" in proc.stdout
    proc = run_cli("verify", store=root)
    assert (proc.returncode, proc.stderr) == (0, "")
    assert "0 entries checked" in proc.stdout
