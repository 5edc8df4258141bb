"""Code the group-cache tests run in child processes that become other users of one group.

A child is forked from the test suite's fork server (run as root) and
switches to an unprivileged uid and gid before doing anything with the
cache, so the kernel enforces the modes stepcache chose. Everything a child
uses is imported here, before the switch: the interpreter's own files need
not be readable by the new user. Imports no pytest.
"""

from __future__ import annotations

# Imported on first use by stepcache (a store with a secret, the first lock, a
# pickled value, a warning...); after switching users a child could no longer
# import them (the interpreter's files are root's).
import fcntl  # noqa: F401
import hashlib  # noqa: F401
import hmac  # noqa: F401
import json  # noqa: F401
import logging  # noqa: F401
import os
import pickle  # noqa: F401
import random  # noqa: F401
import shutil  # noqa: F401
import stat
import time
from pathlib import Path
from typing import Any

import stepcache.stores.artifacts  # noqa: F401 - loaded on first tree use: before the uid changes
from stepcache.stores._locks import KeyLocks
from stepcache.stores.directory import DirectoryStore

KEY = "ab" * 16


def become(uid: int, gid: int, groups: tuple[int, ...]) -> None:
    """Switch this process to ``uid`` with primary group ``gid`` and ``groups``; umask 022.

    022 is the common umask that would take the group's write access away.
    """
    os.setgroups(list(groups))
    os.setgid(gid)
    os.setuid(uid)
    os.umask(0o022)


def can_become(start: Any, uid: int, gid: int) -> bool:
    """Whether this process may switch to another user (root outside a restricted sandbox)."""
    try:
        become(uid, gid, (gid,))
    except OSError:
        return False
    return os.geteuid() == uid


def lock_as(start: Any, role: str, uid: int, gid: int, leases: str, backend: str) -> dict[str, Any]:
    """As ``uid``: the ``holder`` locks KEY across two barrier rounds; the ``other`` tries it.

    Round 1: the holder holds. The other tries for 0.3 s (refused while held),
    round 2, round 3 (the holder has released), then takes the lock itself.
    """
    become(uid, gid, (gid,))
    warnings: list[str] = []
    locks = KeyLocks(leases, backend=backend, warn=lambda _t, msg, *a: warnings.append(msg % a))
    if role == "holder":
        with locks.hold(KEY, time.monotonic() + 30) as held:
            mode = stat.S_IMODE(os.stat(f"{leases}/{locks.file_of(KEY)}").st_mode)
            start.wait(timeout=30)
            start.wait(timeout=30)
        start.wait(timeout=30)
        return {"held": held, "mode": mode, "warnings": warnings}
    start.wait(timeout=30)
    with locks.hold(KEY, time.monotonic() + 0.3) as while_held:
        pass
    start.wait(timeout=30)
    start.wait(timeout=30)
    with locks.hold(KEY, time.monotonic() + 20) as after:
        pass
    return {"while_held": while_held, "after": after, "warnings": warnings}


def share_as(
    start: Any, role: str, uid: int, gid: int, groups: tuple[int, ...], root: str, build: str
) -> dict[str, Any]:
    """As ``uid``: the ``writer`` stores an entry and moves a tree in; the ``reader`` reads both.

    The writer's primary group is not the cache's (only one of ``groups``),
    so its build tree starts with the wrong group. Then the reader stores an
    entry, which the writer reads back.
    """
    become(uid, gid, groups)
    store = DirectoryStore(root, shared=True, secret="team")
    found: dict[str, Any] = {}
    if role == "writer":
        Path(build).mkdir()
        Path(build, "lib.so").write_bytes(b"ELF")
        store["01" * 16] = "from the writer"
        store.put_dir("02" * 16, build, move=True)
        start.wait(timeout=30)
        start.wait(timeout=30)
        found["theirs"] = store.get("03" * 16)
    else:
        start.wait(timeout=30)
        found["entry"] = store.get("01" * 16)
        tree = store.get_dir("02" * 16)
        found["tree"] = None if tree is None else (tree / "lib.so").read_bytes()
        store["03" * 16] = "from the reader"
        start.wait(timeout=30)
    errors = store.counters.snapshot().errors
    store.close()
    return {**found, "errors": errors}
