"""`pytest --stepcache-report`: what the stores did, summed over xdist workers."""

from __future__ import annotations

import importlib.metadata
import importlib.util
from pathlib import Path
from typing import Any

import pytest

from stepcache.pytest_plugin import format_report, summarize

pytest_plugins = ["pytester"]

# Parse sees 3 distinct sources in 7 calls; Translate 4 distinct inputs (one
# at opt_level=3) in 7 calls. Single-flight across processes makes one
# process compute each key, so the totals do not depend on which worker ran
# which test or when.
SUITE = """
import dataclasses
import os

import pytest

import stepcache as sc

STORE = sc.open_store(os.environ["SUITE_STORE"])


@dataclasses.dataclass(frozen=True)
class Source:
    name: str
    text: str


@dataclasses.dataclass(frozen=True)
class Parse(sc.StepBase):
    def __call__(self, src):
        return tuple(src.text.split())


@dataclasses.dataclass(frozen=True)
class Translate(sc.StepBase):
    opt_level: int = 2

    def __call__(self, words):
        return f"O{self.opt_level}:" + "-".join(words)


parse = sc.CachedStep(Parse(), STORE)
translate = sc.CachedStep(Translate(), STORE, label=lambda words: words[0])


@pytest.mark.parametrize("name", ["ab", "cd", "ab", "ef", "cd", "ab"])
def test_pipeline(name):
    words = parse(Source(name, " ".join(name)))
    assert translate(words) == "O2:" + "-".join(name)


def test_faster_variant():
    words = parse(Source("ab", "a b"))
    assert translate.replace(opt_level=3)(words) == "O3:a-b"
"""


@pytest.fixture
def suite(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    store = tmp_path / "store"
    monkeypatch.setenv("SUITE_STORE", str(store))
    # Load exactly the plugins under test, whatever else this environment has installed.
    monkeypatch.setenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", "1")
    pytester.makepyfile(test_suite=SUITE)
    return store


def step_row(lines: list[str], step: str) -> list[int]:
    row = next(line for line in lines if line.split()[:1] == [step])
    return [int(n) for n in row.split()[1:4]]


def report_lines(result: pytest.RunResult) -> list[str]:
    out = result.stdout.lines
    start = next(i for i, line in enumerate(out) if "stepcache report" in line)
    return out[start + 1 :]


@pytest.mark.timeout(120)
def test_report_sums_both_xdist_workers(pytester: pytest.Pytester, suite: Path) -> None:
    result = pytester.runpytest_subprocess(
        "-n", "2", "-p", "xdist", "-p", "stepcache.pytest_plugin", "--stepcache-report"
    )
    result.assert_outcomes(passed=7)
    lines = report_lines(result)
    assert lines[0] == (
        f"dir://{suite}: 2 instances opened by 2 processes; 7 keys added, 7 entries now"
    )
    assert step_row(lines, "Parse") == [4, 3, 3]  # hits, misses, writes
    assert step_row(lines, "Translate") == [3, 4, 4]
    assert step_row(lines, "(all)") == [7, 7, 7]
    reasons = lines[lines.index("  top miss reasons (of 7 recent misses):") + 1 :]
    assert [line.split(maxsplit=1) for line in reasons[:3]] == [
        ["4", "new input label (no earlier entry with this label)"],
        ["2", "first entry of its step"],
        ["1", "changed step.opt_level"],
    ]


@pytest.mark.timeout(120)
def test_report_without_xdist_is_the_one_process(pytester: pytest.Pytester, suite: Path) -> None:
    result = pytester.runpytest_subprocess("-p", "stepcache.pytest_plugin", "--stepcache-report")
    result.assert_outcomes(passed=7)
    lines = report_lines(result)
    assert lines[0].endswith("1 instance opened by 1 process; 7 keys added, 7 entries now")
    assert step_row(lines, "Parse") == [4, 3, 3]
    assert step_row(lines, "Translate") == [3, 4, 4]


@pytest.mark.timeout(120)
def test_no_report_without_the_option(pytester: pytest.Pytester, suite: Path) -> None:
    result = pytester.runpytest_subprocess("-p", "stepcache.pytest_plugin")
    result.assert_outcomes(passed=7)
    assert "stepcache report" not in result.stdout.str()


def test_plugin_is_registered_for_pytest() -> None:
    found = {ep.name: ep.value for ep in importlib.metadata.entry_points(group="pytest11")}
    assert found.get("stepcache") == "stepcache.pytest_plugin"


def snapshot(
    pid: int, spec: str, steps: dict[str, tuple[int, int, int]], reasons: list[str]
) -> dict[str, Any]:
    per = {name: {"hits": h, "misses": m, "writes": w} for name, (h, m, w) in steps.items()}
    totals = {f: sum(s[f] for s in per.values()) for f in ("hits", "misses", "writes")}
    stats = {**totals, "errors": 0, "opens": 1, "steps": per}
    return {"pid": pid, "stores": [{"spec": spec, "stats": stats, "miss_reasons": reasons}]}


def test_summarize_adds_up_processes_per_store() -> None:
    reports = summarize(
        [
            snapshot(1, "dir:///c", {"T": (1, 2, 2)}, ["first entry of its step", "changed x"]),
            snapshot(2, "dir:///c", {"T": (3, 1, 1), "P": (0, 1, 1)}, ["changed x", "changed x"]),
            snapshot(2, "memory://", {"T": (0, 1, 1)}, []),
        ]
    )
    c, mem = reports
    assert (c.spec, c.instances, c.processes) == ("dir:///c", 2, 2)
    assert (c.hits, c.misses, c.writes, c.keys_added) == (4, 4, 4, 4)
    assert c.steps == {"P": (0, 1, 1), "T": (4, 3, 3)}
    assert c.reasons == [("changed x", 3), ("first entry of its step", 1)]
    assert (mem.spec, mem.instances, mem.processes) == ("memory://", 1, 1)
    text = format_report(reports)
    assert text[0] == "dir:///c: 2 instances opened by 2 processes; 4 keys added"
    start = text.index("  top miss reasons (of 4 recent misses):")
    assert text[start : start + 4] == [
        "  top miss reasons (of 4 recent misses):",
        "        3  changed x",
        "        1  first entry of its step",
        "memory://: 1 instance opened by 1 process; 1 key added",
    ]


def test_report_says_when_no_store_was_used() -> None:
    assert format_report([]) == ["no stepcache store was used in this session"]


def test_gt4py_option_without_gt4py_is_a_usage_error_naming_it(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("stepcache.integrations.gt4py")
    if importlib.util.find_spec("gt4py") is not None:
        pytest.skip("gt4py is installed here; tests/integrations cover the option")
    monkeypatch.delenv("STEPCACHE_GT4PY", raising=False)
    pytester.makepyfile("def test_nothing():\n    pass\n")
    result = pytester.runpytest_subprocess(
        "-p", "no:cacheprovider", "-p", "no:xdist", "--stepcache-gt4py=memory://"
    )
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--stepcache-gt4py*GT4Py is not importable*pip install*"])


DIRECT = """
import os

import stepcache as sc

ROOT = os.environ["SUITE_STORE"]


def test_a_store_made_directly_and_closed():
    store = sc.DirectoryStore(ROOT)
    assert store.get_or_compute("ab" * 16, lambda: 1) == 1
    store.close()


def test_a_store_made_directly_and_dropped_unclosed():
    store = sc.DirectoryStore(ROOT)
    assert store.get_or_compute("ab" * 16, lambda: 1) == 1  # one of the two computes it
    assert store.get_or_compute("cd" * 16, lambda: 3) == 3
    del store


def test_a_memory_store_in_a_tiered_store():
    tiers = sc.TieredStore([sc.MemoryStore("near"), sc.MemoryStore("far")])
    assert tiers.get_or_compute("ef" * 16, lambda: 4) == 4
    tiers.close()
"""


@pytest.mark.timeout(120)
@pytest.mark.parametrize("workers", [[], ["-n", "2", "-p", "xdist"]], ids=["one", "xdist"])
def test_report_covers_stores_made_directly_closed_or_not(
    pytester: pytest.Pytester, suite: Path, workers: list[str]
) -> None:
    pytester.makepyfile(test_suite=DIRECT)
    result = pytester.runpytest_subprocess(
        *workers, "-p", "stepcache.pytest_plugin", "--stepcache-report"
    )
    result.assert_outcomes(passed=3)
    lines = report_lines(result)
    [mine] = [line for line in lines if line.startswith(f"dir://{suite}:")]
    assert mine.startswith(f"dir://{suite}: 2 instances opened by ")
    assert mine.endswith("; 2 keys added, 2 entries now")
    start = lines.index(mine)
    assert step_row(lines[start:], "(all)") == [1, 2, 2]
    [tiered] = [line for line in lines if line.startswith("tiered://")]
    assert "1 instance opened by 1 process; 1 key added" in tiered
    assert "no stepcache store" not in result.stdout.str()
