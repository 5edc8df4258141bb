"""The pytest side of the GT4Py integration: ``pytest --stepcache-gt4py[=SPEC]``.

Called by stepcache's pytest plugin; imports GT4Py (through
:mod:`stepcache.integrations.gt4py`) only when the option or
``$STEPCACHE_GT4PY`` asks for it.
"""

from __future__ import annotations

import os
from typing import Any

import pytest

__all__ = ["addoption", "configure"]


def addoption(group: Any) -> None:
    """Add ``--stepcache-gt4py`` to the plugin's option group."""
    group.addoption(
        "--stepcache-gt4py",
        nargs="?",
        const="1",
        default=None,
        metavar="SPEC",
        help="Keep GT4Py's translations and compiled programs in a stepcache store: SPEC, "
        "or the default store without one (like STEPCACHE_GT4PY=SPEC). Write "
        "--stepcache-gt4py=SPEC, or put it after the test paths.",
    )


def configure(config: pytest.Config) -> None:
    """Switch the GT4Py integration on when the option or ``$STEPCACHE_GT4PY`` asks for it."""
    spec = config.getoption("stepcache_gt4py")
    if spec is not None:
        os.environ["STEPCACHE_GT4PY"] = spec  # xdist workers and compile workers inherit it
    if os.environ.get("STEPCACHE_GT4PY"):
        # Imports GT4Py only now, before any test imports its backends; fails
        # loudly when the installed GT4Py lacks what the integration needs.
        from stepcache.integrations import gt4py as sc_gt4py

        try:
            sc_gt4py.enable_from_env()
        except sc_gt4py.GT4PyIntegrationError as exc:
            raise pytest.UsageError(f"--stepcache-gt4py / STEPCACHE_GT4PY: {exc}") from exc
