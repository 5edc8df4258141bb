"""Which per-key lock fits a directory: kernel ``flock`` on local filesystems, leases elsewhere.

``flock`` excludes only the clients of one kernel. On a local filesystem
that is everyone; on a network or FUSE filesystem it is not: two sshfs
mounts of one directory are both granted the same ``flock``, and NFS
emulates it with POSIX locks that other clients may or may not see. So
``auto`` uses ``flock`` only on filesystem types known to be local, and
lease files (:mod:`~stepcache.stores._lease`) on everything else,
unknown types included.

The type is looked up in ``/proc/self/mountinfo`` by the device of the
directory (or the longest mount point containing it), once, at the first
lock: opening a store stays a few syscalls.

>>> resolve_mode("lease", "/tmp")
('lease', 'lease: chosen by lock=lease')
"""

from __future__ import annotations

import os
import re
from typing import Final

from stepcache._record import Record
from stepcache.errors import StoreUnavailableError

__all__ = [
    "ENV_LOCK",
    "LOCAL_TYPES",
    "MODES",
    "LeaseTiming",
    "check_lock",
    "filesystem_of",
    "requested_mode",
    "resolve_mode",
    "shared_fs",
    "split_query",
]

MODES: Final = ("auto", "flock", "lease")
ENV_LOCK: Final = "STEPCACHE_LOCK"
#: Filesystem types whose locks are held by the one kernel every client goes through.
LOCAL_TYPES: Final = frozenset(
    {
        "ext2", "ext3", "ext4", "xfs", "btrfs", "tmpfs", "ramfs", "zfs", "overlay",
        "f2fs", "jfs", "reiserfs", "bcachefs", "nilfs2", "hfsplus", "apfs", "vfat", "exfat",
    }
)  # fmt: skip
_ESCAPE: Final = r"\\([0-7]{3})"  # compiled at the first lock (re caches it)


class LeaseTiming(Record):
    """How often a holder beats (``heartbeat``) and how long a silent lease lives (``stale_after``).

    Both are durations on each process's own monotonic clock; no two clocks
    are ever compared. ``stale_after`` must exceed the longest pause a live
    holder's heartbeat thread can suffer, with a wide margin.
    """

    __slots__ = ("heartbeat", "stale_after")
    heartbeat: float
    stale_after: float

    def __init__(self, heartbeat: float = 3.0, stale_after: float = 30.0) -> None:
        if not 0 < heartbeat * 2 <= stale_after:
            raise ValueError(
                f"lease heartbeat ({heartbeat}) must be positive and at most half of "
                f"stale_after ({stale_after})"
            )
        self._set(heartbeat=heartbeat, stale_after=stale_after)

    @property
    def poll(self) -> float:
        """Longest sleep of a waiter between two looks at a lease."""
        return min(self.heartbeat / 2, 0.02)


def check_lock(lock: str | None) -> None:
    """Raise :class:`ValueError` unless ``lock`` is ``None`` or one of :data:`MODES`."""
    if lock is not None and lock not in MODES:
        raise ValueError(f"lock must be one of {', '.join(MODES)}, not {lock!r}")


def requested_mode(lock: str | None) -> tuple[str, str]:
    """(mode, where it came from): ``lock`` if given, else ``$STEPCACHE_LOCK``, else ``auto``.

    >>> requested_mode("flock")
    ('flock', 'lock=flock')
    """
    if lock is not None:
        source = f"lock={lock}"
    else:
        lock = os.environ.get(ENV_LOCK, "").strip().lower() or "auto"
        source = f"${ENV_LOCK}={lock}" if lock != "auto" else "default"
    if lock not in MODES:
        raise ValueError(f"lock must be one of {', '.join(MODES)}, not {lock!r} ({source})")
    return lock, source


def split_query(rest: str) -> tuple[str, dict[str, str]]:
    """Split ``path?lock=MODE`` (the only option a directory spec carries); StoreUnavailableError
    for anything else.

    >>> split_query("/var/cache/sc?lock=lease")
    ('/var/cache/sc', {'lock': 'lease'})
    """
    path, _, query = rest.partition("?")
    if not query:
        return path, {}
    from urllib.parse import parse_qsl

    options = dict(parse_qsl(query, keep_blank_values=True))
    if set(options) - {"lock"} or options.get("lock") not in MODES:
        raise StoreUnavailableError(
            f"unknown option in dir://{rest}: a directory spec takes ?lock={'|'.join(MODES)}"
        )
    return path, options


def _unescape(field: str) -> str:
    return re.sub(_ESCAPE, lambda m: chr(int(m[1], 8)), field)


def filesystem_of(path: str, mountinfo: str = "/proc/self/mountinfo") -> tuple[str, str]:
    """(type, mount point) of the filesystem holding ``path``; type ``unknown`` if unseen.

    >>> filesystem_of("/proc")[0] in {"proc", "unknown"}
    True
    """
    try:
        with open(mountinfo, encoding="utf-8", errors="replace") as f:
            lines = f.read().splitlines()
    except OSError:
        return "unknown", path
    try:
        st = os.stat(path)
        device = f"{os.major(st.st_dev)}:{os.minor(st.st_dev)}"
    except OSError:
        device = ""
    real = os.path.realpath(path)
    by_device, by_prefix = None, None
    for line in lines:
        fields = line.split()
        if "-" not in fields or len(fields) < 5:
            continue
        fstype, point = fields[fields.index("-") + 1], _unescape(fields[4])
        if fields[2] == device:
            by_device = (fstype, point)  # the last mount of a device is the visible one
        inside = real == point or real.startswith(point.rstrip("/") + "/")
        if inside and (by_prefix is None or len(point) >= len(by_prefix[1])):
            by_prefix = (fstype, point)
    return by_device or by_prefix or ("unknown", path)


def shared_fs(path: str) -> bool:
    """Whether ``path`` is on a filesystem other machines may serve too (NFS, FUSE...).

    Decided by filesystem type, as ``lock="auto"`` decides (an unknown type
    counts as shared).
    """
    return filesystem_of(path)[0] not in LOCAL_TYPES


def resolve_mode(lock: str | None, path: str) -> tuple[str, str]:
    """(``flock`` or ``lease``, why) for locks in directory ``path``.

    >>> resolve_mode("flock", "/tmp")
    ('flock', 'flock: chosen by lock=flock')
    """
    mode, source = requested_mode(lock)
    if mode != "auto":
        return mode, f"{mode}: chosen by {source}"
    fstype, point = filesystem_of(path)
    mode = "flock" if fstype in LOCAL_TYPES else "lease"
    return mode, f"{mode}: {fstype} at {point}"
