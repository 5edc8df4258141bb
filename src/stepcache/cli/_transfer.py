"""``stepcache export`` and ``stepcache import``: entries between stores through one archive."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import click

from stepcache.cli import _render
from stepcache.cli._app import EXIT_UNAVAILABLE, CliError, Session, json_option, pass_session
from stepcache.cli._options import label_option, select_headers, step_option
from stepcache.cli._units import format_bytes

__all__ = ["register"]


def _needs_zstd(path: Path) -> None:
    if path.name.endswith(".zst"):
        try:
            import zstandard  # noqa: F401
        except ImportError:
            raise CliError(
                "a .zst archive needs the zstandard package",
                hint="pip install 'stepcache[s3]', or name the archive FILE.tar",
                exit_code=EXIT_UNAVAILABLE,
            ) from None


@click.command("export", short_help="Write entries (values and trees) to an archive file.")
@step_option
@label_option
@click.argument("archive", type=click.Path(dir_okay=False, path_type=Path))
@json_option
@pass_session
def export(
    session: Session, step: str | None, label: str | None, archive: Path, as_json: bool
) -> None:
    """Write the store's entries, verified and as stored (signatures kept), to ARCHIVE.

    ARCHIVE is a tar file, zstd-compressed when it ends in .zst. Restore it
    into any store with `stepcache import`: a CI job saves it in its
    platform's cache and the next job starts warm.

    \b
    Examples:
      stepcache export cache.tar.zst
      stepcache --store s3://team/gt4py?endpoint=... export --label 'lap*' lap.tar.zst
    """
    from stepcache.stores._transfer import export_entries

    _needs_zstd(archive)
    store = session.store(read_only=True)
    keys = None
    if step is not None or label is not None:
        keys = [h.key for h in select_headers(store.headers(), step=step, label=label)]
    with _render.progress("exporting", enabled=not as_json) as update:
        total = (lambda: len(keys)) if keys is not None else (lambda: len(store))
        result = export_entries(store, archive, keys, progress=_render.counting(update, total))
    doc = {"archive": os.fspath(archive), **dataclasses.asdict(result)}
    if as_json:
        _render.emit_json(doc)
        return
    _render.show(
        f"exported {result.entries} entries ({result.trees} trees) to {archive} "
        f"({format_bytes(result.bytes)}); {result.skipped} left out (damaged or gone)"
    )


@click.command("import", short_help="Store the entries of an archive file.")
@click.argument("archive", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@json_option
@pass_session
def import_(session: Session, archive: Path, as_json: bool) -> None:
    """Store every entry of ARCHIVE (from `stepcache export`) in the store.

    Each entry is verified against this store's secret first; entries keep
    the signature they were written with. A directory store that does not
    exist yet is created.

    \b
    Examples:
      stepcache --store ~/.cache/stepcache import cache.tar.zst
    """
    from stepcache.stores._transfer import import_entries

    _needs_zstd(archive)
    store = session.store(writes="import", create=True)  # a new directory is fine here
    try:
        with _render.progress("importing", enabled=not as_json) as update:
            # The total is unknown until the archive is read: the bar grows with it.
            result = import_entries(store, archive, progress=_render.counting(update, lambda: 0))
    except (ValueError, KeyError) as exc:
        raise CliError(f"{archive} is not a stepcache export: {exc}") from exc
    store.flush()
    if as_json:
        _render.emit_json(dataclasses.asdict(result))
        return
    _render.show(
        f"imported {result.entries} entries ({result.trees} trees) into {store.spec}; "
        f"{result.skipped} skipped (did not verify for this store)"
    )


def register(group: click.Group) -> None:
    """Add this module's commands to ``group``."""
    group.add_command(export)
    group.add_command(import_)
