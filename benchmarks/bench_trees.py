"""What artifact trees cost: a check against the manifest at each ``get_dir``, and storing one.

Two trees are stored in a DirectoryStore: one 155 KB shared object (with a
header beside it, like a compiled stencil) and a tree of 1,000 files of
2 KB. Per ``get_dir``, interleaved with the floor: a plain ``os.walk`` plus
``stat`` of every file of the same stored tree (what serving a directory
without any check costs at least). ``get_dir`` in this process reuses the
digests of files whose stat (inode, size, mtime, ctime) is unchanged; a
fresh process hashes every file once (measured in fresh interpreters, the
call alone). No goal is set: these are the price of never serving a damaged
tree, reported as ratios to the floor.

Storing a tree is measured too, for trees like the demo's compiled
programs (a 16 KB shared object, 3 KB of C, a 0.3 KB JSON manifest): a
``put_dir(..., move=True)`` into a new ``DirectoryStore`` (moved in, made
private, each file read once for its digest, published, its entry signed
and written) against the floor of moving the build directory into place
and reading each of its files once (what storing a tree with a checked
manifest does at least), interleaved, each call with a build tree of its own.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from benchmarks import _harness as h

_CHILD = """
import json, sys, time
import stepcache as sc
store = sc.DirectoryStore(sys.argv[1])
t0 = time.perf_counter()
found = store.get_dir(sys.argv[2])
print(json.dumps({"s": time.perf_counter() - t0, "ok": found is not None}))
"""


def make_trees(root: Path) -> dict[str, Path]:
    so = root / "so"
    so.mkdir(parents=True)
    (so / "libstencil.so").write_bytes(os.urandom(155 * 1024))
    (so / "stencil.h").write_text("void run(double *);\n")
    many = root / "many"
    for i in range(1000):
        sub = many / f"d{i // 100:02d}"
        sub.mkdir(parents=True, exist_ok=True)
        (sub / f"f{i:04d}.py").write_bytes(os.urandom(2048))
    return {"one 155 KB .so": so, "1,000 files of 2 KB": many}


def walk_and_stat(path: Path) -> int:
    n = 0
    for dirpath, _, files in os.walk(path):
        for name in files:
            os.stat(os.path.join(dirpath, name))
            n += 1
    return n


def make_build(root: Path) -> Path:
    """A build tree like one of the demo's compiled programs."""
    root.mkdir(parents=True)
    (root / "libstencil.so").write_bytes(os.urandom(16 * 1024))
    (root / "stencil.c").write_bytes(os.urandom(1536).hex().encode())
    (root / "build.json").write_text('{"library": "libstencil.so"}\n' * 10)
    return root


def move_and_read(build: Path, dest: Path) -> None:
    """The floor of storing a tree: move it into place, read each file once."""
    os.rename(build, dest)
    for name in os.listdir(dest):
        fd = os.open(dest / name, os.O_RDONLY)
        try:
            while os.read(fd, 1 << 20):
                pass
        finally:
            os.close(fd)


def _storing(root: Path, repeat: int) -> dict[str, h.Timing]:
    import stepcache as sc

    n = repeat + 3  # and the warm-up rounds
    builds = {
        who: [make_build(root / who / f"b{i}") for i in range(n)] for who in ("floor", "put_dir")
    }
    (root / "floor-dest").mkdir()
    store = sc.DirectoryStore(root / "store")
    times = h.interleaved(
        {
            "floor": lambda i: move_and_read(builds["floor"][i], root / "floor-dest" / f"t{i}"),
            "put_dir": lambda i: store.put_dir(f"{i:032x}", builds["put_dir"][i], move=True),
        },
        repeat,
        warmup=3,
    )
    store.close()
    return {k: h.summarize(v, 1e6) for k, v in times.items()}


def _fresh(root: Path, key: str, repeat: int) -> h.Timing:
    samples = []
    for _ in range(repeat):
        proc = subprocess.run(
            [sys.executable, "-c", _CHILD, str(root), key],
            capture_output=True,
            text=True,
            env=h.child_env(),
            timeout=120,
            check=True,
        )
        out = json.loads(proc.stdout)
        assert out["ok"], "the stored tree did not verify"
        samples.append(out["s"])
    return h.summarize(samples, 1e3)


def run(quick: bool = False) -> dict[str, Any]:
    import stepcache as sc

    repeat, fresh = (20, 3) if quick else (200, 7)
    with tempfile.TemporaryDirectory(prefix="bench-trees-") as tmp:
        root = Path(tmp)
        store = sc.DirectoryStore(root / "cache")
        out: dict[str, Any] = {}
        for n, (name, src) in enumerate(make_trees(root / "src").items()):
            key = f"{n:032x}"
            stored = store.put_dir(key, src)
            times = h.interleaved(
                {
                    "floor": lambda i, p=stored: walk_and_stat(p),
                    "get_dir": lambda i, k=key: store.get_dir(k),
                },
                repeat,
                warmup=3,
            )
            out[name] = {
                "ms": {k: h.summarize(v, 1e3).to_dict() for k, v in times.items()},
                "fresh_ms": _fresh(root / "cache", key, fresh).to_dict(),
            }
        store.close()
        storing = _storing(root / "storing", repeat)
    return {"serving": out, "storing_us": {k: v.to_dict() for k, v in storing.items()}}


def section(figures: dict[str, Any]) -> h.Section:
    """One row per tree: floor, get_dir in this process, get_dir in a fresh process; storing
    one in a note."""
    s = h.Section(
        "trees",
        "11. Artifact trees: checked when served, read once when stored",
        ["tree", "floor (walk+stat) ms", "get_dir ms", "/ floor", "fresh process ms", "/ floor"],
    )
    s.notes.append(
        "Medians. get_dir checks names, sizes and contents; in one process the digest of a "
        "file whose stat is unchanged is remembered, a fresh process hashes every file."
    )
    for name, f in figures["serving"].items():
        floor, got, fresh = (
            f["ms"]["floor"]["median"],
            f["ms"]["get_dir"]["median"],
            f["fresh_ms"]["median"],
        )
        s.add(
            [
                name,
                h.fmt(floor),
                h.fmt(got),
                h.ratio(got / floor),
                h.fmt(fresh),
                h.ratio(fresh / floor),
            ]
        )
    floor, put = figures["storing_us"]["floor"], figures["storing_us"]["put_dir"]
    s.notes.append(
        "Storing a demo-sized tree of 3 files (put_dir with move=True into a new store, "
        f"each with a build tree of its own): {h.fmt(put['min'])} / {h.fmt(put['median'])} µs "
        f"(min / median) against {h.fmt(floor['min'])} / {h.fmt(floor['median'])} µs for "
        f"moving it into place and reading each file once: "
        f"{h.ratio(put['median'] / floor['median'])} by medians."
    )
    return s


def main(argv: list[str] | None = None) -> None:
    h.standalone(run, lambda f: h.render(section(f)), __doc__.splitlines()[0], argv)


if __name__ == "__main__":
    main()
