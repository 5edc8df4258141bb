"""The benchmark harness runs and reports in the documented structure (never judged on speed)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # the benchmarks live next to the package, not inside it
    sys.path.insert(0, str(ROOT))

from benchmarks import _harness as h  # noqa: E402
from benchmarks import _peers  # noqa: E402
from benchmarks.__main__ import main  # noqa: E402
from benchmarks._workers import Failed, Lockstep  # noqa: E402
from benchmarks.scenarios import SCENARIOS, Scenario  # noqa: E402

FAKE = """
from benchmarks import _harness as h

RUNS = []

def run(quick):
    RUNS.append(quick)
    {body}

def section(figures):
    s = h.Section("fake", "Fake scenario", ["measure", "value"])
    s.add(["fast", h.fmt(figures["value"])], [h.at_most("fast", figures["value"], 1.0, "x")])
    s.add(["slow", "2"], [h.at_most("slow", 2.0, 1.0, "x")])
    s.plot = h.Plot("fake", "x", ["a", "b"], {{"series": [figures["value"], None]}})
    return s
"""


def _fake_modules(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Scenario]:
    tag = uuid.uuid4().hex[:8]
    bodies = {
        "ok": 'return {"value": 0.5, "quick": quick}',
        "skip": 'return {"skipped": "no server here"}',
        "boom": 'raise RuntimeError("broken scenario")',
    }
    for kind, body in bodies.items():
        (tmp_path / f"fake_{kind}_{tag}.py").write_text(FAKE.format(body=body))
    monkeypatch.syspath_prepend(str(tmp_path))
    registry = {k: Scenario(k, f"fake_{k}_{tag}", f"Fake {k}") for k in bodies}
    registry["gone"] = Scenario("gone", f"no_such_module_{tag}", "Gone")
    return registry


def test_harness_prints_tables_and_writes_json_and_plot(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    registry = _fake_modules(tmp_path, monkeypatch)
    out_json, out_png = tmp_path / "out.json", tmp_path / "out.png"

    code = main(["--quick", "--json", str(out_json), "--plot", str(out_png)], registry=registry)

    assert code == 1  # the failing scenario makes the run fail; a missed goal does not
    text = capsys.readouterr().out
    assert "| measure | value | goal | verdict |" in text
    assert "| fast | 0.5 | fast ≤ 1x | met |" in text
    assert "missed by 100% (2x)" in text
    assert "Skipped: no server here" in text
    assert "Skipped: failed: RuntimeError: broken scenario" in text
    assert "Skipped: cannot import no_such_module_" in text
    assert "**Goals: 1 met, 1 missed.**" in text
    doc = json.loads(out_json.read_text())
    assert set(doc) >= {"machine", "quick", "seconds", "sections", "missed"}
    assert doc["quick"] is True
    assert doc["machine"]["nproc"] >= 1
    assert list(doc["sections"]) == ["ok", "skip", "boom", "gone"]
    ok = doc["sections"]["ok"]
    assert ok["columns"] == ["measure", "value", "goal", "verdict"]
    assert ok["figures"] == {"value": 0.5, "quick": True}
    assert [g["met"] for g in ok["goals"]] == [True, False]
    assert [m["what"] for m in doc["missed"]] == ["slow"]
    assert out_png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_tables_are_rebuilt_from_saved_json_without_measuring(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    registry = _fake_modules(tmp_path, monkeypatch)
    saved = tmp_path / "saved.json"
    main(["--only", "ok,skip", "--json", str(saved)], registry=registry)
    first = capsys.readouterr().out

    assert main(["--from", str(saved)], registry=registry) == 0

    again = capsys.readouterr().out
    assert again.split("###", 1)[1] == first.split("###", 1)[1]
    assert sys.modules[registry["ok"].module].RUNS == [False]  # measured once, not again


def test_json_without_a_file_goes_to_stdout_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    registry = _fake_modules(tmp_path, monkeypatch)

    assert main(["--only", "ok", "--json"], registry=registry) == 0

    doc = json.loads(capsys.readouterr().out)
    assert list(doc["sections"]) == ["ok"]


def test_unknown_scenario_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["--only", "store,nonsense"])
    assert exc.value.code == 2
    assert "nonsense" in capsys.readouterr().err


def test_every_default_scenario_is_listed() -> None:
    names = [s.name for s in SCENARIOS.values() if s.default]
    assert sorted(names) == sorted([
        "store", "open", "contention", "herd", "demo", "scaling", "identity",
        "fingerprint", "redis", "trees",
    ])  # fmt: skip


@pytest.mark.parametrize(
    ("goal", "met", "verdict"),
    [
        (h.at_most("hit / floor", 1.2, 1.3, "x"), True, "met"),
        (h.at_most("hit / floor", 1.56, 1.3, "x"), False, "missed by 20% (1.56x)"),
        (h.exactly("computations", 8, 1), False, "missed by 7 extra computations"),
        (h.ahead_of("wall", 2.0, {"diskcache": 1.0, "joblib": None}), False,
         "missed by 100% (diskcache is faster)"),
        (h.ahead_of("wall", 1.0, {}), True, "no peer measured"),
    ],
)  # fmt: skip
def test_goals_state_the_verdict(goal: h.Goal, met: bool, verdict: str) -> None:
    assert (goal.met, goal.verdict) == (met, verdict)


@pytest.mark.timeout(60)
def test_lockstep_workers_return_results_and_failures_in_order() -> None:
    with Lockstep(2, timeout=50) as pool:
        pids = pool.run(_peers.preload, ["floor"]).results
        failed = pool.run(_peers.preload, ["no-such-contender"], active=1)

    assert len(set(pids)) == 2
    assert len(failed.results) == 1
    assert isinstance(failed.results[0], Failed)
    assert failed.results[0].kind == "KeyError"


@pytest.mark.timeout(120)
def test_a_real_scenario_runs_from_the_command_line_and_leaves_no_temp_files(
    tmp_path: Path,
) -> None:
    out, tmp = tmp_path / "bench.json", tmp_path / "tmp"
    tmp.mkdir()
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--quick", "--only", "store", "--json", str(out)],
        cwd=ROOT,
        env={**os.environ, "TMPDIR": str(tmp)},
        capture_output=True,
        text=True,
        timeout=100,
        check=False,
    )

    assert proc.returncode == 0, proc.stderr
    assert "### 1. get (hit, miss) and set at 1 KB, 10 KB, 1 MB" in proc.stdout
    section: dict[str, Any] = json.loads(out.read_text())["sections"]["store"]
    assert section["skipped"] is None
    assert section["columns"][-2:] == ["goal", "verdict"]
    misses = [row[2] for row in section["rows"] if row[1] == "miss"]
    assert misses[:2] == ["floor", "DirectoryStore"]
    assert len(section["goals"]) == 6  # hit and set at three sizes; none for misses
    assert [p.name for p in tmp.iterdir()] == []  # stores closed before their removal


@pytest.mark.timeout(60)
def test_a_bench_module_runs_alone_as_a_script(tmp_path: Path) -> None:
    script = ROOT / "benchmarks" / "bench_fingerprint.py"
    proc = subprocess.run(
        [sys.executable, str(script), "--quick", "--json"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=50,
        check=False,
    )

    assert proc.returncode == 0, proc.stderr
    figures = json.loads(proc.stdout)
    assert figures["repeat"] == 5
    assert figures["nodes"] >= 10_000


def test_fake_module_template_is_valid_python() -> None:
    compile(textwrap.dedent(FAKE.format(body="return {}")), "fake", "exec")
