"""Who a process is, across machines: a per-host id, its pid and its start time.

Hostnames are not unique (containers, cloned VMs and cluster nodes often share
one), and pids are reused. An owner is therefore identified by

* the **host id**: ``$STEPCACHE_HOST_ID`` if set, else a digest of
  ``/etc/machine-id`` and the kernel's boot id (so two machines, or one
  machine before and after a reboot, never share it), else the hostname;
* the **pid** and the process's **start time** in clock ticks since boot
  (``/proc/<pid>/stat``), which together name one process of one boot.

Only the host that owns a pid may ask whether it still runs
(:func:`same_host_dead`); other hosts' owners are judged by their heartbeat.

>>> owner = parse_owner_id(owner_id())
>>> owner is not None and owner[0] == host_id() and owner[1] == os.getpid()
True
"""

from __future__ import annotations

import functools
import os
import re
from typing import Final

import xxhash

__all__ = ["host_id", "owner_id", "parse_owner_id", "process_start", "same_host_dead"]

ENV_HOST_ID: Final = "STEPCACHE_HOST_ID"
_UNSAFE: Final = r"[^A-Za-z0-9._-]"  # compiled at first use (re caches it)


@functools.cache
def _machine_host_id() -> str:
    parts = []
    for path in ("/etc/machine-id", "/var/lib/dbus/machine-id", "/proc/sys/kernel/random/boot_id"):
        try:
            with open(path, "rb") as f:
                parts.append(f.read().strip())
        except OSError:
            continue
    if not parts:  # no machine id: the hostname is the best there is
        return re.sub(_UNSAFE, "_", os.uname().nodename or "localhost")[:32]
    return xxhash.xxh3_128_hexdigest(b"\0".join(parts))[:16]


def host_id() -> str:
    """This host's id: ``$STEPCACHE_HOST_ID``, else a digest of its machine and boot ids.

    >>> os.environ.get("STEPCACHE_HOST_ID") or len(host_id()) > 0
    True
    """
    env = os.environ.get(ENV_HOST_ID)
    if env:
        return re.sub(_UNSAFE, "_", env)[:64]
    return _machine_host_id()


def process_start(pid: int) -> int | None:
    """When process ``pid`` of this host started (clock ticks since boot), or ``None`` if unknown.

    >>> process_start(os.getpid()) is None or process_start(os.getpid()) > 0
    True
    """
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read().rpartition(b")")[2].split()
        return int(fields[19])  # field 22 of proc(5), counted after the command name
    except (OSError, IndexError, ValueError):
        return None


@functools.cache
def _own_start(pid: int) -> int:
    return process_start(pid) or 0


def owner_id() -> str:
    """``<host id>:<pid>:<start time>`` of this process (a fork gets its own)."""
    pid = os.getpid()
    return f"{host_id()}:{pid}:{_own_start(pid)}"


def parse_owner_id(text: str) -> tuple[str, int, int] | None:
    """(host id, pid, start time) from :func:`owner_id`'s text, or ``None``.

    >>> parse_owner_id("0123abcd:42:777")
    ('0123abcd', 42, 777)
    """
    host, sep, rest = text.rpartition(":")
    host, sep2, pid = host.rpartition(":")
    if not (sep and sep2 and host and pid.isdigit() and rest.isdigit()):
        return None
    return host, int(pid), int(rest)


def same_host_dead(owner: str) -> bool:
    """Whether ``owner`` (an :func:`owner_id`) is a process of this host that no longer runs.

    ``False`` for other hosts' owners and for anything unparseable: only this
    host can see its processes, and a pid reused by a new process (another
    start time) does not keep a dead owner alive. A zombie counts as dead.
    """
    parsed = parse_owner_id(owner)
    if parsed is None or parsed[0] != host_id() or not os.path.exists("/proc/self/stat"):
        return False  # not ours to probe, or no /proc to probe it with
    _, pid, start = parsed
    if pid == os.getpid():
        return start != _own_start(pid)
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read().rpartition(b")")[2].split()
    except FileNotFoundError:
        return True
    except OSError:
        return False
    try:
        return fields[0] == b"Z" or int(fields[19]) != start
    except (IndexError, ValueError):
        return False
