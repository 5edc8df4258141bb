"""The output shown in the docs is what the command line prints now (docs/_capture.py)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "docs"))

import _capture  # noqa: E402


def test_masking_keeps_words_and_drops_what_varies_by_machine() -> None:
    a = "cold run: 5% faster than without a cache\n3.8s ago  box_f32_r1  7b453ff8f457  1.6 KiB"
    b = "cold run: 2.7x slower than without a cache (the cost of filling the cache)\n" + (
        "12.1s ago box_f32_r1 0d1e2f3a4b5c   985 B"
    )
    assert _capture.mask(a) == _capture.mask(b)
    assert _capture.mask("removed 1 entry") != _capture.mask("removed 1 entries")
    assert _capture.mask("hits misses") != _capture.mask("hits  misses  writes")


def test_every_page_has_its_blocks_marked() -> None:
    for page in _capture.PAGES:
        names = [name for name, _ in _capture.blocks(page.read_text())]
        assert len(names) == len(set(names)), page
    assert [n for n, _ in _capture.blocks((ROOT / "README.md").read_text())] == ["demo"]


@pytest.mark.slow
@pytest.mark.timeout(600)
@pytest.mark.skipif(
    shutil.which(os.environ.get("CC", "cc").split()[0]) is None,
    reason="the docs' story runs the demo, which compiles C",
)
def test_the_docs_show_what_the_commands_print_now() -> None:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "docs" / "_capture.py"), "--check"],
        capture_output=True,
        text=True,
        timeout=580,
        check=False,
    )
    assert proc.returncode == 0, (
        f"{proc.stdout}{proc.stderr}\nregenerate the docs with: python docs/_capture.py"
    )
