"""Counters a store keeps, and the :class:`Stats` value they add up to."""

from __future__ import annotations

import itertools
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from stepcache._record import Record

__all__ = ["Counters", "MissRecord", "Stats", "StepStats"]

RECENT_MISSES = 50


class StepStats(Record):
    """Hits, misses and writes of one step (by the step name in entries' info)."""

    __slots__ = ("hits", "misses", "writes")
    hits: int
    misses: int
    writes: int

    def __init__(self, hits: int = 0, misses: int = 0, writes: int = 0) -> None:
        self._set(hits=hits, misses=misses, writes=writes)

    def __add__(self, other: StepStats) -> StepStats:
        return StepStats(
            self.hits + other.hits, self.misses + other.misses, self.writes + other.writes
        )


class MissRecord(Record):
    """One miss: when, which step, which input label, and the key computed."""

    __slots__ = ("time", "step", "label", "key")  # noqa: RUF023 - in field order
    time: float
    step: str
    label: str
    key: str

    def __init__(self, time: float, step: str, label: str, key: str) -> None:
        self._set(time=time, step=step, label=label, key=key)


_COUNTS = ("hits", "misses", "writes", "errors", "evictions", "opens", "backfills", "remote_errors")


class Stats(Record):
    """What a store did and holds: the sum over every process that used it.

    ``entries`` and ``bytes`` describe the store now; the counters are summed
    over the processes that recorded them (``processes``).

    >>> import stepcache as sc
    >>> s = sc.MemoryStore()
    >>> s.get_or_compute("00" * 16, lambda: 1)
    1
    >>> st = s.stats()
    >>> (st.hits, st.misses, st.writes, st.entries)
    (0, 1, 1, 1)
    """

    __slots__ = (*_COUNTS[:5], "entries", "bytes", *_COUNTS[5:], "processes", "steps",
                 "recent_misses")  # fmt: skip
    hits: int
    misses: int
    writes: int
    errors: int
    evictions: int
    entries: int
    bytes: int
    opens: int
    backfills: int
    remote_errors: int
    processes: int
    steps: Mapping[str, StepStats]
    recent_misses: tuple[MissRecord, ...]

    def __init__(
        self,
        hits: int = 0,
        misses: int = 0,
        writes: int = 0,
        errors: int = 0,
        evictions: int = 0,
        entries: int = 0,
        bytes: int = 0,
        opens: int = 0,
        backfills: int = 0,
        remote_errors: int = 0,
        processes: int = 0,
        steps: Mapping[str, StepStats] | None = None,
        recent_misses: tuple[MissRecord, ...] = (),
    ) -> None:
        self._set(hits=hits, misses=misses, writes=writes, errors=errors, evictions=evictions,
                  entries=entries, bytes=bytes, opens=opens, backfills=backfills,
                  remote_errors=remote_errors, processes=processes,
                  steps={} if steps is None else steps, recent_misses=recent_misses)  # fmt: skip

    @property
    def hit_rate(self) -> float:
        """Hits over lookups (0.0 when nothing was looked up)."""
        total = self.hits + self.misses
        return self.hits / total if total else 0.0

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (used by ``stepcache stats --json``)."""
        out = self.as_dict()
        out["steps"] = {name: st.as_dict() for name, st in self.steps.items()}
        out["recent_misses"] = tuple(m.as_dict() for m in self.recent_misses)
        out["hit_rate"] = round(self.hit_rate, 4)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Stats:
        """Inverse of :meth:`to_dict`; unknown keys are ignored."""
        counts = {k: int(data.get(k, 0)) for k in (*_COUNTS, "entries", "bytes", "processes")}
        steps = {str(k): StepStats(**v) for k, v in dict(data.get("steps", {})).items()}
        misses = tuple(MissRecord(**m) for m in data.get("recent_misses", ()))
        return cls(**counts, steps=steps, recent_misses=misses)

    @classmethod
    def combine(cls, parts: Iterable[Stats], *, entries: int, nbytes: int) -> Stats:
        """Sum counters of several processes; ``entries``/``bytes`` describe the store now."""
        totals = dict.fromkeys((*_COUNTS, "processes"), 0)
        steps: dict[str, StepStats] = {}
        misses: list[MissRecord] = []
        for part in parts:
            for name in totals:
                totals[name] += getattr(part, name)
            for step, st in part.steps.items():
                steps[step] = steps.get(step, StepStats()) + st
            misses.extend(part.recent_misses)
        misses.sort(key=lambda m: m.time)
        return cls(
            **totals,
            entries=entries,
            bytes=nbytes,
            steps=steps,
            recent_misses=tuple(misses[-RECENT_MISSES:]),
        )


class Counters:
    """Thread-safe counters of one store instance in one process.

    ``dirty`` says whether they changed since it was last set ``False``
    (after they were written down).
    """

    def __init__(self) -> None:
        # Re-entrant: the garbage collector may run a store's finalizer (which
        # reads these counters) in a thread that holds this lock.
        self._lock = threading.RLock()
        self._counts = dict.fromkeys(_COUNTS, 0)
        self._steps: dict[str, list[int]] = {}
        self._misses: deque[MissRecord] = deque(maxlen=RECENT_MISSES)
        self._dirty = False
        # Hits of no step tick an itertools.count, whose ``next`` is atomic (one
        # C call under the GIL, an atomic add without it since Python 3.13): no
        # lock and no Python frame on a hit, and no hit lost. Reading the count
        # takes a tick too (see _hits_now).
        self._hits = itertools.count()
        self._reads = 0
        self._clean_hits = 0  # hits when dirty was last cleared
        #: count one hit of no particular step (what every plain ``get`` hit does)
        self.hit: Callable[[], int] = self._hits.__next__

    def _hits_now(self) -> int:
        """Hits counted by :attr:`hit` so far; call with the lock held."""
        ticks = next(self._hits)
        self._reads += 1
        return ticks - self._reads + 1

    @property
    def dirty(self) -> bool:
        """Whether the counters changed since ``dirty`` was last set ``False``."""
        with self._lock:
            return self._dirty or self._hits_now() != self._clean_hits

    @dirty.setter
    def dirty(self, value: bool) -> None:
        with self._lock:
            self._dirty = value
            if not value:
                self._clean_hits = self._hits_now()

    def add(self, name: str, n: int = 1, *, step: str | None = None) -> None:
        """Add ``n`` to counter ``name`` and, for hits/misses/writes, to ``step``'s."""
        with self._lock:
            self._counts[name] += n
            if step is not None and name in ("hits", "misses", "writes"):
                per = self._steps.setdefault(step, [0, 0, 0])
                per[("hits", "misses", "writes").index(name)] += n
            self._dirty = True

    def step_hit(self, step: str) -> None:
        """Count a hit of ``step`` (what every ``get_or_compute`` hit does)."""
        with self._lock:
            self._counts["hits"] += 1
            per = self._steps.get(step)
            if per is None:
                per = self._steps[step] = [0, 0, 0]
            per[0] += 1
            self._dirty = True

    def miss(self, step: str, label: str, key: str) -> None:
        """Count a miss and remember it among the recent ones (under one taking of the lock)."""
        record = MissRecord(time.time(), step, label, key)
        with self._lock:
            self._counts["misses"] += 1
            per = self._steps.get(step)
            if per is None:
                per = self._steps[step] = [0, 0, 0]
            per[1] += 1
            self._misses.append(record)
            self._dirty = True

    def snapshot(self) -> Stats:
        """The counters as a one-process :class:`Stats` (no entries/bytes)."""
        with self._lock:
            counts = dict(self._counts)
            counts["hits"] += self._hits_now()
            steps = {k: StepStats(*v) for k, v in self._steps.items()}
            return Stats(**counts, processes=1, steps=steps, recent_misses=tuple(self._misses))
