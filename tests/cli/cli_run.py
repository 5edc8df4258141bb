"""Running the real CLI in a subprocess, for the CLI tests."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

# Imports everything first: the interpreter's own files may be private to root.
AS_USER = """
import os, sys
import fcntl, pickle, random, shutil  # stepcache imports them on first use
import rich.console, rich.progress, rich.table
from stepcache.cli import _app, _demo, _explain_cmd, _inspect, _maintain, _render
uid = int(sys.argv.pop(1))
os.setgroups([])
os.setgid(uid)
os.setuid(uid)
sys.exit(_app.run(sys.argv[1:]))
"""


def run_cli(
    *args: str,
    store: Path | str | None = None,
    env: dict[str, str] | None = None,
    user: int | None = None,
) -> subprocess.CompletedProcess[str]:
    """``python -m stepcache.cli [--store STORE] ARGS`` with no terminal, colour or stdin.

    ``env`` adds to (or, with a value of ``""``, removes from) the environment;
    ``user`` runs the command as that user id (the suite runs as root).
    """
    full = {k: v for k, v in os.environ.items() if k != "STEPCACHE_DIR"}
    full.update(NO_COLOR="1", COLUMNS="200", PYTHONDONTWRITEBYTECODE="1")
    for name, value in (env or {}).items():
        if value:
            full[name] = value
        else:
            full.pop(name, None)
    prefix = ["--store", str(store)] if store is not None else []
    start = ["-m", "stepcache.cli"] if user is None else ["-c", AS_USER, str(user)]
    return subprocess.run(
        [sys.executable, *start, *prefix, *args],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
        env=full,
        check=False,
    )


def run_json(*args: str, store: Path | str) -> Any:
    """The command's ``--json`` document; it must succeed and print nothing on stderr."""
    proc = run_cli(*args, "--json", store=store)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    return json.loads(proc.stdout)  # the whole of stdout is one document
