"""Objects that start afresh in a forked child.

A forked child inherits its parent's in-process state: locks its parent's
threads hold, descriptors whose kernel locks are its parent's. What is
registered with :func:`reset_in_children` has its ``reset_in_child()``
called in every child forked afterwards, before the child runs anything
else; a dead object is forgotten (the registry holds it weakly).
"""

from __future__ import annotations

import os
import weakref
from typing import Protocol

__all__ = ["reset_in_children"]


class _Resettable(Protocol):
    def reset_in_child(self) -> None: ...


_live: weakref.WeakSet[_Resettable] = weakref.WeakSet()


def reset_in_children(obj: _Resettable) -> None:
    """Call ``obj.reset_in_child()`` in each process forked from this one from now on."""
    _live.add(obj)


def _after_fork_in_child() -> None:
    for obj in list(_live):
        obj.reset_in_child()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
