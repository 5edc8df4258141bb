"""TieredStore: a local store in front of a shared remote one (a team or cluster cache).

Reads go local, then remote, copying a remote hit into the local tier
(``stats().backfills``); writes go to both unless the remote is read-only.
The remote is a convenience, never a dependency: a remote operation that
fails is counted (``stats().remote_errors``), logged once per outage, and the
remote is skipped for ``remote_backoff`` seconds before it is tried again.
The tiers are used only through their public interfaces: their backends'
methods for entry blobs, ``put_dir``/``get_dir`` for trees.

Spec forms (what ``open_store`` and ``--store`` accept)::

    tiered://?local=<spec>&remote=<spec>[&remote_read_only=1][&remote_backoff=<s>]
    tiered://<local spec>+<remote spec>[?<remote options>][&remote_read_only=1]...

In the first form, sub-specs containing ``&``, ``+`` or ``%`` must be
percent-encoded. In the second (``tiered://dir:///cache+s3://bucket/team?endpoint=...``)
the query string belongs to the remote spec, except the tiered store's own flags.
"""

from __future__ import annotations

import errno
import re
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Final, TypeVar
from urllib.parse import parse_qsl, quote, urlsplit

from stepcache._log import log
from stepcache.errors import StoreUnavailableError
from stepcache.stores._stats import Stats
from stepcache.stores._tiers import Tiers
from stepcache.stores.base import Store, VerifyResult

__all__ = ["DEFAULT_REMOTE_BACKOFF", "TieredStore"]

_T = TypeVar("_T")
DEFAULT_REMOTE_BACKOFF: Final = 30.0
_TRUE: Final = ("1", "true", "yes", "on")
_FORM: Final = "tiered://?local=<spec>&remote=<spec>[&remote_read_only=1][&remote_backoff=<s>]"
_Options = Mapping[str, Any] | Iterable[tuple[str, Any]] | None


_OWN_FLAGS: Final = ("remote_read_only", "remote_backoff")
# "+" followed by a scheme: where the local spec ends and the remote one begins.
_JOIN: Final = r"\+(?=[a-z][a-z0-9.-]*://)"


def _split_joined(spec: str) -> str:
    """``tiered://L+R?q`` as the equivalent ``tiered://?local=L&remote=R?q'&flags``."""
    body = spec.partition("://")[2]
    parts = re.split(_JOIN, body, maxsplit=1)
    if len(parts) != 2 or not parts[0]:
        raise StoreUnavailableError(
            f"bad tiered spec {spec!r}: expected tiered://<local spec>+<remote spec>[?options] "
            f"or {_FORM}"
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
        why = f"unknown {', '.join(sorted(unknown))}" if unknown else "local and remote needed"
        raise StoreUnavailableError(f"bad tiered spec {spec!r} ({why}): expected {_FORM}")
    options: dict[str, Any] = {}
    if "remote_read_only" in query:
        options["remote_read_only"] = query["remote_read_only"].lower() in _TRUE
    if "remote_backoff" in query:
        try:
            options["remote_backoff"] = float(query["remote_backoff"])
        except ValueError:
            raise StoreUnavailableError(
                f"bad tiered spec {spec!r}: remote_backoff must be seconds; expected {_FORM}"
            ) from None
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
    nothing would be published to it. ``put_dir`` stores the tree in both
    tiers, each in its own form (files locally, an archive in Redis), and a
    tree found only remotely is copied into the local tier. Entries move
    between tiers as verified blobs, so both tiers should share one secret
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
        secrets = {s.secret for s in (self.local, self.remote) if s.secret is not None}
        if secret is None and len(secrets) > 1:
            raise ValueError("the local and remote tiers have different secrets; use one for both")
        if remote_read_only is None:
            remote_read_only = flags.get("remote_read_only", False)
        self.remote_read_only = remote_read_only or self.remote.read_only
        self.remote_backoff: float = (
            flags.get("remote_backoff", DEFAULT_REMOTE_BACKOFF)
            if remote_backoff is None
            else remote_backoff
        )
        self.spec = self._make_spec()
        self._remote_down_until = 0.0
        self._remote_failing = False
        super().__init__(
            Tiers(self),
            read_only=read_only,
            secret=secret if secret is not None else next(iter(secrets), None),
            codec=codec
            or ("safe" if "safe" in (self.local.codec, self.remote.codec) else "pickle"),
            lock_timeout=self.local.lock_timeout if lock_timeout is None else lock_timeout,
        )
        self._explicit_secret = secret
        # One set of counters: the local store's, so whatever records or sums
        # the local store's statistics also sees this store's traffic.
        self.counters = self.local.counters

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
    def remote_up(self) -> bool:
        """Whether the remote tier is in use now (not backed off after a failure)."""
        return time.monotonic() >= self._remote_down_until

    def remote_writable(self) -> bool:
        """Whether writes go to the remote tier now."""
        return not self.remote_read_only and self.remote_up()

    def remote_call(self, what: str, fn: Callable[[], _T]) -> _T | None:
        """``fn()`` against the remote; ``None`` while it is backed off or when it fails."""
        if not self.remote_up():
            return None
        try:
            result = fn()
        except OSError as exc:
            if exc.errno == errno.EFBIG:  # the entry, not the remote, is the problem
                self.counters.add("errors")
                self.say_once("remote-size", "stepcache: not storing in %s: %s", self.remote, exc)
                return None
            self.remote_failed(what, exc)
            return None
        if self._remote_failing:
            self._remote_failing = False
            log.info("stepcache: remote tier %s is reachable again", self.remote.spec)
        return result

    def remote_failed(self, what: str, exc: OSError) -> None:
        """Count a remote failure, log it once per outage, and back off."""
        self.counters.add("remote_errors")
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

    def reset_backoff(self) -> None:
        """Use the remote again at once (after it was repaired)."""
        self._remote_down_until = 0.0

    def may_backfill(self) -> bool:
        """Whether remote hits are copied into the local tier."""
        return not (self.read_only or self.local.read_only)

    def backfill(self, key: str, blob: bytes) -> None:
        """Copy a verified remote blob into the local tier."""
        try:
            self.local.backend.save(key, blob)
        except OSError as exc:
            self.counters.add("errors")
            self.say_once("backfill", "stepcache: cannot copy into %s: %s", self.local.spec, exc)
        else:
            self.counters.add("backfills")

    def discard_local(self, key: str, reason: str) -> None:
        """Drop an unusable local copy (counted); the remote one is looked at next."""
        self.local.discard(key, reason)

    def discard_remote(self, key: str, reason: str) -> None:
        """Drop an unusable remote copy (counted) unless the remote is read-only."""
        self.counters.add("errors")
        self.say_once(
            "corrupt",
            "stepcache: dropping unusable entry %s in %s: %s",
            key,
            self.remote.spec,
            reason,
        )
        if not self.remote_read_only:
            self.remote_call("delete", lambda: self.remote.backend.remove(key))

    # -- artifact trees ------------------------------------------------------------
    def _store_dir(
        self,
        key: str,
        src: Path,
        info: Mapping[str, Any] | None,
        *,
        move: bool,
        looked: bool = False,
    ) -> Path | None:
        """The tree in the local tier (as files) and the remote one (in its own form).

        ``looked`` is not passed on: each tier's ``put_dir`` looks in that tier.
        """
        remote = self.remote_writable()
        if self.local.read_only:
            if not remote:
                return None
            return self.remote_call(
                "write", lambda: self.remote.put_dir(key, src, info=info, move=move)
            )
        try:
            path = self.local.put_dir(key, src, info=info, move=move and not remote)
        except OSError:
            path = None  # counted by the local store
        if remote:
            source = src if path is None else path
            self.remote_call("write", lambda: self.remote.put_dir(key, source, info=info))
            if move and path is not None and src.exists():
                import shutil

                shutil.rmtree(src, ignore_errors=True)
        return path

    def _find_dir(self, key: str) -> Path | None:
        """The tree of ``key`` from the local tier, or copied there from the remote."""
        path = self.local.get_dir(key, count=False)
        if path is not None or not self.remote_up():
            return path
        remote = self.remote_call("read", lambda: self.remote.get_dir(key, count=False))
        if remote is None or not self.may_backfill():
            return remote
        header = self.remote.header(key)
        info = {} if header is None else {k: v for k, v in header.info.items() if k != "kind"}
        try:
            path = self.local.put_dir(key, remote, info=info)
        except OSError:
            return remote  # the local tier could not keep it (counted there)
        self.counters.add("backfills")
        return path

    def get_dir(
        self, key: str, *, info: Mapping[str, Any] | None = None, count: bool = True
    ) -> Path | None:
        """The tree stored under ``key`` in either tier (backfilled locally), or ``None``."""
        return super().get_dir(key, info=info, count=count)

    def verify(
        self, *, repair: bool = False, progress: Callable[[int], None] | None = None
    ) -> VerifyResult:
        """Verify both tiers (the remote one read-only unless it is writable)."""
        local = self.local.verify(repair=repair and not self.local.read_only, progress=progress)
        remote = self.remote_call(
            "verify", lambda: self.remote.verify(repair=repair and not self.remote_read_only)
        )
        if remote is None:
            return local
        return VerifyResult(
            local.checked + remote.checked,
            local.corrupt + remote.corrupt,
            local.repaired + remote.repaired,
        )

    def flush(self) -> None:
        """Record the counters now: they are the local tier's."""
        self.local.flush()

    # -- lifecycle ---------------------------------------------------------------------
    def stats(self) -> Stats:
        """The local store's statistics, which include this store's counters."""
        return self.local.stats()

    def options(self) -> dict[str, Any]:
        # The tiers' own options travel along, so a pickled tiered store
        # reopens its tiers as they were; flags are in the spec.
        options: dict[str, Any] = {}
        if self.read_only:
            options["read_only"] = True
        if self._explicit_secret is not None:
            options["secret"] = self._explicit_secret
        for name, tier in (("local_options", self.local), ("remote_options", self.remote)):
            if tier.options():
                options[name] = _pairs(tier.options())
        return options

    def close(self) -> None:
        """Close both tiers."""
        self.local.close()
        self.remote.close()
        super().close()
