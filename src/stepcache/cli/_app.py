"""The ``stepcache`` command group: the store option, errors and exit codes.

Exit codes (the same for every command; ``stepcache --help`` shows them):

0. done;
1. the command ran and found problems or refused (``verify`` found damage,
   no entry matched, an entry does not decode, ``clear`` not confirmed);
2. usage error (bad option or argument, a command the store does not support);
3. the store cannot be reached or used (server down, directory missing,
   read-only for a command that writes, unsafe to trust).

Every error is one line on stderr, ``stepcache: error: <what>; <what to do>``,
in the command line's spelling; ``--debug`` adds the traceback.
"""

from __future__ import annotations

import dataclasses
import os
import shlex
import sys
import traceback
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import click

from stepcache.cli import _messages
from stepcache.errors import ReadOnlyStoreError, StepCacheError, StoreUnavailableError
from stepcache.stores.base import Store
from stepcache.stores.directory.eviction import ENTRIES

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
        line = _messages.cli_words(f"{self.message}{hint}")
        click.echo(f"stepcache: error: {line}", err=True)


@dataclasses.dataclass
class Session:
    """What the group's options chose: the store spec, opened once on first use.

    ``shared`` opens a directory store as a group cache (``shared=True``);
    other stores have no such check and ignore it. ``unreachable`` names the
    tiers that could not be reached (``{spec: cause}``), for ``stats`` to show.
    """

    spec: str | None
    shared: bool = False
    unreachable: dict[str, str] = dataclasses.field(default_factory=dict)
    _opened: dict[bool, Store] = dataclasses.field(default_factory=dict)

    def store(self, *, read_only: bool = False, writes: str = "", create: bool = False) -> Store:
        """The chosen store (``--store``, else ``$STEPCACHE_DIR``, else the default directory).

        A directory that does not exist is an error rather than a new empty
        store: a mistyped path would otherwise look like an empty cache. So
        is a store none of whose tiers answers. ``writes`` names the command
        that will write, which needs write access to a directory store;
        ``create`` makes a missing directory store (``demo`` fills one).
        """
        if read_only not in self._opened:
            store = self._open(read_only, create)
            self._check_reachable(store)
            if writes:
                _check_writable(store, writes)
            self._opened[read_only] = store
        return self._opened[read_only]

    def _open(self, read_only: bool, create: bool) -> Store:
        from stepcache.stores.registry import open_store, resolve_spec

        hint = "check --store SPEC or $STEPCACHE_DIR"
        try:
            scheme, canonical = resolve_spec(self.spec)
            where = canonical.partition("://")[2]
            if scheme == "dir" and not create and not os.path.isdir(where):
                if self.spec is None:  # the default store of a new user: say how one starts
                    hint = (
                        "nothing was cached there yet: `stepcache demo` fills it, "
                        "or choose a store with --store SPEC or $STEPCACHE_DIR"
                    )
                raise CliError(f"no store at {where}", hint=hint, exit_code=EXIT_UNAVAILABLE)
            options: dict[str, Any] = {"read_only": True} if read_only else {}
            if scheme == "dir" and self.shared:
                options["shared"] = True
            if scheme == "tiered" and read_only:  # looking creates no local directory
                ro = {"read_only": True}
                options.update(local_options=ro, remote_options=ro)
            return open_store(self.spec, **options)
        except (StoreUnavailableError, OSError, ValueError) as exc:
            said = "; " in str(exc)  # the message already says what to do
            raise CliError(
                f"cannot open store {self.describe()}: {exc}",
                hint="" if said else hint,
                exit_code=EXIT_UNAVAILABLE,
            ) from exc

    def _check_reachable(self, store: Store) -> None:
        from stepcache.cli import _reach

        failed = _reach.unreachable(store)
        tiers = dict(_reach.tiers(store))
        if failed and len(failed) == len(tiers):
            raise CliError(
                f"cannot reach store {store.spec}: {'; '.join(failed.values())}",
                hint="check that it is up and --store SPEC names it",
                exit_code=EXIT_UNAVAILABLE,
            )
        for name, cause in failed.items():
            self.unreachable[tiers[name].spec] = cause
            click.echo(
                f"stepcache: warning: the {name} tier {tiers[name].spec} cannot be reached "
                f"({cause}); showing the other tier only",
                err=True,
            )

    def command(self, rest: str) -> str:
        """The command line that runs ``rest`` on this store, for hints."""
        store = f" --store {shlex.quote(self.spec)}" if self.spec is not None else ""
        return f"stepcache{store}{' --shared' if self.shared else ''} {rest}"

    def describe(self) -> str:
        """The spec as given, or where the default points."""
        if self.spec is not None:
            return self.spec
        from stepcache.stores.registry import default_directory

        return str(default_directory())


def _check_writable(store: Store, command: str) -> None:
    """Refuse, before it starts, a command that would write into a directory it cannot write."""
    from stepcache.cli import _reach

    for _, tier in _reach.tiers(store):
        # A read-only remote tier is a choice (CI warms, laptops read); a
        # directory this user cannot write is not.
        root = getattr(tier, "path", None)
        dirs = [] if root is None else [d for d in (root, root / ENTRIES) if d.exists()]
        if store.read_only or not all(os.access(d, os.W_OK) for d in dirs):
            where = root if root is not None else store.spec
            raise CliError(
                f"{command} needs write access to {where}, which is read-only for you",
                hint="run it as the store's owner, or choose a writable store with --store",
                exit_code=EXIT_UNAVAILABLE,
            )


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
@click.option(
    "--debug",
    is_flag=True,
    envvar="STEPCACHE_DEBUG",
    is_eager=True,
    expose_value=False,
    callback=lambda ctx, param, value: _set_debug(bool(value)),
    help="Show the traceback behind an error, and the library's info messages.",
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

    \b
    Exit codes (every command):
      0  done
      1  found problems (verify found damage, no entry matched, an entry
         does not decode, clear not confirmed)
      2  usage error (bad option or argument, a command the store lacks)
      3  the store cannot be reached or used (down, missing, read-only
         for a command that writes, unsafe)
    """
    ctx.obj = Session(spec, shared)


_debug = [False]


def _set_debug(on: bool) -> None:
    _debug[0] = on
    if on:
        _messages.set_debug()


def _usage_hint(exc: click.UsageError) -> str:
    path = exc.ctx.command_path if exc.ctx is not None else "stepcache"
    return f"see: {path} --help"


def _fail(message: str, hint: str, code: int) -> int:
    CliError(message, hint=hint).show()
    return code


def _exit_code(exc: BaseException) -> int:
    """Print the one line that says what went wrong and what to do; the exit code."""
    if isinstance(exc, CliError):
        exc.show()
        return exc.exit_code
    if isinstance(exc, click.UsageError):
        return _fail(exc.format_message(), _usage_hint(exc), EXIT_USAGE)
    if isinstance(exc, click.Abort):
        # Entries are published whole or not at all, but some may have been
        # written (demo) or removed (clear) before the interruption.
        hint = "what was done before it stays done; no entry is left half-written"
        return _fail("interrupted", hint, EXIT_CHECK)
    if isinstance(exc, click.ClickException):
        return _fail(exc.format_message(), "", exc.exit_code)
    if isinstance(exc, ReadOnlyStoreError):
        return _fail(str(exc), "choose a writable store with --store", EXIT_UNAVAILABLE)
    if isinstance(exc, (StoreUnavailableError, OSError)):
        return _fail(f"store unavailable: {exc}", "check --store SPEC", EXIT_UNAVAILABLE)
    if isinstance(exc, StepCacheError):
        return _fail(str(exc), "", EXIT_CHECK)
    name = type(exc).__name__
    return _fail(f"unexpected {name}: {exc}", "run again with --debug to see where", EXIT_CHECK)


def run(argv: Sequence[str] | None) -> int:
    """Run the group; turn every failure into its one-line message and exit code."""
    from stepcache.cli import _demo, _inspect, _maintain, _transfer

    for module in (_inspect, _maintain, _transfer, _demo):
        module.register(cli)
    args = list(sys.argv[1:] if argv is None else argv)
    _debug[0] = False
    try:
        with _messages.warnings_shown():
            result = cli.main(args=args, prog_name="stepcache", standalone_mode=False)
    except BrokenPipeError:
        # The reader went away (`stepcache ls | head`); say nothing more.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_CHECK
    except Exception as exc:
        code = _exit_code(exc)
        if _debug[0]:
            traceback.print_exception(type(exc), exc, exc.__traceback__, file=sys.stderr)
        return code
    return result if isinstance(result, int) else EXIT_OK
