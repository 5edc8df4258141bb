"""The ``stepcache`` command group: the store option, errors and exit codes.

Exit codes: 0 success; 1 the command ran and found a problem or refused
(``verify`` found damage, no entry matched, ``clear`` not confirmed); 2 usage
error (bad option or argument, a command the store does not support); 3 the
store cannot be opened or read. Every error is one line on stderr starting
with ``stepcache: error:`` and saying what to do.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import click

from stepcache.errors import ReadOnlyStoreError, StepCacheError, StoreUnavailableError
from stepcache.stores.base import Store

__all__ = ["CliError", "Session", "cli", "json_option", "pass_session", "run"]

EXIT_OK, EXIT_CHECK, EXIT_USAGE, EXIT_UNAVAILABLE = 0, 1, 2, 3
_F = TypeVar("_F", bound=Callable[..., Any])


class CliError(click.ClickException):
    """An error the command line reports in one line, with a hint and an exit code."""

    def __init__(self, message: str, *, hint: str = "", exit_code: int = EXIT_CHECK) -> None:
        super().__init__(message)
        self.hint = hint
        # click >= 8.2 declares exit_code a ClassVar; ours varies per error.
        setattr(self, "exit_code", exit_code)  # noqa: B010

    def show(self, file: Any = None) -> None:
        """Print ``stepcache: error: <message>; <hint>`` on stderr."""
        hint = f"; {self.hint}" if self.hint else ""
        click.echo(f"stepcache: error: {self.message}{hint}", err=True)


@dataclasses.dataclass
class Session:
    """What the group's options chose: the store spec, opened once on first use.

    ``shared`` opens a directory store as a group cache (``shared=True``);
    other stores have no such check and ignore it.
    """

    spec: str | None
    shared: bool = False
    _opened: dict[bool, Store] = dataclasses.field(default_factory=dict)

    def store(self, *, read_only: bool = False) -> Store:
        """The chosen store (``--store``, else ``$STEPCACHE_DIR``, else the default directory).

        A directory that does not exist is an error rather than a new empty
        store: a mistyped path would otherwise look like an empty cache.
        """
        if read_only not in self._opened:
            from stepcache.stores.registry import open_store, resolve_spec

            hint = "check --store SPEC or $STEPCACHE_DIR"
            options = {"read_only": True} if read_only else {}
            try:
                scheme, canonical = resolve_spec(self.spec)
                where = canonical.partition("://")[2].partition("?")[0]
                if scheme == "dir" and not os.path.isdir(where):
                    raise CliError(f"no store at {where}", hint=hint, exit_code=EXIT_UNAVAILABLE)
                if scheme == "dir" and self.shared:
                    options["shared"] = True
                self._opened[read_only] = open_store(self.spec, **options)
            except (StoreUnavailableError, OSError) as exc:
                raise CliError(
                    f"cannot open store {self.describe()}: {exc}",
                    hint=hint,
                    exit_code=EXIT_UNAVAILABLE,
                ) from exc
        return self._opened[read_only]

    def describe(self) -> str:
        """The spec as given, or where the default points."""
        if self.spec is not None:
            return self.spec
        from stepcache.stores.registry import default_directory

        return str(default_directory())


pass_session = click.make_pass_decorator(Session)


def json_option(fn: _F) -> _F:
    """The ``--json`` flag every command has."""
    flag = click.option(
        "--json",
        "as_json",
        is_flag=True,
        help="Print one JSON document on stdout and nothing else.",
    )
    return flag(fn)


def _version() -> str:
    from stepcache import __version__

    return __version__


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option(
    "--store",
    "spec",
    metavar="SPEC",
    default=None,
    help="Store to use: a path, dir:///path, redis://host:port/db or memory://. "
    "Default: $STEPCACHE_DIR, else the user cache directory.",
)
@click.option(
    "--shared",
    is_flag=True,
    envvar="STEPCACHE_SHARED",
    help="Open a directory store that is a group cache (owned by another member, "
    "writable by its group); see docs/security.md. Also: STEPCACHE_SHARED=1.",
)
@click.version_option(
    _version(), "--version", prog_name="stepcache", message="%(prog)s %(version)s"
)
@click.pass_context
def cli(ctx: click.Context, spec: str | None, shared: bool) -> None:
    """See inside a stepcache store, explain its misses and maintain it.

    \b
    Examples:
      stepcache stats
      stepcache --store /scratch/cache ls --step Translate --sort size --reverse
      stepcache --store /srv/team/cache --shared stats
      stepcache explain
      stepcache prune --max-size 2G --max-age 30d

    Exit codes: 0 ok, 1 a check failed or nothing matched, 2 usage error,
    3 store unavailable.
    """
    ctx.obj = Session(spec, shared)


def _usage_hint(exc: click.UsageError) -> str:
    path = exc.ctx.command_path if exc.ctx is not None else "stepcache"
    return f"see: {path} --help"


def _fail(message: str, hint: str, code: int) -> int:
    CliError(message, hint=hint).show()
    return code


def run(argv: Sequence[str] | None) -> int:
    """Run the group; turn every failure into its one-line message and exit code."""
    from stepcache.cli import _demo, _inspect, _maintain

    for module in (_inspect, _maintain, _demo):
        module.register(cli)
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        result = cli.main(args=args, prog_name="stepcache", standalone_mode=False)
    except CliError as exc:
        exc.show()
        return exc.exit_code
    except click.UsageError as exc:
        return _fail(exc.format_message(), _usage_hint(exc), EXIT_USAGE)
    except click.Abort:
        return _fail("aborted", "nothing was changed after the interruption", EXIT_CHECK)
    except click.ClickException as exc:
        return _fail(exc.format_message(), "", exc.exit_code)
    except ReadOnlyStoreError as exc:
        return _fail(str(exc), "choose a writable store with --store", EXIT_CHECK)
    except (StoreUnavailableError, OSError) as exc:
        if isinstance(exc, BrokenPipeError):
            # The reader went away (`stepcache ls | head`); say nothing more.
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            return EXIT_CHECK
        return _fail(f"store unavailable: {exc}", "check --store SPEC", EXIT_UNAVAILABLE)
    except StepCacheError as exc:
        return _fail(str(exc), "", EXIT_CHECK)
    return result if isinstance(result, int) else EXIT_OK
