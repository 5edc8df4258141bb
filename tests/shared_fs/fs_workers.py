"""Code the shared-filesystem tests run in child processes ("machines"), and their runners.

Importable by children (its directory is on the parent's ``sys.path``); it
imports no pytest. A child plays a machine by setting ``STEPCACHE_HOST_ID``
before it touches a store; children with skewed clocks are started through
``faketime`` by :func:`run_machine` and run this file as a script.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from stepcache.stores._lease import Leases, Watch
from stepcache.stores._locks import KeyLocks, LeaseTiming
from stepcache.stores.directory import DirectoryStore
from stepcache.testing.processes import gather
from stepcache.testing.sshfs import Machine, patch_sleep_under_faketime

#: Lease timing of the tests: short, so that take-overs happen within a test's time, yet
#: 20 heartbeats long, so that a live holder on a loaded 2-core machine is never judged dead.
STALE = 2.0
HEARTBEAT = 0.1
TIMING = LeaseTiming(HEARTBEAT, STALE)


def context() -> multiprocessing.context.BaseContext:
    """Children forked from a fresh server that imported stepcache once (fast, clean)."""
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["stepcache", "stepcache.stores.directory"])
    return ctx


def _report(queue: Any, index: int, host: str, target: Callable[..., Any], args: Any) -> None:
    os.environ["STEPCACHE_HOST_ID"] = host
    try:
        queue.put((index, True, target(*args)))
    except BaseException:
        queue.put((index, False, traceback.format_exc()))


def run_all(
    target: Callable[..., Any], jobs: Sequence[tuple[str, tuple[Any, ...]]], timeout: float = 90
) -> list[Any]:
    """Run ``target(start, *args)`` for each (host id, args) in a child; return their results.

    ``start`` is a reusable barrier of all children. Children still running
    at the deadline are killed and the call fails.
    """
    ctx = context()
    queue = ctx.Queue()
    start = ctx.Barrier(len(jobs))
    procs = [
        ctx.Process(target=_report, args=(queue, i, host, target, (start, *a)), daemon=True)
        for i, (host, a) in enumerate(jobs)
    ]
    return gather(procs, queue, timeout)


def start_machine(machine: Machine, command: str, args: dict[str, Any]) -> subprocess.Popen[str]:
    """Start ``command`` of this file in a new interpreter (and session) as ``machine``."""
    return subprocess.Popen(
        machine.command([sys.executable, __file__, command, json.dumps(args)]),
        env=machine.env({**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # faketime runs python as its child: kill the whole group
    )


def result_of(proc: subprocess.Popen[str], timeout: float) -> Any:
    """The JSON result a :func:`start_machine` process printed (killed at the deadline)."""
    try:
        out, err = proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, 9)
            proc.wait()
    if proc.returncode != 0:
        raise AssertionError(f"{proc.args} failed:\n{err[-3000:]}")
    return json.loads(out.strip().splitlines()[-1])


def append(log: str, line: str) -> None:
    """One line to a log on the local disk: ``O_APPEND`` writes are ordered by one kernel."""
    fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, (line + "\n").encode())
    finally:
        os.close(fd)


def store_at(root: str, lock: str | None) -> DirectoryStore:
    return DirectoryStore(root, lock=lock, lease_stale=STALE, lease_heartbeat=HEARTBEAT)


# -- workers (forked) --------------------------------------------------------------------
def herd(start: Any, root: str, lock: str | None, keys: list[str], log: str, work: float) -> str:
    """For each key: all at once ``get_or_compute`` it; each computation logged."""
    store = store_at(root, lock)
    me = f"{os.environ['STEPCACHE_HOST_ID']}-{os.getpid()}"

    def compute(k: str) -> str:
        append(log, f"compute {k} {me}")
        threading.Event().wait(work)  # the computation's own duration, so the herd overlaps
        return f"value of {k}"

    for k in keys:
        start.wait(timeout=60)
        assert store.get_or_compute(k, lambda k=k: compute(k), timeout=60) == f"value of {k}"
    return store.lock_mode[1]


def parallel(start: Any, root: str, k: str, started: str, total: int) -> int:
    """Compute ``k`` (its own key) and, while computing, count the computations started."""
    store = store_at(root, None)
    start.wait(timeout=60)

    def compute() -> int:
        Path(started, k).touch()
        end = time.monotonic() + 20  # bounded: serialised computations would see only themselves
        while len(os.listdir(started)) < total and time.monotonic() < end:
            threading.Event().wait(0.01)
        return len(os.listdir(started))

    seen: int = store.get_or_compute(k, compute, timeout=60)
    return seen


def contest(start: Any, root: str, planted: dict[str, bytes], log: str) -> int:
    """For each planted abandoned lease (name to record): all at once, judge it, take it over.

    Each process watches the lease until it judges it abandoned, then tries
    the take-over; a winner logs its entry and exit around a short hold and
    releases. Returns how many take-overs this process won.
    """
    me = f"{os.environ['STEPCACHE_HOST_ID']}-{os.getpid()}"
    where = os.open(f"{root}/leases", os.O_RDONLY | os.O_DIRECTORY)
    leases, won = Leases(where, 0o600, TIMING), 0
    try:
        for name, record in planted.items():
            start.wait(timeout=60)
            watch, end = Watch(), time.monotonic() + 10 * STALE
            while not leases.abandoned(watch, name, record) and time.monotonic() < end:
                threading.Event().wait(TIMING.poll)  # watching the record for the stale period
            held = leases.take_over(watch, name, record)
            if held is not None:
                append(log, f"enter {name} {me}")
                won += 1
                threading.Event().wait(0.001)  # the holder's work: the others try meanwhile
                append(log, f"exit {name} {me}")
                held.release()
    finally:
        os.close(where)
    return won


def compute_until_killed(
    start: Any, root: str, k: str, computing: str, done_log: str, doomed: int
) -> str:
    """``get_or_compute(k)`` whose computation announces itself and waits to be killed.

    The computation writes ``computing/<pid>`` holding its monotonic start
    time; the first ``doomed`` computations of the key wait for the test to
    SIGKILL them, the next one finishes.
    """
    store = store_at(root, None)
    start.wait(timeout=60)

    def compute() -> str:
        mine = Path(computing, str(os.getpid()))
        mine.write_text(repr(time.monotonic()))
        if len(os.listdir(computing)) <= doomed:
            threading.Event().wait(60)  # until SIGKILLed (bounded all the same)
        append(done_log, f"computed {k} {os.getpid()}")
        return f"value of {k}"

    value: str = store.get_or_compute(k, compute, timeout=60)
    return value


# -- commands for run_machine (faketime processes) -----------------------------------------------
def hold_for(args: dict[str, Any]) -> dict[str, Any]:
    """Hold ``name`` until file ``release`` exists (announcing ``holding``); log entry and exit."""
    os.makedirs(args["root"], exist_ok=True)
    locks = KeyLocks(f"{args['root']}/leases", backend="lease", timing=TIMING)
    begin = time.monotonic()
    try:
        with locks.hold(args["name"], begin + args["timeout"]) as held:
            waited = time.monotonic() - begin
            if held:
                append(args["log"], f"enter {args['who']}")
                Path(args["holding"]).touch()
                end = time.monotonic() + 60
                while not os.path.exists(args["release"]) and time.monotonic() < end:
                    time.sleep(0.01)  # polling for the test's release file
                append(args["log"], f"exit {args['who']}")
    except OSError as exc:  # the lease directory kept failing: no lock (a store computes then)
        return {"held": False, "waited": time.monotonic() - begin, "time": time.time(),
                "error": str(exc)}  # fmt: skip
    return {"held": held, "waited": waited, "time": time.time()}


def main(argv: list[str]) -> None:
    patch_sleep_under_faketime()
    result = {"hold_for": hold_for}[argv[1]](json.loads(argv[2]))
    print(json.dumps(result))


if __name__ == "__main__":
    main(sys.argv)
