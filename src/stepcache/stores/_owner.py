"""Who made a file: an owner identity that is unique across machines sharing a directory.

Temp files, temp trees and stats files carry their writer's identity in
their name, ``<host>-<pid>-<start>-<random>``, so that a sweep can tell the
leftovers of a process that died from work still in progress:

``host``
    the host id of :mod:`~stepcache.stores._identity` (``$STEPCACHE_HOST_ID``
    if set, else a digest of the machine and boot ids; the lease protocol
    uses the same), followed by a digest of the pid namespace unless the id
    was given: host *names* are not unique (cloned VMs, containers, every CI
    runner called ``runner``), and a pid means something only within its pid
    namespace (containers on one kernel share its machine and boot ids).
``pid`` and ``start``
    the process id and its start time (clock ticks since boot, from
    ``/proc``): a pid reused by a later process does not keep a dead
    writer's files alive.

Only files of this host are judged by asking whether their process lives;
another host's processes cannot be asked, so their files are judged by
whether they still change (:mod:`stepcache.stores.directory.sweep`).

>>> me = parse_owner(owner_tag() + "-00ff.tmp")
>>> me.host == host(), me.pid == os.getpid(), owner_alive(me)
(True, True, True)
"""

from __future__ import annotations

import functools
import os
import re
from typing import Final

import xxhash

from stepcache._record import Record
from stepcache.stores._identity import ENV_HOST_ID, host_id

__all__ = ["Owner", "host", "owner_alive", "owner_tag", "parse_owner", "pid_alive", "start_time"]

# Compiled at the first use (re caches it): only sweeps parse owners.
_NAME: Final = r"(?P<host>[A-Za-z0-9._-]+)-(?P<pid>[0-9]+)-(?P<start>[0-9]+)-[0-9a-f]+(?:\.[a-z]+)?"


@functools.cache
def host() -> str:
    """This host's identity (see the module docstring), safe in a file name.

    ``$STEPCACHE_HOST_ID``, else the machine digest and the pid namespace;
    found at the first call (it reads a few files), then the same for the process.
    """
    if os.environ.get(ENV_HOST_ID):
        return host_id()
    try:
        pidns = str(os.stat("/proc/self/ns/pid").st_ino)
    except OSError:
        return host_id()
    return f"{host_id()}.{xxhash.xxh3_64_hexdigest(pidns.encode())[:6]}"


class Owner(Record):
    """The writer of a file: host identity, process id and process start time."""

    __slots__ = ("host", "pid", "start")
    host: str
    pid: int
    start: int

    def __init__(self, host: str, pid: int, start: int) -> None:
        self._set(host=host, pid=pid, start=start)


def start_time(pid: int) -> int | None:
    """When process ``pid`` of this host started (clock ticks since boot), ``None`` if gone.

    0 where ``/proc`` does not say (then the pid alone identifies a process).
    """
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read().rpartition(b")")[2].split()
        return int(fields[19])  # field 22 of proc(5); fields[0] is field 3
    except FileNotFoundError:
        return None
    except (OSError, IndexError, ValueError):
        return 0


@functools.lru_cache(maxsize=8)  # keyed by pid: a forked child looks its own up
def _tag_of(pid: int) -> str:
    return f"{host()}-{pid}-{start_time(pid) or 0}"


def owner_tag(pid: int | None = None) -> str:
    """``<host>-<pid>-<start>`` of this process (or of process ``pid`` of this host): the
    prefix of its temp and stats names."""
    return _tag_of(os.getpid() if pid is None else pid)


def parse_owner(name: str) -> Owner | None:
    """The owner encoded in a temp or stats file name, or ``None`` if it holds none.

    >>> parse_owner("ci-node.0123abcd-4242-99887-00ff.tmp")
    Owner(host='ci-node.0123abcd', pid=4242, start=99887)
    """
    m = re.fullmatch(_NAME, name)
    return Owner(m["host"], int(m["pid"]), int(m["start"])) if m else None


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` of this host is running (a zombie counts as dead)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, belongs to someone else
        return True
    # A killed process stays a zombie until its parent reaps it; it holds
    # nothing any more, so waiting for it would only delay a takeover.
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rpartition(b")")[2].split()[0] != b"Z"
    except (OSError, IndexError):
        return True


def owner_alive(owner: Owner) -> bool | None:
    """Whether ``owner`` still runs: ``None`` for another host's process (it cannot be asked).

    A process of this host is alive if its pid runs *and* started when the
    owner did, so a recycled pid does not count.
    """
    if owner.host != host():
        return None
    if not pid_alive(owner.pid):
        return False
    started = start_time(owner.pid)
    return started is not None and (owner.start == 0 or started in (0, owner.start))
