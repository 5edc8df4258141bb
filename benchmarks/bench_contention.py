"""Scenario 3, the original failure: 12 processes, 15 cache instances each, one new directory.

Twelve workers (a 12-worker pytest-xdist run) are released at the same
instant on a directory that does not exist yet. Each creates 15 cache
instances on it (one per toolchain variant, as per-variant fixtures do)
and then does 200 mixed operations round-robin over them: 75% reads (a
miss is followed by a set, as a cache user would) and 25% sets, over 40
shared keys of 1-10 KB. Every value read is checked.

Measured per contender: the wall time from release to the last worker's
finish, the time the workers spent creating instances, errors by kind
(an instance that fails to open is retried up to 5 times; each failure
counts) and wrong values read. stepcache opens ``DirectoryStore``
directly, 15 real instances per process (``open_store`` would share one).
"""

from __future__ import annotations

import collections
import random
import shutil
import statistics
import tempfile
import time
from typing import Any

from benchmarks import _harness as h
from benchmarks import _peers
from benchmarks._workers import Failed, shared

PROCS, INSTANCES, OPS, KEYS = 12, 15, 200, 40
NAMES = ["stepcache", "diskcache", "diskcache+filelock", "joblib"]


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {str(exc)[:60]}"


def _open_all(contender: str, path: str, errors: collections.Counter[str]) -> list[Any]:
    handles = []
    for _ in range(INSTANCES):
        for _attempt in range(5):
            try:
                handles.append(_peers.CONTENDERS[contender].open(path))
                break
            except Exception as exc:
                errors[_describe(exc)] += 1
    return handles


def work(index: int, contender: str, path: str) -> dict[str, Any]:
    """A worker task: create the instances, then the mixed operations; what went wrong."""
    rng = random.Random(index)
    errors: collections.Counter[str] = collections.Counter()
    cpu, start = time.process_time(), time.monotonic()
    handles = _open_all(contender, path, errors)
    opened = time.monotonic() - start
    wrong = 0
    for i in range(OPS if handles else 0):
        handle = handles[i % len(handles)]
        n = rng.randrange(KEYS)
        key = _peers.key_of(n, 1000 + n * 211 % 9000)
        try:
            if rng.random() < 0.75:
                got = handle.get(key)
                if got is None:
                    handle.set(key, _peers.value_for(key))
                elif got != _peers.value_for(key):
                    wrong += 1
            else:
                handle.set(key, _peers.value_for(key))
        except Exception as exc:
            errors[_describe(exc)] += 1
    for handle in handles:
        handle.close()
    return {
        "errors": dict(errors),
        "wrong": wrong,
        "open_s": opened,
        "instances": len(handles),
        "cpu_s": time.process_time() - cpu,
    }


def _merge(results: list[Any]) -> dict[str, Any]:
    errors: collections.Counter[str] = collections.Counter()
    wrong = instances = 0
    cpu_s = 0.0
    open_s = []
    for r in results:
        if isinstance(r, Failed):
            errors[f"worker failed: {r.kind}: {r.message[:60]}"] += 1
            continue
        errors.update(r["errors"])
        wrong += r["wrong"]
        instances += r["instances"]
        cpu_s += r["cpu_s"]
        open_s.append(r["open_s"])
    return {
        "errors": dict(errors),
        "wrong": wrong,
        "instances": instances,
        "open_s": open_s,
        "cpu_s": cpu_s,
    }


def run(quick: bool = False) -> dict[str, Any]:
    """Each contender ``repeat`` times (interleaved); wall times and error counts per round."""
    names, skipped = _peers.usable(NAMES)
    repeat = 1 if quick else 3
    rounds: dict[str, list[dict[str, Any]]] = {name: [] for name in names}
    pool = shared(PROCS)
    pool.run(_peers.preload, names)
    for r in range(repeat):
        for name in names:
            root = tempfile.mkdtemp(prefix="stepcache-bench-contention-")
            try:
                rnd = pool.run(work, name, f"{root}/cache", active=PROCS)
            finally:
                shutil.rmtree(root, ignore_errors=True)
            rounds[name].append({"round": r, "wall_s": rnd.wall_s, **_merge(rnd.results)})
    return {
        "procs": PROCS,
        "instances_per_proc": INSTANCES,
        "ops_per_proc": OPS,
        "repeat": repeat,
        "rounds": rounds,
        "skipped": skipped,
    }


_COLUMNS = [
    "contender",
    "wall s (min)",
    "wall s (median)",
    "CPU s (median)",
    "create s/proc (median)",
    "errors",
    "wrong values",
]


def _row(s: h.Section, name: str, rounds: list[dict[str, Any]], walls: dict[str, h.Timing]) -> None:
    errors = collections.Counter[str]()
    for r in rounds:
        errors.update(r["errors"])
    n_errors = sum(errors.values())
    wrong = sum(r["wrong"] for r in rounds)
    create = statistics.median([x for r in rounds for x in r["open_s"]] or [0.0])
    cpu = statistics.median(r.get("cpu_s", 0.0) for r in rounds)
    goals = []
    if name == "stepcache":
        peers = {n: w.median for n, w in walls.items() if n != name}
        goals = [
            h.exactly("errors", n_errors + wrong, 0),
            h.ahead_of("wall (median)", walls[name].median, peers),
        ]
    wall = walls[name]
    cells = [name, h.fmt(wall.min), h.fmt(wall.median), h.fmt(cpu), h.fmt(create)]
    s.add([*cells, str(n_errors), str(wrong)], goals)
    if errors:
        kinds = "; ".join(f"{k} (x{v})" for k, v in errors.most_common(3))
        s.notes.append(f"{name} errors: {kinds}")


def section(figures: dict[str, Any]) -> h.Section:
    """The table: wall and CPU time, instance creation time, errors, wrong values."""
    s = h.Section(
        "contention", "3. Twelve processes, fifteen instances each, one new directory", _COLUMNS
    )
    s.notes.append(
        f"{figures['procs']} processes x {figures['instances_per_proc']} instances x "
        f"{figures['ops_per_proc']} mixed operations, {figures['repeat']} round(s) each; "
        "CPU: user + system time summed over the processes (less sensitive to other jobs "
        "than wall time); errors and wrong values summed over all rounds."
    )
    walls = {n: h.summarize([r["wall_s"] for r in rs]) for n, rs in figures["rounds"].items()}
    for name, rounds in figures["rounds"].items():
        _row(s, name, rounds, walls)
    for name, reason in figures["skipped"].items():
        s.notes.append(f"{name} skipped: {reason}")
    s.plot = h.Plot(
        "3. 12 processes x 15 instances x 200 ops",
        "wall s (median)",
        list(walls),
        {"wall": [w.median for w in walls.values()]},
    )
    return s
