"""GT4Py with stepcache next to GT4Py's own persistent cache: cold, warm and bytes, in one run.

Ten small GT4Py programs (those of ``tests/integrations/test_gt4py_programs.py``,
whose driver also counts translations and C++ builds) run on the gtfn C++
backend in a fresh process per measurement, for each contender:

- ``gt4py``: GT4Py's own cache, ``GT4PY_BUILD_CACHE_LIFETIME=persistent``;
  warm runs reuse its directory.
- ``stepcache-dir``: GT4Py's default session lifetime with
  ``STEPCACHE_GT4PY=dir://...``; warm runs reuse the store.
- ``stepcache-tiered``: a TieredStore of a local directory and a private
  ``redis-server``; each warm run is a new machine (an empty local
  directory) that fetches everything from Redis.

Cold runs are interleaved round by round, then warm runs, so machine load
hits all alike. Reported per run: wall seconds of the process, CPU seconds
of it and its compile workers, seconds running the programs; translations
and builds counted in the process; and bytes kept per program (GT4Py: its
build folder; stepcache: the store's entries). Goals: cold CPU within 3% of
GT4Py's own, warm no slower than GT4Py's own, at most 25% of the bytes.

Needs a Python with GT4Py (3.12+): this interpreter if it has one, else
``$STEPCACHE_GT4PY_PYTHON``, else the venv ``.ci/gt4py.sh`` makes::

    python benchmarks/bench_gt4py.py [--quick] [--json]
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
DRIVER = ROOT / "tests" / "integrations" / "test_gt4py_programs.py"
NAMES = ("add", "affine", "axpy", "larger", "norm", "blend2d")
NAMES += ("forward_diff", "laplacian", "int_mix", "halve_int")
CONTENDERS = ("gt4py", "stepcache-dir", "stepcache-tiered")
TIMEOUT = 1800.0
SECRET = "bench-secret"  # a shared tier is signed


def gt4py_python() -> str | None:
    """An interpreter that has GT4Py, or ``None``."""
    if importlib.util.find_spec("gt4py") is not None:
        return sys.executable
    for candidate in (
        os.environ.get("STEPCACHE_GT4PY_PYTHON"),
        ROOT / ".ci/.venv-gt4py/bin/python",
    ):
        if candidate and os.access(candidate, os.X_OK):
            return str(candidate)
    return None


def _one_run(python: str, env: dict[str, str], work: Path) -> dict[str, Any]:
    """One fresh process running every program: times, counts, and whether results were right."""
    counts, results = work / "counts", work / "results.json"
    counts.unlink(missing_ok=True)
    from benchmarks import _harness as h

    skip = ("STEPCACHE_GT4PY", "STEPCACHE_SECRET")
    # Bytecode cached for every contender alike, as installed software runs (GT4Py's own
    # modules have theirs from pip; an editable stepcache would otherwise compile each run).
    environ = {k: v for k, v in h.child_env().items() if not k.startswith("GT4PY_")}
    environ = {k: v for k, v in environ.items() if k not in skip}
    environ.update(env, PYTHONWARNINGS="ignore")
    cmd = [python, str(DRIVER), "--counts", str(counts), "--results", str(results), *NAMES]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    proc = subprocess.run(
        cmd, env=environ, capture_output=True, text=True, timeout=TIMEOUT, check=False
    )
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise RuntimeError(f"GT4Py run failed:\n{proc.stdout[-3000:]}{proc.stderr[-3000:]}")
    report = json.loads(results.read_text())
    kinds = (
        [json.loads(line)["kind"] for line in counts.read_text().splitlines()]
        if counts.exists()
        else []
    )
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {
        "wall": wall,
        "cpu": cpu,
        "programs": report["seconds"],
        "correct": all(report["ok"].values()),
        "translations": kinds.count("translate"),
        "builds": kinds.count("compile"),
    }


def _folder_bytes(gt4py_dir: Path) -> float:
    """Mean bytes of GT4Py's per-program build folders (not its compiledb template)."""
    sizes = [
        sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())
        for folder in (gt4py_dir / ".gt4py_cache").iterdir()
        if folder.is_dir() and not folder.name.startswith(("compile_commands_cache", "translation"))
    ]
    return statistics.mean(sizes)


@contextlib.contextmanager
def _redis() -> Iterator[Any]:
    from stepcache.testing.redis_server import RedisServer, find_redis_server

    if find_redis_server() is None:
        yield None
        return
    with RedisServer() as server:
        yield server


def _setups(work: Path, round_: int, redis: Any) -> dict[str, dict[str, Any]]:
    """Per contender: the environment of its cold run and a maker of warm-run environments."""
    import stepcache as sc

    own = work / f"gt4py-{round_}"
    own.mkdir()
    setups: dict[str, dict[str, Any]] = {
        "gt4py": {
            "env": {"GT4PY_BUILD_CACHE_LIFETIME": "persistent", "GT4PY_BUILD_CACHE_DIR": str(own)},
            "dir": own,
        },
        "stepcache-dir": {"env": {"STEPCACHE_GT4PY": f"dir://{work / f'sc-{round_}'}"}},
    }
    if redis is not None:
        remote = f"{redis.url}?prefix=r{round_}:"

        def tiered(local: str) -> dict[str, str]:
            tiers = [
                sc.open_store(work / local, secret=SECRET),
                sc.open_store(remote, secret=SECRET),
            ]
            return {"STEPCACHE_GT4PY": sc.TieredStore(tiers).spec, "STEPCACHE_SECRET": SECRET}

        setups["stepcache-tiered"] = {
            "env": tiered(f"tiered-{round_}"),
            "warm": lambda k: tiered(f"tiered-{round_}-machine-{k}"),
        }
    return setups


def run(quick: bool = False) -> dict[str, Any]:
    """Cold and warm runs of every contender, interleaved; return the figures."""
    python = gt4py_python()
    if python is None:
        return {"skipped": "no Python with GT4Py: run .ci/gt4py.sh or set STEPCACHE_GT4PY_PYTHON"}
    import stepcache as sc

    rounds, warm_repeats = (1, 2) if quick else (2, 4)
    runs: dict[str, dict[str, list[dict[str, Any]]]] = {}
    sizes: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="bench-gt4py-") as tmp, _redis() as redis:
        work = Path(tmp)
        setups: dict[str, dict[str, Any]] = {}
        for round_ in range(rounds):
            setups = _setups(work, round_, redis)
            for name, setup in setups.items():
                result = _one_run(python, setup["env"], work)
                runs.setdefault(name, {"cold": [], "warm": []})["cold"].append(result)
        for k in range(warm_repeats):
            for name, setup in setups.items():
                env = setup["warm"](k) if "warm" in setup else setup["env"]
                runs[name]["warm"].append(_one_run(python, env, work))
        sizes["gt4py"] = _folder_bytes(setups["gt4py"]["dir"])
        store = sc.open_store(setups["stepcache-dir"]["env"]["STEPCACHE_GT4PY"])
        sizes["stepcache-dir"] = store.stats().bytes / len(NAMES)
        sc.reset_registry()
    return {"python": python, "programs": len(NAMES), "runs": runs, "bytes_per_program": sizes}


def _median(samples: list[dict[str, Any]], field: str) -> float:
    return statistics.median(s[field] for s in samples)


_COLUMNS = ["contender", "run", "wall s", "CPU s", "programs s", "translated", "compiled", "right"]


def section(figures: dict[str, Any]) -> Any:
    """The table (medians per contender and run), judged against the goals."""
    from benchmarks import _harness as h

    runs, sizes = figures["runs"], figures["bytes_per_program"]
    s = h.Section("gt4py", "10. GT4Py with stepcache", _COLUMNS)
    s.notes.append(
        f"{figures['programs']} programs on gtfn, a fresh process per run; medians; CPU includes "
        f"GT4Py's compile workers. Kept per program: GT4Py's build folder "
        f"{sizes['gt4py'] / 1e3:.0f} KB, the stepcache store {sizes['stepcache-dir'] / 1e3:.0f} KB."
    )
    own = runs["gt4py"]
    for name, phases in runs.items():
        for phase, samples in phases.items():
            counts = [max(r[f] for r in samples) for f in ("translations", "builds")]
            right = all(r["correct"] for r in samples)
            goals = [] if right else [h.Goal("results", "match numpy", False, "missed")]
            if name != "gt4py" and phase == "warm":
                goals += [
                    h.exactly("translated", counts[0], 0),
                    h.exactly("compiled", counts[1], 0),
                ]
            if name == "stepcache-dir":
                field, limit = ("cpu", 1.03) if phase == "cold" else ("wall", 1.0)
                value = _median(samples, field) / _median(own[phase], field)
                goals.append(h.at_most(f"{phase} {field} / gt4py", value, limit, "x"))
            cells = [h.fmt(_median(samples, f)) for f in ("wall", "cpu", "programs")]
            row = [name, f"{phase} x{len(samples)}", *cells, *map(str, counts)]
            s.add([*row, "yes" if right else "NO"], goals)
    share = sizes["stepcache-dir"] / sizes["gt4py"]
    bytes_goal = h.at_most("bytes / GT4Py folder", share, 0.25, "x")
    s.add(["stepcache-dir", "bytes per program", "", "", "", "", "", ""], [bytes_goal])
    s.plot = h.Plot(
        "10. GT4Py: wall time per run (median)",
        "wall s",
        ["cold", "warm"],
        {
            name: [_median(phases[p], "wall") for p in ("cold", "warm")]
            for name, phases in runs.items()
        },
        log=True,
    )
    return s


def main(argv: list[str] | None = None) -> None:
    """Command line: print the table, or the figures as JSON with ``--json``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one cold and two warm runs each")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(ROOT))  # run as a script: make the suite's harness importable
    figures = run(quick=args.quick)
    if args.json or "skipped" in figures:
        print(json.dumps(figures, indent=2))
        return
    from benchmarks import _harness as h

    print(h.render(section(figures)))


if __name__ == "__main__":
    main()
