"""Scenario 2: open an existing cache and read one entry in a fresh process.

A test worker, a build step or a CLI call starts, opens the cache and reads
one entry. For each contender a 1 KB entry is written first; then, per
round, one new interpreter per contender runs::

    import <library>                    # outside the window (reported apart)
    t0; handle = open(path); handle.get(key); t1

The window ``t1 - t0`` is the cost of opening plus the first hit. The
child's total wall time, measured by the parent, is compared to that of
``python -c pass`` started the same way: the extra is what a fresh process
pays in all (imports included). Contenders run interleaved; one warm-up
child each fills the bytecode and page caches first.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from typing import Any

from benchmarks import _harness as h
from benchmarks import _peers

NAMES = ["floor", "stepcache", "diskcache", "diskcache+filelock", "joblib"]

# joblib's entry is written by a process of its own, as in real use: a writer
# that already used joblib elsewhere leaves state behind (it records a
# function's code once per process, not once per cache directory, and a cache
# without the record reads as stale in every other process).
_WRITER = """
import sys
from benchmarks import _peers
handle = _peers.CONTENDERS[sys.argv[1]].open(sys.argv[2])
handle.set(sys.argv[3], _peers.value_for(sys.argv[3]))
handle.close()
"""

_CHILD = """
import json, sys, time
t0 = time.perf_counter()
from benchmarks import _peers
contender = _peers.CONTENDERS[sys.argv[1]]
contender.preload()
t1 = time.perf_counter()
handle = contender.open(sys.argv[2])
value = handle.get(sys.argv[3])
t2 = time.perf_counter()
assert value == _peers.value_for(sys.argv[3]), "wrong value"
print(json.dumps({"import_s": t1 - t0, "open_get_s": t2 - t1}))
"""


def _child(args: list[str], env: dict[str, str]) -> tuple[float, str]:
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, *args], env=env, capture_output=True, text=True, timeout=120, check=False
    )
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"child {args[-3:]} failed: {proc.stderr.strip()[-300:]}")
    return wall, proc.stdout


def run(quick: bool = False) -> dict[str, Any]:
    """Per contender: window (open + first get), import time, and child wall over ``pass``."""
    names, skipped = _peers.usable(NAMES)
    repeat = 3 if quick else 15
    env = h.child_env()
    key = _peers.key_of(7, 1000)
    samples: dict[str, dict[str, list[float]]] = {
        n: {"open_get_s": [], "import_s": [], "wall_s": []} for n in names
    }
    passes: list[float] = []
    with tempfile.TemporaryDirectory(prefix="stepcache-bench-open-") as root:
        for name in names:
            path = f"{root}/{name}"
            if name == "joblib":  # see _WRITER
                _child(["-c", _WRITER, name, path, key], env)
            else:
                handle = _peers.CONTENDERS[name].open(path)
                handle.set(key, _peers.value_for(key))
                handle.close()
        runs = {n: ["-c", _CHILD, n, f"{root}/{n}", key] for n in names}
        _child(["-c", "pass"], env)
        for args in runs.values():  # warm-up: bytecode and page caches
            _child(args, env)
        for _ in range(repeat):
            passes.append(_child(["-c", "pass"], env)[0])
            for name, args in runs.items():
                wall, out = _child(args, env)
                inside = json.loads(out)
                samples[name]["wall_s"].append(wall)
                samples[name]["open_get_s"].append(inside["open_get_s"])
                samples[name]["import_s"].append(inside["import_s"])
    return {"repeat": repeat, "pass_s": passes, "samples": samples, "skipped": skipped}


_COLUMNS = [
    "contender",
    "open+get ms (min)",
    "open+get ms (median)",
    "import ms (median)",
    "wall over pass ms (min)",
    "wall over pass ms (median)",
]


def _goals(name: str, windows: dict[str, h.Timing], extras: dict[str, h.Timing]) -> list[h.Goal]:
    if name != "stepcache":
        return []
    others = [n for n in windows if n not in ("floor", name)]
    return [
        h.at_most("open + first hit", windows[name].median, 0.2, " ms"),
        h.ahead_of("open+get (median)", windows[name].median,
                   {n: windows[n].median for n in others}),
        h.ahead_of("wall over pass (median)", extras[name].median,
                   {n: extras[n].median for n in others}),
    ]  # fmt: skip


def section(figures: dict[str, Any]) -> h.Section:
    """The table: open + first get (ms), import (ms), child wall over ``python -c pass`` (ms)."""
    s = h.Section(
        "open", "2. Open an existing cache and read one entry in a fresh process", _COLUMNS
    )
    base = h.summarize(figures["pass_s"], 1e3)
    s.notes.append(
        f"{figures['repeat']} fresh interpreters per contender; `python -c pass` takes "
        f"{h.fmt(base.min)} / {h.fmt(base.median)} ms (min / median). The window is open + "
        "first get of a 1 KB entry; the import of the library is outside it."
    )
    samples = figures["samples"]
    windows = {n: h.summarize(x["open_get_s"], 1e3) for n, x in samples.items()}
    walls = {n: h.summarize(x["wall_s"], 1e3) for n, x in samples.items()}
    extras = {n: h.Timing(w.min - base.min, w.median - base.median, w.n) for n, w in walls.items()}
    for name, x in samples.items():
        imports = h.summarize(x["import_s"], 1e3).median
        cells = [name, h.fmt(windows[name].min), h.fmt(windows[name].median), h.fmt(imports)]
        s.add([*cells, h.fmt(extras[name].min), h.fmt(extras[name].median)],
              _goals(name, windows, extras))  # fmt: skip
    for name, reason in figures["skipped"].items():
        s.notes.append(f"{name} skipped: {reason}")
    series: dict[str, list[float | None]] = {
        "open + get": [w.median for w in windows.values()],
        "wall over `python -c pass`": [e.median for e in extras.values()],
    }
    s.plot = h.Plot("2. Fresh process: open + first get", "ms (median, log)", list(windows),
                    series, log=True)  # fmt: skip
    return s
