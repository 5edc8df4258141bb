"""``stepcache explain``: why recent lookups missed, or how two entries differ."""

from __future__ import annotations

import collections
from collections.abc import Mapping, Sequence
from typing import Any

import click
from rich.console import RenderableType

from stepcache.cli import _render
from stepcache.cli._app import CliError, Session, json_option, pass_session
from stepcache.cli._inspect import header_dict, resolve_key
from stepcache.cli._units import format_age
from stepcache.codec import EntryHeader
from stepcache.explain import MissExplanation, explain_misses, manifest_of, nearest, shown_entry
from stepcache.fingerprint import diff_manifests
from stepcache.stores.base import Store

__all__ = ["explain", "top_reasons"]


def top_reasons(explained: Sequence[MissExplanation], n: int = 5) -> list[tuple[str, int]]:
    """The ``n`` most common kinds of miss, with how many misses each explains."""
    return collections.Counter(e.summary for e in explained).most_common(n)


def _manifest(header: EntryHeader) -> Mapping[str, str]:
    found = manifest_of(header)
    if found is None:
        raise CliError(
            f"entry {header.key[:12]} has no manifest",
            hint="only entries written by a CachedStep can be compared",
        )
    return found


def _compare(a: EntryHeader, b: EntryHeader) -> dict[str, Any]:
    ma, mb = _manifest(a), _manifest(b)
    rows = [{"path": p, "a": ma.get(p), "b": mb.get(p)} for p in diff_manifests(ma, mb)]
    return {"a": header_dict(a), "b": header_dict(b), "differences": rows}


def _print_compare(doc: dict[str, Any]) -> None:
    lines: list[RenderableType] = [
        f"{side}: {h['key'][:12]}  step {h['step']}  label {h['label'] or '-'}"
        for side, h in ((side, doc[side]) for side in ("a", "b"))
    ]
    if not doc["differences"]:
        lines.append("manifests are equal: the keys differ in code, toolchain or key function")
    else:
        diff = _render.table("path", "a", "b")
        for row in doc["differences"]:
            diff.add_row(row["path"], shown_entry(row["a"]), shown_entry(row["b"]))
        lines.append(diff)
    _render.show(*lines)


def _older_neighbour(store: Store, entry: EntryHeader) -> EntryHeader:
    _manifest(entry)
    report = nearest(list(store.headers()), entry, before=entry.created)
    found = None if report.nearest_key is None else store.header(report.nearest_key)
    if found is None:
        raise CliError(
            f"entry {entry.key[:12]} is the first of step {entry.step!r}: nothing to compare with",
            hint="give a second key to compare with",
        )
    return found


def _recent(store: Store, limit: int, as_json: bool) -> None:
    misses = store.stats().recent_misses[-limit:] if limit else ()
    explained = explain_misses(misses, store.headers()) if misses else []
    reasons = top_reasons(explained)
    if as_json:
        _render.emit_json(
            {
                "misses": [e.to_dict() for e in explained],
                "top_reasons": [{"reason": r, "count": c} for r, c in reasons],
            }
        )
        return
    if not explained:
        _render.show("no misses recorded in this store")
        return
    listing = _render.table("when", "step", "label", "key", "reason", right=("when",))
    for e in explained:
        m = e.miss
        listing.add_row(f"{format_age(m.time)} ago", m.step, m.label, m.key[:12], e.reason)
    _render.show(
        listing, "", "top reasons:", *(f"  {count:>5}  {reason}" for reason, count in reasons)
    )


@click.command(short_help="Why recent lookups missed; how two entries differ.")
@click.argument("keys", nargs=-1, metavar="[KEY [OTHER_KEY]]")
@click.option(
    "--limit", default=20, show_default=True, type=click.IntRange(min=0), metavar="N",
    help="Explain the N most recent misses.",
)  # fmt: skip
@json_option
@pass_session
def explain(session: Session, keys: tuple[str, ...], limit: int, as_json: bool) -> None:
    """Say why lookups missed, naming the manifest paths that changed.

    Without KEY: the recent misses recorded in the store, each against the
    nearest entry of the same step (same label first) that existed before it.
    With KEY: that entry against the nearest older one. With two keys: the
    paths in which their manifests differ. Keys may be prefixes (6+ hex digits).

    \b
    Examples:
      stepcache explain
      stepcache explain 3fa9c2e1
      stepcache explain 3fa9c2e1 77b0d4aa --json
    """
    store = session.store(read_only=True)
    if len(keys) > 2:
        raise click.UsageError("give at most two keys")
    if not keys:
        _recent(store, limit, as_json)
        return
    first = resolve_key(store, keys[0])
    if len(keys) == 2:
        a, b = first, resolve_key(store, keys[1])
    else:
        a, b = _older_neighbour(store, first), first
    doc = _compare(a, b)
    if as_json:
        _render.emit_json(doc)
    else:
        _print_compare(doc)
