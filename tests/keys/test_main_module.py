"""A pipeline run as a script has the keys it has when imported; ``code=`` names must exist."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import stepcache as sc

PIPELINE = """
import dataclasses
import json
import stepcache as sc


def shout(text: str) -> str:
    return text.upper()


@dataclasses.dataclass(frozen=True)
class Lower(sc.StepBase):
    opt_level: int = 2
    post: object = shout  # a function of this module, keyed by its name

    def __call__(self, program: str) -> str:
        return self.post(f"{program} at O{self.opt_level}")


def run() -> None:
    store = sc.open_store()
    step = sc.CachedStep(Lower(), store, code=(__name__,))
    key = step.key_for("lap")
    cached = key in store
    step("lap")
    print(json.dumps({"key": key, "cached": cached, "code": step.code}))


if __name__ == "__main__":
    run()
"""


def run_python(args: list[str], cwd: Path, home: Path) -> dict[str, object]:
    env = {k: v for k, v in os.environ.items() if k != "STEPCACHE_MEMO_DIR"}
    env.update(STEPCACHE_DIR=str(home), PYTHONDONTWRITEBYTECODE="1")
    proc = subprocess.run(
        [sys.executable, *args], cwd=cwd, capture_output=True, text=True, timeout=60, env=env,
        check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    result: dict[str, object] = json.loads(proc.stdout)
    return result


def test_a_script_and_its_import_share_keys_and_entries(tmp_path: Path) -> None:
    (tmp_path / "mypipe.py").write_text(PIPELINE)
    home = tmp_path / "cache"
    as_script = run_python(["mypipe.py"], tmp_path, home)
    imported = run_python(["-c", "import mypipe; mypipe.run()"], tmp_path, home)
    as_module = run_python(["-m", "mypipe"], tmp_path, home)
    assert as_script["code"] == imported["code"] == ["mypipe"]
    assert as_script["key"] == imported["key"] == as_module["key"]
    assert (as_script["cached"], imported["cached"], as_module["cached"]) == (False, True, True)


def test_a_script_inside_a_package_is_keyed_by_its_dotted_name(tmp_path: Path) -> None:
    package = tmp_path / "mydsl"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "pipe.py").write_text(PIPELINE)
    home = tmp_path / "cache"
    as_script = run_python([str(package / "pipe.py")], tmp_path, home)
    imported = run_python(["-c", "import mydsl.pipe as p; p.run()"], tmp_path, home)
    assert as_script["code"] == imported["code"] == ["mydsl.pipe"]
    assert as_script["key"] == imported["key"]
    assert (as_script["cached"], imported["cached"]) == (False, True)


def test_a_code_name_that_cannot_be_found_is_an_error_naming_it() -> None:
    store = sc.MemoryStore()
    with pytest.raises(ModuleNotFoundError, match=r"code= names 'stepcache\.stpe'") as info:
        sc.CachedStep(sc.step(len), store, code=("stepcache.step", "stepcache.stpe"))
    assert info.value.name == "stepcache.stpe"
    with pytest.raises(ModuleNotFoundError, match=r"'nosuchpackage\.passes'"):
        sc.CachedStep(sc.step(len), store, code="nosuchpackage.passes")
    ok = sc.CachedStep(sc.step(len), store, code="stepcache.step")
    assert ok.code == ("stepcache.step",)
    with pytest.raises(ModuleNotFoundError, match=r"'stepcache\.nope'"):
        ok.replace(code=("stepcache.nope",))
