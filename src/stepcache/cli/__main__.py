"""``python -m stepcache.cli``: the same as the ``stepcache`` command."""

from __future__ import annotations

from stepcache.cli import main

raise SystemExit(main())
