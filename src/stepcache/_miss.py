"""Why an input misses: the nearest stored entry of the same step and what differs.

Used by :meth:`CachedStep.explain <stepcache.CachedStep.explain>` and
``stepcache explain``; imported on first use, so ``import stepcache`` does
not build these classes.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping

from stepcache.codec import EntryHeader
from stepcache.fingerprint import diff_manifests

__all__ = ["MissReport", "compare_to_nearest", "describe_change"]


def describe_change(path: str, old: str | None, new: str | None) -> str:
    """One readable line for a manifest path that differs between two entries."""
    if path.startswith("code[") and ":" in path:
        name, _, rel = path.partition(":")
        what = "added" if old is None else "removed" if new is None else "changed"
        return f"{name}: {rel} {what}"
    if path.startswith("toolchain."):
        return f"{path}: {old} -> {new}"
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
