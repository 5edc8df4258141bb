"""The S3 client of :mod:`stepcache.stores.s3`: specs, credentials, one obstore client per process.

Every request goes through :meth:`S3Client.call`, which turns the client's
errors into stepcache's: a refused signature or a missing bucket is an
:class:`S3ConfigError` (fix the set-up), anything else that fails a request
(refused connection, timeout, 5xx) a :class:`~stepcache.StoreUnavailableError`
(an outage: the store backs off). Not found, already exists and failed
preconditions pass through: they are answers, not failures.
"""

from __future__ import annotations

import configparser
import contextlib
import datetime
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final, TypeVar
from urllib.parse import parse_qsl, urlsplit

from stepcache.errors import StoreUnavailableError

__all__ = ["QUERY", "S3Client", "S3ConfigError", "check_endpoint", "file_credentials", "parse_spec"]

_T = TypeVar("_T")
_REFUSED: Final = (
    "403 Forbidden",
    "NoSuchBucket",
    "AccessKeyId",
    "SignatureDoesNotMatch",
    "AccessDenied",
)
QUERY: Final = ("endpoint", "region", "read_only", "compress", "secret")


class S3ConfigError(StoreUnavailableError):
    """The bucket does not exist or the credentials are refused: fix the set-up, not a blip."""

    #: not an outage: listings and the CLI report it instead of showing an empty store
    permanent = True


def parse_spec(spec: str) -> tuple[str, str, dict[str, str]]:
    """(bucket, prefix, query options) of ``s3://bucket/prefix?...``.

    >>> parse_spec("s3://team-cache/ci/gt4py?region=eu-central-1")
    ('team-cache', 'ci/gt4py', {'region': 'eu-central-1'})
    """
    parts = urlsplit(spec)
    query = dict(parse_qsl(parts.query, keep_blank_values=True))
    unknown = set(query) - set(QUERY)
    if parts.scheme != "s3" or len(parts.netloc) < 3 or unknown:
        raise ValueError(
            f"bad S3 spec {spec!r}: expected s3://bucket/prefix"
            f"[?{'&'.join(f'{k}=...' for k in QUERY)}]"
            + (f"; unknown option(s) {', '.join(sorted(unknown))}" if unknown else "")
        )
    return parts.netloc, parts.path.strip("/"), query


def check_endpoint(endpoint: str | None) -> None:
    """Refuse an endpoint the client could not use (it would abort the process, not raise).

    >>> check_endpoint("http://127.0.0.1:8333")
    >>> check_endpoint("127.0.0.1:8333")
    Traceback (most recent call last):
    ...
    ValueError: bad S3 endpoint '127.0.0.1:8333': expected http(s)://host[:port]
    """
    if endpoint is None:
        return
    parts = urlsplit(endpoint)
    try:
        parts.port  # noqa: B018 - parsing it is the check
    except ValueError:
        parts = urlsplit("")
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"bad S3 endpoint {endpoint!r}: expected http(s)://host[:port]")


def file_credentials() -> dict[str, str]:
    """Keys and region from the AWS config files, when the environment has no key pair."""
    if os.environ.get("AWS_ACCESS_KEY_ID"):
        return {}
    profile = os.environ.get("AWS_PROFILE") or os.environ.get("AWS_DEFAULT_PROFILE") or "default"
    home = Path.home() / ".aws"
    out: dict[str, str] = {}
    files = (
        (os.environ.get("AWS_SHARED_CREDENTIALS_FILE") or home / "credentials", profile),
        (os.environ.get("AWS_CONFIG_FILE") or home / "config", f"profile {profile}"),
    )
    for path, section in files:
        parser = configparser.ConfigParser(interpolation=None)
        with contextlib.suppress(OSError, configparser.Error):
            parser.read(path)
        for sec in (section, profile):
            if parser.has_section(sec):
                for name in ("aws_access_key_id", "aws_secret_access_key", "aws_session_token"):
                    if parser.has_option(sec, name):
                        out.setdefault(name, parser.get(sec, name))
                if parser.has_option(sec, "region"):
                    out.setdefault("region", parser.get(sec, "region"))
    return out


class S3Client:
    """One bucket and prefix through obstore; the client is made on first use, once per process."""

    def __init__(
        self,
        bucket: str,
        prefix: str,
        endpoint: str | None,
        region: str | None,
        timeouts: tuple[float, float],
    ) -> None:
        self.bucket, self.prefix, self.endpoint, self.region = bucket, prefix, endpoint, region
        self._timeouts = timeouts
        self._store: Any = None
        self._store_pid = -1

    def handle(self) -> Any:
        """The obstore client of this process."""
        # One client per process: obstore's runtime does not survive a fork.
        if self._store is None or self._store_pid != os.getpid():
            self._store = self._make_client()
            self._store_pid = os.getpid()
        return self._store

    def _make_client(self) -> Any:
        try:
            from obstore.store import S3Store as ObjectStore
        except ImportError as exc:
            raise StoreUnavailableError(
                "the s3:// store needs obstore; install it with: pip install 'stepcache[s3]'"
            ) from exc
        files = file_credentials()
        config: Any = {}
        for name in ("aws_access_key_id", "aws_secret_access_key", "aws_session_token"):
            if name in files:
                config[name] = files[name]
        region = self.region or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
        config["region"] = region or files.get("region") or "us-east-1"
        if self.endpoint:
            config["endpoint"] = self.endpoint
        timeout, connect = self._timeouts
        return ObjectStore(
            self.bucket,
            prefix=self.prefix or None,
            config=config,
            client_options={
                "allow_http": bool(self.endpoint and self.endpoint.startswith("http://")),
                "timeout": datetime.timedelta(seconds=timeout),
                "connect_timeout": datetime.timedelta(seconds=connect),
            },
            # One quick retry mends a connection a restart broke; more would
            # multiply the wait on a dead server (the store backs off instead).
            retry_config={
                "max_retries": 1,
                "retry_timeout": datetime.timedelta(seconds=timeout),
                "backoff": {
                    "init_backoff": datetime.timedelta(milliseconds=20),
                    "max_backoff": datetime.timedelta(milliseconds=100),
                    "base": 2,
                },
            },
        )

    def call(self, what: str, fn: Callable[[Any], _T]) -> _T:
        """Run one request; failures become StoreUnavailableError (S3ConfigError for set-up)."""
        import obstore.exceptions as oe

        try:
            return fn(self.handle())
        except (oe.PermissionDeniedError, oe.UnauthenticatedError) as exc:
            raise self._config_error(what, exc) from exc
        except FileNotFoundError as exc:  # obstore raises the builtin for NotFound
            if "NoSuchBucket" in str(exc):
                raise self._config_error(what, exc) from exc
            raise
        except (oe.AlreadyExistsError, oe.PreconditionError):
            raise
        except (oe.BaseError, OSError) as exc:
            if isinstance(exc, StoreUnavailableError):
                raise
            if any(code in str(exc) for code in _REFUSED):  # listing errors are generic
                raise self._config_error(what, exc) from exc
            raise StoreUnavailableError(f"S3 {what}: {_first_line(exc)}") from exc
        except BaseException as exc:
            if type(exc).__name__ != "PanicException":
                raise
            # The client's Rust core aborted a call (a BaseException): an outage, never a crash.
            raise StoreUnavailableError(f"S3 {what}: the client failed: {exc}") from exc

    def _config_error(self, what: str, exc: BaseException) -> S3ConfigError:
        if "NoSuchBucket" in str(exc):
            return S3ConfigError(
                f"S3 bucket {self.bucket!r} does not exist at {self.endpoint or 'AWS'}; "
                "create it or fix the spec"
            )
        return S3ConfigError(
            f"S3 {what} on s3://{self.bucket}/{self.prefix} refused: the credentials "
            "(AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY or ~/.aws/credentials) "
            "are not accepted"
        )

    def close(self) -> None:
        """Drop the client (its connections close with it)."""
        self._store = None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"[:300]
