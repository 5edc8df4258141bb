"""Object storage: the S3 client choice, S3Store against a raw GET, and zstd, in one run.

A private SeaweedFS server (see ``stepcache.testing.s3_server``) is started
on loopback. Measured side by side, interleaved call by call:

- ``clients``: 10 KB PUT and GET through ``obstore`` and through ``boto3``
  (the two candidates), and the import time of each in a fresh interpreter;
- ``store``: a 10 KB hit through ``S3Store`` against a raw ``obstore`` GET
  of the same object (goal: ≤ 1.5x), and a tiered (directory + S3) local hit
  after backfill against a DirectoryStore hit (goal: ≤ 1.1x);
- ``zstd``: bytes of the demo's entries with and without ``compress=zstd``.

Usage::

    python benchmarks/bench_s3.py [--quick] [--json]
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from typing import Any

if not __package__:  # run as a script: the checkout is not on sys.path
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks import _harness as h

SIZE = 10_000


def _import_ms(module: str, repeat: int) -> h.Timing:
    code = f"import time; t = time.perf_counter(); import {module}; print(time.perf_counter() - t)"
    samples = [
        float(subprocess.run([sys.executable, "-c", code], capture_output=True, check=True).stdout)
        for _ in range(repeat)
    ]
    return h.summarize(samples, 1e3)


def _clients(server: Any, n: int) -> dict[str, Any]:
    import boto3
    import obstore
    from obstore.store import S3Store as ObjectStore

    env = server.env
    raw = ObjectStore(
        server.bucket,
        endpoint=server.endpoint,
        region=env["AWS_REGION"],
        access_key_id=env["AWS_ACCESS_KEY_ID"],
        secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
        client_options={"allow_http": True},
    )
    boto = boto3.client(
        "s3",
        endpoint_url=server.endpoint,
        region_name=env["AWS_REGION"],
        aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
    )
    data = os.urandom(SIZE)
    b = server.bucket
    puts: dict[str, Callable[[int], object]] = {
        "obstore": lambda i: obstore.put(raw, f"clients/o{i}", data),
        "boto3": lambda i: boto.put_object(Bucket=b, Key=f"clients/b{i}", Body=data),
    }
    gets: dict[str, Callable[[int], object]] = {
        "obstore": lambda i: obstore.get(raw, f"clients/o{i}").bytes(),
        "boto3": lambda i: boto.get_object(Bucket=b, Key=f"clients/b{i}")["Body"].read(),
    }
    out: dict[str, Any] = {}
    for op, funcs in (("put", puts), ("get", gets)):
        times = h.interleaved(funcs, n, warmup=0 if op == "get" else 5)
        out[op] = {name: h.summarize(t, 1e3).to_dict() for name, t in times.items()}
    repeat = 3 if n < 100 else 7
    out["import_ms"] = {
        "obstore": _import_ms("obstore.store", repeat).to_dict(),
        "boto3": _import_ms("boto3", repeat).to_dict(),
    }
    return out


def _store_vs_raw(server: Any, n: int) -> dict[str, Any]:
    """A 10 KB hit through S3Store, a tiered local hit and DirectoryStore, against floors."""
    import tempfile

    import obstore

    import stepcache as sc
    from stepcache.stores.directory import DirectoryStore
    from stepcache.stores.s3 import S3Store
    from stepcache.stores.tiered import TieredStore

    spec = f"s3://{server.bucket}/bench{os.getpid()}?endpoint={server.endpoint}"
    secret = "bench-secret"
    store = S3Store(spec, secret=secret)
    raw = store.backend.client.handle()
    keys = [sc.fingerprint(("s3-bench", i)) for i in range(n)]
    value = os.urandom(SIZE)
    with tempfile.TemporaryDirectory() as tmp:
        plain = DirectoryStore(f"{tmp}/dir", secret=secret)
        local = DirectoryStore(f"{tmp}/local", secret=secret)
        tiered = TieredStore([local, S3Store(spec, secret=secret)])
        for k in keys:
            store[k] = value
            plain[k] = value
            tiered.get(k)  # backfill: every timed tiered read is a local hit
        gets: dict[str, Callable[[int], object]] = {
            "raw GET": lambda i: obstore.get(raw, f"v1/{keys[i]}").bytes(),
            "S3Store": lambda i: store[keys[i]],
            "DirectoryStore": lambda i: plain[keys[i]],
            "tiered (local hit)": lambda i: tiered[keys[i]],
        }
        times = h.interleaved(gets, n)
        tiered.close()
        plain.close()
    store.close()
    return {name: h.summarize(t, 1e3).to_dict() for name, t in times.items()}


def _demo_payloads(root: str, programs: int) -> list[bytes]:
    """The payloads a demo run stores: entry values and artifact trees (as one archive each)."""
    from stepcache import codec
    from stepcache.stores import artifacts
    from stepcache.stores.directory import DirectoryStore

    subprocess.run(
        [
            sys.executable,
            "-m",
            "stepcache.cli",
            "--store",
            root,
            "demo",
            "--programs",
            str(programs),
        ],
        check=True,
        capture_output=True,
    )
    store = DirectoryStore(root)
    payloads = []
    for key in sorted(store):
        blob = store.backend.load(key)
        assert blob is not None
        header = codec.read_header(blob)
        tree = store.get_dir(key, count=False) if header.codec == "tree" else None
        if tree is not None:  # as a remote tier holds it: manifest and archive
            payloads.append(artifacts.encode(artifacts.build_manifest(tree), tree))
        else:
            payloads.append(blob[len(blob) - header.payload_bytes :])
    store.close()
    return payloads


def _zstd(programs: int) -> dict[str, Any]:
    """Bytes and time of the demo's payloads with and without zstd (level 3)."""
    import tempfile
    import time

    import zstandard

    with tempfile.TemporaryDirectory() as root:
        payloads = _demo_payloads(root, programs)
    compressor, decompressor = zstandard.ZstdCompressor(level=3), zstandard.ZstdDecompressor()
    start = time.perf_counter()
    packed = [compressor.compress(p) for p in payloads]
    mid = time.perf_counter()
    for p in packed:
        decompressor.decompress(p)
    end = time.perf_counter()
    raw, small = sum(map(len, payloads)), sum(map(len, packed))
    return {
        "programs": programs,
        "payloads": len(payloads),
        "raw_bytes": raw,
        "zstd_bytes": small,
        "compress_ms": (mid - start) * 1e3,
        "decompress_ms": (end - mid) * 1e3,
        "compress_mb_s": raw / (mid - start) / 1e6,
        "decompress_mb_s": raw / (end - mid) / 1e6,
    }


@contextlib.contextmanager
def _environment(server: Any) -> Iterator[None]:
    """The server's credentials for the stores; no $STEPCACHE_SECRET (they are given one)."""
    names = [*server.env, "STEPCACHE_SECRET"]
    saved = {name: os.environ.get(name) for name in names}
    os.environ.pop("STEPCACHE_SECRET", None)
    os.environ.update(server.env)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def run(quick: bool) -> dict[str, Any]:
    """Start a server, measure, stop it; ``{"skipped": reason}`` without weed or the clients."""
    from stepcache.testing.s3_server import NO_WEED_REASON, S3Server, find_weed

    if find_weed() is None:
        return {"skipped": NO_WEED_REASON}
    try:
        import boto3  # noqa: F401
        import obstore  # noqa: F401
    except ImportError as exc:
        return {"skipped": f"needs {exc.name}: pip install -e '.[s3,bench]'"}
    n = 50 if quick else 300
    with S3Server() as server:
        figures: dict[str, Any] = {"machine": h.machine(), "n": n}
        figures["clients"] = _clients(server, n)
        with _environment(server):
            figures["store"] = _store_vs_raw(server, n)
    figures["zstd"] = _zstd(5 if quick else 20)
    return figures


def table(figures: dict[str, Any]) -> str:
    """The figures as markdown."""
    if "skipped" in figures:
        return f"skipped: {figures['skipped']}"
    lines = ["| measure | obstore | boto3 | boto3 / obstore |", "|---|---|---|---|"]
    clients = figures["clients"]
    for op in ("put", "get"):
        o, b = clients[op]["obstore"]["median"], clients[op]["boto3"]["median"]
        row = f"| 10 KB {op.upper()}, ms (median) | {h.fmt(o)} | {h.fmt(b)} | {b / o:.2f}x |"
        lines.append(row)
    o, b = clients["import_ms"]["obstore"]["median"], clients["import_ms"]["boto3"]["median"]
    lines.append(f"| import, ms (median) | {h.fmt(o)} | {h.fmt(b)} | {b / o:.1f}x |")
    st = figures["store"]
    floor, direct = st["raw GET"]["median"], st["DirectoryStore"]["median"]
    lines += ["", "| 10 KB get (hit) | ms (median) | ratio | goal |", "|---|---|---|---|"]
    for name, goal, base in (
        ("raw GET", "", floor),
        ("S3Store", "≤ 1.5x raw GET", floor),
        ("DirectoryStore", "", direct),
        ("tiered (local hit)", "≤ 1.1x DirectoryStore", direct),
    ):
        med = st[name]["median"]
        lines.append(f"| {name} | {h.fmt(med)} | {med / base:.2f}x | {goal} |")
    z = figures["zstd"]
    lines += [
        "",
        f"zstd (level 3) on the payloads of `stepcache demo --programs {z['programs']}` "
        f"({z['payloads']} entries and trees):",
        "",
        "| raw bytes | zstd bytes | ratio | compress | decompress |",
        "|---|---|---|---|---|",
        f"| {z['raw_bytes']} | {z['zstd_bytes']} | {z['raw_bytes'] / z['zstd_bytes']:.2f}x "
        f"| {h.fmt(z['compress_ms'])} ms ({h.fmt(z['compress_mb_s'])} MB/s) "
        f"| {h.fmt(z['decompress_ms'])} ms ({h.fmt(z['decompress_mb_s'])} MB/s) |",
    ]
    return "\n".join(lines)


def section(figures: dict[str, Any]) -> h.Section:
    """The suite's table: the client choice, S3Store against its floors, zstd."""
    s = h.Section("s3", "11. Object storage (S3, SeaweedFS on loopback)", ["measure", "value"])
    clients, st, z = figures["clients"], figures["store"], figures["zstd"]
    for op in ("get", "put"):
        o, b = clients[op]["obstore"]["median"], clients[op]["boto3"]["median"]
        s.add([f"10 KB {op.upper()}: boto3 / obstore", h.ratio(b / o)], [])
    hit = st["S3Store"]["median"] / st["raw GET"]["median"]
    s.add(
        ["10 KB hit: S3Store / raw GET", h.ratio(hit)],
        [h.at_most("S3Store / raw GET", hit, 1.5, "x")],
    )
    local = st["tiered (local hit)"]["median"] / st["DirectoryStore"]["median"]
    s.add(
        ["10 KB hit: tiered (local) / DirectoryStore", h.ratio(local)],
        [h.at_most("tiered / DirectoryStore", local, 1.1, "x")],
    )
    s.add(["demo payloads: raw / zstd bytes", h.ratio(z["raw_bytes"] / z["zstd_bytes"])], [])
    s.notes.append(
        "Interleaved calls in one run against one private SeaweedFS server; medians. "
        "The tiered store's reads are local hits after backfill."
    )
    return s


def main(argv: list[str] | None = None) -> None:
    """Command line: ``[--quick] [--json]``."""
    h.standalone(run, table, __doc__.splitlines()[0], argv)


if __name__ == "__main__":
    main()
