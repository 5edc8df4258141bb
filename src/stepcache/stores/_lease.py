"""Lease files: per-key locks that hold across machines without trusting clocks or hostnames.

The protocol, its invariants and what each failure means are specified in
``docs/shared-filesystems.md``; the names below follow it. In short:

* ``<name>.lease`` holds one owner's *record*: owner id (host id, pid, start
  time), a random nonce and a beat counter, padded to a fixed length. Records
  never repeat, so equal bytes mean "nothing happened".
* A lease is created whole, by ``link``\\ing a written temp file to its name
  (fails if it exists), and kept alive by rewriting the record in place
  through the holder's own descriptor (a replaced lease's old holder writes
  to the old file, never to its successor's).
* A waiter judges a lease abandoned only when the bytes it reads through a
  fresh ``open`` stay the same for ``stale_after`` seconds of its own
  monotonic clock, or when the owner is a dead process of its own host.
* Replacing or removing a lease whose record is *c* requires the *claim*
  ``<name>.<digest(c)>.claim``, created whole by ``link``: at most one
  process ever creates it. The claimant re-reads the lease, and only if it
  still holds *c* renames its own lease over it (or, releasing, unlinks it).
  An abandoned claim is itself claimed the same way (a chain, one level per
  crash).
* Every failure to create a file is answered by reading what is there.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Callable
from typing import Final

from stepcache.stores import _identity
from stepcache.stores._lockmode import LeaseTiming

__all__ = ["Heartbeat", "Held", "LeaseTiming", "Leases", "Watch", "waiting"]

RECORD_SIZE: Final = 192
_MAGIC: Final = b"stepcache-lease 1 "
_READ: Final = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)
_NEW: Final = os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
_HELD: Final = os.O_RDWR | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
_MAX_DEPTH: Final = 8  # claims of claims: one level per process that died mid-take-over
#: Consecutive "could not create, and nothing is there" before the directory counts as unusable.
_MAX_EMPTY_FAILURES: Final = 50


def digest(data: bytes) -> str:
    """Short name of a record (claims are named after the record they replace)."""
    import hashlib  # OpenSSL: a few ms of import, for lease files only

    return hashlib.sha256(data).hexdigest()[:24]


def record(owner: str, nonce: str, beat: int) -> bytes:
    """A lease record of fixed length (a reader never sees a size cut it short)."""
    return (_MAGIC + f"{owner} {nonce} {beat:012d}".encode()).ljust(RECORD_SIZE - 1) + b"\n"


def owner_of(data: bytes) -> str:
    """The owner id in a lease or claim record; empty if it has none."""
    if not data.startswith(_MAGIC):
        return ""
    parts = data[len(_MAGIC) :].split()
    return parts[0].decode(errors="replace") if parts else ""


def _temp_owner(name: str) -> bytes:
    """A record naming the owner encoded in a temp's name (for a temp killed before writing)."""
    parts = name.split(".")
    return _MAGIC + parts[-3].replace("+", ":").encode() if len(parts) >= 4 else b""


def _fresh_owner_and_nonce() -> tuple[str, str]:
    return _identity.owner_id(), os.urandom(8).hex()


class Watch:
    """What a process has seen of each file and since when (its own monotonic clock)."""

    def __init__(self) -> None:
        self._seen: dict[str, tuple[bytes, float]] = {}

    def unchanged_for(self, name: str, data: bytes) -> float:
        now = time.monotonic()
        seen = self._seen.get(name)
        if seen is None or seen[0] != data:
            self._seen[name] = (data, now)
            return 0.0
        return now - seen[1]


class Heartbeat:
    """``beat()`` every ``interval`` seconds in a daemon thread, until :meth:`stop`.

    The heartbeat of every kind of lease (files, Redis keys, S3 objects).
    ``beat()`` returns whether to go on: ``False`` once the lease is lost,
    as nothing of the holder's is left to keep alive.
    """

    def __init__(self, beat: Callable[[], bool], interval: float, name: str) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._run, args=(beat, interval), name=name, daemon=True
        )
        self._thread.start()

    def _run(self, beat: Callable[[], bool], interval: float) -> None:
        while not self._stop.wait(interval):
            if not beat():
                return

    def stop(self) -> None:
        """Stop beating; return once no beat runs any more."""
        self._stop.set()
        self._thread.join()


class Held:
    """A lease this process holds: its heartbeat and how to give it back."""

    def __init__(self, leases: Leases, name: str, fd: int, owner: str, nonce: str) -> None:
        self.leases, self.name, self.fd = leases, name, fd
        self.owner, self.nonce, self.beat = owner, nonce, 0
        self.lost = False
        self._heart = Heartbeat(self._beat, leases.timing.heartbeat, "stepcache-lease")

    @property
    def current(self) -> bytes:
        return record(self.owner, self.nonce, self.beat)

    def _beat(self) -> bool:
        self.beat += 1
        # In place, through our own descriptor: if the lease was taken over,
        # this lands in the replaced file and cannot revive it.
        with contextlib.suppress(OSError):  # a transient error: the next beat tries again
            os.pwrite(self.fd, self.current, 0)
        return True

    def release(self) -> None:
        """Stop beating and remove the lease, unless another process has taken it over."""
        self._heart.stop()
        with contextlib.suppress(OSError):
            os.close(self.fd)
        self.lost = not self.leases.remove_if(self.name, self.current)


class Leases:
    """The lease protocol in one directory (an open fd that follows no symlink)."""

    def __init__(self, dir_fd: int, mode: int, timing: LeaseTiming) -> None:
        self.dir_fd, self.mode, self.timing = dir_fd, mode, timing

    # -- files ----------------------------------------------------------------------
    def read(self, name: str) -> bytes | None:
        """The bytes of ``name`` through a fresh open (attribute caches hide changes); ``None``."""
        try:
            fd = os.open(name, _READ, dir_fd=self.dir_fd)
        except FileNotFoundError:
            return None
        try:
            return os.read(fd, 4096)
        finally:
            os.close(fd)

    def _write_temp(self, base: str, data: bytes, owner: str, nonce: str) -> str:
        tmp = f"{base}.{owner.replace(':', '+')}.{nonce}.new"
        fd = os.open(tmp, _NEW, self.mode, dir_fd=self.dir_fd)
        try:
            if self.mode != 0o600:  # a group's directory: the umask must not lock members out
                os.fchmod(fd, self.mode)
            os.write(fd, data)
        except BaseException:
            os.close(fd)
            self._unlink(tmp)
            raise
        os.close(fd)
        return tmp

    def _unlink(self, name: str) -> None:
        with contextlib.suppress(OSError):
            os.unlink(name, dir_fd=self.dir_fd)

    def _link_new(self, name: str, data: bytes, owner: str, nonce: str) -> bool:
        """Create ``name`` holding ``data``, whole, unless it exists; ``False`` on any failure."""
        try:
            tmp = self._write_temp(name, data, owner, nonce)
        except OSError:
            return False
        try:
            os.link(tmp, name, src_dir_fd=self.dir_fd, dst_dir_fd=self.dir_fd)
        except OSError:  # EEXIST, or EPERM/ESTALE/... from a network filesystem: look instead
            return False
        finally:
            self._unlink(tmp)
        return True

    def _open_held(self, name: str, data: bytes, owner: str, nonce: str) -> Held | None:
        """Our lease just made ``name``: open it for the heartbeat, checking it is still ours."""
        try:
            fd = os.open(name, _HELD, dir_fd=self.dir_fd)
        except OSError:
            return None
        try:
            if os.read(fd, 4096) == data:
                return Held(self, name, fd, owner, nonce)
        except OSError:
            pass
        os.close(fd)
        return None

    # -- acquiring --------------------------------------------------------------------
    def try_create(self, name: str) -> Held | None:
        """Create lease ``name`` if there is none; ``None`` if that did not happen."""
        owner, nonce = _fresh_owner_and_nonce()
        data = record(owner, nonce, 0)
        if not self._link_new(name, data, owner, nonce):
            return None
        held = self._open_held(name, data, owner, nonce)
        if held is None:  # made but not opened (a transient error): do not leave it to go stale
            self.remove_if(name, data)
        return held

    def abandoned(self, watch: Watch, name: str, data: bytes) -> bool:
        """Whether the file ``name`` whose bytes are ``data`` is abandoned, as far as seen."""
        if _identity.same_host_dead(owner_of(data)):
            return True
        return watch.unchanged_for(name, data) >= self.timing.stale_after

    def take_over(self, watch: Watch, name: str, data: bytes) -> Held | None:
        """Replace abandoned lease ``name`` (record ``data``) by ours, if this process wins."""
        owner, nonce = _fresh_owner_and_nonce()
        chain = self.claim(watch, name, data, owner, nonce)
        if chain is None:
            return None
        new = record(owner, nonce, 0)
        try:
            tmp = self._write_temp(name, new, owner, nonce)
            try:
                # Atomic, also across sshfs mounts: readers see the old record or ours.
                os.rename(tmp, name, src_dir_fd=self.dir_fd, dst_dir_fd=self.dir_fd)
            except OSError:
                self._unlink(tmp)
                raise
        except OSError:
            self._drop(chain)
            return None
        self._drop(chain)
        return self._open_held(name, new, owner, nonce)

    def claim(
        self, watch: Watch, name: str, data: bytes, owner: str, nonce: str
    ) -> list[str] | None:
        """Win the right to replace or remove ``name`` holding ``data``: the claims to drop after.

        ``None`` if another process holds a live claim or ``name`` changed.
        """
        levels = [(name, data)]
        for _ in range(_MAX_DEPTH):
            target, seen = levels[-1]
            claim = f"{name}.{digest(seen)}.claim"
            body = _MAGIC + f"{owner} {nonce} {target}".encode() + b"\n"
            if self._link_new(claim, body, owner, nonce):
                break
            found = self.read(claim)
            if found is None or not self.abandoned(watch, claim, found):
                return None
            levels.append((claim, found))
        else:
            return None
        mine = f"{name}.{digest(levels[-1][1])}.claim"
        # Everything below our claim must still be as seen, or our claim came too late.
        if any(self.read(target) != seen for target, seen in levels):
            self._unlink(mine)
            return None
        return [target for target, _ in levels[1:]] + [mine]

    def _drop(self, chain: list[str]) -> None:
        for claim in chain:  # abandoned claims first, ours last
            self._unlink(claim)

    # -- releasing and sweeping -------------------------------------------------------------
    def remove_if(self, name: str, data: bytes) -> bool:
        """Remove lease ``name`` if it still holds ``data``; whether it did (or it was gone)."""
        owner, nonce = _fresh_owner_and_nonce()
        watch = Watch()
        chain = self.claim(watch, name, data, owner, nonce)
        if chain is None:
            return self.read(name) is None
        try:
            os.unlink(name, dir_fd=self.dir_fd)
        except FileNotFoundError:
            pass
        except OSError:
            self._drop(chain)
            return False
        self._drop(chain)
        return True

    def sweep(self, watch: Watch, names: list[str]) -> int:
        """Remove abandoned leases, useless claims and temps among ``names``; how many."""
        removed = 0
        order = {".lease": 0, ".claim": 1, ".new": 2}
        for name in sorted(names, key=lambda n: order.get(n[n.rfind(".") :], 3)):
            data = self.read(name)
            if data is None:
                continue
            if name.endswith(".lease"):
                if self.abandoned(watch, name, data) and self.remove_if(name, data):
                    removed += 1
            elif name.endswith(".claim"):
                removed += self._sweep_claim(name, data)
            elif name.endswith(".new") and self.abandoned(watch, name, data or _temp_owner(name)):
                self._unlink(name)
                removed += 1
        return removed

    def _sweep_claim(self, name: str, data: bytes) -> int:
        # A claim whose target no longer holds the record it names can never be used
        # again (records do not repeat), so it may go. One whose target still matches
        # is left to the claim-of-claim protocol: removing it by name could remove a
        # newer claim made under the same name meanwhile.
        parts = data[len(_MAGIC) :].split() if data.startswith(_MAGIC) else []
        if len(parts) != 3:
            return 0
        current = self.read(parts[2].decode(errors="replace"))
        stem = name[: -len(".claim")].rpartition(".")[2]
        if current is not None and digest(current) == stem:
            return 0
        self._unlink(name)
        return 1


def waiting(timing: LeaseTiming, deadline: float) -> Callable[[], bool]:
    """A sleep of growing length up to ``timing.poll``; ``False`` once ``deadline`` passed."""
    delay = [0.001]

    def wait() -> bool:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False
        time.sleep(min(delay[0], remaining))
        delay[0] = min(delay[0] * 2, timing.poll)
        return True

    return wait
