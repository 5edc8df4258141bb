"""Which per-key lock a directory store uses, how users choose it, and how lease files fail."""

from __future__ import annotations

import contextlib
import errno
import os
import pickle
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import stepcache as sc
from stepcache.errors import StoreUnavailableError
from stepcache.stores import _lease
from stepcache.stores._lockmode import filesystem_of, requested_mode, resolve_mode
from stepcache.stores._locks import KeyLocks, LeaseTiming
from stepcache.stores.directory import DirectoryStore
from stepcache.testing import key, lock_files

pytestmark = pytest.mark.timeout(60)

MOUNTINFO = """\
22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw
40 22 0:40 / /mnt/x rw,nosuid - fuse.sshfs host:/export rw,user_id=0
41 22 0:41 / /home rw - nfs4 server:/home rw,vers=4.2
42 22 0:42 / /scratch\\040space rw - lustre 10.0.0.1@tcp:/fs rw
43 22 0:43 / /mnt/odd rw - somefs none rw
"""


@pytest.fixture
def mountinfo(tmp_path: Path) -> str:
    path = tmp_path / "mountinfo"
    path.write_text(MOUNTINFO)
    return str(path)


@pytest.mark.parametrize(
    ("path", "found"),
    [
        ("/var/cache/stepcache", ("ext4", "/")),
        ("/mnt/x/cache", ("fuse.sshfs", "/mnt/x")),
        ("/home/me/.cache", ("nfs4", "/home")),
        ("/scratch space/c", ("lustre", "/scratch space")),
        ("/mnt/odd", ("somefs", "/mnt/odd")),
    ],
)
def test_the_filesystem_of_a_path_is_its_longest_mount_point(
    mountinfo: str, path: str, found: tuple[str, str]
) -> None:
    assert filesystem_of(path, mountinfo) == found


def test_auto_uses_flock_only_on_local_filesystems(
    monkeypatch: pytest.MonkeyPatch, mountinfo: str
) -> None:
    import stepcache.stores._lockmode as lm

    monkeypatch.delenv("STEPCACHE_LOCK", raising=False)
    monkeypatch.setattr(lm, "filesystem_of", lambda path: filesystem_of(path, mountinfo))
    assert resolve_mode(None, "/var/cache") == ("flock", "flock: ext4 at /")
    assert resolve_mode("auto", "/mnt/x/c") == ("lease", "lease: fuse.sshfs at /mnt/x")
    assert resolve_mode(None, "/home/me") == ("lease", "lease: nfs4 at /home")
    assert resolve_mode(None, "/mnt/odd") == ("lease", "lease: somefs at /mnt/odd")


def test_the_environment_chooses_unless_the_caller_does(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STEPCACHE_LOCK", "lease")
    assert requested_mode(None) == ("lease", "$STEPCACHE_LOCK=lease")
    assert requested_mode("flock") == ("flock", "lock=flock")
    monkeypatch.setenv("STEPCACHE_LOCK", "posix")
    with pytest.raises(ValueError, match="STEPCACHE_LOCK"):
        requested_mode(None)


def test_the_mode_is_found_at_the_first_lock_not_at_open(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import stepcache.stores._lockmode as lm

    looked: list[str] = []
    monkeypatch.delenv("STEPCACHE_LOCK", raising=False)
    monkeypatch.setattr(lm, "filesystem_of", lambda path: looked.append(path) or ("xfs", "/"))
    store = DirectoryStore(tmp_path / "cache")
    assert looked == []
    store.get_or_compute(key(1), lambda: 1)
    store.get_or_compute(key(2), lambda: 2)
    assert len(looked) == 1
    assert store.lock_mode == ("flock", "flock: xfs at /")


def test_a_spec_carries_the_lock_mode(tmp_path: Path) -> None:
    store = sc.open_store(f"dir://{tmp_path}/c?lock=lease")
    assert isinstance(store, DirectoryStore)
    assert store.spec == f"dir://{tmp_path}/c?lock=lease"
    assert store.lock_mode == ("lease", "lease: chosen by lock=lease")
    assert store.get_or_compute(key(1), lambda: "v") == "v"
    assert lock_files(tmp_path / "c" / "leases") == []
    again = pickle.loads(pickle.dumps(store))
    assert again is store  # the same registry entry: the spec names the lock too


def test_a_bad_lock_in_a_spec_is_refused(tmp_path: Path) -> None:
    with pytest.raises(StoreUnavailableError, match="lock=auto"):
        sc.open_store(f"dir://{tmp_path}/c?lock=posix")
    with pytest.raises(StoreUnavailableError, match="lock=auto"):
        sc.open_store(f"dir://{tmp_path}/c?locks=lease")
    with pytest.raises(ValueError, match="lock=flock"):
        sc.open_store(f"dir://{tmp_path}/c?lock=lease", lock="flock")


def test_lock_backend_is_an_alias_of_lock(tmp_path: Path) -> None:
    store = DirectoryStore(tmp_path / "c", lock_backend="lease")
    assert store.lock_mode[0] == "lease"
    assert store.spec.endswith("?lock=lease")


def test_a_waiter_that_did_not_get_the_lock_looks_again_before_computing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = DirectoryStore(tmp_path / "c")
    other = DirectoryStore(tmp_path / "c")

    def published_meanwhile(name: str, deadline: float) -> Iterator[bool]:
        other[name] = "theirs"  # the holder we waited for published, then we timed out
        yield False

    monkeypatch.setattr(store.backend.locks, "hold", contextlib.contextmanager(published_meanwhile))
    assert store.get_or_compute(key(1), lambda: "ours") == "theirs"
    assert store.stats().hits == 1


def test_a_failed_lease_create_is_answered_by_looking(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # sshfs answers the loser of a simultaneous exclusive create with EPERM.
    timing = LeaseTiming(0.05, 1.0)
    holder = KeyLocks(str(tmp_path), backend="lease", timing=timing)
    warned: list[str] = []
    waiter = KeyLocks(
        str(tmp_path), backend="lease", timing=timing, warn=lambda *a: warned.append(a[1])
    )
    real_link = os.link

    def eperm(*args: object, **kwargs: object) -> None:
        raise PermissionError(errno.EPERM, "Operation not permitted")

    with holder.hold("k", time.monotonic() + 5) as held:
        assert held
        monkeypatch.setattr(os, "link", eperm)
        with waiter.hold("k", time.monotonic() + 0.3) as taken:
            assert not taken  # a live lease is there: wait (here, until the deadline)
        assert warned == []
        calls = []

        def eperm_once(*args: object, **kwargs: object) -> None:
            calls.append(args)
            if len(calls) == 1:
                raise PermissionError(errno.EPERM, "Operation not permitted")
            real_link(*args, **kwargs)  # type: ignore[arg-type]

        monkeypatch.setattr(os, "link", eperm_once)
    # Nothing there after the failure: try again, and get it.
    with waiter.hold("k", time.monotonic() + 5) as taken:
        assert taken
    assert len(calls) >= 2
    assert warned == []
    assert os.listdir(tmp_path) == []


def test_an_unusable_lease_directory_is_reported_not_waited_on_forever(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def eacces(*args: object, **kwargs: object) -> None:
        raise PermissionError(errno.EACCES, "Permission denied")

    locks = KeyLocks(str(tmp_path), backend="lease", timing=LeaseTiming(0.01, 0.1))
    monkeypatch.setattr(os, "link", eacces)
    started = time.monotonic()
    with pytest.raises(OSError, match="cannot create lease files"), locks.hold("k", started + 30):
        pass  # the store then computes without the lock, saying so once
    store = DirectoryStore(tmp_path / "c", lock="lease", lease_stale=0.1)
    assert [store.get_or_compute(key(n), lambda n=n: n, timeout=30) for n in range(3)] == [0, 1, 2]
    assert time.monotonic() - started < 30


def test_lease_records_have_one_length_and_name_their_owner() -> None:
    a = _lease.record("host:1:2", "00" * 8, 0)
    b = _lease.record("a-much-longer-host-id:123456:7890123", "ff" * 8, 10**9)
    assert len(a) == len(b) == _lease.RECORD_SIZE
    assert _lease.owner_of(b) == "a-much-longer-host-id:123456:7890123"
    assert _lease.owner_of(b"garbage") == ""


def test_lease_timing_is_checked() -> None:
    with pytest.raises(ValueError, match="heartbeat"):
        LeaseTiming(heartbeat=5.0, stale_after=6.0)
