"""Keys that cannot go stale, and what they cost: code identity and ``key_for``.

*Code identity of a 1,000-file source tree*: a package of 1,000 ``.py``
files (about 2 KB each, last modified an hour ago) is identified by
:func:`stepcache.identity.code_identity` in fresh interpreters, each with
``STEPCACHE_MEMO_DIR`` in a temp dir: *cold* with an empty memo directory
(every file is read and hashed; the files are in the page cache), and
*memoised* with the memo the cold run left (every file and directory is
stat'ed; nothing is listed, read or hashed). The window is the call itself;
a second call in the same process (in-process memo) is reported too, and so
is the first read of the identity's ``files`` (paths and digests of the
1,000 files, decoded from the memo on first use: a key needs only the
digest). Goal: memoised <= 2 ms.

*The floor* of a memoised identity is what any check that never misses an
edit must do: one ``stat`` of each file. A fresh interpreter is given the
1,000 names (outside the window) and, in the window, opens each directory
and stats each of its files relative to it, as the memo check does, with
nothing else. Its first pass runs with the kernel's inodes cold in the CPU
caches (the memoised identity's situation); the same loop again in the same
process shows what warm caches would give.

*key_for with code and toolchain declared*: ``CachedStep.key_for`` of the
same input on a step declaring ``code=("stepcache",)`` and
``toolchain=sc.toolchain(compiler="cc", env=("CFLAGS",))`` against a step
declaring neither, interleaved in batches of 200 calls. Goal: at most 5%
more per call. The one-off cost of the first call (identities computed)
is reported apart.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks import _harness as h
from stepcache._srctree import RACY_NS

FILES = 1000

_CHILD = """
import json, sys, time
sys.path.insert(0, sys.argv[1])
from stepcache.identity import code_identity
t0 = time.perf_counter()
first = code_identity("benchtree")
t1 = time.perf_counter()
again = code_identity("benchtree")
t2 = time.perf_counter()
files = first.files
t3 = time.perf_counter()
assert first.digest == again.digest
print(json.dumps({"first_s": t1 - t0, "again_s": t2 - t1, "files_s": t3 - t2,
                  "files": len(files), "digest": first.digest}))
"""

_FLOOR_CHILD = """
import json, os, sys, time
listing = json.load(open(sys.argv[1]))
def stat_all():
    for rel, names in listing:
        fd = os.open(rel, os.O_RDONLY | os.O_DIRECTORY)
        try:
            for name in names:
                os.stat(name, dir_fd=fd)
        finally:
            os.close(fd)
t0 = time.perf_counter()
stat_all()
t1 = time.perf_counter()
stat_all()
t2 = time.perf_counter()
print(json.dumps({"first_s": t1 - t0, "again_s": t2 - t1}))
"""

_MODULE = '''"""Module {i} of a generated source tree."""

from __future__ import annotations


def stage_{i}(values: list[float], scale: float = {i}.0) -> list[float]:
    """Scale, shift and clip ``values``: one pass of a pipeline."""
    out = []
    for v in values:
        w = v * scale + {i}
        if w > 1e6:
            w = 1e6
        out.append(w)
    return out


class Pass{i}:
    """A lowering pass with a name and a priority."""

    name = "pass_{i}"
    priority = {i}

    def run(self, tree: dict[str, object]) -> dict[str, object]:
        return {{**tree, self.name: self.priority}}
'''


def make_tree(root: Path, files: int = FILES) -> Path:
    """Write package ``benchtree`` of ``files`` modules under ``root``, aged an hour."""
    pkg = root / "benchtree"
    written = 0
    sub = 0
    while written < files:
        d = pkg if sub == 0 else pkg / f"sub{sub:02d}"
        d.mkdir(parents=True, exist_ok=True)
        for i in range(min(50, files - written)):
            name = "__init__.py" if i == 0 else f"mod{i:03d}.py"
            (d / name).write_text(_MODULE.format(i=written))
            written += 1
        sub += 1
    past = time.time() - 3600  # outside the window in which an mtime cannot be trusted
    for path in pkg.rglob("*.py"):
        os.utime(path, (past, past))
    for path in [pkg, *(p for p in pkg.rglob("*") if p.is_dir())]:
        os.utime(path, (past, past))  # after the files: creating them set these mtimes
    return pkg


def _listing(pkg: Path) -> list[tuple[str, list[str]]]:
    """Each directory of ``pkg`` with the names of its files, as the floor stats them."""
    return [(d, sorted(files)) for d, _, files in os.walk(pkg)]


def _child(tree_root: Path, memo: Path, code: str = _CHILD) -> dict[str, Any]:
    env = h.child_env(STEPCACHE_MEMO_DIR=str(memo))
    proc = subprocess.run(
        [sys.executable, "-c", code, str(tree_root)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"identity child failed: {proc.stderr.strip()[-300:]}")
    out: dict[str, Any] = json.loads(proc.stdout)
    return out


def code_identity_figures(root: Path, repeat: int) -> dict[str, Any]:
    """Cold and memoised identity of the generated tree in fresh processes (ms samples)."""
    pkg = make_tree(root / "src")
    listing = root / "listing.json"
    listing.write_text(json.dumps(_listing(pkg)))
    # Inode change times cannot be set back: wait until they are old enough to
    # be trusted, as they are in any tree not edited in the last two seconds.
    time.sleep(RACY_NS / 1e9 + 0.1)
    runs: dict[str, list[dict[str, Any]]] = {"cold": [], "memoised": []}
    floor: list[dict[str, Any]] = []
    for r in range(repeat):
        memo = root / f"memo{r}"
        runs["cold"].append(_child(root / "src", memo))
        runs["memoised"].append(_child(root / "src", memo))
        floor.append(_child(listing, memo, _FLOOR_CHILD))
    digests = {run["digest"] for rs in runs.values() for run in rs}
    return {
        "files": runs["cold"][0]["files"],
        "same_digest": len(digests) == 1,
        "floor_ms": {
            when: h.summarize([x[f"{when}_s"] for x in floor], 1e3).to_dict()
            for when in ("first", "again")
        },
        "ms": {
            kind: {
                "first": h.summarize([x["first_s"] for x in rs], 1e3).to_dict(),
                "again": h.summarize([x["again_s"] for x in rs], 1e3).to_dict(),
                "files": h.summarize([x["files_s"] for x in rs], 1e3).to_dict(),
            }
            for kind, rs in runs.items()
        },
    }


def translate(source: str) -> str:
    """The step whose keys are measured (never called)."""
    return source


def key_for_figures(repeat: int, batch: int = 200) -> dict[str, Any]:
    """Per-call µs of key_for with and without code and toolchain; first-call cost."""
    import stepcache as sc
    from stepcache.errors import CompilerError

    try:
        tc = sc.toolchain(compiler="cc", env=("CFLAGS",))
    except CompilerError:
        tc = sc.toolchain(env=("CFLAGS",))
    store = sc.MemoryStore()
    plain = sc.CachedStep(sc.step(translate), store)
    declared = sc.CachedStep(sc.step(translate), store, code=("stepcache",), toolchain=tc)
    inp = ("laplacian", "out = in[-1] + in[1] - 2 * in[0]\n" * 60, {"dtype": "float64"})
    start = time.perf_counter()
    declared.key_for(inp)
    first_ms = (time.perf_counter() - start) * 1e3
    plain.key_for(inp)

    def many(step: sc.CachedStep) -> Any:
        def call(i: int) -> None:
            for _ in range(batch):
                step.key_for(inp)

        return call

    times = h.interleaved({"plain": many(plain), "declared": many(declared)}, repeat)
    return {
        "batch": batch,
        "first_call_ms": first_ms,
        "compiler": tc.compiler,
        "us_per_call": {n: h.summarize(t, 1e6 / batch).to_dict() for n, t in times.items()},
    }


def run(quick: bool = False) -> dict[str, Any]:
    """Both measurements; identity memos go to a temp dir, never the user's cache."""
    with tempfile.TemporaryDirectory(prefix="stepcache-bench-identity-") as tmp:
        root = Path(tmp)
        saved = os.environ.get("STEPCACHE_MEMO_DIR")
        os.environ["STEPCACHE_MEMO_DIR"] = str(root / "memo-parent")
        try:
            code = code_identity_figures(root, 3 if quick else 10)
            keys = key_for_figures(30 if quick else 300)
        finally:
            if saved is None:
                os.environ.pop("STEPCACHE_MEMO_DIR", None)
            else:
                os.environ["STEPCACHE_MEMO_DIR"] = saved
    return {"code_identity": code, "key_for": keys}


def section(figures: dict[str, Any]) -> h.Section:
    """One table for both: identity times (ms) and key_for per call (µs)."""
    s = h.Section(
        "identity",
        "6. Keys that cannot go stale: code identity and key_for",
        ["measure", "min", "median", "unit"],
    )
    code, keys = figures["code_identity"], figures["key_for"]
    s.notes.append(
        f"Code identity of a {code['files']}-file tree in fresh processes (digest identical "
        f"across runs: {code['same_digest']}); key_for in batches of {keys['batch']} calls; "
        f"toolchain compiler: {keys['compiler'] or 'none found'}; first key_for of the "
        f"declared step (identities computed): {h.fmt(keys['first_call_ms'])} ms."
    )
    whens = (
        ("first", "fresh process"),
        ("again", "same process, again"),
        ("files", "first read of files"),
    )
    for kind in ("cold", "memoised"):
        for when, label in whens:
            t = code["ms"][kind][when]
            goals = []
            if kind == "memoised" and when == "first":
                goals = [h.at_most("memoised", t["median"], 2.0, " ms")]
            s.add(
                [f"code identity, {kind}, {label}", h.fmt(t["min"]), h.fmt(t["median"]), "ms"],
                goals,
            )
    floor = code.get("floor_ms")  # absent from the JSON of runs before the floor existed
    if floor is not None:
        for when, label in whens[:2]:
            t = floor[when]
            s.add([f"floor: stat each file, {label}", h.fmt(t["min"]), h.fmt(t["median"]), "ms"])
        memoised = code["ms"]["memoised"]["first"]
        s.add(
            [
                "code identity, memoised / floor (fresh process)",
                h.ratio(memoised["min"] / floor["first"]["min"]),
                h.ratio(memoised["median"] / floor["first"]["median"]),
                "ratio",
            ]
        )
    per = keys["us_per_call"]
    for name, label in (
        ("plain", "key_for, no code/toolchain"),
        ("declared", "key_for, code + toolchain"),
    ):
        s.add([label, h.fmt(per[name]["min"]), h.fmt(per[name]["median"]), "µs"])
    rmin = per["declared"]["min"] / per["plain"]["min"]
    rmed = per["declared"]["median"] / per["plain"]["median"]
    s.add(
        ["key_for declared / plain", h.ratio(rmin), h.ratio(rmed), "ratio"],
        [h.at_most("per call", rmed, 1.05, "x")],
    )
    if not code["same_digest"]:
        s.goals.append(h.Goal("digest", "identical across processes", False, "missed"))
        s.notes.append("The tree's digest differed between processes: identity is not stable.")
    s.plot = h.Plot(
        "6. Code identity of 1,000 files (fresh process)",
        "ms (median)",
        ["cold", "memoised"],
        {
            "fresh process": [code["ms"][k]["first"]["median"] for k in ("cold", "memoised")],
            "same process, again": [code["ms"][k]["again"]["median"] for k in ("cold", "memoised")],
        },
        refs={"goal: memoised": 2.0},
    )
    return s
