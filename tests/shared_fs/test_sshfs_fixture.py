"""The sshfs pair behaves like one directory seen from two machines."""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
import time

import pytest

from stepcache.testing.sshfs import Machine, SshfsPair, missing_tools


def test_a_file_written_on_one_mount_is_read_on_the_other(sshfs_pair: SshfsPair) -> None:
    a, b = sshfs_pair.mounts
    (a / "hello").write_bytes(b"from a")
    assert (b / "hello").read_bytes() == b"from a"
    assert (sshfs_pair.export / "hello").read_bytes() == b"from a"
    os.unlink(b / "hello")
    assert not (sshfs_pair.export / "hello").exists()


def test_mounts_are_fuse_sshfs(sshfs_pair: SshfsPair) -> None:
    types = {}
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            types[fields[4]] = fields[fields.index("-") + 1]
    assert [types[str(m)] for m in sshfs_pair.mounts] == ["fuse.sshfs", "fuse.sshfs"]


def test_flock_does_not_exclude_across_the_two_mounts(sshfs_pair: SshfsPair) -> None:
    # Why kernel locks cannot be trusted here: both mounts are granted the same lock.
    a, b = sshfs_pair.mounts
    with open(a / "flock-probe", "w") as fa, open(b / "flock-probe", "w") as fb:
        fcntl.flock(fa, fcntl.LOCK_EX | fcntl.LOCK_NB)
        fcntl.flock(fb, fcntl.LOCK_EX | fcntl.LOCK_NB)
    os.unlink(a / "flock-probe")


def test_exclusive_create_of_an_existing_file_fails_on_the_other_mount(
    sshfs_pair: SshfsPair,
) -> None:
    a, b = sshfs_pair.mounts
    fd = os.open(a / "excl-probe", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    os.close(fd)
    # EEXIST when the file already existed (a simultaneous create's loser may get EPERM).
    with pytest.raises(FileExistsError):
        os.open(b / "excl-probe", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    os.unlink(a / "excl-probe")


def test_a_machine_runs_with_its_host_id_and_skewed_clock(sshfs_pair: SshfsPair) -> None:
    machine = Machine(sshfs_pair.mounts[1], "host-b", clock="+1d")
    code = (
        "import os, time\n"
        "from stepcache.testing.sshfs import patch_sleep_under_faketime\n"
        "patch_sleep_under_faketime(); time.sleep(0.01)\n"
        "ahead = time.time() - float(os.sys.argv[1])\n"
        "print(os.environ['STEPCACHE_HOST_ID'], round(ahead / 3600))\n"
    )
    done = subprocess.run(
        machine.command([sys.executable, "-c", code, str(time.time())]),
        env=machine.env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert done.stdout.split() == ["host-b", "24"]


def test_missing_tools_names_what_is_absent(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    missing = missing_tools()
    assert any(m.startswith("sshfs") for m in missing)
    assert any(m.startswith("ssh-keygen") for m in missing)
