"""Single flight across two machines sharing an sshfs directory: herds, parallel keys, kills."""

from __future__ import annotations

import collections
import os
import signal
import time
import uuid
from pathlib import Path

import fs_workers as w
import pytest

from stepcache.stores.directory import DirectoryStore
from stepcache.testing import key
from stepcache.testing.sshfs import SshfsPair

pytestmark = [pytest.mark.slow, pytest.mark.timeout(150)]


def roots(pair: SshfsPair, name: str) -> tuple[str, str]:
    """One store directory, as each of the two machines sees it."""
    unique = f"{name}-{uuid.uuid4().hex[:8]}"
    return str(pair.mounts[0] / unique), str(pair.mounts[1] / unique)


@pytest.mark.parametrize("lock", [None, "lease"])
def test_a_herd_on_two_machines_computes_each_key_once(
    sshfs_pair: SshfsPair, tmp_path: Path, lock: str | None
) -> None:
    a, b = roots(sshfs_pair, "herd")
    log = str(tmp_path / "computations")
    keys = [key(n) for n in range(20)]
    jobs = [(f"host-{m}", (root, lock, keys, log, 0.05)) for m, root in [("a", a), ("b", b)] * 4]
    reasons = w.run_all(w.herd, jobs, timeout=120)
    per_key = collections.Counter(line.split()[1] for line in Path(log).read_text().splitlines())
    assert [per_key[k] for k in keys] == [1] * 20
    # Auto mode chose leases on the FUSE mount, and said why.
    assert {r.split(":")[0] for r in reasons} == {"lease"}
    if lock is None:
        assert all("fuse.sshfs" in r for r in reasons)


def test_distinct_keys_compute_in_parallel_across_machines(
    sshfs_pair: SshfsPair, tmp_path: Path
) -> None:
    a, b = roots(sshfs_pair, "parallel")
    started = tmp_path / "started"
    started.mkdir()
    jobs = [(f"host-{n % 2}", ([a, b][n % 2], key(n), str(started), 8)) for n in range(8)]
    seen = w.run_all(w.parallel, jobs, timeout=90)
    # Each computation saw all eight running: no key waited for another's lock.
    assert seen == [8] * 8


def _kill_computations(
    computing: list[Path], doomed: int, deadline: float
) -> tuple[int, list[float]]:
    """SIGKILL the first ``doomed`` computations of each key; (kills, waits after a kill)."""
    killed: dict[Path, set[str]] = {d: set() for d in computing}
    last_kill: dict[Path, float] = {}
    lags: list[float] = []
    while any(len(k) < doomed for k in killed.values()) and time.monotonic() < deadline:
        for d in computing:
            for name in sorted(set(os.listdir(d)) - killed[d]):
                text = (d / name).read_text()
                if not text or len(killed[d]) >= doomed:
                    continue
                if d in last_kill:  # how long the key went without a live holder
                    lags.append(float(text) - last_kill[d])
                os.kill(int(name), signal.SIGKILL)
                last_kill[d] = time.monotonic()
                killed[d].add(name)
        time.sleep(0.005)  # polling: the computations announce themselves by files
    return sum(len(k) for k in killed.values()), lags


def test_killed_holders_on_both_machines_leave_keys_whole_and_no_lease(
    sshfs_pair: SshfsPair, tmp_path: Path
) -> None:
    rounds, groups, per_key, doomed = 5, 8, 6, 5  # 200 SIGKILLed holders
    a, b = roots(sshfs_pair, "killed")
    done_log = str(tmp_path / "done")
    kills, lags, values = 0, [], []
    for r in range(rounds):
        computing = [tmp_path / f"computing-{r}-{g}" for g in range(groups)]
        jobs = []
        for g, d in enumerate(computing):
            d.mkdir()
            for p in range(per_key):
                root, host = [(a, "host-a"), (b, "host-b")][p % 2]
                jobs.append((host, (root, key(r * groups + g), str(d), done_log, doomed)))
        ctx = w.context()
        queue, start = ctx.Queue(), ctx.Barrier(len(jobs))
        procs = [
            ctx.Process(target=w._report, args=(queue, i, h, w.compute_until_killed, (start, *j)))
            for i, (h, j) in enumerate(jobs)
        ]
        for proc in procs:
            proc.start()
        try:
            n, more = _kill_computations(computing, doomed, time.monotonic() + 60)
            kills, lags = kills + n, lags + more
            for proc in procs:
                proc.join(timeout=60)
            while not queue.empty():
                _, ok, value = queue.get()
                assert ok, value
                values.append(value)
        finally:
            for proc in procs:
                if proc.is_alive():
                    proc.kill()
                    proc.join()
    assert kills == rounds * groups * doomed, (kills, sorted(lags)[-5:])
    # Every survivor got its key's value; each key was computed to the end exactly once.
    assert len(values) == rounds * groups * (per_key - doomed), values
    finished = collections.Counter(
        line.split()[1] for line in Path(done_log).read_text().splitlines()
    )
    assert len(finished) == rounds * groups, finished
    assert set(finished.values()) == {1}, finished
    # No key went without a live holder longer than the stale period plus a heartbeat
    # (and the time to notice, take over and start computing: well under a second).
    assert max(lags) < w.STALE + w.HEARTBEAT + 1.0, sorted(lags)[-5:]
    for host, root in [("host-a", a), ("host-b", b)]:
        os.environ["STEPCACHE_HOST_ID"] = host
        try:
            store = DirectoryStore(root)
            for n in range(rounds * groups):
                assert store.get(key(n)) in (None, f"value of {key(n)}")
            store.prune()
            store.close()  # its counters are written now, while the mount is there
        finally:
            del os.environ["STEPCACHE_HOST_ID"]
    left = [n for n in os.listdir(Path(a) / "leases") if not n.startswith(".fuse_hidden")]
    assert left == []
    print(f"kills={kills} max_lag={max(lags):.3f}s mean_lag={sum(lags) / len(lags):.3f}s")
