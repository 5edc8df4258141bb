"""Keys cover the code a step declares: edits re-key, reverts hit again, wheels use RECORD."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
import textwrap
import time
import zipfile
from pathlib import Path
from typing import Any

import pytest

import stepcache as sc
import stepcache._srctree as srctree
from stepcache.identity import CodeIdentity, code_identity
from stepcache.testing.processes import run_python

# Runs in a fresh process: two CachedSteps over one directory store, one that
# declares the package `passes_pkg` as its code and one that does not.
CHILD = """
import json, sys
sys.path.insert(0, sys.argv[1])
import stepcache as sc
import passes_pkg.opt as opt

calls = []
def run(x):
    calls.append(x)
    return opt.optimise(x)

store = sc.open_store(sys.argv[2])
declared = sc.CachedStep(sc.step(run), store, version="declared", code=("passes_pkg",))
blind = sc.CachedStep(sc.step(run), store, version="blind")
out = {"declared": declared(3), "calls_declared": len(calls)}
calls.clear()
out["blind"] = blind(3)
out["calls_blind"] = len(calls)
if len(sys.argv) > 3:
    out["explain"] = declared.explain(3).reason
print(json.dumps(out))
"""


def _write_pkg(root: Path, body: str) -> Path:
    pkg = root / "passes_pkg"
    pkg.mkdir(parents=True, exist_ok=True)
    (pkg / "__init__.py").write_text("")
    mod = pkg / "opt.py"
    mod.write_text(textwrap.dedent(body))
    # The memo trusts (size, mtime_ns) only for files older than two seconds;
    # date the file back so the test also exercises the memoised path.
    old = time.time() - 10
    os.utime(mod, (old, old))
    return mod


def _python(script: str, env: dict[str, str], *args: str) -> Any:
    """Run ``script`` in a fresh interpreter; return the JSON it prints."""
    return json.loads(run_python(script, *args, env=env).stdout)


def _run(src: Path, cache: Path, env: dict[str, str], *extra: str) -> dict[str, object]:
    return _python(CHILD, env, str(src), str(cache), *extra)  # type: ignore[no-any-return]


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return {**os.environ, "STEPCACHE_MEMO_DIR": str(tmp_path / "memo")}


def test_editing_declared_code_rekeys_only_the_declaring_step(
    tmp_path: Path, env: dict[str, str]
) -> None:
    src, cache = tmp_path / "src", tmp_path / "cache"
    mod = _write_pkg(src, "def optimise(x):\n    return x * 2\n")
    first = _run(src, cache, env)
    assert first == {"declared": 6, "calls_declared": 1, "blind": 6, "calls_blind": 1}

    original = mod.read_text()
    _write_pkg(src, "def optimise(x):\n    return x * 200\n")
    edited = _run(src, cache, env, "explain")
    # The declaring step recomputes with the new code; the blind one replays a stale result.
    assert edited["declared"] == 600
    assert edited["calls_declared"] == 1
    assert edited["blind"] == 6
    assert edited["calls_blind"] == 0

    _write_pkg(src, original)
    reverted = _run(src, cache, env, "explain")
    assert reverted["declared"] == 6
    assert reverted["calls_declared"] == 0
    assert reverted["explain"] == "hit"


def test_explain_names_the_edited_file(tmp_path: Path, env: dict[str, str]) -> None:
    src, cache = tmp_path / "src", tmp_path / "cache"
    _write_pkg(src, "def optimise(x):\n    return x + 1\n")
    _run(src, cache, env)
    _write_pkg(src, "def optimise(x):\n    return x + 2\n")
    script = CHILD.replace("out = {", "out = {'reason': declared.explain(3).reason, ")
    reason = _python(script, env, str(src), str(cache))["reason"]
    assert "code[passes_pkg]: passes_pkg/opt.py changed" in reason


def test_memo_is_written_once_and_reused(tmp_path: Path, env: dict[str, str]) -> None:
    src = tmp_path / "src"
    _write_pkg(src, "def optimise(x):\n    return x\n")
    probe = (
        "import sys, json; sys.path.insert(0, sys.argv[1]);"
        "from stepcache.identity import code_identity;"
        "print(json.dumps(code_identity('passes_pkg').digest))"
    )
    runs = [_python(probe, env, str(src)) for _ in range(2)]
    assert runs[0] == runs[1]
    memo_files = list((tmp_path / "memo").glob("code-*.memo"))
    assert len(memo_files) == 1
    assert b"opt.py" in memo_files[0].read_bytes()


@pytest.mark.parametrize("name", ["sys", "os", "_io"])
def test_modules_built_into_the_interpreter_are_identified_by_its_build(name: str) -> None:
    identity = code_identity(name)  # sys and _io are built in, os is frozen (3.11+)
    assert identity.source in ("interpreter", "files")  # files: os run from source
    if identity.source == "interpreter":
        assert identity.digest == code_identity("sys").digest
        assert identity.files == ()
    step = sc.CachedStep(sc.step(str.upper), sc.MemoryStore(), code=(name,))
    assert step("x") == "X"
    assert step.key_for("x") == step.key_for("x")


def test_a_missing_module_has_a_stable_missing_identity() -> None:
    ident = code_identity("no_such_module_for_stepcache")
    assert ident.source == "missing"
    assert ident == code_identity("no_such_module_for_stepcache")


def _build_wheel(tmp_path: Path, version: str, body: str) -> Path:
    """A real wheel, built by hand (a wheel is a zip with a RECORD)."""
    import base64
    import hashlib

    name = "wheelpasses"
    files = {
        f"{name}/__init__.py": "",
        f"{name}/opt.py": body,
        f"{name}-{version}.dist-info/METADATA": (
            f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"
        ),
        f"{name}-{version}.dist-info/WHEEL": (
            "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
        ),
    }
    record = []
    for path, text in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=")
        record.append(f"{path},sha256={digest.decode()},{len(text.encode())}")
    record.append(f"{name}-{version}.dist-info/RECORD,,")
    files[f"{name}-{version}.dist-info/RECORD"] = "\n".join(record) + "\n"
    wheel = tmp_path / f"{name}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        for path, text in files.items():
            zf.writestr(path, text)
    return wheel


def _install(wheel: Path, site: Path) -> None:
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "-q",
            "--no-deps",
            "--no-index",
            "--no-compile",
            "--upgrade",
            "--target",
            str(site),
            str(wheel),
        ],
        check=True,
        timeout=120,
        capture_output=True,
    )


WHEEL_PROBE = """
import json, sys
sys.path.insert(0, sys.argv[1])
opened = []
def audit(event, args):
    if event == "open" and isinstance(args[0], str) and "wheelpasses/" in args[0]:
        opened.append(args[0])
import importlib.util
importlib.util.find_spec("wheelpasses")
sys.addaudithook(audit)
from stepcache.identity import code_identity
ident = code_identity("wheelpasses")
print(json.dumps({"digest": ident.digest, "source": ident.source, "opened": opened}))
"""


def test_wheel_identity_comes_from_record_without_reading_sources(
    tmp_path: Path, env: dict[str, str]
) -> None:
    site = tmp_path / "site-packages"
    results = []
    for version, body in (("1.0", "def f():\n    return 1\n"), ("1.0", "def f():\n    return 2\n")):
        _install(_build_wheel(tmp_path, version, body), site)
        results.append(_python(WHEEL_PROBE, env, str(site)))
    assert [r["source"] for r in results] == ["record", "record"]
    assert results[0]["opened"] == []
    assert results[1]["opened"] == []
    # Same version number, different file contents: RECORD hashes tell them apart.
    assert results[0]["digest"] != results[1]["digest"]


def test_cached_step_accepts_a_single_module_name() -> None:
    cached = sc.CachedStep(sc.step(abs), sc.MemoryStore(), code="json")  # type: ignore[arg-type]
    assert cached.code == ("json",)
    assert cached.code_identities[0].source in ("files", "record")


def test_files_are_decoded_when_first_read() -> None:
    listing = (("pkg/a.py", "0" * 32), ("pkg/b.py", "1" * 32))
    calls = []

    def decode() -> tuple[tuple[str, str], ...]:
        calls.append(1)
        return listing

    lazy = CodeIdentity("pkg", "d" * 32, "files", decode)
    assert calls == []
    assert lazy.files == listing
    assert lazy.files == listing
    assert calls == [1]
    eager = CodeIdentity("pkg", "d" * 32, "files", listing)
    assert (lazy, hash(lazy), repr(lazy)) == (eager, hash(eager), repr(eager))
    assert CodeIdentity("pkg", "missing", "missing").files == ()


def test_an_identity_served_from_the_memo_pickles_with_its_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _write_pkg(tmp_path, "def optimise(x):\n    return x\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(srctree, "RACY_NS", 0)  # trust the stamps just written
    first = code_identity("passes_pkg")
    again = code_identity("passes_pkg")  # checked against the in-process memo
    assert again == pickle.loads(pickle.dumps(again)) == first
    assert [path for path, _ in again.files] == ["passes_pkg/__init__.py", "passes_pkg/opt.py"]


def test_a_second_call_in_the_same_process_sees_an_edit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    mod = _write_pkg(tmp_path, "def optimise(x):\n    return x + 1\n")
    monkeypatch.setattr(srctree, "RACY_NS", 0)
    root = str(mod.parent)
    files, digest = srctree.tree_digests(root, None)
    assert srctree.tree_digests(root, None)[1] == digest
    stamp = mod.stat().st_mtime_ns
    time.sleep(0.05)  # past the clock tick of the first write: the new ctime differs
    mod.write_text("def optimise(x):\n    return x + 2\n")  # same size
    os.utime(mod, ns=(stamp, stamp))
    edited, edited_digest = srctree.tree_digests(root, None)
    assert edited_digest != digest
    assert dict(edited())["passes_pkg/opt.py"] != dict(files())["passes_pkg/opt.py"]
