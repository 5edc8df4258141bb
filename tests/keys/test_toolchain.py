"""Keys cover the toolchain: compiler identity, declared environment, Python, platform."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

import stepcache as sc
from stepcache.identity import toolchain


def _wrapper(path: Path, version: str) -> Path:
    path.write_text(f'#!/bin/sh\nif [ "$1" = --version ]; then echo "{version}"; exit 0; fi\n')
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


CALLS: list[int] = []


def compile_(x: int) -> int:
    CALLS.append(x)
    return x


def test_env_values_join_the_key_and_restoring_them_hits(monkeypatch: pytest.MonkeyPatch) -> None:
    store = sc.MemoryStore()

    def cached() -> sc.CachedStep:
        return sc.CachedStep(sc.step(compile_), store, toolchain=toolchain(env=("CFLAGS",)))

    CALLS.clear()
    monkeypatch.setenv("CFLAGS", "-O2")
    cached()(1)
    monkeypatch.setenv("CFLAGS", "-O3")
    cached()(1)
    monkeypatch.setenv("CFLAGS", "-O2")
    cached()(1)
    assert CALLS == [1, 1]
    assert len(store) == 2


def test_explain_names_the_changed_environment_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    store = sc.MemoryStore()
    monkeypatch.setenv("CFLAGS", "-O2")
    sc.CachedStep(sc.step(abs), store, toolchain=toolchain(env=("CFLAGS",)))(-1)
    monkeypatch.setenv("CFLAGS", "-O3")
    report = sc.CachedStep(sc.step(abs), store, toolchain=toolchain(env=("CFLAGS",))).explain(-1)
    assert not report.hit
    assert report.reasons == ("toolchain.env[CFLAGS]: '-O2' -> '-O3'",)


def test_unset_and_empty_variables_differ(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CFLAGS", raising=False)
    unset = toolchain(env=("CFLAGS",))
    monkeypatch.setenv("CFLAGS", "")
    assert toolchain(env=("CFLAGS",)) != unset


def test_a_compiler_with_other_version_output_is_another_toolchain(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STEPCACHE_MEMO_DIR", str(tmp_path / "memo"))
    cc = _wrapper(tmp_path / "cc", "fakecc 1.0")
    first = toolchain(compiler=cc)
    assert first.compiler_version == "fakecc 1.0"
    _wrapper(cc, "fakecc 2.0 (a longer line)")
    os.utime(cc, ns=(1, 1))  # another size and mtime: the memo must not answer
    second = toolchain(compiler=cc)
    assert second.compiler_version.startswith("fakecc 2.0")
    assert sc.fingerprint(first) != sc.fingerprint(second)


def test_a_missing_compiler_is_a_clear_error() -> None:
    with pytest.raises(sc.CompilerError, match="no-such-cc"):
        toolchain(compiler="no-such-cc")


def test_toolchain_records_python_and_platform() -> None:
    tc = toolchain()
    assert tc.python.startswith(("cpython-", "pypy-"))
    assert tc.platform
    assert set(tc.manifest()) >= {"toolchain.python", "toolchain.platform"}
