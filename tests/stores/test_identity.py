"""Owner identity across machines: host id, pid and start time; who may judge whom dead."""

from __future__ import annotations

import os

import pytest
import store_workers as w

from stepcache.stores import _identity


def test_the_host_id_comes_from_the_environment_when_set(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STEPCACHE_HOST_ID", "node 17/a")
    assert _identity.host_id() == "node_17_a"
    assert _identity.owner_id().startswith("node_17_a:")


def test_without_the_environment_equal_hostnames_do_not_make_equal_host_ids(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("STEPCACHE_HOST_ID", raising=False)
    # Derived from the machine and boot ids, not from the hostname.
    assert _identity.host_id() != os.uname().nodename or not os.path.exists("/etc/machine-id")


def test_a_dead_process_of_this_host_is_dead_and_a_live_one_is_not(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("STEPCACHE_HOST_ID", "here")
    start = _identity.process_start(os.getppid())
    assert _identity.same_host_dead(f"here:{w.dead_pid()}:1")
    assert not _identity.same_host_dead(f"here:{os.getppid()}:{start}")
    assert not _identity.same_host_dead(_identity.owner_id())


def test_a_reused_pid_does_not_keep_a_dead_owner_alive(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STEPCACHE_HOST_ID", "here")
    start = _identity.process_start(os.getppid())
    assert start is not None
    assert _identity.same_host_dead(f"here:{os.getppid()}:{start + 1}")


def test_other_hosts_owners_are_never_judged_by_pid(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STEPCACHE_HOST_ID", "here")
    assert not _identity.same_host_dead(f"elsewhere:{w.dead_pid()}:1")
    assert not _identity.same_host_dead("not an owner id")
