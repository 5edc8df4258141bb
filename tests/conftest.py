"""Shared fixtures: store factories that every backend joins, and registry hygiene."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import stepcache as sc
from stepcache._log import ONCE
from stepcache.testing.redis_server import redis_server_fixture
from stepcache.testing.s3_server import s3_server_fixture

BACKENDS = ["memory", "dir", "redis", "tiered"]

# One real redis-server per test worker, started on first use.
redis_server = redis_server_fixture()
# One real S3 server (SeaweedFS) per test worker, started on first use.
s3_server = s3_server_fixture()


@pytest.fixture(autouse=True)
def _isolated(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> Iterator[None]:
    """Fresh store registry; default store and identity memos in a temp dir, never the user's."""
    home = tmp_path_factory.mktemp("stepcache-home")
    monkeypatch.setenv("STEPCACHE_DIR", str(home / "cache"))
    monkeypatch.setenv("STEPCACHE_MEMO_DIR", str(home / "memo"))
    sc.reset_registry()
    ONCE.reset()  # each test sees its own warnings
    yield
    sc.reset_registry()


@pytest.fixture(params=BACKENDS)
def store_factory(request: pytest.FixtureRequest, tmp_path: Path) -> Callable[[], sc.Store]:
    """Returns a function opening the same backing store again (a new handle where possible)."""
    kind = request.param
    if kind == "memory":
        spec = f"memory://{request.node.name}"
        return lambda: sc.open_store(spec)
    if kind == "dir":
        root = tmp_path / "cache"

        def open_dir() -> sc.Store:
            return sc.DirectoryStore(root)  # type: ignore[attr-defined,no-any-return]

        return open_dir
    url = f"{request.getfixturevalue('redis_server').url}?prefix=t{uuid.uuid4().hex[:12]}:"
    if kind == "redis":
        return lambda: sc.open_store(url)
    if kind == "tiered":
        local = tmp_path / "local"
        return lambda: sc.TieredStore([sc.DirectoryStore(local), sc.RedisStore(url)])
    raise AssertionError(kind)


@pytest.fixture
def s3_credentials(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """The test S3 server's credentials, and no other AWS_* setting, in the environment."""
    server = request.getfixturevalue("s3_server")
    for name in list(os.environ):
        if name.startswith("AWS_"):
            monkeypatch.delenv(name)
    for name, value in server.env.items():  # child processes and the CLI inherit them
        monkeypatch.setenv(name, value)
