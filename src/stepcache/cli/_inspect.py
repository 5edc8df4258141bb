"""Read-only commands: ``stats``, ``ls``, ``show``, ``explain``.

They open the store read-only, so looking never changes the cache (a corrupt
entry found while looking is reported, not removed).
"""

from __future__ import annotations

import logging
import re
import reprlib
from pathlib import Path
from typing import Any

import click
from rich.console import RenderableType

from stepcache import _log
from stepcache.cli import _render, _sizes
from stepcache.cli._app import EXIT_USAGE, CliError, Session, json_option, pass_session
from stepcache.cli._options import duration, label_option, select_headers, size, step_option
from stepcache.cli._units import format_age, format_bytes, iso_time, plural
from stepcache.codec import EntryHeader
from stepcache.explain import manifest_of, shown_entry
from stepcache.stores._stats import Stats
from stepcache.stores.base import Store

__all__ = ["header_dict", "register", "resolve_key"]

_SORTS = {
    "key": lambda h: h.key,
    "created": lambda h: h.created,
    "size": lambda h: h.total_bytes,
    "step": lambda h: (h.step, h.label, h.created),
    "label": lambda h: (h.label, h.step, h.created),
}
_MIN_PREFIX = 6


def header_dict(header: EntryHeader, size: int | None = None) -> dict[str, Any]:
    """The JSON form of an entry header, as ``ls --json`` prints it (no manifest).

    ``bytes`` is ``size``, the entry's bytes on disk with its artifact
    directory (:mod:`stepcache.cli._sizes`); by default the entry file's.
    """
    return {
        "key": header.key,
        "step": header.step,
        "label": header.label,
        "bytes": header.total_bytes if size is None else size,
        "payload_bytes": header.payload_bytes,
        "created": header.created,
        "created_iso": iso_time(header.created),
        "codec": header.codec,
        "signed": header.signed,
        "kind": str(header.info.get("kind", "value")),
    }


def resolve_key(store: Store, prefix: str) -> EntryHeader:
    """The header of the one entry whose key starts with ``prefix`` (at least 6 hex digits)."""
    prefix = prefix.lower()
    if not re.fullmatch(r"[0-9a-f]+", prefix) or len(prefix) < _MIN_PREFIX:
        raise CliError(
            f"{prefix!r} is not a key or a key prefix",
            hint=f"give at least {_MIN_PREFIX} hex digits, as `stepcache ls` shows them",
            exit_code=EXIT_USAGE,
        )
    matches = [k for k in store if k.startswith(prefix)]
    header = store.header(matches[0]) if len(matches) == 1 else None
    if len(matches) > 1:
        raise CliError(
            f"key prefix {prefix!r} matches {len(matches)} entries",
            hint="give more hex digits of the key",
        )
    if header is None:
        raise CliError(f"no entry with key {prefix!r}", hint="list the keys with: stepcache ls")
    return header


def _step_rows(st: Stats) -> dict[str, tuple[int, int, int]]:
    rows = {name: (s.hits, s.misses, s.writes) for name, s in sorted(st.steps.items())}
    # Lookups made without a step name (store.get, get_dir) count in the
    # totals only; the "" row makes the table add up to them.
    rest = [st.hits, st.misses, st.writes]
    for row in rows.values():
        rest = [a - b for a, b in zip(rest, row, strict=True)]
    if any(rest):
        old = rows.get("", (0, 0, 0))
        rows[""] = (old[0] + rest[0], old[1] + rest[1], old[2] + rest[2])
    return rows


# -- stats -------------------------------------------------------------------
def _stats_rows(spec: str, st: Stats, unreachable: dict[str, str]) -> list[tuple[str, str]]:
    misses = plural(st.misses, "miss", "misses")
    rows = [
        ("store", spec),
        *(("unreachable", f"{tier} ({cause})") for tier, cause in unreachable.items()),
        ("entries", f"{st.entries:,} ({format_bytes(st.bytes)})"),
        ("hit rate", f"{st.hit_rate:.1%} ({plural(st.hits, 'hit')}, {misses})"),
        ("writes", f"{st.writes:,}"),
        ("errors", f"{st.errors:,}"),
        ("evictions", f"{st.evictions:,}"),
        ("instances", f"{st.opens:,} opened by {plural(st.processes, 'process', 'processes')}"),
    ]
    rows += [(n, f"{getattr(st, n):,}") for n in ("backfills", "remote_errors") if getattr(st, n)]
    return rows


@click.command(short_help="Entries, hit rate, instances opened, per-step counts.")
@json_option
@pass_session
def stats(session: Session, as_json: bool) -> None:
    """Entries, hit rate and counters, summed over every process that used the store.

    \b
    Examples:
      stepcache stats
      stepcache --store redis://cache:6379/0 stats --json
    """
    store = session.store(read_only=True)
    st = store.stats()
    # Directory stores say which per-key lock they use and why (filesystem type),
    # and whether an earlier version's entries are still on disk.
    lock: tuple[str, str] | None = getattr(store, "lock_mode", None)
    earlier: Path | None = getattr(store, "earlier_layout", None)
    if as_json:
        extra: dict[str, Any] = {}
        if lock is not None:
            extra["lock"] = {"mode": lock[0], "reason": lock[1]}
        if earlier is not None:
            extra["earlier_layout"] = str(earlier)
        unreachable = {"unreachable": session.unreachable}
        _render.emit_json({"spec": store.spec, **unreachable, **st.to_dict(), **extra})
        return
    rows = _stats_rows(store.spec, st, session.unreachable)
    rows += [] if lock is None else [("lock", lock[1])]
    if earlier is not None:
        rows.append(("earlier layout", f"{earlier}: never read; `stepcache prune` removes it"))
    parts: list[RenderableType] = [_render.key_values(rows)]
    if st.steps:
        per = _render.table("step", "hits", "misses", "writes", right=("hits", "misses", "writes"))
        for name, (h, m, w) in _step_rows(st).items():
            per.add_row(name or "(no step)", f"{h:,}", f"{m:,}", f"{w:,}")
        parts += ["", per]
    _render.show(*parts)


# -- ls ----------------------------------------------------------------------
@click.command(name="ls", short_help="List entries by step, label, age or size.")
@step_option
@label_option
@click.option(
    "--older-than",
    metavar="DURATION",
    callback=duration,
    help="Only entries created longer ago (7d, 12h, 30m).",
)
@click.option(
    "--larger-than",
    metavar="SIZE",
    callback=size,
    help="Only entries bigger than SIZE (10k, 500M, 2G; binary units).",
)
@click.option(
    "--sort", "sort_by", type=click.Choice(sorted(_SORTS)), default="created", show_default=True
)
@click.option("--reverse", is_flag=True, help="Largest, newest or last first.")
@click.option("--limit", type=click.IntRange(min=0), metavar="N", help="Show at most N entries.")
@json_option
@pass_session
def ls_command(
    session: Session,
    step: str | None,
    label: str | None,
    older_than: float | None,
    larger_than: int | None,
    sort_by: str,
    reverse: bool,
    limit: int | None,
    as_json: bool,
) -> None:
    """List entries, oldest first, from their headers (no cached value is decoded).

    Sizes are bytes on disk, as `stats` counts them; "+dir" marks an entry
    with an artifact directory (a build), whose files are included.

    \b
    Examples:
      stepcache ls --step Translate --label 'lap*'
      stepcache ls --older-than 7d --larger-than 1M --sort size --reverse --limit 20
      stepcache ls --json | jq -r '.[].key'
    """
    store = session.store(read_only=True)
    size_of = _sizes.size_of(store)
    found = select_headers(
        store.headers(),
        step=step,
        label=label,
        older_than=older_than,
        larger_than=larger_than,
        size=size_of,
    )
    sorts = {**_SORTS, "size": size_of}
    found.sort(key=sorts[sort_by], reverse=reverse)
    shown = found if limit is None else found[:limit]
    if as_json:
        _render.emit_json([header_dict(h, size_of(h)) for h in shown])
        return
    listing = _render.table("key", "step", "label", "size", "age", right=("size", "age"))
    for h in shown:
        age = format_age(h.created)
        size = format_bytes(size_of(h)) + (" +dir" if h.info.get("kind") == "dir" else "")
        listing.add_row(h.key[:12], h.step, h.label, size, age)
    total = sum(size_of(h) for h in found)
    more = f", {len(shown)} shown" if len(shown) != len(found) else ""
    _render.show(listing, f"{plural(len(found), 'entry', 'entries')}, {format_bytes(total)}{more}")


# -- show --------------------------------------------------------------------
def _value_summary(store: Store, key: str) -> dict[str, Any]:
    unreadable = object()
    why: list[str] = []

    def hold(record: logging.LogRecord) -> bool:
        # The reason becomes the command's error line instead of a second warning.
        why.append(str(record.args[-1]) if isinstance(record.args, tuple) else "")
        return False

    logger = _log.logger()
    logger.filters.insert(0, hold)
    try:
        value = store.get(key, unreadable)
    finally:
        logger.removeFilter(hold)
    if value is unreadable:
        return {"error": why[-1] if why and why[-1] else "the value does not decode here"}
    summary: dict[str, Any] = {"type": f"{type(value).__module__}.{type(value).__qualname__}"}
    if hasattr(value, "__len__"):
        summary["len"] = len(value)
    short = reprlib.Repr()
    short.maxstring = short.maxother = 200
    summary["repr"] = short.repr(value)
    return summary


def _undecodable(session: Session, key: str, reason: str) -> CliError:
    damaged = any(w in reason for w in ("checksum", "signature", "truncated", "HMAC", "corrupt"))
    if damaged:
        hint = f"remove damaged entries with: {session.command('verify --repair')}"
    elif "Error" in reason:  # an exception of unpickling: a class or module missing here
        show = session.command(f"show {key[:12]} --no-value")
        hint = f"it needs code not importable here; see its header with: {show}"
    else:
        hint = f"see why with: {session.command('verify')}"
    return CliError(f"entry {key[:12]} does not decode: {reason}", hint=hint)


@click.command(short_help="Show one entry: header, manifest, value.")
@click.argument("key")
@click.option("--no-value", is_flag=True, help="Do not decode the cached value.")
@json_option
@pass_session
def show(session: Session, key: str, no_value: bool, as_json: bool) -> None:
    """One entry: header, info, manifest and (unless --no-value) a summary of its value.

    KEY may be a unique prefix of at least 6 hex digits.

    \b
    Examples:
      stepcache show 3fa9c2e1
      stepcache show 3fa9c2e1 --no-value --json
    """
    store = session.store(read_only=True)
    header = resolve_key(store, key)
    doc = header_dict(header)
    doc["info"] = {k: v for k, v in header.info.items() if k != "manifest"}
    doc["manifest"] = dict(manifest_of(header) or {})
    if not no_value:
        doc["value"] = _value_summary(store, header.key)
    if as_json:
        _render.emit_json(doc)
        _check_decoded(session, header.key, doc)
        return
    size = f"{format_bytes(header.total_bytes)} ({header.payload_bytes:,} B payload)"
    rows = [
        ("key", header.key),
        ("step", header.step),
        ("label", header.label),
        ("created", f"{doc['created_iso']} ({format_age(header.created)} ago)"),
        ("size", size),
        ("codec", header.codec + (", signed" if header.signed else "")),
    ]
    rows += [(f"info.{k}", str(v)) for k, v in doc["info"].items() if k not in ("step", "label")]
    rows += [(f"value.{k}", str(v)) for k, v in doc.get("value", {}).items() if k != "error"]
    parts: list[RenderableType] = [_render.key_values(rows)]
    if doc["manifest"]:
        manifest = _render.table("manifest path", "value or #digest")
        for path, entry in doc["manifest"].items():
            manifest.add_row(path, shown_entry(entry))
        parts += ["", manifest]
    _render.show(*parts)
    _check_decoded(session, header.key, doc)


def _check_decoded(session: Session, key: str, doc: dict[str, Any]) -> None:
    error = doc.get("value", {}).get("error")
    if error is not None:
        raise _undecodable(session, key, error)


def register(group: click.Group) -> None:
    """Add this module's commands to ``group``."""
    from stepcache.cli._explain_cmd import explain

    for command in (stats, ls_command, show, explain):
        group.add_command(command)
