"""``import stepcache`` stays light: no CLI, server client or compression library is imported."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

pytestmark = pytest.mark.timeout(60)

HEAVY = ("click", "rich", "redis", "numpy", "boto3", "botocore", "obstore", "zstandard")


def _loaded_after(code: str) -> list[str]:
    report = f"print(json.dumps(sorted(set({HEAVY!r}) & set(sys.modules))))"
    script = f"import sys, json\n{code}\n{report}"
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=50
    )
    loaded: list[str] = json.loads(out.stdout.strip().splitlines()[-1])
    return loaded


def test_import_stepcache_imports_no_heavy_or_optional_module() -> None:
    assert _loaded_after("import stepcache") == []


def test_opening_an_s3_store_imports_its_client_only_on_first_use() -> None:
    code = (
        "import stepcache\n"
        "store = stepcache.open_store('s3://bucket/p?endpoint=http://127.0.0.1:9')\n"
    )
    assert _loaded_after(code) == []
