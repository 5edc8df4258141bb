"""Thin adapters that put a client project's caches into a stepcache store.

Each adapter lives in its own module and imports its project only when it is
switched on, so ``import stepcache`` never depends on a client:

>>> import stepcache.integrations.gt4py as sc_gt4py  # imports no GT4Py yet
>>> sc_gt4py.active_store() is None
True
"""

from __future__ import annotations

__all__: list[str] = []
