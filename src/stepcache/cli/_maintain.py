"""Commands that change the store: ``prune``, ``clear``, ``verify``."""

from __future__ import annotations

import inspect
import sys
from typing import Any

import click

from stepcache.cli import _render, _sizes
from stepcache.cli._app import (
    EXIT_CHECK,
    EXIT_OK,
    EXIT_USAGE,
    CliError,
    Session,
    json_option,
    pass_session,
)
from stepcache.cli._options import duration, label_option, select_headers, size, step_option
from stepcache.cli._units import format_bytes, plural
from stepcache.stores.base import Store

__all__ = ["register"]


def _entries(n: int) -> str:
    return plural(n, "entry", "entries")


def _method(store: Store, name: str) -> Any:
    method = getattr(store, name, None)
    if method is None:
        raise CliError(
            f"{name} is for directory and S3 stores; {store.spec} has no {name}",
            hint="pass a directory with --store PATH",
            exit_code=EXIT_USAGE,
        )
    return method


@click.command(short_help="Evict entries over a size or age limit.")
@click.option(
    "--max-size",
    metavar="SIZE",
    callback=size,
    help="Evict least recently used entries until the store fits in SIZE (2G, 500M).",
)
@click.option(
    "--max-age",
    metavar="DURATION",
    callback=duration,
    help="Evict entries unused for longer than DURATION (30d, 12h).",
)
@click.option("--dry-run", is_flag=True, help="Say what would be removed; remove nothing.")
@json_option
@pass_session
def prune(
    session: Session, max_size: int | None, max_age: float | None, dry_run: bool, as_json: bool
) -> None:
    """Evict entries over a size or age limit; sweep what crashed writers left behind.

    Entries unused for longer than --max-age go first, then the least
    recently used until the store fits in --max-size. Without either limit
    prune only sweeps leftovers (temp files of dead writers, stale lock
    and stats files).

    \b
    Examples:
      stepcache prune --max-size 2G --max-age 30d
      stepcache prune --max-age 7d --dry-run
    """
    store = session.store(read_only=dry_run, writes="" if dry_run else "prune")
    run = _method(store, "prune")
    extra = {"dry_run": True} if dry_run else {}
    if dry_run and "dry_run" not in inspect.signature(run).parameters:
        raise CliError(
            f"the prune of {store.spec} has no dry run", hint="run without --dry-run", exit_code=2
        )
    with _render.progress("pruning", enabled=not as_json) as update:
        counter = _render.counting(update, lambda: len(store))
        result = run(max_size, max_age, progress=counter, **extra)
    doc = {"dry_run": dry_run, **result.as_dict()}
    if as_json:
        _render.emit_json(doc)
        return
    verb = "would remove" if dry_run else "removed"
    _render.show(
        f"{verb} {_entries(doc['removed'])} ({format_bytes(doc['freed'])}) and "
        f"{plural(doc['swept'], 'leftover file')}; {_entries(doc['entries'])} "
        f"({format_bytes(doc['bytes'])}) {'stay' if dry_run else 'left'}"
    )


def _confirm(count: int, nbytes: int, spec: str, yes: bool) -> None:
    if yes or count == 0:
        return
    question = f"Remove {_entries(count)} ({format_bytes(nbytes)}) from {spec}?"
    if not sys.stdin.isatty():
        raise CliError(
            f"refusing to clear {_entries(count)} without confirmation",
            hint="pass --yes to clear without asking",
        )
    if not click.confirm(question, default=False, err=True):
        raise CliError("nothing removed", hint="pass --yes to clear without asking")


@click.command(short_help="Remove all entries, or those of a step or label.")
@step_option
@label_option
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
@json_option
@pass_session
def clear(session: Session, step: str | None, label: str | None, yes: bool, as_json: bool) -> None:
    """Remove all entries, or those of one step or label pattern.

    Asks for confirmation on a terminal; elsewhere refuses unless --yes.

    \b
    Examples:
      stepcache clear --step Translate --yes
      stepcache clear --label 'lap*'
    """
    store = session.store(writes="clear")
    size_of = _sizes.size_of(store)
    chosen = select_headers(store.headers(), step=step, label=label)
    sizes = {h.key: size_of(h) for h in chosen}
    _confirm(len(chosen), sum(sizes.values()), store.spec, yes)
    if step is None and label is None:
        store.clear()
        removed = chosen
    else:
        removed = []
        for header in chosen:
            try:
                del store[header.key]
            except KeyError:  # removed meanwhile by another process
                continue
            removed.append(header)
    _sizes.remove_empty_fanout(store)
    doc = {"removed": len(removed), "bytes": sum(sizes[h.key] for h in removed)}
    if as_json:
        _render.emit_json(doc)
    else:
        _render.show(f"removed {_entries(doc['removed'])} ({format_bytes(doc['bytes'])})")


@click.command(short_help="Check every entry; exit 1 if any is damaged.")
@click.option("--repair", is_flag=True, help="Remove the damaged entries.")
@json_option
@pass_session
def verify(session: Session, repair: bool, as_json: bool) -> int:
    """Check every entry's header, checksum and signature; exit 1 if any is damaged.

    \b
    Examples:
      stepcache verify
      stepcache verify --repair --json
    """
    store = session.store(read_only=not repair, writes="verify --repair" if repair else "")
    run = _method(store, "verify")
    with _render.progress("verifying", enabled=not as_json) as update:
        result = run(repair=repair, progress=_render.counting(update, lambda: len(store)))
    corrupt = [{"key": key, "reason": reason} for key, reason in result.corrupt]
    doc = {"checked": result.checked, "ok": result.ok, "corrupt": corrupt}
    doc["repaired"] = result.repaired
    if as_json:
        _render.emit_json(doc)
    else:
        listing = _render.table("damaged entry", "reason")
        for bad in corrupt:
            listing.add_row(bad["key"], bad["reason"])
        summary = f"{_entries(result.checked)} checked, {result.ok} ok, {len(corrupt)} damaged"
        repaired = f", {result.repaired} removed" if repair else ""
        _render.show(*([listing] if corrupt else []), summary + repaired)
    unrepaired = len(corrupt) - (result.repaired if repair else 0)
    if unrepaired > 0 and not repair:
        click.echo(
            f"stepcache: {plural(unrepaired, 'damaged entry', 'damaged entries')}; remove "
            f"{'it' if unrepaired == 1 else 'them'} with: {session.command('verify --repair')}",
            err=True,
        )
    return EXIT_CHECK if unrepaired > 0 else EXIT_OK


def register(group: click.Group) -> None:
    """Add this module's commands to ``group``."""
    for command in (prune, clear, verify):
        group.add_command(command)
