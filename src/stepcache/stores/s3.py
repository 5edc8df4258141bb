"""S3 (and compatible) object storage: :class:`S3Backend` and :class:`S3Store` (extra ``s3``).

Spec: ``s3://bucket/prefix[?endpoint=URL&region=R&read_only=1&compress=zstd&secret=S]``;
keywords win over the query string. Credentials come only from the standard
AWS places: ``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY`` /
``AWS_SESSION_TOKEN``, else the ``[$AWS_PROFILE]`` section of
``~/.aws/credentials`` (``$AWS_SHARED_CREDENTIALS_FILE``); the region from
``region=``, ``$AWS_REGION`` / ``$AWS_DEFAULT_REGION`` or ``~/.aws/config``.
Never from the spec, which shows up in logs.

Layout under the prefix::

    <prefix>/v1/<key>       one object per entry: the entry blob, as on disk
    <prefix>/leases/<key>   single-flight leases (see ``_s3lease``)

Last use: an entry's ``LastModified`` is its last use. A hit whose object
is older than ``touch_after`` (default one day) rewrites it (once, with
``If-Match``, so a newer entry is never replaced), so a hit stays one GET on
every other day and ``prune --max-age`` (days, not hours) removes what nobody
used. The client is ``obstore``, chosen by measurement (``docs/object-stores.md``).
"""

from __future__ import annotations

import contextlib
import os
import struct
from collections.abc import Callable, Iterator
from typing import Any, Final, TypeVar

from stepcache import codec
from stepcache.stores import _maintenance, _s3lease
from stepcache.stores._s3client import S3Client, S3ConfigError, check_endpoint, parse_spec
from stepcache.stores.backend import Backend, EntryStat
from stepcache.stores.base import DEFAULT_LOCK_TIMEOUT, Store, validate_key
from stepcache.stores.directory.eviction import PruneResult

__all__ = ["S3Backend", "S3ConfigError", "S3Store", "parse_spec"]

_T = TypeVar("_T")
_HEAD_BYTES: Final = 4096
_TRUE: Final = ("1", "true", "yes", "on")
_DEFAULTS: Final[dict[str, Any]] = {
    "timeout": 5.0,
    "connect_timeout": 1.0,
    "touch_after": 86400.0,
    "lease": 30.0,
}


class S3Backend(Backend):
    """Entry blobs as objects under ``s3://bucket/prefix``; leases by conditional create.

    >>> backend = S3Backend("s3://team-cache/ci?endpoint=http://127.0.0.1:8333")  # no I/O yet
    >>> backend.spec, backend.bucket, backend.prefix
    ('s3://team-cache/ci?endpoint=http://127.0.0.1:8333', 'team-cache', 'ci')
    """

    backoff = 30.0
    shared = True

    def __init__(
        self,
        spec: str,
        *,
        endpoint: str | None = None,
        region: str | None = None,
        read_only: bool | None = None,
        compress: str | None = None,
        timeout: float = 5.0,
        connect_timeout: float = 1.0,
        touch_after: float = 86400.0,
        lease: float = 30.0,
    ) -> None:
        self.bucket, self.prefix, query = parse_spec(spec)
        self.endpoint = endpoint or query.get("endpoint") or os.environ.get("AWS_ENDPOINT_URL")
        check_endpoint(self.endpoint)
        self.region = region or query.get("region")
        if read_only is None:
            read_only = query.get("read_only", "").lower() in _TRUE
        self.read_only = read_only
        self.compress = compress if compress is not None else (query.get("compress") or None)
        if self.compress not in (None, *codec.COMPRESSIONS):
            raise ValueError(f"compress must be 'zstd' or None, not {self.compress!r}")
        # The canonical spec names bucket, prefix and endpoint; never a secret.
        kept = [f"{k}={v}" for k, v in query.items() if k != "secret"]
        base = f"s3://{self.bucket}/{self.prefix}".rstrip("/")
        self.spec = f"{base}?{'&'.join(kept)}" if kept else base
        self.secret = query.get("secret")  # for the store: the spec may carry one
        self.touch_after = touch_after
        self.lease = lease
        given = {
            "timeout": timeout,
            "connect_timeout": connect_timeout,
            "touch_after": touch_after,
            "lease": lease,
        }
        self._given = {k: v for k, v in given.items() if v != _DEFAULTS[k]}
        #: the obstore client (made on first use, once per process)
        self.client = S3Client(
            self.bucket, self.prefix, self.endpoint, self.region, (timeout, connect_timeout)
        )
        self._ops = _s3lease.LeaseOps(
            self._create, self._replace, self._read_with_etag, self._delete
        )

    def _call(self, what: str, fn: Callable[[Any], _T]) -> _T:
        return self.client.call(what, fn)

    # -- blobs -------------------------------------------------------------------
    @staticmethod
    def _name(key: str) -> str:
        return f"v1/{key}"

    def load(self, key: str) -> bytes | None:
        import obstore

        try:
            result = self._call("GET", lambda s: obstore.get(s, self._name(key)))
            blob = bytes(self._call("GET", lambda s: result.bytes()))
        except FileNotFoundError:
            return None
        if not self.read_only:
            self._touch_if_old(key, blob, result.meta)
        return blob

    def _touch_if_old(self, key: str, blob: bytes, meta: Any) -> None:
        """Record a use: rewrite an entry last written more than ``touch_after`` ago."""
        import time

        modified = meta["last_modified"].timestamp()
        if time.time() - modified < self.touch_after or meta.get("e_tag") is None:
            return
        with contextlib.suppress(OSError):
            self._replace(self._name(key), blob, meta["e_tag"])

    def save(self, key: str, blob: bytes) -> None:
        import obstore

        self._call("PUT", lambda s: obstore.put(s, self._name(key), blob))

    def remove(self, key: str) -> bool:
        import obstore

        try:
            self._call("HEAD", lambda s: obstore.head(s, self._name(key)))
        except FileNotFoundError:
            return False
        with contextlib.suppress(FileNotFoundError):
            self._call("DELETE", lambda s: obstore.delete(s, self._name(key)))
        return True

    def _listing(self) -> Iterator[Any]:
        import obstore

        stream = self._call("LIST", lambda s: obstore.list(s, "v1/", chunk_size=1000))
        while True:
            try:
                batch = self._call("LIST", lambda s: next(stream))
            except StopIteration:
                return
            yield from batch

    def keys(self) -> Iterator[str]:
        for meta in self._listing():
            with contextlib.suppress(ValueError):
                yield validate_key(meta["path"].rpartition("/")[2])

    def load_header(self, key: str) -> bytes | None:
        import obstore

        name = self._name(key)
        try:
            head = bytes(
                self._call("GET", lambda s: obstore.get_range(s, name, start=0, length=_HEAD_BYTES))
            )
        except FileNotFoundError:
            return None
        if len(head) == _HEAD_BYTES:
            # Long infos (manifests) do not fit the first read: fetch up to their end.
            klen, ilen = struct.unpack_from("<BI", head, 7)
            end = codec.PREFIX_SIZE + klen + ilen
            if end > _HEAD_BYTES:
                with contextlib.suppress(FileNotFoundError):
                    head = bytes(
                        self._call("GET", lambda s: obstore.get_range(s, name, start=0, end=end))
                    )
        return head

    def usage(self) -> tuple[int, int] | None:
        n = size = 0
        for meta in self._listing():
            n += 1
            size += int(meta["size"])
        return n, size

    def entries(self) -> Iterator[EntryStat]:
        for meta in self._listing():
            with contextlib.suppress(ValueError):
                key = validate_key(meta["path"].rpartition("/")[2])
                yield EntryStat(key, int(meta["size"]), meta["last_modified"].timestamp())

    def options(self) -> dict[str, Any]:
        out: dict[str, Any] = dict(self._given)
        for name, value in (("compress", self.compress), ("region", self.region)):
            if value is not None and name not in self.spec:
                out[name] = value
        if self.endpoint and "endpoint=" not in self.spec:
            out["endpoint"] = self.endpoint
        if self.read_only and "read_only=" not in self.spec:
            out["read_only"] = True
        return out

    # -- leases ----------------------------------------------------------------------
    def lock(self, key: str, deadline: float) -> contextlib.AbstractContextManager[bool]:
        if self.read_only:  # nothing will be published, so nobody gains from waiting
            return contextlib.nullcontext(False)
        return _s3lease.hold(self._ops, f"leases/{key}", deadline, stale_after=self.lease)

    def _create(self, name: str, body: bytes) -> str | None:
        import obstore
        import obstore.exceptions as oe

        try:
            result = self._call("PUT", lambda s: obstore.put(s, name, body, mode="create"))
        except (oe.AlreadyExistsError, oe.PreconditionError):
            return None
        return str(result["e_tag"])

    def _replace(self, name: str, body: bytes, etag: str) -> str | None:
        import obstore
        import obstore.exceptions as oe

        mode: Any = {"e_tag": etag}
        try:
            result = self._call("PUT", lambda s: obstore.put(s, name, body, mode=mode))
        except (oe.PreconditionError, oe.AlreadyExistsError, FileNotFoundError):
            return None
        return str(result["e_tag"])

    def _read_with_etag(self, name: str) -> tuple[bytes, str] | None:
        import obstore

        try:
            result = self._call("GET", lambda s: obstore.get(s, name))
            body = bytes(self._call("GET", lambda s: result.bytes()))
        except FileNotFoundError:
            return None
        return body, str(result.meta["e_tag"])

    def _delete(self, name: str) -> None:
        import obstore

        with contextlib.suppress(FileNotFoundError):
            self._call("DELETE", lambda s: obstore.delete(s, name))

    def close(self) -> None:
        self.client.close()


class S3Store(Store):
    """A store in an S3 bucket (or any S3-compatible server), shared by a team or a CI fleet.

    ``spec`` is ``s3://bucket/prefix`` with options ``endpoint=`` (a non-AWS
    server, e.g. ``http://127.0.0.1:8333``), ``region=``, ``read_only=1``,
    ``compress=zstd`` and ``secret=`` in the query string or as keywords
    (keywords win). Credentials come from the AWS environment variables or
    config files only. Put it behind a local directory
    (``tiered://dir:///local+s3://...``) so hits are local after the first.

    >>> import stepcache as sc
    >>> store = sc.open_store("s3://team-cache/gt4py?endpoint=http://127.0.0.1:8333")  # no I/O
    >>> store.spec
    's3://team-cache/gt4py?endpoint=http://127.0.0.1:8333'
    """

    backend: S3Backend

    def __init__(
        self,
        spec: str,
        *,
        secret: bytes | str | None = None,
        read_only: bool | None = None,
        codec: str = "pickle",
        lock_timeout: float = DEFAULT_LOCK_TIMEOUT,
        **options: Any,
    ) -> None:
        backend = S3Backend(spec, read_only=read_only, **options)
        super().__init__(
            backend,
            read_only=backend.read_only,
            secret=secret if secret is not None else backend.secret,
            codec=codec,
            lock_timeout=lock_timeout,
        )
        if self._secret is None:
            self.say_once(
                "unsigned",
                "stepcache: %s is shared but has no secret, so entries are not signed and "
                "anyone who can write to the bucket can run code in every reader; set "
                "STEPCACHE_SECRET (the same on every client)",
                self.spec,
            )

    @property
    def compress(self) -> str | None:
        """``"zstd"`` when payloads are stored compressed, else ``None``."""
        return self.backend.compress

    def write_blob(self, key: str, blob: bytes, *, step: str | None = None) -> bool:
        """Publish an entry blob, compressing its payload first when ``compress`` is set.

        Tiers hand over blobs packed elsewhere: compressing here (re-signed with
        this store's secret, which a tiered store shares) compresses those too.
        """
        if self.compress is not None:
            with contextlib.suppress(codec.CorruptEntry):  # not ours to fix: stored as given
                blob = codec.compress_entry(blob, key, secret=self._secret, method=self.compress)
        return super().write_blob(key, blob, step=step)

    def _usage(self) -> tuple[int, int]:
        try:
            return super()._usage()
        except S3ConfigError as exc:
            # stats() reports an unreachable store as empty; a refused one is not
            # an outage but a set-up to fix, so it is said, not shown as 0 entries.
            raise PermissionError(str(exc)) from exc

    def entries(self) -> Iterator[EntryStat]:
        """Size and last use (``LastModified``) of every entry, from one listing."""
        return self.backend.entries()

    def prune(
        self,
        max_bytes: int | None = None,
        max_age: float | None = None,
        *,
        progress: Callable[[int], None] | None = None,
        dry_run: bool = False,
    ) -> PruneResult:
        """Evict entries unused for longer than ``max_age`` seconds, then the least
        recently used until at most ``max_bytes`` are left; ``dry_run`` removes nothing.

        Reads no entry: sizes and last use come from the listing.
        """
        if not dry_run:
            self._check_writable()
        return _maintenance.prune(
            lambda: self._call("list", self.backend.entries, iter(()), unavailable=True),
            self._remove,
            max_bytes,
            max_age,
            progress=progress,
            dry_run=dry_run,
        )
