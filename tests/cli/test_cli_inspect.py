"""The read-only commands (stats, ls, show, explain), run as the real CLI in subprocesses."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
from cli_run import run_cli, run_json

import stepcache as sc
from stepcache.cli import main

PROGRAMS = ("lap", "diffuse", "copy")


@dataclasses.dataclass(frozen=True)
class Program:
    name: str
    body: tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class Parse(sc.StepBase):
    def __call__(self, program: Program) -> str:
        return " ".join(program.body)


@dataclasses.dataclass(frozen=True)
class Translate(sc.StepBase):
    opt_level: int = 2

    def __call__(self, program: Program) -> str:
        return f"/* O{self.opt_level} */ {program.name}: {' '.join(program.body)}"


def program(name: str) -> Program:
    return Program(name, ("load", name, "store"))


def populate(root: Path) -> dict[str, str]:
    """Fill a store; return the keys of the lap entries by how they were made.

    Translate: 3 programs (3 misses), lap again (1 hit), lap at opt_level=3
    (1 miss). Parse: lap and diffuse (2 misses). 6 entries in all.
    """
    store = sc.DirectoryStore(root)  # type: ignore[attr-defined]
    translate = sc.CachedStep(Translate(), store)
    parse = sc.CachedStep(Parse(), store)
    for name in PROGRAMS:
        translate(program(name))
    translate(program("lap"))
    faster = translate.replace(opt_level=3)
    faster(program("lap"))
    parse(program("lap"))
    parse(program("diffuse"))
    store.close()
    return {
        "lap_o2": translate.key_for(program("lap")),
        "lap_o3": faster.key_for(program("lap")),
        "parse_lap": parse.key_for(program("lap")),
    }


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return tmp_path / "cache"


@pytest.fixture
def keys(root: Path) -> dict[str, str]:
    return populate(root)


def test_stats_json_counts_every_lookup_per_step(root: Path, keys: dict[str, str]) -> None:
    st = run_json("stats", store=root)
    assert (st["entries"], st["hits"], st["misses"], st["writes"]) == (6, 1, 6, 6)
    assert st["steps"]["Translate"] == {"hits": 1, "misses": 4, "writes": 4}
    assert st["steps"]["Parse"] == {"hits": 0, "misses": 2, "writes": 2}
    assert st["spec"] == f"dir://{root}"


def test_stats_counts_the_instances_that_used_the_store_not_the_cli(
    root: Path, keys: dict[str, str]
) -> None:
    st = run_json("stats", store=root)
    assert (st["opens"], st["processes"]) == (1, 1)


def test_stats_text_shows_hit_rate_and_steps(root: Path, keys: dict[str, str]) -> None:
    proc = run_cli("stats", store=root)
    assert proc.returncode == 0, proc.stderr
    assert "14.3% (1 hit, 6 misses)" in proc.stdout
    lines = {line.split()[0]: line.split()[1:] for line in proc.stdout.splitlines() if line}
    assert lines["Translate"] == ["1", "4", "4"]
    assert lines["Parse"] == ["0", "2", "2"]


def test_ls_json_lists_every_entry_from_its_header(root: Path, keys: dict[str, str]) -> None:
    entries = run_json("ls", store=root)
    assert len(entries) == 6
    assert {e["key"] for e in entries} >= set(keys.values())
    assert {"key", "step", "label", "bytes", "created", "created_iso"} <= set(entries[0])
    assert [e["created"] for e in entries] == sorted(e["created"] for e in entries)
    labels = sorted((e["step"], e["label"]) for e in entries)
    assert labels.count(("Translate", "lap")) == 2


@pytest.mark.parametrize(
    ("filters", "expected"),
    [
        (["--step", "Parse"], 2),
        (["--label", "lap"], 3),
        (["--label", "d*"], 2),
        (["--step", "Translate", "--label", "[cd]*"], 2),
        (["--larger-than", "1G"], 0),
        (["--older-than", "1h"], 0),
        (["--limit", "4"], 4),
    ],
)
def test_ls_filters_by_step_label_size_and_age(
    root: Path,
    keys: dict[str, str],
    filters: list[str],
    expected: int,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # In this process: the filters are the point here, not the process boundary.
    assert main(["--store", str(root), "ls", "--json", *filters]) == 0
    assert len(json.loads(capsys.readouterr().out)) == expected


def test_ls_sorts_by_size_largest_first(root: Path, keys: dict[str, str]) -> None:
    entries = run_json("ls", "--sort", "size", "--reverse", store=root)
    sizes = [e["bytes"] for e in entries]
    assert sizes == sorted(sizes, reverse=True)


def test_ls_text_shows_short_keys_labels_and_a_total(root: Path, keys: dict[str, str]) -> None:
    proc = run_cli("ls", "--step", "Parse", store=root)
    assert proc.returncode == 0, proc.stderr
    assert keys["parse_lap"][:12] in proc.stdout
    assert "diffuse" in proc.stdout
    assert proc.stdout.splitlines()[-1].startswith("2 entries, ")


def test_show_accepts_a_key_prefix_and_decodes_the_value(root: Path, keys: dict[str, str]) -> None:
    doc = run_json("show", keys["lap_o3"][:8], store=root)
    assert doc["key"] == keys["lap_o3"]
    assert (doc["step"], doc["label"]) == ("Translate", "lap")
    assert "step.opt_level" in doc["manifest"]
    assert doc["value"]["type"] == "builtins.str"
    assert "O3" in doc["value"]["repr"]


def test_show_no_value_leaves_the_value_undecoded(root: Path, keys: dict[str, str]) -> None:
    doc = run_json("show", keys["lap_o2"], "--no-value", store=root)
    assert "value" not in doc
    text = run_cli("show", keys["lap_o2"], store=root).stdout
    assert "value.type" in text
    assert "step.opt_level" in text


@pytest.mark.parametrize(
    ("key", "code", "message"),
    [("abc", 2, "not a key or a key prefix"), ("0" * 32, 1, "no entry with key")],
)
def test_show_reports_a_bad_key_in_one_line(
    root: Path, keys: dict[str, str], key: str, code: int, message: str
) -> None:
    proc = run_cli("show", key, store=root)
    assert proc.returncode == code
    assert proc.stdout == ""
    assert proc.stderr.startswith("stepcache: error: ")
    assert message in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_explain_names_the_changed_setting_of_a_recent_miss(
    root: Path, keys: dict[str, str]
) -> None:
    doc = run_json("explain", store=root)
    by_key = {m["key"]: m for m in doc["misses"]}
    assert len(by_key) == 6
    changed = by_key[keys["lap_o3"]]
    assert changed["differences"] == ["step.opt_level"]
    assert changed["nearest_key"] == keys["lap_o2"]
    first = by_key[keys["lap_o2"]]
    assert first["summary"] == "first entry of its step"
    assert by_key[keys["parse_lap"]]["summary"] == "first entry of its step"
    reasons = {r["reason"]: r["count"] for r in doc["top_reasons"]}
    assert reasons["new input label (no earlier entry with this label)"] == 3
    assert reasons["changed step.opt_level"] == 1


def test_explain_text_shows_the_path_by_name(root: Path, keys: dict[str, str]) -> None:
    proc = run_cli("explain", store=root)
    assert proc.returncode == 0, proc.stderr
    line = next(ln for ln in proc.stdout.splitlines() if keys["lap_o3"][:12] in ln)
    assert f"step.opt_level: 2 -> 3 (vs {keys['lap_o2'][:12]})" in line


def test_explain_two_keys_lists_the_differing_paths(root: Path, keys: dict[str, str]) -> None:
    doc = run_json("explain", keys["lap_o2"][:10], keys["lap_o3"][:10], store=root)
    assert [d["path"] for d in doc["differences"]] == ["step.opt_level"]
    assert doc["a"]["key"] == keys["lap_o2"]
    row = doc["differences"][0]
    assert row["a"] != row["b"]


def test_explain_one_key_compares_with_the_nearest_older_entry(
    root: Path, keys: dict[str, str]
) -> None:
    doc = run_json("explain", keys["lap_o3"], store=root)
    assert (doc["a"]["key"], doc["b"]["key"]) == (keys["lap_o2"], keys["lap_o3"])
    assert [d["path"] for d in doc["differences"]] == ["step.opt_level"]


def test_show_says_when_the_value_cannot_be_decoded_here(tmp_path: Path) -> None:
    # A class of this test module is not importable in the CLI's process.
    store = sc.DirectoryStore(tmp_path / "cache")  # type: ignore[attr-defined]
    store.set("ab" * 16, program("lap"), info={"step": "Parse", "label": "lap"})
    store.close()
    proc = run_cli("show", "ababab", "--json", store=tmp_path / "cache")
    assert proc.returncode == 1, proc.stderr
    error = json.loads(proc.stdout)["value"]["error"]
    assert "No module named 'test_cli_inspect'" in error
    [line] = proc.stderr.splitlines()  # one line, saying how to see the rest
    assert "does not decode" in line
    assert "show abababababab --no-value" in line
    assert run_json("ls", store=tmp_path / "cache")[0]["key"] == "ab" * 16, "entry kept"
