"""``stepcache demo`` uses and keeps the store of every other command; Ctrl-C leaves it whole.

Real CLI in subprocesses, with ``$STEPCACHE_DIR`` and ``$TMPDIR`` inside the
test's directory so that whatever the demo leaves behind is seen.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from cli_run import run_cli

from stepcache.stores.directory.eviction import ENTRIES
from stepcache.testing import lock_files

needs_cc = pytest.mark.skipif(
    shutil.which(os.environ.get("CC", "cc").split()[0]) is None,
    reason="the demo compiles C and no C compiler ($CC or cc) is on PATH",
)


def demo_env(tmp_path: Path) -> dict[str, str]:
    (tmp_path / "tmp").mkdir(exist_ok=True)
    return {
        "STEPCACHE_DIR": str(tmp_path / "cache"),
        "STEPCACHE_MEMO_DIR": str(tmp_path / "memo"),
        "TMPDIR": str(tmp_path / "tmp"),
    }


def entry_files(root: Path) -> list[Path]:
    fanout = root / ENTRIES
    return [p for p in fanout.glob("*/*") if p.is_file()] if fanout.is_dir() else []


@pytest.mark.slow
@needs_cc
def test_demo_keeps_the_default_store_and_a_second_demo_is_warm(tmp_path: Path) -> None:
    env = demo_env(tmp_path)
    first = run_cli("demo", "--programs", "2", "--workers", "1", "--json", env=env)
    assert first.returncode == 0, first.stderr
    doc = json.loads(first.stdout)
    assert doc["store"] == f"dir://{tmp_path / 'cache'}"
    assert doc["kept"] is True
    assert [r["name"] for r in doc["runs"]] == ["no-cache", "cold", "warm"]
    entries = doc["runs"][1]["new_keys"]
    assert entries == 4  # translate and compile of two programs

    listed = run_cli("ls", "--json", env=env)  # the same store, by the same default
    assert listed.returncode == 0, listed.stderr
    assert len(json.loads(listed.stdout)) == entries

    second = run_cli("demo", "--programs", "2", "--workers", "1", env=env)
    assert second.returncode == 0, second.stderr
    rows = [line.split()[0] for line in second.stdout.splitlines()[2:5]]
    assert rows == ["no-cache", "warm", "warm"]  # no run on a warm store is called cold
    assert "cold" not in second.stdout
    assert "cost of filling" not in second.stdout
    assert f"store: {tmp_path / 'cache'} (kept)\nsee it with: stepcache stats\n" in second.stdout
    assert list((tmp_path / "tmp").iterdir()) == []


@pytest.mark.slow
@needs_cc
def test_demo_fresh_uses_a_throwaway_store(tmp_path: Path) -> None:
    env = demo_env(tmp_path)
    proc = run_cli("demo", "--programs", "1", "--workers", "1", "--fresh", env=env)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("1 program\n")
    assert "(temporary, removed)" in proc.stdout
    assert [line.split()[0] for line in proc.stdout.splitlines()[2:5]] == [
        "no-cache",
        "cold",
        "warm",
    ]
    assert not (tmp_path / "cache").exists()
    assert list((tmp_path / "tmp").iterdir()) == []


@pytest.mark.slow
@needs_cc
@pytest.mark.timeout(240)
def test_ctrl_c_leaves_nothing_but_complete_entries(tmp_path: Path) -> None:
    env = {**os.environ, **demo_env(tmp_path), "NO_COLOR": "1"}
    root = tmp_path / "cache"
    proc = subprocess.Popen(
        [sys.executable, "-m", "stepcache.cli", "demo", "--programs", "60", "--workers", "2"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        start_new_session=True,  # its own process group, as a terminal's job is
    )
    try:
        # Interrupt once the cached runs have written a few entries.
        deadline = time.monotonic() + 180
        while len(entry_files(root)) < 3 and proc.poll() is None:
            assert time.monotonic() < deadline, "the demo wrote no entries"
            time.sleep(0.05)
        assert proc.poll() is None, "the demo finished before it could be interrupted"
        os.killpg(proc.pid, signal.SIGINT)
        err = proc.communicate(timeout=120)[1]
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 1, err
    # click ends the terminal's "^C" line first, then the one-line error.
    assert err.strip().splitlines()[0].startswith("stepcache: error: interrupted"), err
    assert "nothing was changed" not in err
    assert "Traceback" not in err
    assert [p.name for p in (tmp_path / "tmp").iterdir()] == []  # no build directories
    assert lock_files(root / "leases") == []
    assert [p.name for p in (root / "tmp").glob("*")] == []
    verify = run_cli("verify", store=root)
    assert verify.returncode == 0, verify.stdout + verify.stderr  # every entry is complete
    stats = json.loads(run_cli("stats", "--json", store=root).stdout)
    assert stats["entries"] >= 3
    assert stats["writes"] >= stats["entries"]  # the workers' counters were recorded


_MASK = "import signal; print(signal.SIGINT in signal.pthread_sigmask(signal.SIG_BLOCK, set()))"


@pytest.mark.parametrize("to", ["process", "thread"])
def test_a_ctrl_c_while_workers_start_interrupts_the_run_once_they_have(to: str) -> None:
    # The window in which the parent keeps Ctrl-C from its new workers: a signal
    # then used to be dropped (SIG_IGN), and the demo ran to its end (exit 0).
    import threading

    from stepcache.demo.runner import _sigint_ignored

    def start_workers_and_ctrl_c() -> None:
        with _sigint_ignored():
            child = subprocess.run(
                [sys.executable, "-c", _MASK], capture_output=True, text=True, check=True
            )
            assert child.stdout.split() == ["True"]  # a worker started now never sees Ctrl-C
            if to == "process":
                os.kill(os.getpid(), signal.SIGINT)  # to a thread that does not block it
            else:
                signal.pthread_kill(threading.main_thread().ident or 0, signal.SIGINT)
            time.sleep(0.05)  # not raised here: the workers are still being started
        time.sleep(1)  # raised before this

    other = threading.Thread(target=time.sleep, args=(2,))  # as a queue's feeder thread
    other.start()
    with pytest.raises(KeyboardInterrupt):
        start_workers_and_ctrl_c()
    other.join()
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    assert signal.SIGINT not in signal.pthread_sigmask(signal.SIG_BLOCK, set())


def test_demo_without_numpy_says_how_to_install_it(tmp_path: Path) -> None:
    blocker = tmp_path / "site"
    blocker.mkdir()
    # An import hook on the path that makes `import numpy` fail, as if it were absent.
    (blocker / "sitecustomize.py").write_text(
        "import sys\n"
        "class _Hide:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'numpy' or name.startswith('numpy.'):\n"
        "            raise ModuleNotFoundError(f'No module named {name!r}', name=name)\n"
        "sys.meta_path.insert(0, _Hide())\n"
    )
    path = os.pathsep.join([str(blocker), os.environ.get("PYTHONPATH", "")])
    proc = run_cli("demo", "--programs", "1", env={**demo_env(tmp_path), "PYTHONPATH": path})
    assert proc.returncode == 2
    assert proc.stderr.splitlines() == [
        "stepcache: error: the demo needs numpy, which is not installed; "
        "install it with: pip install 'stepcache[demo]' "
        "(in a source checkout: pip install -e '.[demo]')"
    ]
    assert not (tmp_path / "cache").exists()


def test_bench_from_an_installed_copy_says_where_the_benchmarks_are(tmp_path: Path) -> None:
    import stepcache

    site = tmp_path / "site-packages"
    shutil.copytree(Path(stepcache.__file__).parent, site / "stepcache")
    proc = run_cli("bench", "--quick", env={"PYTHONPATH": str(site)})
    assert proc.returncode == 2
    [line] = proc.stderr.splitlines()
    assert "the benchmarks are in the source tree" in line
    assert "python -m benchmarks" in line


@pytest.mark.timeout(180)
def test_bench_in_a_checkout_runs_the_benchmarks_as_their_own_program(tmp_path: Path) -> None:
    # As `python -m benchmarks` in a process of its own: started from this
    # command (run with PYTHONDONTWRITEBYTECODE, as run_cli does), the
    # benchmarks' workers would otherwise all get -B.
    proc = run_cli("bench", "--quick", "--only", "store", "--json", env={"TMPDIR": str(tmp_path)})
    assert proc.returncode == 0, proc.stderr[-2000:]
    doc = json.loads(proc.stdout)
    assert doc["quick"] is True
    assert list(doc["sections"]) == ["store"]
