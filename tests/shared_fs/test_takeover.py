"""Taking over leases on a shared filesystem: one winner, and clocks that do not matter."""

from __future__ import annotations

import os
import signal
import threading
import uuid
from pathlib import Path

import fs_workers as w
import pytest

from stepcache.stores._lease import record
from stepcache.testing.sshfs import Machine, SshfsPair

pytestmark = [pytest.mark.slow, pytest.mark.timeout(150)]


def _dead_pid() -> int:
    proc = w.context().Process(target=os.getpid)
    proc.start()
    proc.join(timeout=30)
    assert proc.pid is not None
    return proc.pid


def _holders_never_overlap(lines: list[str]) -> int:
    """Check that entries and exits alternate, each exit by the one who entered; count entries."""
    holder = None
    for line in lines:
        event, name, who = line.split()
        if event == "enter":
            assert holder is None, f"{who} entered {name} while {holder} held it"
            holder = (name, who)
        else:
            assert holder == (name, who), f"{who} left {name}, held by {holder}"
            holder = None
    assert holder is None
    return sum(line.startswith("enter") for line in lines)


def test_a_contested_take_over_of_an_abandoned_lease_has_one_winner(
    sshfs_pair: SshfsPair, tmp_path: Path
) -> None:
    rounds, workers = 1000, 4
    unique = f"contest-{uuid.uuid4().hex[:8]}"
    leases = sshfs_pair.export / unique / "leases"
    leases.mkdir(parents=True)
    dead = _dead_pid()
    names = [f"name-{n}" for n in range(rounds)]
    planted = {}
    for n, name in enumerate(names):
        # Mostly a dead process of the contestants' own host (seen dead at once, so all
        # four race for it); every 100th a silent other host's (seen abandoned after the
        # stale period).
        owner = "host-z:1:1" if n % 100 == 0 else f"host-c:{dead}:1"
        planted[f"{name}.lease"] = record(owner, f"{n:016x}", 3)
        (leases / f"{name}.lease").write_bytes(planted[f"{name}.lease"])
    log = tmp_path / "holders"
    roots = [str(m / unique) for m in sshfs_pair.mounts]
    jobs = [("host-c", (roots[n % 2], planted, str(log))) for n in range(workers)]
    won = w.run_all(w.contest, jobs, timeout=140)
    lines = log.read_text().splitlines()
    # Exactly one winner per abandoned lease, and never two holders at once.
    assert sum(won) == rounds
    assert _holders_never_overlap(lines) == rounds
    assert sorted(line.split()[1] for line in lines[::2]) == sorted(planted)
    print(f"take-overs won per process: {won}")
    assert [p.name for p in leases.iterdir() if not p.name.startswith(".fuse_hidden")] == []


@pytest.mark.parametrize("clock", ["+60", "-60", "+1d"])
def test_a_waiter_with_a_skewed_clock_never_takes_a_live_lease(
    sshfs_pair: SshfsPair, tmp_path: Path, clock: str
) -> None:
    unique = f"clock-{uuid.uuid4().hex[:8]}"
    root = [str(m / unique) for m in sshfs_pair.mounts]
    log, holding, release = tmp_path / "log", tmp_path / "holding", tmp_path / "release"
    args = {"name": "k", "log": str(log), "release": str(release), "timeout": 30}
    holder = w.start_machine(
        Machine(sshfs_pair.mounts[0], "host-a"),
        "hold_for",
        {**args, "root": root[0], "who": "holder", "holding": str(holding)},
    )
    try:
        waited_for_holder = threading.Event()
        while not holding.exists() and holder.poll() is None:
            waited_for_holder.wait(0.01)  # polling: the holder announces itself by a file
        # Waiting three stale periods: only a live heartbeat keeps the lease from it.
        waiter = w.start_machine(
            Machine(sshfs_pair.mounts[1], "host-b", clock=clock),
            "hold_for",
            {
                **args,
                "root": root[1],
                "who": "waiter",
                "holding": str(tmp_path / "w"),
                "timeout": 3 * w.STALE,
            },
        )
        got = w.result_of(waiter, timeout=60)
    finally:
        release.touch()
        held = w.result_of(holder, timeout=60)
    assert held["held"]
    assert not got["held"]
    assert log.read_text().split() == ["enter", "holder", "exit", "holder"]
    if clock == "+1d":
        assert got["time"] - held["time"] > 86000  # the waiter's clock really was a day ahead


def test_a_silent_lease_from_a_host_a_day_ahead_is_taken_over_after_the_stale_period(
    sshfs_pair: SshfsPair, tmp_path: Path
) -> None:
    unique = f"ahead-{uuid.uuid4().hex[:8]}"
    root = [str(m / unique) for m in sshfs_pair.mounts]
    holding = tmp_path / "holding"
    args = {"name": "k", "log": str(tmp_path / "log"), "release": str(tmp_path / "never")}
    holder = w.start_machine(
        Machine(sshfs_pair.mounts[1], "host-b", clock="+1d"),
        "hold_for",
        {**args, "root": root[1], "who": "holder", "holding": str(holding), "timeout": 30},
    )
    seen = threading.Event()
    while not holding.exists() and holder.poll() is None:
        seen.wait(0.01)  # polling: the holder announces itself by a file
    os.killpg(holder.pid, signal.SIGKILL)  # its heartbeat stops; the lease stays
    holder.communicate(timeout=30)
    waiter = w.start_machine(
        Machine(sshfs_pair.mounts[0], "host-a"),
        "hold_for",
        {
            **args,
            "root": root[0],
            "who": "waiter",
            "holding": str(tmp_path / "w"),
            "release": str(holding),
            "timeout": 60,
        },
    )
    got = w.result_of(waiter, timeout=90)
    # Taken over (not timed out): the other host's clock, a day ahead, played no part.
    assert got["held"]
    assert got["waited"] < 30, got
    print(f"took over after {got['waited']:.2f} s (stale period {w.STALE} s)")
