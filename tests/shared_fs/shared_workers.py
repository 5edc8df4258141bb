"""Processes of the shared-filesystem tests, each run as ``python shared_workers.py ROLE ...``.

Every role prints one JSON line of counts on exit. Roles that loop stop when
the file ``STOP`` exists in the store's parent directory, or at a deadline.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from stepcache.stores.directory import DirectoryStore, beneath

try:
    from stepcache.stores.directory.backend import DirectoryBackend
except ImportError:  # a release without it, for comparison runs
    DirectoryBackend = None  # type: ignore[assignment,misc]
from stepcache.testing.sshfs import patch_sleep_under_faketime

DEADLINE = 120.0  # seconds any looping role runs at most
FILES = 6  # files per published tree


def tree_key(publisher: str, n: int) -> str:
    return hashlib.sha256(f"{publisher}/{n}".encode()).hexdigest()[:32]


def file_bytes(k: str, i: int) -> bytes:
    return f"{k}/{i}".encode() * (200 + 50 * i)


def build(where: Path, k: str) -> Path:
    (where / "sub").mkdir(parents=True)
    for i in range(FILES):
        (where / ("sub" if i % 2 else ".") / f"f{i}").write_bytes(file_bytes(k, i))
    return where


def check_tree(path: Path | None, k: str) -> str:
    """``ok``, ``missing`` (no tree), ``incomplete`` or ``wrong``."""
    if path is None or not path.is_dir():
        return "missing"
    for i in range(FILES):
        f = path / ("sub" if i % 2 else ".") / f"f{i}"
        if not f.is_file():
            return "incomplete"
        if f.read_bytes() != file_bytes(k, i):
            return "wrong"
    return "ok"


def stopped(root: Path, started: float) -> bool:
    return (root.parent / "STOP").exists() or time.monotonic() - started > DEADLINE


def publish(root: Path, publisher: str, count: int) -> dict[str, Any]:
    """Publish ``count`` trees (half built on the store's filesystem and moved in) and values."""
    store = DirectoryStore(root)
    scratch = root.parent / f"builds-{publisher}-{os.getpid()}"
    failed = 0
    for n in range(count):
        k = tree_key(publisher, n)
        if n % 2:
            path = store.get_or_compute_dir(k, lambda k=k: build(scratch / k, k))
        else:
            src = build(scratch / k, k)
            try:
                path = store.put_dir(k, src)
            except OSError:
                failed += 1
                continue
        failed += path.parent.name == scratch.name  # handed back unstored
        store.set(k[::-1], {"key": k, "n": n})
    store.close()
    return {"failed": failed, "errors": store.stats().errors}


def sweep(root: Path) -> dict[str, Any]:
    """Prune the whole store again and again (the temp sweep included)."""
    store = DirectoryStore(root)
    started, rounds, swept = time.monotonic(), 0, 0
    while not stopped(root, started):
        swept += store.prune().swept
        rounds += 1
    return {"rounds": rounds, "swept": swept, "now": time.time()}


def value_of(k: str, gen: int) -> dict[str, Any]:
    # Sizes change from one generation to the next: sshfs cuts a read off at a
    # stale cached size for a while after another mount replaced the file.
    digest = hashlib.sha256(f"{k}{gen}".encode()).digest()
    return {"key": k, "gen": gen, "payload": digest * (1024 + 37 * (gen % 29))}


def republish(root: Path, keys: list[str]) -> dict[str, Any]:
    """Replace every key's entry with a new generation, over and over."""
    store = DirectoryStore(root)
    started, gen = time.monotonic(), 0
    while not stopped(root, started):
        gen += 1
        for k in keys:
            store.set(k, value_of(k, gen))
    return {"generations": gen}


def read(root: Path, keys: list[str], reads: int) -> dict[str, Any]:
    """Read ``reads`` times; count hits, misses, wrong values and removals of entries."""
    removals = 0
    unlink = beneath.unlink_beneath

    def counting_unlink(*args: Any, **kwargs: Any) -> bool:
        nonlocal removals
        removals += 1
        return unlink(*args, **kwargs)

    beneath.unlink_beneath = counting_unlink  # type: ignore[assignment]
    rereads = 0
    reread = getattr(DirectoryBackend, "load_fresh", None)

    def counting_reread(self: Any, key: str) -> bytes | None:
        nonlocal rereads
        rereads += 1
        return reread(self, key)  # type: ignore[misc]

    if reread is not None:  # the fresh open after a read that did not verify
        DirectoryBackend.load_fresh = counting_reread  # type: ignore[method-assign]
    store = DirectoryStore(root)
    hits = misses = wrong = 0
    for n in range(reads):
        k = keys[n % len(keys)]
        got = store.get(k)
        if got is None:
            misses += 1
        elif got != value_of(k, got.get("gen", -1)) or got["key"] != k:
            wrong += 1
        else:
            hits += 1
    stats = store.stats()
    return {
        "hits": hits,
        "misses": misses,
        "wrong": wrong,
        "removals": removals,
        "rereads": rereads,
        "errors": stats.errors,
        "shared": getattr(store, "on_shared_fs", None),
    }


def main() -> None:
    patch_sleep_under_faketime()
    role, root = sys.argv[1], Path(sys.argv[2])
    args = sys.argv[3:]
    if role == "publish":
        out = publish(root, args[0], int(args[1]))
    elif role == "sweep":
        out = sweep(root)
    elif role == "republish":
        out = republish(root, args)
    else:
        out = read(root, args[1:], int(args[0]))
    print(json.dumps(out))


if __name__ == "__main__":
    main()
