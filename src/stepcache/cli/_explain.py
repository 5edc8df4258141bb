"""Why recorded misses missed: each against the nearest entry that existed before it.

Builds on :func:`stepcache.cached.compare_to_nearest`, the one search for the
nearest entry that ``CachedStep.explain`` also uses, adding what a miss
recorded in the past needs: only entries created before the miss count, and
the reason says whether the nearest entry is of the same input (label). It
works from entry headers only (step, label and manifest live in the header's
info), so it never decodes a cached value. Imports neither click nor rich:
the pytest plugin uses it too.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from stepcache.cached import MissReport, compare_to_nearest
from stepcache.codec import EntryHeader
from stepcache.stores._stats import MissRecord

__all__ = ["MissExplanation", "explain_misses", "manifest_of", "nearest"]


def manifest_of(header: EntryHeader) -> Mapping[str, str] | None:
    """The manifest recorded in an entry's info, or ``None`` if it has none."""
    found = header.info.get("manifest")
    return found if isinstance(found, dict) else None


def nearest(
    headers: Sequence[EntryHeader], entry: EntryHeader, *, before: float | None = None
) -> MissReport:
    """``entry`` (which must have a manifest) against the nearest other entry of its step.

    ``before`` keeps only entries created up to that time: those that existed
    when a miss happened.

    >>> import stepcache as sc
    >>> store = sc.MemoryStore()
    >>> for key, level in (("aa", "1"), ("bb", "2")):
    ...     _ = store.set(key * 16, 0, info={"step": "T", "label": "lap",
    ...                                      "manifest": {"step.o": level}})
    >>> report = nearest(list(store.headers()), store.header("bb" * 16))
    >>> report.nearest_key == "aa" * 16, report.differences
    (True, ('step.o',))
    """
    mine = manifest_of(entry)
    if mine is None:
        raise ValueError(f"entry {entry.key} has no manifest")
    candidates = headers if before is None else [h for h in headers if h.created <= before]
    return compare_to_nearest(candidates, entry.key, entry.step, entry.label, mine)


@dataclasses.dataclass(frozen=True)
class MissExplanation:
    """A recorded miss, whether its entry is stored, and the comparison with its nearest.

    ``report`` is ``None`` when the miss's entry is missing or has no
    manifest. ``summary`` is a short category for counting ("changed
    step.opt_level", "new input label", ...); ``reason`` a line for one miss.
    """

    miss: MissRecord
    stored: bool
    report: MissReport | None = None
    nearest_label: str | None = None

    @property
    def same_label(self) -> bool:
        """Whether the nearest entry is of the same input (label) as the miss."""
        return self.nearest_label == self.miss.label

    @property
    def summary(self) -> str:
        """The kind of miss, without the particulars of this input (for "top reasons")."""
        report = self.report
        if not self.stored:
            return "entry not in the store (not written, or removed since)"
        if report is None:
            return "entry has no manifest (not written by a CachedStep)"
        if report.nearest_key is None:
            return "first entry of its step"
        if not self.same_label:
            return "new input label (no earlier entry with this label)"
        if not report.differences:
            return "same manifest: the key function changed"
        return _first(report.reasons)

    @property
    def reason(self) -> str:
        """One line saying why this miss happened."""
        report = self.report
        if report is None or report.nearest_key is None:
            return self.summary
        other = report.nearest_key[:12]
        if not self.same_label:
            return f"new label; nearest entry {other} ({self.nearest_label or 'no label'})"
        if not report.differences:
            return f"same manifest as {other}: the key function changed"
        return f"{_first(report.reasons)} (vs {other})"

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (used by ``stepcache explain --json`` and the pytest report)."""
        report = self.report
        return {
            **self.miss.as_dict(),
            "stored": self.stored,
            "nearest_key": None if report is None else report.nearest_key,
            "nearest_label": self.nearest_label,
            "differences": [] if report is None else list(report.differences),
            "changes": [] if report is None else list(report.reasons),
            "summary": self.summary,
            "reason": self.reason,
        }


def _first(reasons: Sequence[str], shown: int = 3) -> str:
    # A bare manifest path gets a verb; code and toolchain reasons carry their own.
    worded = [r if ": " in r else f"changed {r}" for r in reasons[:shown]]
    more = f" (+{len(reasons) - shown} more)" if len(reasons) > shown else ""
    return ", ".join(worded) + more


def explain_misses(
    misses: Iterable[MissRecord], headers: Iterable[EntryHeader]
) -> list[MissExplanation]:
    """Explain each miss against the entries that existed when it happened.

    ``headers`` is read once, so one scan of the store explains any number of
    misses.

    >>> import stepcache as sc
    >>> miss = sc.MissRecord(0.0, "T", "lap", "aa" * 16)
    >>> explain_misses([miss], sc.MemoryStore().headers())[0].summary
    'entry not in the store (not written, or removed since)'
    """
    by_key = {h.key: h for h in headers}
    everything = list(by_key.values())
    out = []
    for miss in misses:
        own = by_key.get(miss.key)
        if own is None or manifest_of(own) is None:
            out.append(MissExplanation(miss, own is not None))
            continue
        report = nearest(everything, own, before=miss.time)
        near = by_key.get(report.nearest_key or "")
        out.append(MissExplanation(miss, True, report, None if near is None else near.label))
    return out
