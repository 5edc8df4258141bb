"""A network filesystem for tests: one directory exported by ``sshd``, mounted twice by ``sshfs``.

:class:`SshfsPair` generates a host key and a user key for the run, starts
``sshd`` on a free port of 127.0.0.1 (key login only), and mounts one
exported directory at two mount points with ``sshfs`` (FUSE). Two mounts of
one directory behave like two machines sharing an NFS home: each mount has
its own attribute cache, ``flock`` on one does not exclude the other, and a
simultaneous ``O_EXCL`` create fails on the loser's side with ``EPERM``.

Processes play machines with :class:`Machine`: a mount, a host identity
(``STEPCACHE_HOST_ID``) and optionally a skewed clock (``faketime``)::

    with SshfsPair() as pair:
        a = Machine(pair.mounts[0], "host-a")
        b = Machine(pair.mounts[1], "host-b", clock="+1d")
        subprocess.run(b.command([sys.executable, "-c", "..."]), env=b.env(), check=True)

In a ``conftest.py``, ``sshfs_pair = sshfs_pair_fixture()`` defines a
fixture holding one pair per pytest(-xdist) worker; it skips, naming what is
missing, where FUSE, ``sshfs`` or ``sshd`` is absent, and fails instead
when ``CI=true``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import getpass
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, SupportsIndex

__all__ = [
    "Machine",
    "SshfsPair",
    "missing_tools",
    "patch_sleep_under_faketime",
    "sshfs_pair_fixture",
]

_START_TIMEOUT = 15.0
_SSHD = "/usr/sbin/sshd"
#: Debian's sshd refuses to start as root without its privilege separation directory.
_PRIVSEP_DIR = "/run/sshd"


def missing_tools() -> list[str]:
    """What this machine lacks to run :class:`SshfsPair` (empty when nothing is missing).

    >>> isinstance(missing_tools(), list)
    True
    """
    missing = []
    if not os.access("/dev/fuse", os.R_OK | os.W_OK):
        missing.append("/dev/fuse (FUSE)")
    if shutil.which("sshfs") is None:
        missing.append("sshfs (Debian package sshfs)")
    if not os.access(_SSHD, os.X_OK) and shutil.which("sshd") is None:
        missing.append("sshd (Debian package openssh-server)")
    if shutil.which("ssh-keygen") is None:
        missing.append("ssh-keygen (Debian package openssh-client)")
    if not any(shutil.which(t) for t in ("fusermount3", "fusermount")):
        missing.append("fusermount3 (Debian package fuse3)")
    return missing


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _keygen(path: Path) -> None:
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "stepcache-test", "-f", str(path)],
        check=True,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        timeout=30,
    )


def _mount_points() -> set[str]:
    with open("/proc/self/mountinfo") as f:
        return {line.split()[4] for line in f}


class SshfsPair:
    """``sshd`` on loopback exporting :attr:`export`, mounted at each of :attr:`mounts`.

    Everything lives in one private temporary directory, removed by
    :meth:`close` after the mounts are unmounted and ``sshd`` is stopped
    (also when starting fails half-way). ``options`` adds ``sshfs -o``
    options to every mount. Close the stores opened on the mounts first: a
    store still open writes its counters at exit, into the bare mount point.
    """

    def __init__(self, *, mounts: int = 2, options: Sequence[str] = ()) -> None:
        missing = missing_tools()
        if missing:
            raise FileNotFoundError("cannot mount sshfs, missing: " + ", ".join(missing))
        self.directory = Path(tempfile.mkdtemp(prefix="sc-sshfs-"))
        self.export = self.directory / "export"
        self.mounts = [self.directory / f"mount{i}" for i in range(mounts)]
        self.options = tuple(options)
        self.port = _free_port()
        self._sshd: subprocess.Popen[bytes] | None = None
        self._mounted: list[Path] = []
        try:
            self._start()
        except BaseException:
            self.close()
            raise

    def _start(self) -> None:
        d = self.directory
        self.export.mkdir()
        _keygen(d / "host_key")
        _keygen(d / "user_key")
        shutil.copy(d / "user_key.pub", d / "authorized_keys")
        self._start_sshd()
        for mount in self.mounts:
            mount.mkdir()
            self._mount(mount)

    def _sshd_config(self) -> str:
        d = self.directory
        return "\n".join(
            [
                "ListenAddress 127.0.0.1",
                f"Port {self.port}",
                f"HostKey {d / 'host_key'}",
                f"PidFile {d / 'sshd.pid'}",
                f"AuthorizedKeysFile {d / 'authorized_keys'}",
                f"AllowUsers {getpass.getuser()}",
                "PermitRootLogin prohibit-password",
                "PubkeyAuthentication yes",
                "PasswordAuthentication no",
                "KbdInteractiveAuthentication no",
                "UsePAM no",
                # The key files live in a temp dir whose parents sshd would not trust.
                "StrictModes no",
                "X11Forwarding no",
                "AllowTcpForwarding no",
                "Subsystem sftp internal-sftp",
                "",
            ]
        )

    def _start_sshd(self) -> None:
        conf = self.directory / "sshd_config"
        conf.write_text(self._sshd_config())
        if os.geteuid() == 0:
            os.makedirs(_PRIVSEP_DIR, mode=0o755, exist_ok=True)
        sshd = _SSHD if os.access(_SSHD, os.X_OK) else shutil.which("sshd") or "sshd"
        log = open(self.directory / "sshd.log", "wb")  # noqa: SIM115 -- sshd writes it until stopped
        with log:
            self._sshd = subprocess.Popen(
                [sshd, "-D", "-e", "-f", str(conf)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                start_new_session=True,  # a ^C in the terminal must not kill it before teardown
            )
        deadline = time.monotonic() + _START_TIMEOUT
        delay = 0.005
        while not self._answers():
            if self._sshd.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"sshd did not start:\n{self.log()}")
            time.sleep(delay)  # polling: sshd has no readiness signal to wait on
            delay = min(delay * 2, 0.1)

    def _answers(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1.0) as sock:
                return sock.recv(8).startswith(b"SSH-")
        except OSError:
            return False

    def log(self) -> str:
        """The end of ``sshd``'s log (for failure messages)."""
        path = self.directory / "sshd.log"
        return path.read_text(errors="replace")[-3000:] if path.exists() else ""

    def _mount(self, mount: Path) -> None:
        options = [
            f"IdentityFile={self.directory / 'user_key'}",
            "StrictHostKeyChecking=no",
            "UserKnownHostsFile=/dev/null",
            "BatchMode=yes",
            "LogLevel=ERROR",
            f"port={self.port}",
            *self.options,
        ]
        target = f"{getpass.getuser()}@127.0.0.1:{self.export}"
        done = subprocess.run(
            ["sshfs", "-o", ",".join(options), target, str(mount)],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=_START_TIMEOUT,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(
                f"sshfs could not mount {target}: {done.stderr.decode(errors='replace')}\n"
                f"sshd log:\n{self.log()}"
            )
        self._mounted.append(mount)

    def _unmount(self, mount: Path) -> None:
        for command in (["fusermount3", "-u"], ["fusermount", "-u"], ["umount", "-l"]):
            if shutil.which(command[0]) is None:
                continue
            with contextlib.suppress(subprocess.TimeoutExpired):
                if (
                    subprocess.run(
                        [*command, str(mount)], capture_output=True, timeout=30, check=False
                    ).returncode
                    == 0
                ):
                    return
        # Busy (a test's child still has a file open): detach it lazily as a last resort.
        subprocess.run(["umount", "-l", str(mount)], capture_output=True, timeout=30, check=False)

    def _stop_sshd(self) -> None:
        if self._sshd is None:
            return
        with contextlib.suppress(ProcessLookupError):
            # Its session holds the per-connection children that serve the mounts.
            os.killpg(self._sshd.pid, signal.SIGTERM)
        try:
            self._sshd.wait(10)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self._sshd.pid, signal.SIGKILL)
            self._sshd.wait(10)
        self._sshd = None

    def close(self) -> None:
        """Unmount every mount, stop ``sshd`` and remove the temporary directory."""
        try:
            while self._mounted:
                self._unmount(self._mounted.pop())
        finally:
            self._stop_sshd()
            if not any(str(m) in _mount_points() for m in self.mounts):
                shutil.rmtree(self.directory, ignore_errors=True)

    def __enter__(self) -> SshfsPair:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<SshfsPair {self.export} at {', '.join(map(str, self.mounts))} port={self.port}>"


@dataclasses.dataclass(frozen=True)
class Machine:
    """How to run a process as if on another machine: its mount, host id and clock.

    ``clock`` is a ``faketime -f`` offset such as ``"+60"``, ``"-60"`` or
    ``"+1d"`` (wall clock only: the monotonic clock stays true, as on a
    real machine whose clock is merely set wrong).

    >>> Machine(Path("/mnt/a"), "host-b", clock="+1d").command(["python"])[:4]
    ['faketime', '--exclude-monotonic', '-f', '+1d']
    """

    mount: Path
    host_id: str
    clock: str | None = None

    def command(self, argv: Sequence[str]) -> list[str]:
        """``argv``, run under ``faketime`` when :attr:`clock` is set."""
        if self.clock is None:
            return list(argv)
        return ["faketime", "--exclude-monotonic", "-f", self.clock, *argv]

    def env(self, base: Mapping[str, str] | None = None) -> dict[str, str]:
        """``base`` (default ``os.environ``) with this machine's ``STEPCACHE_HOST_ID``."""
        env = dict(os.environ if base is None else base)
        env["STEPCACHE_HOST_ID"] = self.host_id
        if self.clock is not None:
            env["STEPCACHE_TEST_CLOCK"] = self.clock
        return env


def patch_sleep_under_faketime() -> None:
    """Make ``time.sleep`` work in a process run by :meth:`Machine.command` with a clock.

    libfaketime 0.9.10 with ``--exclude-monotonic`` fails Python's
    ``time.sleep`` (``clock_nanosleep`` on the monotonic clock) with EINVAL,
    and without that option it hangs timed waits on locks. Waiting on an
    event uses a path it leaves alone, so sleeping becomes such a wait. A
    no-op outside :class:`Machine` processes with a clock.
    """
    if "STEPCACHE_TEST_CLOCK" not in os.environ:
        return
    never = threading.Event()

    def sleep(seconds: float | SupportsIndex) -> None:
        never.wait(max(0.0, float(seconds)))

    time.sleep = sleep


def sshfs_pair_fixture(
    scope: Any = "session", *, name: str = "sshfs_pair"
) -> Callable[..., Iterator[SshfsPair]]:
    """A pytest fixture yielding a :class:`SshfsPair` (one per xdist worker when session-scoped).

    Where the tools or FUSE are missing the tests using it are skipped with a
    reason naming what is missing; with ``CI=true`` they fail instead::

        # in a conftest.py
        from stepcache.testing.sshfs import sshfs_pair_fixture
        sshfs_pair = sshfs_pair_fixture()
    """
    import pytest

    @pytest.fixture(scope=scope, name=name)
    def _fixture() -> Iterator[SshfsPair]:
        in_ci = os.environ.get("CI", "").lower() == "true"
        missing = missing_tools()
        if missing:
            reason = "cannot mount sshfs, missing: " + ", ".join(missing)
            if in_ci:
                pytest.fail(reason + " (CI must run the shared-filesystem tests)")
            pytest.skip(reason)
        try:
            pair = SshfsPair()
        except (OSError, RuntimeError, subprocess.SubprocessError) as exc:
            if in_ci:
                raise
            pytest.skip(f"cannot mount sshfs here: {exc}")
        with pair:
            yield pair

    return _fixture
