"""Stored programs load without a compile worker: the runner patch of the GT4Py integration.

GT4Py's ``ProcessRunner`` sends every compilation task to a spawned worker
process, even one whose translation and build are both cached; starting that
worker (an interpreter importing GT4Py) is most of a warm run. With the
integration on, a task is first run in the calling thread with *stored results
only*: a translation that is not in the store, or a build that is neither in
the store nor usable in GT4Py's own cache folder, raises :class:`NotStored`
before any real work starts, and the task goes to the worker as before. So a
warm process never starts a compile worker, and a cold one computes the
task's cache key once more (milliseconds, against seconds of C++).
Imported by :func:`~stepcache.integrations.gt4py.enable`.
"""

from __future__ import annotations

import concurrent.futures
import contextvars
import functools
from collections.abc import Callable
from typing import Any

from stepcache._log import log
from stepcache.integrations import gt4py as core

__all__ = ["NotStored", "found", "patch_runner", "stored_only"]

#: True while a task runs in the calling thread on stored results only
stored_only: contextvars.ContextVar[bool] = contextvars.ContextVar("stored_only", default=False)
#: hits such a run found, counted only if the task is answered there (else its worker counts)
_found: contextvars.ContextVar[list[Callable[[], None]]] = contextvars.ContextVar("_found")


def found(count: Callable[[], None]) -> None:
    """Count a hit of a stored-only run (``count()``) once its task is answered in this thread."""
    _found.get().append(count)


class NotStored(Exception):
    """A step of a task run on stored results only would have to compute (never reaches users)."""


def _submit(original: Callable[[Any, Any], Any], runner: Any, task: Any) -> Any:
    """``ProcessRunner.submit``: a done future if every step of ``task`` is stored."""
    if core._state.store is None or task.no_offload_reason is not None:
        return original(runner, task)
    token, hits = stored_only.set(True), _found.set([])
    try:
        artifact = task.compile()
        counts = _found.get()
    except NotStored:
        return original(runner, task)
    except Exception as exc:  # the worker runs it again and reports it the way GT4Py does
        log.debug("stepcache: %s failed in the calling thread (%r); sent to a worker", task, exc)
        return original(runner, task)
    finally:
        stored_only.reset(token)
        _found.reset(hits)
    for count in counts:
        count()
    done: concurrent.futures.Future[Any] = concurrent.futures.Future()
    done.set_result(artifact)
    return done


def patch_runner(patches: core._Saved, gt: Any) -> None:
    """Let ``ProcessRunner.submit`` answer stored tasks in the calling thread."""
    cls = gt.runners.ProcessRunner
    original: Callable[[Any, Any], Any] = cls.submit

    @functools.wraps(original)
    def submit(self: Any, task: Any) -> Any:
        return _submit(original, self, task)

    core._set_attr(patches, cls, "submit", submit)
