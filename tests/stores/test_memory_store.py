"""MemoryStore passes the store contract."""

from __future__ import annotations

import pytest

from stepcache import MemoryStore
from stepcache.testing import StoreContract


class TestMemoryStore(StoreContract):
    persistent = False

    @pytest.fixture
    def store(self) -> MemoryStore:
        return MemoryStore()
