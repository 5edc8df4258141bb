"""export / import: a warm store carried in one archive to an empty store, or through S3."""

from __future__ import annotations

import io
import tarfile
import uuid
from pathlib import Path

import pytest
from cli_run import run_cli, run_json

import stepcache as sc
from stepcache.demo.programs import suite
from stepcache.demo.runner import run_suite
from stepcache.stores.directory import DirectoryStore
from stepcache.testing.contract import key
from stepcache.testing.s3_server import S3Server

pytest.importorskip("zstandard", reason="the s3 extra is not installed: pip install -e '.[s3]'")
pytestmark = pytest.mark.timeout(180)


@pytest.fixture(autouse=True)
def _secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STEPCACHE_SECRET", "team-secret")  # the CLI and the workers inherit it


@pytest.fixture
def warm(tmp_path: Path) -> Path:
    """A directory store after a demo run of 4 programs."""
    root = tmp_path / "warm"
    result = run_suite(suite(4), workers=2, store_spec=str(root))
    assert result.compiles == 4
    return root


@pytest.mark.slow
def test_import_into_an_empty_directory_gives_a_warm_demo_run(warm: Path, tmp_path: Path) -> None:
    archive = tmp_path / "cache.tar.zst"
    doc = run_json("export", str(archive), store=warm)
    assert (doc["entries"], doc["trees"], doc["skipped"]) == (8, 4, 0)
    fresh = tmp_path / "fresh"
    assert run_json("import", str(archive), store=fresh) == {"entries": 8, "trees": 4, "skipped": 0}
    result = run_suite(suite(4), workers=2, store_spec=str(fresh))
    assert (result.compiles, result.translations, result.verified) == (0, 0, True)
    source, copy = DirectoryStore(warm), DirectoryStore(fresh)
    keys = list(source)
    assert len(keys) == 8
    assert all(copy.backend.load(k) == source.backend.load(k) for k in keys)  # signatures kept


@pytest.mark.slow
def test_through_s3_and_back_the_demo_stays_warm(
    warm: Path, tmp_path: Path, s3_server: S3Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("obstore")
    for name, value in s3_server.env.items():
        monkeypatch.setenv(name, value)
    s3 = f"s3://{s3_server.bucket}/x{uuid.uuid4().hex[:10]}?endpoint={s3_server.endpoint}"
    run_json("export", str(tmp_path / "a.tar.zst"), store=warm)
    assert run_json("import", str(tmp_path / "a.tar.zst"), store=s3)["entries"] == 8
    assert run_json("export", str(tmp_path / "b.tar"), store=s3)["entries"] == 8
    assert run_json("import", str(tmp_path / "b.tar"), store=tmp_path / "back")["trees"] == 4
    result = run_suite(suite(4), workers=2, store_spec=str(tmp_path / "back"))
    assert (result.compiles, result.translations, result.verified) == (0, 0, True)


def test_label_filter_and_entries_that_do_not_verify(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    src = sc.DirectoryStore(tmp_path / "src")
    for name in ("lap", "laplap", "other"):
        sc.CachedStep(sc.step(str.upper), src, label=lambda s: s)(name)
    archive = tmp_path / "lap.tar"
    assert (
        run_json("export", "--label", "lap*", str(archive), store=tmp_path / "src")["entries"] == 2
    )
    with tarfile.open(archive) as tar:
        names = sorted(m.name for m in tar.getmembers())
    assert len([n for n in names if n.startswith("entries/")]) == 2
    monkeypatch.setenv("STEPCACHE_SECRET", "another-team")
    assert run_json("import", str(archive), store=tmp_path / "theirs")["skipped"] == 2


def test_a_tampered_archive_entry_is_skipped(tmp_path: Path) -> None:
    src = sc.DirectoryStore(tmp_path / "src")
    src[key(1)] = "kept"
    src[key(2)] = "tampered"
    archive = tmp_path / "a.tar"
    run_json("export", str(archive), store=tmp_path / "src")
    with tarfile.open(archive) as tar:
        members = [(m, tar.extractfile(m).read()) for m in tar.getmembers()]  # type: ignore[union-attr]
    with tarfile.open(archive, "w") as tar:
        for member, data in members:
            if member.name == f"entries/{key(2)}":
                data = data[:-1] + bytes([data[-1] ^ 1])
            tar.addfile(member, io.BytesIO(data))
    doc = run_json("import", str(archive), store=tmp_path / "dst")
    assert (doc["entries"], doc["skipped"]) == (1, 1)
    assert sc.DirectoryStore(tmp_path / "dst")[key(1)] == "kept"


def test_an_archive_that_is_not_an_export_is_refused(tmp_path: Path) -> None:
    bogus = tmp_path / "bogus.tar"
    with tarfile.open(bogus, "w") as tar:
        tar.addfile(tarfile.TarInfo("hello"), io.BytesIO(b""))
    proc = run_cli("import", str(bogus), store=tmp_path / "dst")
    assert proc.returncode == 1
    assert "not a stepcache export" in proc.stderr
