"""RedisStore: entries in a Redis server shared by a team or a cluster (extra ``redis``).

Values are the same entry blobs as on disk (checksummed, HMAC-signed when a
secret is set), one Redis string per entry under ``<prefix>e:<key>``.
Single-flight across machines uses ``<prefix>l:<key>``: ``SET NX PX`` with a
random token, renewed by a heartbeat thread while held and released by a
compare-and-delete script, so a holder that dies blocks others for at most
one lease.

Nothing connects at construction; every operation uses short timeouts and
turns Redis errors (refused, timed out, auth, out of memory) into
:class:`~stepcache.StoreUnavailableError`, which the store counts and treats
as a miss or a skipped write; it then skips the server for ``backoff``
seconds (30 by default), so a dead or silent server costs one timeout per
period, not one per lookup. Put a :class:`~stepcache.TieredStore` in front to
keep a local copy.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import struct
import time
import uuid
import weakref
from collections.abc import Callable, Iterator
from typing import Any, Final, TypeVar, cast
from urllib.parse import parse_qsl, urlencode, urlsplit

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from stepcache import codec
from stepcache.errors import StoreUnavailableError
from stepcache.stores._lease import Heartbeat
from stepcache.stores.backend import Backend
from stepcache.stores.base import DEFAULT_LOCK_TIMEOUT, Store, validate_key

__all__ = ["DEFAULT_BACKOFF", "DEFAULT_MAX_ENTRY_BYTES", "RedisBackend", "RedisStore"]

_T = TypeVar("_T")
DEFAULT_URL: Final = "redis://localhost:6379/0"
#: seconds a store skips a server that failed (one timeout per period, not per lookup)
DEFAULT_BACKOFF: Final = 30.0
#: Redis strings hold at most 512 MiB; a team cache should refuse far less.
DEFAULT_MAX_ENTRY_BYTES: Final = 64 * 2**20
_DEFAULTS: Final[dict[str, Any]] = {
    "socket_timeout": 5.0,
    "connect_timeout": 1.0,
    "lock_lease": 10.0,
    "max_entry_bytes": DEFAULT_MAX_ENTRY_BYTES,
    "backoff": 30.0,
}
_HEAD_BYTES: Final = 4096
_SCAN_COUNT: Final = 1000
_OWN_QUERY: Final = ("prefix", "ttl")
_RELEASE: Final = (
    "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end return 0"
)
_RENEW: Final = (
    "if redis.call('get', KEYS[1]) == ARGV[1] then "
    "return redis.call('pexpire', KEYS[1], ARGV[2]) end return 0"
)


def _split_url(url: str) -> tuple[str, str, dict[str, str], str | None]:
    """(spec without password, URL for redis-py, stepcache's query options, password)."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    own = {k: v for k, v in query if k in _OWN_QUERY}
    netloc, password = parts.netloc, parts.password
    if password is not None:
        # Keep the password out of the spec: it shows up in logs and reprs.
        userinfo, _, host = netloc.rpartition("@")
        user = userinfo.partition(":")[0]
        netloc = f"{user}@{host}" if user else host
    # Not urlunsplit: it turns "unix:///path" into "unix:/path", which redis-py rejects.
    base = f"{parts.scheme}://{netloc}{parts.path}"
    rest = urlencode([(k, v) for k, v in query if k not in _OWN_QUERY])
    spec = f"{base}?{parts.query}" if parts.query else base
    return spec, f"{base}?{rest}" if rest else base, own, password


def _glob_escape(text: str) -> str:
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)


class RedisBackend(Backend):
    """Entry blobs in Redis, one string per key; options as for :class:`RedisStore`.

    Every Redis failure is raised as :class:`~stepcache.StoreUnavailableError`
    (the store counts it and backs off for ``backoff`` seconds).

    """

    def __init__(
        self,
        url: str = DEFAULT_URL,
        *,
        ttl: float | None = None,
        prefix: str | None = None,
        read_only: bool = False,
        password: str | None = None,
        socket_timeout: float = 5.0,
        connect_timeout: float = 1.0,
        lock_lease: float = 10.0,
        max_entry_bytes: int = DEFAULT_MAX_ENTRY_BYTES,
        backoff: float = DEFAULT_BACKOFF,
    ) -> None:
        self.spec, connect_url, own, url_password = _split_url(url)
        self.read_only = read_only
        self.backoff = backoff
        password = password or url_password
        self.prefix = prefix if prefix is not None else own.get("prefix", "stepcache:")
        if not self.prefix:
            raise ValueError("prefix must not be empty: it keeps stepcache's keys apart")
        ttl_text = own.get("ttl")
        self.ttl = ttl if ttl is not None else float(ttl_text) if ttl_text else None
        self.lock_lease = lock_lease
        self.max_entry_bytes = max_entry_bytes
        given = {
            "ttl": ttl,
            "prefix": prefix,
            "password": password,
            "socket_timeout": socket_timeout,
            "connect_timeout": connect_timeout,
            "lock_lease": lock_lease,
            "max_entry_bytes": max_entry_bytes,
            "backoff": backoff,
        }
        self._given = {k: v for k, v in given.items() if v != _DEFAULTS.get(k)}
        self.client = self._make_client(connect_url, password, socket_timeout, connect_timeout)
        # A backend dropped without close() must not leave sockets to the GC.
        self._finalizer = weakref.finalize(self, self.client.close)
        self._release = self.client.register_script(_RELEASE)
        self._renew = self.client.register_script(_RENEW)

    def _make_client(
        self, url: str, password: str | None, socket_timeout: float, connect_timeout: float
    ) -> redis.Redis:
        try:
            # One retry without back-off reconnects a pooled connection that a
            # server restart broke; more would multiply the wait on a dead server.
            return redis.Redis.from_url(
                url,
                password=password,
                socket_timeout=socket_timeout,
                socket_connect_timeout=connect_timeout,
                retry=Retry(NoBackoff(), 1),
            )
        except (ValueError, TypeError) as exc:
            raise StoreUnavailableError(
                f"cannot use Redis URL {self.spec!r}: {exc}; expected redis://host:port/db, "
                "rediss://... or unix:///path/to/redis.sock"
            ) from exc

    def entry_name(self, key: str) -> str:
        return f"{self.prefix}e:{key}"

    def _call(self, what: str, fn: Callable[[], _T]) -> _T:
        """Run one Redis operation; a Redis failure becomes a counted StoreUnavailableError."""
        try:
            return fn()
        except redis.RedisError as exc:
            raise StoreUnavailableError(f"Redis {what}: {type(exc).__name__}: {exc}") from exc

    # -- entry blobs -------------------------------------------------------
    def load(self, key: str) -> bytes | None:
        return cast(
            "bytes | None", self._call("GET", lambda: self.client.get(self.entry_name(key)))
        )

    def save(self, key: str, blob: bytes) -> None:
        if len(blob) > self.max_entry_bytes:
            raise OSError(
                errno.EFBIG,
                f"entry of {len(blob)} bytes exceeds max_entry_bytes={self.max_entry_bytes}",
            )
        px = None if self.ttl is None else max(1, int(self.ttl * 1000))
        self._call("SET", lambda: self.client.set(self.entry_name(key), blob, px=px))

    def remove(self, key: str) -> bool:
        return bool(self._call("DEL", lambda: self.client.delete(self.entry_name(key))))

    def load_header(self, key: str) -> bytes | None:
        name = self.entry_name(key)
        head = cast(
            bytes, self._call("GETRANGE", lambda: self.client.getrange(name, 0, _HEAD_BYTES - 1))
        )
        if not head:
            return None
        if len(head) == _HEAD_BYTES and len(head) >= codec.PREFIX_SIZE:
            # Long infos (manifests) do not fit the first read: fetch up to their end.
            klen, ilen = struct.unpack_from("<BI", head, 7)
            end = codec.PREFIX_SIZE + klen + ilen
            if end > _HEAD_BYTES:
                head = cast(
                    bytes, self._call("GETRANGE", lambda: self.client.getrange(name, 0, end - 1))
                )
        return head

    def _scan(self) -> Iterator[list[bytes]]:
        """Batches of entry names, via SCAN (never KEYS, which blocks the server)."""
        pattern = _glob_escape(self.prefix) + "e:*"
        cursor = 0
        while True:
            scan = functools.partial(self.client.scan, cursor, match=pattern, count=_SCAN_COUNT)
            cursor, names = cast("tuple[int, list[bytes]]", self._call("SCAN", scan))
            if names:
                yield names
            if cursor == 0:
                return

    def keys(self) -> Iterator[str]:
        skip = len(self.prefix) + 2
        for names in self._scan():
            for name in names:
                with contextlib.suppress(UnicodeDecodeError, ValueError):
                    yield validate_key(name[skip:].decode("ascii"))

    def usage(self) -> tuple[int, int]:
        """(entries, bytes): SCAN plus pipelined STRLEN, i.e. entry bytes, not server overhead."""
        n = size = 0
        for names in self._scan():
            pipe = self.client.pipeline(transaction=False)
            for name in names:
                pipe.strlen(name)
            lengths: list[int] = self._call("STRLEN", pipe.execute)
            n += sum(1 for length in lengths if length)
            size += sum(lengths)
        return n, size

    def options(self) -> dict[str, Any]:
        return dict(self._given)

    # -- single flight across machines --------------------------------------
    @contextlib.contextmanager
    def lock(self, key: str, deadline: float) -> Iterator[bool]:
        name = f"{self.prefix}l:{key}"
        token = uuid.uuid4().hex
        held = self._acquire(name, token, deadline)
        if not held:
            yield False
            return
        heart = Heartbeat(
            functools.partial(self._renew_once, name, token), self.lock_lease / 3, "stepcache-lease"
        )
        try:
            yield True
        finally:
            heart.stop()
            with contextlib.suppress(StoreUnavailableError):
                self._call("unlock", lambda: self._release(keys=[name], args=[token]))

    def _acquire(self, name: str, token: str, deadline: float) -> bool:
        px = max(1, int(self.lock_lease * 1000))
        delay = 0.002
        while not self._call("lock", lambda: self.client.set(name, token, nx=True, px=px)):
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            # Polling: Redis has no cheap "wait until this key is gone" for plain keys.
            time.sleep(min(delay, left))
            delay = min(delay * 1.5, 0.1)
        return True

    def _renew_once(self, name: str, token: str) -> bool:
        """One heartbeat of lock ``name``; ``False`` once it is lost."""
        px = max(1, int(self.lock_lease * 1000))
        try:
            renewed = self._call("renew", lambda: self._renew(keys=[name], args=[token, px]))
        except StoreUnavailableError:
            return True  # the lease may survive a blip; if not, a waiter takes over
        # Lost (expired while the server was away): nothing left to renew.
        return bool(renewed)

    def close(self) -> None:
        """Close the connection pool."""
        with contextlib.suppress(redis.RedisError):
            self._finalizer()


class RedisStore(Store):
    """A store in Redis, shared by every process and machine that can reach the server.

    ``url`` is ``redis://[user[:password]@]host[:port][/db]``, ``rediss://...``
    (TLS) or ``unix:///path/to/redis.sock[?db=N]``; ``?prefix=...&ttl=...`` in
    the URL set those options too (keywords win). Entries expire ``ttl``
    seconds after they were written (``None``: never; let the server's
    ``maxmemory-policy allkeys-lru`` evict instead). Entries larger than
    ``max_entry_bytes`` (default 64 MiB; Redis's own limit is 512 MiB) are not
    stored: counted in ``stats().errors``, logged once. Without a secret
    (``secret=`` or ``$STEPCACHE_SECRET``) it logs a warning once: anyone who
    can write to the server could then run code in every reader through pickle.

    >>> import stepcache as sc
    >>> store = sc.open_store("redis://localhost:6379/0?prefix=team:")  # no I/O yet
    >>> store.prefix, store.spec
    ('team:', 'redis://localhost:6379/0?prefix=team:')
    """

    backend: RedisBackend

    def __init__(
        self,
        url: str = DEFAULT_URL,
        *,
        secret: bytes | str | None = None,
        read_only: bool = False,
        codec: str = "pickle",
        lock_timeout: float = DEFAULT_LOCK_TIMEOUT,
        **options: Any,
    ) -> None:
        backend = RedisBackend(url, read_only=read_only, **options)
        super().__init__(
            backend, read_only=read_only, secret=secret, codec=codec, lock_timeout=lock_timeout
        )
        if self._secret is None:
            self.say_once(
                "unsigned",
                "stepcache: %s is shared but has no secret, so entries are not signed and "
                "anyone who can write to the server can run code in every reader; set "
                "STEPCACHE_SECRET (the same on every client)",
                self.spec,
            )

    @property
    def prefix(self) -> str:
        """The prefix of every Redis key this store uses."""
        return self.backend.prefix

    @property
    def ttl(self) -> float | None:
        """Seconds an entry lives after it was written (``None``: until evicted)."""
        return self.backend.ttl
