"""Running the real CLI in a subprocess, for the CLI tests."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any


def run_cli(*args: str, store: Path | str | None = None) -> subprocess.CompletedProcess[str]:
    """``python -m stepcache.cli [--store STORE] ARGS`` with no terminal, colour or stdin."""
    env = {k: v for k, v in os.environ.items() if k != "STEPCACHE_DIR"}
    env.update(NO_COLOR="1", COLUMNS="200")
    prefix = ["--store", str(store)] if store is not None else []
    return subprocess.run(
        [sys.executable, "-m", "stepcache.cli", *prefix, *args],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )


def run_json(*args: str, store: Path | str) -> Any:
    """The command's ``--json`` document; it must succeed and print nothing on stderr."""
    proc = run_cli(*args, "--json", store=store)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    return json.loads(proc.stdout)  # the whole of stdout is one document
