"""Switching the GT4Py integration on and off, in-process, with a fake C++ build (no compiler)."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
import pickle
import warnings
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

import stepcache as sc
import stepcache.integrations.gt4py as sc_gt4py
from stepcache.testing.processes import run_python

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("gt4py") is None,
    reason="gt4py is not installed (needs Python >= 3.12; .ci/gt4py.sh runs these tests)",
)

GT4PY_KEY = "0123456789abcdef"
MODULE = "build/bin/fake.cpython-312-x86_64-linux-gnu.so"


@pytest.fixture(scope="module")
def gt() -> SimpleNamespace:
    """GT4Py's modules the integration touches (imported once; a dependency warns on import)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import gt4py.next as gtx
        from gt4py._core import filecache
        from gt4py.next import config
        from gt4py.next.otf import artifacts, runners
        from gt4py.next.otf.binding import interface
        from gt4py.next.otf.compilation import build_data, cache, compiler
    return SimpleNamespace(
        runners=runners,
        gtx=gtx,
        filecache=filecache,
        config=config,
        artifacts=artifacts,
        interface=interface,
        build_data=build_data,
        cache=cache,
        compiler=compiler,
    )


@pytest.fixture(autouse=True)
def _switched_off_afterwards(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.delenv(sc_gt4py.ENV_VAR, raising=False)
    yield
    sc_gt4py.disable()


@dataclasses.dataclass(frozen=True)
class FakeBuild:
    """A build-system factory whose build writes what a gtfn build leaves, and counts itself."""

    log: str

    def __call__(self, source: Any, lifetime: Any) -> Any:
        from gt4py.next import fingerprinting
        from gt4py.next.otf.compilation import cache

        context = fingerprinting.strict_fingerprinter(self)
        return _FakeProject(self.log, Path(cache.get_cache_folder(source, lifetime, context)))


@dataclasses.dataclass
class _FakeProject:
    log: str
    root: Path

    def build(self) -> None:
        from gt4py.next.otf.compilation import build_data

        with open(self.log, "a", encoding="utf-8") as f:
            f.write("built\n")
        (self.root / "build/bin").mkdir(parents=True, exist_ok=True)
        (self.root / "build/fake.o").write_bytes(b"\0" * 50_000)  # not needed to load
        (self.root / MODULE).write_bytes(b"\x7fELF fake module " + self.root.name.encode())
        status = build_data.BuildStatus.COMPILED
        data = build_data.BuildData(status=status, module=Path(MODULE), entry_point_name="fake")
        build_data.write_data(data, self.root)


def _source(gt: SimpleNamespace, code: str = "// fake C++") -> Any:
    entry = gt.interface.Function("fake", ())
    program = gt.artifacts.ProgramSource(entry, code, (), gt.artifacts.CPPCodeSpec())
    return gt.artifacts.ExtensionSource(program, gt.artifacts.BindingSource("// bindings", ()))


@pytest.fixture
def compile_fake(
    gt: SimpleNamespace, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> SimpleNamespace:
    """``run(gt4py_dir)`` compiles the fake program with GT4Py's persistent cache in that dir."""
    log = tmp_path / "builds.log"
    lifetime = gt.config.BuildCacheLifetime.PERSISTENT
    compiler = gt.compiler.CPPCompiler(lifetime, FakeBuild(str(log)), gt.gtx.DeviceType.CPU)

    def use(gt4py_dir: str) -> None:
        (tmp_path / gt4py_dir).mkdir(exist_ok=True)
        monkeypatch.setattr(gt.config, "BUILD_CACHE_DIR", tmp_path / gt4py_dir)

    def run(gt4py_dir: str, **changes: Any) -> Any:
        use(gt4py_dir)
        return dataclasses.replace(compiler, **changes)(_source(gt))

    def builds() -> int:
        return len(log.read_text().splitlines()) if log.exists() else 0

    return SimpleNamespace(run=run, use=use, builds=builds, compiler=compiler)


def test_a_built_program_is_restored_from_the_store_instead_of_rebuilt(
    compile_fake: SimpleNamespace, tmp_path: Path
) -> None:
    store = sc_gt4py.enable(tmp_path / "store")
    first = compile_fake.run("gt4py-a")
    (header,) = store.headers()
    assert (header.step, header.label) == ("gt4py.build[cpp]", "fake")
    stored = store.get_dir(header.key)
    assert stored is not None
    assert sorted(p.relative_to(stored).as_posix() for p in stored.rglob("*.*")) == [
        MODULE,
        "gt4py.json",
    ]

    second = compile_fake.run("gt4py-b")  # GT4Py's own cache is empty there
    assert compile_fake.builds() == 1
    assert second.src_dir != first.src_dir
    assert (second.src_dir / MODULE).read_bytes() == (first.src_dir / MODULE).read_bytes()
    assert len(store) == 1


def test_a_stored_program_that_lost_its_module_is_rebuilt(
    compile_fake: SimpleNamespace, tmp_path: Path
) -> None:
    store = sc_gt4py.enable(tmp_path / "store")
    compile_fake.run("gt4py-a")
    (key,) = store
    stored = store.get_dir(key)
    assert stored is not None
    (stored / MODULE).unlink()
    artifact = compile_fake.run("gt4py-b")
    assert compile_fake.builds() == 2
    assert (artifact.src_dir / MODULE).is_file()


def test_a_program_in_gt4pys_own_cache_is_shared_through_the_store(
    compile_fake: SimpleNamespace, tmp_path: Path
) -> None:
    compile_fake.run("gt4py-a")  # not enabled: GT4Py's persistent cache only
    store = sc_gt4py.enable(tmp_path / "store")
    compile_fake.run("gt4py-a")
    assert (compile_fake.builds(), len(store)) == (1, 1)
    compile_fake.run("gt4py-b")
    assert compile_fake.builds() == 1


def test_force_recompile_and_read_only_stores_keep_nothing(
    compile_fake: SimpleNamespace, tmp_path: Path
) -> None:
    sc.open_store(tmp_path / "store")  # create it, so it can be opened read-only
    store = sc_gt4py.enable(sc.open_store(tmp_path / "store", read_only=True))
    compile_fake.run("gt4py-a")
    sc_gt4py.enable(tmp_path / "store")
    compile_fake.run("gt4py-b", force_recompile=True)
    assert (compile_fake.builds(), len(store)) == (2, 0)


def test_translation_caches_made_before_enable_go_to_the_store(
    gt: SimpleNamespace, tmp_path: Path
) -> None:
    routed = gt.filecache.FileCache(tmp_path / "translation_cache" / "gtfn")
    elsewhere = gt.filecache.FileCache(tmp_path / "other")
    store = sc_gt4py.enable(tmp_path / "store")
    routed[GT4PY_KEY] = "generated C++"
    elsewhere[GT4PY_KEY] = "kept by GT4Py"
    assert routed[GT4PY_KEY] == "generated C++"
    assert [h.step for h in store.headers()] == ["gt4py.translation[gtfn]"]
    assert not (tmp_path / "translation_cache").exists()
    assert elsewhere[GT4PY_KEY] == "kept by GT4Py"
    with pytest.raises(KeyError):
        routed["fedcba9876543210"]


def test_disable_restores_gt4py_and_the_environment(
    gt: SimpleNamespace, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(sc_gt4py.ENV_VAR, "0")
    patched = [
        (gt.filecache.FileCache, "__getitem__"),
        (gt.filecache.FileCache, "__reduce_ex__"),
        (gt.compiler.CPPCompiler, "__call__"),
        (gt.cache, "get_cache_folder"),
        (gt.runners.ProcessRunner, "submit"),
    ]
    before = [getattr(owner, name) for owner, name in patched]
    store = sc_gt4py.enable(tmp_path / "store")
    assert os.environ[sc_gt4py.ENV_VAR] == store.spec
    assert sc_gt4py.enable_from_env() is True
    assert sc_gt4py.active_store() is store
    assert all(getattr(o, n) is not b for (o, n), b in zip(patched, before, strict=True))
    sc_gt4py.disable()
    assert all(getattr(o, n) == b for (o, n), b in zip(patched, before, strict=True))
    assert (os.environ[sc_gt4py.ENV_VAR], sc_gt4py.active_store()) == ("0", None)


def test_a_gt4py_without_a_relied_on_piece_is_refused_by_name(
    gt: SimpleNamespace, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delattr(gt.compiler, "is_usable")
    getitem = gt.filecache.FileCache.__getitem__
    with pytest.raises(sc_gt4py.GT4PyIntegrationError) as refused:
        sc_gt4py.enable("memory://")
    message = str(refused.value)
    assert "GT4Py 1.2.3" in message
    assert "gt4py.next.otf.compilation.compiler.is_usable" in message
    assert (sc_gt4py.active_store(), gt.filecache.FileCache.__getitem__) == (None, getitem)


def _task(gt: SimpleNamespace, executor: Any) -> Any:
    return gt.runners.CompilationTask("fake", lambda with_refs: _source(gt), executor)


def test_a_stored_task_is_answered_in_the_calling_process_without_a_worker(
    gt: SimpleNamespace, compile_fake: SimpleNamespace, tmp_path: Path
) -> None:
    sc_gt4py.enable(tmp_path / "store")
    compile_fake.run("gt4py-a")  # built once, kept in the store
    compile_fake.use("gt4py-b")  # a new session: GT4Py's own cache is empty
    runner = gt.runners.ProcessRunner(max_workers=1, shared_session_cache_dir=str(tmp_path))
    try:
        future = runner.submit(_task(gt, compile_fake.compiler))
        assert future.done()
        assert (future.result().src_dir / MODULE).is_file()
        assert runner._pool._processes == {}  # no worker was started
    finally:
        runner.shutdown()
    assert compile_fake.builds() == 1


def test_a_task_with_work_left_goes_to_the_worker_untouched(
    gt: SimpleNamespace, compile_fake: SimpleNamespace, tmp_path: Path
) -> None:
    from stepcache.integrations import _gt4py_runner

    store = sc_gt4py.enable(tmp_path / "store")
    compile_fake.use("gt4py-a")
    sent: list[Any] = []

    def worker(runner: Any, task: Any) -> str:
        sent.append(task)
        return "the worker's future"

    def broken(source: Any) -> Any:
        raise ValueError("a GT4Py error, for the worker to report")

    routed = gt.filecache.FileCache(tmp_path / "translation_cache" / "gtfn")
    with pytest.raises(KeyError):  # outside a stored-only run a miss is GT4Py's KeyError
        routed[GT4PY_KEY]
    for executor in (compile_fake.compiler, broken, lambda source: routed[GT4PY_KEY]):
        task = _task(gt, executor)
        assert _gt4py_runner._submit(worker, None, task) == "the worker's future"
        assert sent[-1] is task
    # Nothing was built, stored or counted as a miss in the calling process: the
    # worker does that (the one miss is the lookup made outside a stored-only run).
    assert (compile_fake.builds(), len(store), store.stats().misses) == (0, 0, 1)
    sc_gt4py.disable()
    off = _task(gt, compile_fake.compiler)
    assert _gt4py_runner._submit(worker, None, off) == "the worker's future"
    assert sent[-1] is off  # switched off: every task goes to the worker


def test_a_stored_only_run_counts_its_hits_only_when_it_answers_the_task(
    gt: SimpleNamespace, compile_fake: SimpleNamespace, tmp_path: Path
) -> None:
    from stepcache.integrations import _gt4py_runner

    store = sc_gt4py.enable(tmp_path / "store")
    routed = gt.filecache.FileCache(tmp_path / "translation_cache" / "gtfn")
    routed[GT4PY_KEY] = "generated C++"  # the translation is stored, the build is not

    def translate_then_build(source: Any) -> Any:
        assert routed[GT4PY_KEY] == "generated C++"
        return compile_fake.compiler(source)

    compile_fake.use("gt4py-a")
    sent: list[Any] = []
    task = _task(gt, translate_then_build)
    _gt4py_runner._submit(lambda runner, task: sent.append(task), None, task)
    assert sent == [task]
    assert store.stats().hits == 0  # its worker counts the translation it reads
    task.compile()  # what the worker does: translate (a hit) and build (a miss, stored)
    assert (store.stats().hits, compile_fake.builds()) == (1, 1)

    compile_fake.use("gt4py-b")  # everything stored now: answered here, both hits counted
    future = _gt4py_runner._submit(lambda runner, task: sent.append(task), None, task)
    assert future.done()
    assert len(sent) == 1
    assert (store.stats().hits, compile_fake.builds()) == (3, 1)


CHILD = """
import json, pickle, sys
step = pickle.loads(open(sys.argv[1], "rb").read())
import stepcache.integrations.gt4py as sc_gt4py
store = sc_gt4py.active_store()
cache = getattr(step, "translation", None)
print(json.dumps([store and store.spec, cache and cache.cache[sys.argv[2]]]))
"""


@pytest.mark.timeout(120)
@pytest.mark.parametrize("part", ["executor", "compiler"])
def test_a_spawned_worker_unpickling_a_step_uses_the_same_store(
    gt: SimpleNamespace, part: str, tmp_path: Path
) -> None:
    store = sc_gt4py.enable(tmp_path / "store")
    executor = gt.gtx.gtfn_cpu.executor
    executor.translation.cache[GT4PY_KEY] = "from the parent"
    blob = tmp_path / "step.pickle"
    blob.write_bytes(pickle.dumps(executor if part == "executor" else executor.compilation))
    env = {k: v for k, v in os.environ.items() if k != sc_gt4py.ENV_VAR}
    env["PYTHONWARNINGS"] = "ignore"
    out = run_python(CHILD, str(blob), GT4PY_KEY, env=env, timeout=100)
    expected = [store.spec, "from the parent" if part == "executor" else None]
    assert json.loads(out.stdout.splitlines()[-1]) == expected
