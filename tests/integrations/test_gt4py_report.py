"""``pytest --stepcache-gt4py --stepcache-report`` names GT4Py's steps, hits and misses."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [
    pytest.mark.skipif(
        importlib.util.find_spec("gt4py") is None,
        reason="gt4py is not installed (needs Python >= 3.12; .ci/gt4py.sh runs these tests)",
    ),
    pytest.mark.slow,
    pytest.mark.timeout(900),
]

SUITE = """
import warnings

import numpy as np

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)  # raised by a GT4Py dependency
    import gt4py.next as gtx
from gt4py.next import float64

I = gtx.Dimension("I")
F = gtx.Field[gtx.Dims[I], float64]


@gtx.field_operator(backend=gtx.gtfn_cpu)
def scaled_sum(a: F, b: F) -> F:
    return 3.0 * a + b


def test_scaled_sum():
    a = gtx.as_field([I], np.arange(8.0))
    b = gtx.as_field([I], np.ones(8))
    out = gtx.zeros({I: 8}, dtype=float64)
    scaled_sum(a, b, out=out, offset_provider={})
    np.testing.assert_allclose(out.asnumpy(), 3.0 * np.arange(8.0) + 1.0)
"""


def _pytest(suite: Path, store: Path, gt4py_dir: Path) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("STEPCACHE_", "PYTEST_"))}
    env.update(GT4PY_BUILD_CACHE_DIR=str(gt4py_dir), PYTHONWARNINGS="ignore")
    gt4py_dir.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(
        [
            *(sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-p", "no:xdist"),
            *("-W", "ignore::DeprecationWarning", str(suite)),
            *(f"--stepcache-gt4py={store}", "--stepcache-report"),
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=suite.parent,
        timeout=800,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def _row(report: str, step: str) -> tuple[int, int, int]:
    """(hits, misses, writes) of ``step`` in the report's per-step table."""
    line = next((ln for ln in report.splitlines() if step in ln), None)
    assert line is not None, report
    hits, misses, writes = map(int, re.findall(r"\b\d+\b", line.split(step, 1)[1])[:3])
    return hits, misses, writes


def test_report_names_gt4py_translation_and_build_steps(tmp_path: Path) -> None:
    suite = tmp_path / "suite" / "test_gt4py_suite.py"
    suite.parent.mkdir()
    suite.write_text(SUITE)
    store = tmp_path / "store"
    cold = _pytest(suite, store, tmp_path / "gt4py-cold")
    assert _row(cold, "gt4py.translation[gtfn]") == (0, 1, 1)
    assert _row(cold, "gt4py.build[gtfn]") == (0, 1, 1)
    # GT4Py's own cache gone, fresh processes: everything comes from the store.
    warm = _pytest(suite, store, tmp_path / "gt4py-warm")
    assert _row(warm, "gt4py.translation[gtfn]") == (1, 0, 0)
    assert _row(warm, "gt4py.build[gtfn]") == (1, 0, 0)
    assert "0 keys added" in warm, warm
