"""Whether a store can be reached, tier by tier, before a command reports on it.

A store that cannot be reached is not an empty store: the library keeps a
computation going when its cache fails (a miss, a counted error), but a
command asked about the cache must say that it could not look. One listing
call per tier is enough to tell: it is what every command does first.
"""

from __future__ import annotations

from stepcache.errors import StoreUnavailableError
from stepcache.stores.base import Store

__all__ = ["tiers", "unreachable"]


def tiers(store: Store) -> list[tuple[str, Store]]:
    """``[(name, store)]``: a tiered store's local and remote tiers, else the store itself."""
    local, remote = getattr(store, "local", None), getattr(store, "remote", None)
    if isinstance(local, Store) and isinstance(remote, Store):
        return [("local", local), ("remote", remote)]
    return [("", store)]


def unreachable(store: Store) -> dict[str, str]:
    """``{tier name: cause}`` of each tier that fails to list its first entry.

    >>> import stepcache as sc
    >>> unreachable(sc.MemoryStore())
    {}
    """
    failed: dict[str, str] = {}
    for name, tier in tiers(store):
        root = getattr(tier, "path", None)
        if name and root is not None and not root.is_dir():  # a tier opened read-only
            failed[name] = f"no store at {root}"
            continue
        try:
            next(iter(tier), None)
        except (StoreUnavailableError, OSError) as exc:
            failed[name] = str(exc) or type(exc).__name__
    return failed
