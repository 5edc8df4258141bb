"""TieredStore: a local store in front of a shared remote one (a team or cluster cache).

Reads go local, then remote, copying a remote hit into the local tier
(``stats().backfills``); writes go to both unless the remote is read-only.
The remote is a convenience, never a dependency: a remote operation that
fails is counted (``stats().remote_errors``), logged once per outage, and the
remote is skipped for ``remote_backoff`` seconds before it is tried again.

Spec forms (what ``open_store`` and ``--store`` accept)::

    tiered://?local=<spec>&remote=<spec>[&remote_read_only=1][&remote_backoff=<s>]
    tiered://<local spec>+<remote spec>[?<remote options>][&remote_read_only=1]...

In the first form, sub-specs containing ``&``, ``+`` or ``%`` must be
percent-encoded. In the second (``tiered://dir:///cache+s3://bucket/team?endpoint=...``)
the query string belongs to the remote spec, except the tiered store's own flags.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import re
import shutil
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Final, TypeVar
from urllib.parse import parse_qsl, quote, urlsplit

from stepcache import codec
from stepcache.stores import _archive
from stepcache.stores._stats import Stats
from stepcache.stores.base import MISSING, Store, validate_key

__all__ = ["DEFAULT_REMOTE_BACKOFF", "TieredStore"]

log = logging.getLogger("stepcache")
_T = TypeVar("_T")
DEFAULT_REMOTE_BACKOFF: Final = 30.0
_TRUE: Final = ("1", "true", "yes", "on")
_Options = Mapping[str, Any] | Iterable[tuple[str, Any]] | None


_OWN_FLAGS: Final = ("remote_read_only", "remote_backoff")
# "+" followed by a scheme: where the local spec ends and the remote one begins.
_JOIN: Final = re.compile(r"\+(?=[a-z][a-z0-9.-]*://)")


def _split_joined(spec: str) -> str:
    """``tiered://L+R?q`` as the equivalent ``tiered://?local=L&remote=R?q'&flags``."""
    body = spec.partition("://")[2]
    parts = _JOIN.split(body, maxsplit=1)
    if len(parts) != 2 or not parts[0]:
        raise ValueError(
            f"bad tiered spec {spec!r}: expected tiered://<local spec>+<remote spec>[?options]"
        )
    local, remote = parts
    base, _, query = remote.partition("?")
    pairs = parse_qsl(query, keep_blank_values=True)
    own = [(k, v) for k, v in pairs if k in _OWN_FLAGS]
    rest = "&".join(f"{k}={v}" for k, v in pairs if k not in _OWN_FLAGS)
    remote = f"{base}?{rest}" if rest else base
    flags = "".join(f"&{k}={quote(v, safe='')}" for k, v in own)
    return f"tiered://?local={quote(local, safe='')}&remote={quote(remote, safe='')}{flags}"


def _parse_spec(spec: str) -> tuple[str, str, dict[str, Any]]:
    """(local spec, remote spec, options) from ``tiered://?local=...&remote=...`` or ``L+R``."""
    if not spec.partition("://")[2].startswith("?"):
        spec = _split_joined(spec)
    query = dict(parse_qsl(urlsplit(spec).query, keep_blank_values=True))
    unknown = set(query) - {"local", "remote", "remote_read_only", "remote_backoff"}
    if not query.get("local") or not query.get("remote") or unknown:
        raise ValueError(
            f"bad tiered spec {spec!r}: expected "
            "tiered://?local=<spec>&remote=<spec>[&remote_read_only=1][&remote_backoff=<s>]"
        )
    options: dict[str, Any] = {}
    if "remote_read_only" in query:
        options["remote_read_only"] = query["remote_read_only"].lower() in _TRUE
    if "remote_backoff" in query:
        options["remote_backoff"] = float(query["remote_backoff"])
    return query["local"], query["remote"], options


def _open(tier: Store | str, options: _Options) -> Store:
    """``tier`` itself, or a new store opened from spec ``tier``, owned by the tiered store."""
    if isinstance(tier, Store):
        return tier
    from stepcache.stores import registry

    # Not open_store(): the tiered store closes its tiers, which must not
    # close an instance that other code got from the registry.
    return registry.construct(tier, **dict(options or ()))


def _pairs(options: dict[str, Any]) -> tuple[tuple[str, Any], ...]:
    # Hashable, so the registry can key a tiered store by its options.
    return tuple(sorted(options.items()))


class TieredStore(Store):
    """A local store backed by a shared remote one; the remote may fail at any time.

    ``tiers`` is ``[local, remote]`` (stores, or specs opened with
    ``local_options`` / ``remote_options``) or a ``tiered://`` spec; keyword
    arguments win over flags in the spec. The tiered store owns its tiers:
    closing it closes both. ``get_or_compute`` takes the local store's lock first, then, when the
    remote is writable and up, the remote's (fleet-wide single flight on a
    :class:`~stepcache.RedisStore`); a read-only remote gets no lock, since
    nothing would be published to it. ``put_dir`` keeps a directory in the
    local tier and an archive in the remote one. Entries move between tiers
    as verified blobs, so both tiers should share one secret
    (``$STEPCACHE_SECRET``). ``stats()`` are the local store's, which also
    count this store's hits, misses, ``backfills`` and ``remote_errors``.

    >>> import stepcache as sc
    >>> team = sc.MemoryStore()
    >>> mine = sc.TieredStore([sc.MemoryStore(), team])
    >>> theirs = sc.TieredStore([sc.MemoryStore(), team])
    >>> mine["ab" * 16] = "built once"
    >>> theirs["ab" * 16], theirs.stats().backfills
    ('built once', 1)
    """

    def __init__(
        self,
        tiers: str | Sequence[Store | str],
        *,
        local_options: _Options = None,
        remote_options: _Options = None,
        remote_read_only: bool | None = None,
        remote_backoff: float | None = None,
        read_only: bool = False,
        secret: bytes | str | None = None,
        codec: str | None = None,
        lock_timeout: float | None = None,
    ) -> None:
        flags: dict[str, Any] = {}
        if isinstance(tiers, str):
            local_spec, remote_spec, flags = _parse_spec(tiers)
            tiers = (local_spec, remote_spec)
        if len(tiers) != 2:
            raise ValueError(f"TieredStore takes [local, remote], got {len(tiers)} tiers")
        self.local = _open(tiers[0], local_options)
        self.remote = _open(tiers[1], remote_options)
        if self.local is self.remote:
            raise ValueError("the local and remote tiers must be different stores")
        secrets = {s._secret for s in (self.local, self.remote) if s._secret is not None}
        if secret is None and len(secrets) > 1:
            raise ValueError("the local and remote tiers have different secrets; use one for both")
        super().__init__(
            read_only=read_only,
            secret=secret if secret is not None else next(iter(secrets), None),
            codec=codec
            or ("safe" if "safe" in (self.local.codec, self.remote.codec) else "pickle"),
            lock_timeout=self.local.lock_timeout if lock_timeout is None else lock_timeout,
        )
        # One set of counters: the local store's, so whatever records or sums
        # the local store's statistics also sees this store's traffic.
        self._counters = self.local._counters
        if remote_read_only is None:
            remote_read_only = flags.get("remote_read_only", False)
        self.remote_read_only = remote_read_only or self.remote.read_only
        self.remote_backoff: float = (
            flags.get("remote_backoff", DEFAULT_REMOTE_BACKOFF)
            if remote_backoff is None
            else remote_backoff
        )
        self._explicit_secret = secret
        self._remote_down_until = 0.0
        self._remote_failing = False
        self.spec = self._make_spec()

    def _make_spec(self) -> str:
        spec = "tiered://?local={}&remote={}".format(
            *(quote(s.spec, safe=":/@?=,") for s in (self.local, self.remote))
        )
        if self.remote_read_only:
            spec += "&remote_read_only=1"
        if self.remote_backoff != DEFAULT_REMOTE_BACKOFF:
            spec += f"&remote_backoff={self.remote_backoff:g}"
        return spec

    # -- the remote, guarded ---------------------------------------------------
    def _remote_up(self) -> bool:
        return time.monotonic() >= self._remote_down_until

    def _remote_call(self, what: str, fn: Callable[[], _T], default: _T) -> _T:
        """``fn()`` against the remote; ``default`` while it is backed off or when it fails."""
        if not self._remote_up():
            return default
        try:
            result = fn()
        except OSError as exc:
            if exc.errno == errno.EFBIG:  # the entry, not the remote, is the problem
                self._counters.add("errors")
                self._say_once("remote-size", "stepcache: not storing in %s: %s", self.remote, exc)
                return default
            self._remote_failed(what, exc)
            return default
        if self._remote_failing:
            self._remote_failing = False
            log.info("stepcache: remote tier %s is reachable again", self.remote.spec)
        return result

    def _remote_failed(self, what: str, exc: OSError) -> None:
        self._counters.add("remote_errors")
        self._remote_down_until = time.monotonic() + self.remote_backoff
        if not self._remote_failing:  # one line per outage, not one per call
            self._remote_failing = True
            log.warning(
                "stepcache: remote tier %s failed (%s: %s); using the local tier only, "
                "retrying the remote every %g s",
                self.remote.spec,
                what,
                exc,
                self.remote_backoff,
            )

    def _remote_writable(self) -> bool:
        return not self.remote_read_only and self._remote_up()

    def _remote_lookup(self, key: str, known_bad: bytes | None = None) -> tuple[Any, bytes | None]:
        """(verified value or MISSING, its blob) from the remote tier.

        ``known_bad`` is a local copy that just failed: the same bytes in the
        remote are the same bad entry, dropped without counting it twice.
        """
        blob = self._remote_call("read", lambda: self.remote._load(key), None)
        if blob is None:
            return MISSING, None
        try:
            if blob == known_bad:
                raise codec.CorruptEntry("same as the unusable local copy")
            allow_pickle = self.codec == "pickle" and self.remote.codec == "pickle"
            value = codec.unpack_entry(blob, key, secret=self._secret, allow_pickle=allow_pickle)
        except codec.CorruptEntry as exc:
            if blob != known_bad:
                self._counters.add("errors")
                self._say_once(
                    "corrupt",
                    "stepcache: dropping unusable entry %s in %s: %s",
                    key,
                    self.remote.spec,
                    exc,
                )
            if not self.remote_read_only:
                self._remote_call("delete", lambda: self.remote._remove(key), False)
            return MISSING, None
        return value, blob

    def _local_lookup(self, key: str) -> tuple[Any, bytes | None]:
        """(verified value or MISSING, the local blob if there was one)."""
        try:
            blob = self.local._load(key)
        except OSError as exc:
            self._counters.add("errors")
            self._say_once("read", "stepcache: cannot read from %s: %s", self.local.spec, exc)
            return MISSING, None
        if blob is None:
            return MISSING, None
        try:
            allow_pickle = self.local.codec == "pickle"
            value = codec.unpack_entry(
                blob, key, secret=self.local._secret, allow_pickle=allow_pickle
            )
        except codec.CorruptEntry as exc:
            self.local._discard(key, str(exc))
            return MISSING, blob
        return value, blob

    def _may_backfill(self) -> bool:
        return not (self.read_only or self.local.read_only)

    def _backfill(self, key: str, blob: bytes) -> None:
        try:
            self.local._save(key, blob)
        except OSError as exc:
            self._counters.add("errors")
            self._say_once("backfill", "stepcache: cannot copy into %s: %s", self.local.spec, exc)
        else:
            self._counters.add("backfills")

    # -- lookups -----------------------------------------------------------------
    def _lookup(self, key: str) -> Any:
        value, bad = self._local_lookup(key)
        if value is not MISSING:
            return value
        value, blob = self._remote_lookup(key, known_bad=bad)
        if blob is not None and self._may_backfill():
            self._backfill(key, blob)
        return value

    def _load(self, key: str) -> bytes | None:
        blob = self.local._load(key)
        if blob is None:
            blob = self._remote_call("read", lambda: self.remote._load(key), None)
        return blob

    def _load_header(self, key: str) -> bytes | None:
        head = self.local._load_header(key)
        if head is not None:
            try:
                codec.read_header(head, key=key)
            except codec.CorruptEntry as exc:
                # Drop only the local copy: the remote one may well be intact.
                self.local._discard(key, str(exc))
            else:
                return head
        return self._remote_call("read", lambda: self.remote._load_header(key), None)

    def _iter_keys(self) -> Iterator[str]:
        seen = set()
        for key in self.local._iter_keys():
            seen.add(key)
            yield key
        remote_keys: list[str] = self._remote_call(
            "list", lambda: list(self.remote._iter_keys()), []
        )
        yield from (key for key in remote_keys if key not in seen)

    # -- writes --------------------------------------------------------------------
    def _save(self, key: str, blob: bytes) -> None:
        failure: OSError | None = None
        try:
            if not self.local.read_only:
                self.local._save(key, blob)
        except OSError as exc:
            failure = exc
        if self._remote_writable():
            self._remote_call("write", lambda: self.remote._save(key, blob), None)
        if failure is not None:
            raise failure

    def _remove(self, key: str) -> bool:
        removed = False if self.local.read_only else self.local._remove(key)
        if self._remote_writable():
            removed = (
                self._remote_call("delete", lambda: self.remote._remove(key), False) or removed
            )
        return removed

    # -- single flight ---------------------------------------------------------------
    @contextlib.contextmanager
    def _external_lock(self, key: str, deadline: float) -> Iterator[bool]:
        # Local lock first: processes on this machine queue here without
        # touching the remote; one of them speaks for the machine remotely.
        if self.read_only:  # nothing will be published, so nobody gains from waiting
            yield False
            return
        with self.local._external_lock(key, deadline) as held:
            if not held or not self._remote_writable():
                yield held
                return
            with self.remote._external_lock(key, deadline) as remote_held:
                yield remote_held

    # -- artifact directories ----------------------------------------------------------
    def put_dir(
        self,
        key: str,
        src_dir: str | os.PathLike[str],
        *,
        info: Mapping[str, Any] | None = None,
        move: bool = False,
    ) -> Path:
        """Store directory ``src_dir`` locally (as a directory) and remotely (as an archive)."""
        validate_key(key)
        self._check_writable()
        # Archive before the local tier may move the tree away.
        blob = None
        if self._remote_writable():
            blob = self._pack(
                key, _archive.pack_tree(Path(src_dir)), {"kind": "dir", **(info or {})}
            )
        if self.local.read_only:  # a read-only local tier keeps nothing; the caller keeps src_dir
            path = Path(src_dir)
        else:
            path = self.local.put_dir(key, src_dir, info=info, move=move)
        if blob is not None:
            self._remote_call("write", lambda: self.remote._save(key, blob), None)
        return path

    def _find_dir(self, key: str) -> Path | None:
        """The directory stored under ``key``, from the local tier or copied from the remote."""
        path = self.local._find_dir(key)
        if path is not None:
            return path
        value, blob = self._remote_lookup(key)
        if blob is None or not isinstance(value, bytes):
            return None
        if not self._may_backfill():
            return self._materialize(key, value)
        info = {k: v for k, v in codec.read_header(blob).info.items() if k != "kind"}
        scratch = Path(tempfile.mkdtemp(prefix="stepcache-backfill-"))
        try:
            tree = _archive.unpack_tree(value, scratch / "tree")
            # Counted as a local write too: the local tier did store a directory.
            path = self.local.put_dir(key, tree, info=info)
            if path == tree:  # the local tier could not keep it (counted there)
                return self._materialize(key, value)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        self._counters.add("backfills")
        return path

    def flush(self) -> None:
        """Record the counters now: they are the local tier's."""
        self.local.flush()

    # -- lifecycle ---------------------------------------------------------------------
    def stats(self) -> Stats:
        """The local store's statistics, which include this store's counters."""
        return self.local.stats()

    def _options(self) -> dict[str, Any]:
        # The tiers' own options travel along, so a pickled tiered store
        # reopens its tiers as they were; flags are in the spec.
        options = super()._options()
        for name, tier in (("local_options", self.local), ("remote_options", self.remote)):
            if tier._options():
                options[name] = _pairs(tier._options())
        if self._explicit_secret is not None:
            options["secret"] = self._explicit_secret
        return options

    def close(self) -> None:
        """Close both tiers."""
        self.local.close()
        self.remote.close()
        super().close()
