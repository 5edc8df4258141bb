"""Sweeps remove dead writers' leftovers, never live work of this host or another.

This host's temp work goes when its process is gone (pid and start time);
another host's only once seen unchanged for ``sweep_after`` seconds of the
filesystem's time, whatever the sweeper's clock says.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from stepcache.stores import _owner
from stepcache.stores.directory import DirectoryStore
from stepcache.stores.directory import sweep as _sweep
from stepcache.testing import key
from stepcache.testing.processes import run_python
from stepcache.testing.sshfs import Machine

pytestmark = pytest.mark.timeout(60)

OTHER = "other-host.0123456789abcdef"  # another machine's identity
MONTHS_AGO = time.time() - 90 * 86400


def foreign(tmp: Path, n: int, *, tree: bool = False) -> Path:
    """Temp work of a process on another host, with times that look very old here."""
    path = tmp / f"{OTHER}-{100 + n}-{5000 + n}-{n:04x}{'.dir' if tree else '.tmp'}"
    if tree:
        (path / "sub").mkdir(parents=True)
        (path / "sub" / "lib.so").write_bytes(b"ELF")
    else:
        path.write_bytes(b"being written elsewhere")
    os.utime(path, (MONTHS_AGO, MONTHS_AGO))
    return path


def names(tmp: Path) -> set[str]:
    return {p.name for p in tmp.iterdir() if not p.name.startswith(_sweep.RECORD)}


def advance_filesystem_clock(store: DirectoryStore, seconds: float) -> None:
    """Make the last sweep look ``seconds`` later in the filesystem's time (its record's mtime)."""
    record = store.path / "tmp" / (_sweep.RECORD + _owner.host())
    st = record.stat()
    os.utime(record, (st.st_atime, st.st_mtime + seconds))


def test_another_hosts_temp_work_is_kept_however_old_its_times_look(tmp_path: Path) -> None:
    store = DirectoryStore(tmp_path / "cache")
    store[key(1)] = "kept"
    tmp = store.path / "tmp"
    work = {foreign(tmp, 1).name, foreign(tmp, 2, tree=True).name}
    for _ in range(3):
        assert store.prune().swept == 0
    assert names(tmp) == work
    assert (tmp / _sweep.RECORD).with_name(_sweep.RECORD + _owner.host()).exists()


def test_another_hosts_temp_work_goes_after_sweep_after_of_filesystem_time(
    tmp_path: Path,
) -> None:
    store = DirectoryStore(tmp_path / "cache", sweep_after=3600)
    tmp = store.path / "tmp"
    foreign(tmp, 1)
    foreign(tmp, 2, tree=True)
    assert store.prune().swept == 0  # first sighting
    assert store.prune().swept == 0  # unchanged, but not for an hour yet
    advance_filesystem_clock(store, 1800)
    assert store.prune().swept == 0
    advance_filesystem_clock(store, 3600)
    record = tmp / (_sweep.RECORD + _owner.host())
    before = (record.read_bytes(), record.stat().st_mtime_ns)
    assert store.prune(dry_run=True).swept == 2
    assert len(names(tmp)) == 2  # a dry run removes nothing
    assert (record.read_bytes(), record.stat().st_mtime_ns) == before  # nor writes
    assert store.prune().swept == 2
    assert names(tmp) == set()
    assert not (tmp / (_sweep.RECORD + _owner.host())).exists()  # nothing left to watch


def test_a_change_restarts_the_count(tmp_path: Path) -> None:
    store = DirectoryStore(tmp_path / "cache", sweep_after=0)
    tmp = store.path / "tmp"
    work = foreign(tmp, 1)
    assert store.prune().swept == 0
    with work.open("ab") as f:  # its writer is still at it
        f.write(b" more")
    assert store.prune().swept == 0
    assert store.prune().swept == 1
    assert names(tmp) == set()


def test_this_hosts_live_writer_keeps_its_temp_work_and_a_recycled_pid_does_not(
    tmp_path: Path,
) -> None:
    store = DirectoryStore(tmp_path / "cache", sweep_after=0)
    tmp = store.path / "tmp"
    me = _owner.parse_owner(_owner.owner_tag() + "-0.tmp")
    assert me is not None
    assert _owner.owner_alive(me)
    live = tmp / f"{_owner.owner_tag()}-00aa.dir"
    live.mkdir()
    os.utime(live, (MONTHS_AGO, MONTHS_AGO))
    recycled = tmp / f"{_owner.host()}-{me.pid}-{me.start + 7}-00bb.tmp"
    recycled.write_bytes(b"left by an earlier process with this pid")
    assert store.prune().swept == 1
    assert store.prune().swept == 0
    assert names(tmp) == {live.name}


def test_an_orphan_tree_is_removed_only_after_being_seen_unchanged(tmp_path: Path) -> None:
    store = DirectoryStore(tmp_path / "cache", sweep_after=0)
    store[key(1)] = "kept"
    orphan = Path(store.backend.path(key(2)) + ".d")
    orphan.mkdir(parents=True)
    os.utime(orphan, (MONTHS_AGO, MONTHS_AGO))
    assert store.verify(repair=True).corrupt == ()  # first sighting: maybe a put_dir at work
    assert orphan.is_dir()
    result = store.prune()
    assert (result.swept, orphan.exists()) == (1, False)
    assert store[key(1)] == "kept"


def test_verify_reports_and_repairs_an_orphan_tree_once_seen_unchanged(tmp_path: Path) -> None:
    store = DirectoryStore(tmp_path / "cache", sweep_after=0)
    store[key(1)] = "kept"
    orphan = Path(store.backend.path(key(2)) + ".d")
    orphan.mkdir(parents=True)
    assert store.verify().corrupt == ()  # not seen before; and a check records nothing
    assert store.verify().corrupt == ()
    assert store.prune().swept == 0  # first sighting, recorded
    result = store.verify()
    assert (result.checked, result.corrupt) == (
        2,
        ((key(2), "artifact directory without an entry"),),
    )
    assert orphan.is_dir()  # checking removes nothing
    result = store.verify(repair=True)
    assert (result.repaired, orphan.exists()) == (1, False)
    assert store[key(1)] == "kept"


SWEEPER = textwrap.dedent(
    """
    import json, sys, time
    from stepcache.stores.directory import DirectoryStore
    from stepcache.testing.sshfs import patch_sleep_under_faketime
    patch_sleep_under_faketime()
    store = DirectoryStore(sys.argv[1])
    swept = [store.prune().swept for _ in range(3)]
    print(json.dumps({"swept": swept, "now": time.time()}))
    """
)


def test_a_sweeper_whose_clock_is_a_day_ahead_removes_no_live_work(tmp_path: Path) -> None:
    if shutil.which("faketime") is None:
        pytest.skip("faketime is not installed (Debian package faketime)")
    store = DirectoryStore(tmp_path / "cache")
    tmp = store.path / "tmp"
    (tmp / f"{_owner.owner_tag()}-00aa.dir").mkdir()  # this process's tree, just made
    fresh = tmp / f"{OTHER}-7-8-00bb.dir"
    fresh.mkdir()  # another host's tree, just made
    orphan = Path(store.backend.path(key(2)) + ".d")
    orphan.mkdir(parents=True)  # a put_dir about to write its entry
    before = names(tmp)
    # This host (the same host id), a day ahead.
    machine = Machine(store.path, _owner.host(), clock="+1d")
    done = subprocess.run(
        machine.command([sys.executable, "-c", SWEEPER, str(store.path)]),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=machine.env({**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}),
    )
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert out["now"] > time.time() + 86000  # the sweeper did live a day ahead
    assert out["swept"] == [0, 0, 0]
    assert names(tmp) == before
    assert orphan.is_dir()


def test_temp_and_stats_names_carry_host_pid_and_start_time(tmp_path: Path) -> None:
    store = DirectoryStore(tmp_path / "cache")
    store[key(1)] = 1
    store.flush()
    (stats,) = os.listdir(store.path / "stats")
    owner = _owner.parse_owner(stats)
    assert owner == _owner.Owner(_owner.host(), os.getpid(), _owner.start_time(os.getpid()) or 0)


def test_the_host_identity_comes_from_the_environment_when_given() -> None:
    def host_in_a_new_process(env: dict[str, str]) -> str:
        code = "from stepcache.stores import _owner; print(_owner.host())"
        return run_python(code, env=env).stdout.strip()

    env = {**os.environ, "STEPCACHE_HOST_ID": "rack 7/node-3"}
    assert host_in_a_new_process(env) == "rack_7_node-3"
    env.pop("STEPCACHE_HOST_ID")
    assert host_in_a_new_process(env) == _owner.host() != "rack_7_node-3"


@pytest.mark.parametrize("content", [b"", b"{torn", b"[1, 2]", b'{"tmp/x": 3}'])
def test_a_damaged_record_only_restarts_the_count(tmp_path: Path, content: bytes) -> None:
    store = DirectoryStore(tmp_path / "cache", sweep_after=0)
    tmp = store.path / "tmp"
    foreign(tmp, 1)
    assert store.prune().swept == 0
    (tmp / (_sweep.RECORD + _owner.host())).write_bytes(content)
    assert store.prune().swept == 0  # seen afresh
    assert store.prune().swept == 1
