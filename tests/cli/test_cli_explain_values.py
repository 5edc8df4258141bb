"""`stepcache explain` shows old and new values of short settings, digests of the rest."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from cli_run import run_cli

import stepcache as sc


@dataclasses.dataclass(frozen=True)
class Lower(sc.StepBase):
    n: int = 2
    target: str = "c"
    table: bytes = b"\x00\x01"

    def __call__(self, program: str) -> str:
        return f"{program}/{self.n}/{self.target}"


def test_explain_shows_values_for_scalars_and_digests_for_binary(tmp_path: Path) -> None:
    root = tmp_path / "cache"
    store = sc.DirectoryStore(root)  # type: ignore[attr-defined]
    old = sc.CachedStep(Lower(), store)
    new = old.replace(n=3, target="cuda", table=b"\x00\x02")
    old("lap")
    new("lap")
    store.close()
    a, b = old.key_for("lap"), new.key_for("lap")

    proc = run_cli("explain", a[:12], b[:12], store=root)
    assert proc.returncode == 0, proc.stderr
    rows = {line.split()[0]: line.split()[1:] for line in proc.stdout.splitlines()[3:]}
    assert rows["step.n"] == ["2", "3"]
    assert rows["step.target"] == ["'c'", "'cuda'"]
    [old_digest, new_digest] = rows["step.table"]
    assert old_digest.startswith("#")
    assert new_digest.startswith("#")

    proc = run_cli("explain", b[:12], store=root)  # against its nearest older entry
    assert proc.returncode == 0, proc.stderr
    [row] = [line.split() for line in proc.stdout.splitlines() if line.startswith("step.n ")]
    assert row == ["step.n", "2", "3"]

    report = new.explain("lap")
    assert report.hit
    other = new.replace(n=4)
    assert "step.n: 3 -> 4" in other.explain("lap").reason
    doc = json.loads(run_cli("explain", a[:12], b[:12], "--json", store=root).stdout)
    assert {d["path"]: (d["a"], d["b"]) for d in doc["differences"]}["step.n"] == ("=2", "=3")
