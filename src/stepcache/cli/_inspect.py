"""Read-only commands: ``stats``, ``ls``, ``show``, ``explain``.

They open the store read-only, so looking never changes the cache (a corrupt
entry found while looking is reported, not removed).
"""

from __future__ import annotations

import re
import reprlib
from typing import Any

import click
from rich.console import RenderableType

from stepcache.cli import _render
from stepcache.cli._app import EXIT_USAGE, CliError, Session, json_option, pass_session
from stepcache.cli._explain import manifest_of
from stepcache.cli._options import duration, label_option, select_headers, size, step_option
from stepcache.cli._units import format_age, format_bytes, iso_time
from stepcache.codec import EntryHeader
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


def header_dict(header: EntryHeader) -> dict[str, Any]:
    """The JSON form of an entry header, as ``ls --json`` prints it (no manifest)."""
    return {
        "key": header.key,
        "step": header.step,
        "label": header.label,
        "bytes": header.total_bytes,
        "payload_bytes": header.payload_bytes,
        "created": header.created,
        "created_iso": iso_time(header.created),
        "codec": header.codec,
        "signed": header.signed,
        # An artifact directory lives beside its entry; "bytes" does not include it.
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


def _plural(n: int, word: str, suffix: str = "s") -> str:
    return f"{n:,} {word}{'' if n == 1 else suffix}"


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
def _stats_rows(spec: str, st: Stats) -> list[tuple[str, str]]:
    rows = [
        ("store", spec),
        ("entries", f"{st.entries:,} ({format_bytes(st.bytes)})"),
        ("hit rate", f"{st.hit_rate:.1%} ({st.hits:,} hits, {st.misses:,} misses)"),
        ("writes", f"{st.writes:,}"),
        ("errors", f"{st.errors:,}"),
        ("evictions", f"{st.evictions:,}"),
        ("instances", f"{st.opens:,} opened by {_plural(st.processes, 'process', 'es')}"),
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
    # Directory stores say which per-key lock they use and why (filesystem type).
    lock: tuple[str, str] | None = getattr(store, "lock_mode", None)
    if as_json:
        extra = {} if lock is None else {"lock": {"mode": lock[0], "reason": lock[1]}}
        _render.emit_json({"spec": store.spec, **st.to_dict(), **extra})
        return
    rows = _stats_rows(store.spec, st) + ([] if lock is None else [("lock", lock[1])])
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

    Sizes are of the entries; "+dir" marks an entry with an artifact directory
    beside it (a build), whose files are not included.

    \b
    Examples:
      stepcache ls --step Translate --label 'lap*'
      stepcache ls --older-than 7d --larger-than 1M --sort size --reverse --limit 20
      stepcache ls --json | jq -r '.[].key'
    """
    found = select_headers(
        session.store(read_only=True).headers(),
        step=step,
        label=label,
        older_than=older_than,
        larger_than=larger_than,
    )
    found.sort(key=_SORTS[sort_by], reverse=reverse)
    shown = found if limit is None else found[:limit]
    if as_json:
        _render.emit_json([header_dict(h) for h in shown])
        return
    listing = _render.table("key", "step", "label", "size", "age", right=("size", "age"))
    for h in shown:
        age = format_age(h.created)
        size = format_bytes(h.total_bytes) + (" +dir" if h.info.get("kind") == "dir" else "")
        listing.add_row(h.key[:12], h.step, h.label, size, age)
    total = sum(h.total_bytes for h in found)
    more = f", {len(shown)} shown" if len(shown) != len(found) else ""
    _render.show(listing, f"{len(found)} entries, {format_bytes(total)}{more}")


# -- show --------------------------------------------------------------------
def _value_summary(store: Store, key: str) -> dict[str, Any]:
    unreadable = object()
    value = store.get(key, unreadable)
    if value is unreadable:  # the store has logged why (a class not importable here, ...)
        return {"error": "the value does not decode here; use --no-value"}
    summary: dict[str, Any] = {"type": f"{type(value).__module__}.{type(value).__qualname__}"}
    if hasattr(value, "__len__"):
        summary["len"] = len(value)
    short = reprlib.Repr()
    short.maxstring = short.maxother = 200
    summary["repr"] = short.repr(value)
    return summary


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
    rows += [(f"value.{k}", str(v)) for k, v in doc.get("value", {}).items()]
    parts: list[RenderableType] = [_render.key_values(rows)]
    if doc["manifest"]:
        manifest = _render.table("manifest path", "digest")
        for path, digest in doc["manifest"].items():
            manifest.add_row(path, digest)
        parts += ["", manifest]
    _render.show(*parts)


def register(group: click.Group) -> None:
    """Add this module's commands to ``group``."""
    from stepcache.cli._explain_cmd import explain

    for command in (stats, ls_command, show, explain):
        group.add_command(command)
