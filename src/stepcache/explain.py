"""Why a key misses: the nearest stored entry of the same step, and what differs.

:func:`compare_to_nearest` is the one search for the nearest entry, used by
:meth:`stepcache.CachedStep.explain`, ``stepcache explain`` and the pytest
report. :func:`explain_misses` adds what a miss recorded in the past needs:
only entries created before the miss count, and the reason says whether the
nearest entry is of the same input (label). Everything works from entry
headers (step, label and manifest live in the header's info), so nothing
here ever decodes a cached value. Imports neither click nor rich.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from stepcache.codec import EntryHeader
from stepcache.fingerprint import diff_manifests
from stepcache.stores._stats import MissRecord

__all__ = [
    "MissExplanation",
    "MissReport",
    "compare_to_nearest",
    "describe_change",
    "explain_misses",
    "manifest_of",
    "nearest",
    "shown_entry",
]


def shown_entry(entry: str | None) -> str:
    """A manifest entry for people: a recorded value as written, a digest as ``#<digest>``.

    >>> shown_entry("=3"), shown_entry("3fa9c2e1d0b4a5c6"), shown_entry(None)
    ('3', '#3fa9c2e1d0b4a5c6', '(absent)')
    """
    if entry is None:
        return "(absent)"
    return entry[1:] if entry.startswith("=") else f"#{entry}"


def describe_change(path: str, old: str | None, new: str | None) -> str:
    """One readable line for a manifest path that differs between two entries.

    >>> describe_change("step.n", "=2", "=3")
    'step.n: 2 -> 3'
    >>> describe_change("input.body", "3fa9c2e1d0b4a5c6", "77b0d4aa12345678")
    'input.body'
    """
    if path.startswith("code[") and ":" in path:
        name, _, rel = path.partition(":")
        what = "added" if old is None else "removed" if new is None else "changed"
        return f"{name}: {rel} {what}"
    if path.startswith("toolchain."):
        return f"{path}: {old} -> {new}"
    if any(e is not None and e.startswith("=") for e in (old, new)):
        return f"{path}: {shown_entry(old)} -> {shown_entry(new)}"
    return path


@dataclasses.dataclass(frozen=True)
class MissReport:
    """Why an input misses: the nearest stored entry of the same step and what differs.

    ``differences`` are manifest paths such as ``step.opt_level``,
    ``input.body[3].op``, ``version``, ``code[mypkg.passes]:mypkg/passes.py``
    or ``toolchain.env[CFLAGS]``; ``changes`` adds the recorded values
    (digests, or readable values for toolchain parts). Both empty on a hit.
    """

    hit: bool
    key: str
    step: str
    label: str
    nearest_key: str | None = None
    differences: tuple[str, ...] = ()
    changes: tuple[tuple[str, str | None, str | None], ...] = ()

    @property
    def reasons(self) -> tuple[str, ...]:
        """One line per difference, most specific first (code and toolchain named)."""
        lines = [describe_change(*change) for change in self.changes]
        code_files = {ln.partition(":")[0] for ln in lines if ln.startswith("code[") and ": " in ln}
        # A changed file also changes its package digest; report the file only.
        return tuple(ln for ln in lines if ln not in code_files)

    @property
    def reason(self) -> str:
        """One line: the top reasons for the miss."""
        if self.hit:
            return "hit"
        if self.nearest_key is None:
            return f"no stored entry of step {self.step!r}"
        reasons = self.reasons
        shown = "; ".join(reasons[:5]) or "identical manifest (key function differs)"
        more = f" (+{len(reasons) - 5} more)" if len(reasons) > 5 else ""
        return f"differs from {self.nearest_key[:12]} in {shown}{more}"


def compare_to_nearest(
    headers: Iterable[EntryHeader],
    key: str,
    step: str,
    label: str,
    mine: Mapping[str, str],
) -> MissReport:
    """A :class:`MissReport` for ``key`` against the nearest of ``headers``.

    Nearest: same step, preferring the same label, fewest differing paths.
    Shared by :meth:`CachedStep.explain` and ``stepcache explain``.
    """
    best: tuple[tuple[int, int], str, Mapping[str, str], list[str]] | None = None
    for header in headers:
        theirs = header.info.get("manifest")
        if header.key == key or header.step != step or not isinstance(theirs, dict):
            continue
        diff = diff_manifests(theirs, mine)
        rank = (int(header.label != label), len(diff))
        if best is None or rank < best[0]:
            best = (rank, header.key, theirs, diff)
    if best is None:
        return MissReport(False, key, step, label)
    _, nearest, old, diff = best
    changes = tuple((p, old.get(p), mine.get(p)) for p in diff)
    return MissReport(False, key, step, label, nearest, tuple(diff), changes)


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
        return _first(report.reasons, values=False)

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
            **dataclasses.asdict(self.miss),
            "stored": self.stored,
            "nearest_key": None if report is None else report.nearest_key,
            "nearest_label": self.nearest_label,
            "differences": [] if report is None else list(report.differences),
            "changes": [] if report is None else list(report.reasons),
            "summary": self.summary,
            "reason": self.reason,
        }


def _first(reasons: Sequence[str], shown: int = 3, *, values: bool = True) -> str:
    # A bare manifest path gets a verb; code and toolchain reasons carry their
    # own. Without values ("step.n: 2 -> 3" -> "changed step.n") reasons of
    # different inputs count as one kind of miss.
    if not values:
        reasons = [
            r if r.startswith(("code[", "toolchain.")) else r.partition(": ")[0] for r in reasons
        ]
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
