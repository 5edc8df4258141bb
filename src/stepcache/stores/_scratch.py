"""Unpacked copies of archived trees: one directory per process, removed when it exits.

A store that keeps trees inside its entries (Redis, S3, memory) serves a
tree by unpacking it (:func:`stepcache.stores.artifacts.unpack`) below
:func:`scratch_dir`. The directory is made at the first unpack, removed at
exit (also by ``multiprocessing`` children, which leave through
``os._exit``), and directories of processes that died without cleaning up
are swept when the next one is made.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
import threading
from pathlib import Path
from typing import overload

__all__ = ["scratch_dir"]

_scratch: Path | None = None
_scratch_lock = threading.Lock()


@overload
def scratch_dir() -> Path: ...
@overload
def scratch_dir(*, create: bool) -> Path | None: ...
def scratch_dir(*, create: bool = True) -> Path | None:
    """This process's directory for unpacked trees, removed when the process exits.

    ``create=False`` returns ``None`` instead of making one.
    """
    with _scratch_lock:
        if _scratch is None or _scratch_pid != os.getpid():
            if not create:
                return None
            _make_scratch()
        return _scratch


_scratch_pid = 0


def _make_scratch() -> None:
    global _scratch, _scratch_pid
    _scratch = Path(tempfile.mkdtemp(prefix=f"stepcache-trees-{os.getpid()}-"))
    _scratch_pid = os.getpid()
    path, pid = _scratch, _scratch_pid

    def remove() -> None:
        if os.getpid() == pid:
            shutil.rmtree(path, ignore_errors=True)

    atexit.register(remove)
    # Children of multiprocessing leave through os._exit, skipping atexit.
    import sys

    mp_util = sys.modules.get("multiprocessing.util")
    if mp_util is not None:
        mp_util.Finalize(None, remove, exitpriority=10)
    _sweep_dead(path.parent)


def _sweep_dead(parent: Path) -> None:
    """Remove unpacked-tree directories of processes that died without cleaning up."""
    from stepcache.stores._fsutil import pid_alive

    try:
        names = os.listdir(parent)
    except OSError:
        return
    for name in names:
        if not name.startswith("stepcache-trees-"):
            continue
        pid_text = name[len("stepcache-trees-") :].partition("-")[0]
        if pid_text.isdigit() and int(pid_text) != os.getpid() and not pid_alive(int(pid_text)):
            shutil.rmtree(parent / name, ignore_errors=True)
