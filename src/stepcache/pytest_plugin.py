"""``pytest --stepcache-report``: what the caches did during a test session.

At the end of the session, on the controller only, the report shows for
each store: how many instances were opened and by how many processes, hits,
misses and writes per step, the keys added, the entries in the store now and
the most common reasons for the misses. Under pytest-xdist each worker
records what its stores did when its session finishes and sends it to the
controller with the worker's output, so the numbers cover every process.

"Keys added" counts the entries this session's processes wrote. A write
follows a miss (single-flight makes one process compute a missing key), so
each is a key that was not in the store: on a warm run it should be 0.

Every store instance the session's processes made is seen, however it was
made (``open_store``, ``DirectoryStore(path)``, unpickled in a worker) and
whether or not it was closed before the end: the option switches on a census
of store instances (:mod:`stepcache.stores._census`) that keeps their
counters. A store that was opened but never used adds nothing.

pytest imports this module at start-up in every run, so it imports nothing
beyond the standard library and pytest until the option is given.

    pytest -n 12 --stepcache-report
"""

from __future__ import annotations

import collections
import dataclasses
import json
import os
import time
from collections.abc import Iterable
from typing import Any

import pytest

from stepcache.integrations import gt4py_pytest

__all__ = ["StoreReport", "format_report", "process_snapshot", "summarize"]

_OUTPUT_KEY = "stepcache"
_TOP_REASONS = 5


def pytest_addoption(parser: pytest.Parser) -> None:
    """Add ``--stepcache-report`` to a "stepcache" option group."""
    group = parser.getgroup("stepcache", "stepcache (cache of pipeline steps)")
    group.addoption(
        "--stepcache-report",
        action="store_true",
        default=False,
        help="At the end, report what the stepcache stores did, summed over xdist workers.",
    )
    # Options of client integrations (stepcache.integrations.*) join this group here.
    gt4py_pytest.addoption(group)


@pytest.hookimpl(tryfirst=True)
def pytest_load_initial_conftests(early_config: pytest.Config) -> None:
    """Start the store census before conftest files run, which may already make stores."""
    if getattr(early_config.known_args_namespace, "stepcache_report", False):
        from stepcache.stores import _census

        _census.install()


def pytest_configure(config: pytest.Config) -> None:
    """Register the report collector; switch the GT4Py integration on when asked."""
    if config.getoption("stepcache_report"):
        from stepcache.stores import _census

        _census.install()
        config.pluginmanager.register(_Report(config), "stepcache-report")
    gt4py_pytest.configure(config)


def process_snapshot() -> dict[str, Any]:
    """What this process did with each store it used, and why its recent misses missed.

    Each store's entry has its spec, this process's counters and, for each
    recent miss, a short reason (see ``stepcache explain``). With the census
    on (``--stepcache-report`` switches it on) every store instance counts,
    however it was made and whether or not it is still open; otherwise the
    stores that ``open_store`` has open.
    """
    stores = []
    for spec, stats, store in _used_stores():
        reasons: list[str] = []
        try:
            if stats.recent_misses:
                reasons = _miss_reasons(spec, stats, store())
        except Exception:  # a report must never fail the test session (a remote went away)
            reasons = ["(not explained: the store could not be listed)"]
        stores.append({"spec": spec, "stats": stats.to_dict(), "miss_reasons": reasons})
    return {"pid": os.getpid(), "stores": stores, "opened": _opened_specs()}


def _opened_specs() -> list[str]:
    """Specs of every store this process opened, used or not (workers may have used them)."""
    from stepcache.stores import _census
    from stepcache.stores.registry import process_stats

    if _census.installed():
        return sorted({spec for spec, _, _ in _census.counted()})
    return sorted({s.spec for s, _ in process_stats()})


def _used_stores() -> list[tuple[str, Any, Any]]:
    from stepcache.stores import _census
    from stepcache.stores.registry import process_stats

    if _census.installed():
        used = [(spec, st, ref) for spec, st, ref in _census.counted() if _did_something(st)]
        return sorted(used, key=lambda item: item[0])
    return [(s.spec, st, (lambda s=s: s)) for s, st in process_stats()]


def _did_something(stats: Any) -> bool:
    # A store that was only opened (a CLI call, a fixture never used) adds a
    # line of zeros; it still counts as an instance when its spec was used.
    return bool(stats.hits or stats.misses or stats.writes or stats.errors)


def _miss_reasons(spec: str, stats: Any, store: Any) -> list[str]:
    from stepcache.explain import explain_misses
    from stepcache.stores.registry import open_store

    if store is None or store.closed:
        if spec.startswith("memory://"):
            return []  # gone with its last instance
        store = open_store(spec, read_only=True)
    return [e.summary for e in explain_misses(stats.recent_misses, store.headers())]


@dataclasses.dataclass(frozen=True)
class StoreReport:
    """One store's numbers summed over the session's processes."""

    spec: str
    instances: int
    processes: int
    hits: int
    misses: int
    writes: int
    errors: int
    steps: dict[str, tuple[int, int, int]]
    reasons: list[tuple[str, int]]
    explained: int
    entries: int | None = None

    @property
    def keys_added(self) -> int:
        """Entries written by the session (each after a miss, so a new key)."""
        return self.writes


def summarize(snapshots: Iterable[dict[str, Any]]) -> list[StoreReport]:
    """Add up process snapshots (from :func:`process_snapshot`) by store spec."""
    by_spec: dict[str, list[tuple[int, dict[str, Any]]]] = collections.defaultdict(list)
    for snap in snapshots:
        for store in snap["stores"]:
            by_spec[store["spec"]].append((snap["pid"], store))
    reports = []
    for spec, parts in sorted(by_spec.items()):
        stats = [p["stats"] for _, p in parts]
        steps: dict[str, list[int]] = {}
        for st in stats:
            for name, per in st["steps"].items():
                into = steps.setdefault(name, [0, 0, 0])
                for i, field in enumerate(("hits", "misses", "writes")):
                    into[i] += per[field]
        reasons = collections.Counter(r for _, p in parts for r in p["miss_reasons"])
        reports.append(
            StoreReport(
                spec=spec,
                instances=sum(st["opens"] for st in stats),
                processes=len({pid for pid, _ in parts}),
                **{f: sum(st[f] for st in stats) for f in ("hits", "misses", "writes", "errors")},
                steps=_with_unattributed(steps, stats),
                reasons=reasons.most_common(_TOP_REASONS),
                explained=sum(reasons.values()),
            )
        )
    return reports


def _with_unattributed(
    steps: dict[str, list[int]], stats: list[dict[str, Any]]
) -> dict[str, tuple[int, int, int]]:
    # Lookups made without a step name (store.get, get_dir) count in the
    # totals only; the "" row makes the per-step table add up to them.
    totals = [sum(st[f] for st in stats) for f in ("hits", "misses", "writes")]
    rest = [t - sum(v[i] for v in steps.values()) for i, t in enumerate(totals)]
    if any(rest):
        steps[""] = [a + b for a, b in zip(steps.get("", [0, 0, 0]), rest, strict=True)]
    return {name: (h, m, w) for name, (h, m, w) in sorted(steps.items())}


def format_report(reports: Iterable[StoreReport]) -> list[str]:
    """The report's lines, for the terminal summary."""
    lines = []
    for r in reports:
        entries = "" if r.entries is None else f", {r.entries} entries now"
        lines.append(
            f"{r.spec}: {_count(r.instances, 'instance')} opened by "
            f"{_count(r.processes, 'process', 'es')}; {_count(r.keys_added, 'key')} added{entries}"
        )
        width = max([len(name) for name in r.steps] + [len("(no step)")])
        lines.append(f"  {'step':<{width}}  {'hits':>7} {'misses':>7} {'writes':>7}")
        for name, (h, m, w) in r.steps.items():
            lines.append(f"  {name or '(no step)':<{width}}  {h:>7} {m:>7} {w:>7}")
        lookups = r.hits + r.misses
        rate = f"hit rate {r.hits / lookups:.1%}" if lookups else "no lookups"
        lines.append(
            f"  {'(all)':<{width}}  {r.hits:>7} {r.misses:>7} {r.writes:>7}"
            f"  ({rate}, {r.errors} errors)"
        )
        if r.reasons:
            lines.append(f"  top miss reasons (of {r.explained} recent misses):")
            lines += [f"    {count:>5}  {reason}" for reason, count in r.reasons]
    return lines or ["no stepcache store was used in this session"]


def _count(n: int, word: str, plural: str = "s") -> str:
    return f"{n} {word}{'' if n == 1 else plural}"


def _entries_now(spec: str) -> int | None:
    from stepcache.stores.registry import open_store, process_stats

    if spec.startswith("memory://"):
        # A memory store lives in one process: only that process can count it.
        here = [store for store, _ in process_stats() if store.spec == spec]
        return len(here[0]) if here else None
    try:
        return len(open_store(spec, read_only=True))
    except Exception:  # a report must never fail the test session
        return None


def _other_processes(spec: str, since: float, known: set[Any]) -> list[dict[str, Any]]:
    """Snapshots of processes outside pytest that used directory store ``spec`` since ``since``.

    Tools that compile in worker processes of their own (GT4Py does) use the
    store there; a directory store's per-instance stats files
    (``stats/<host>-<pid>-<n>``) record what they did.
    """
    if not spec.startswith("dir://"):
        return []
    from stepcache.stores._fsutil import host, parse_owner
    from stepcache.stores.directory.statsfiles import read_named_stats

    try:
        named = read_named_stats(spec[len("dir://") :] + "/stats", since=since)
    except OSError:
        return []
    found = []
    for name, stats in sorted(named.items()):
        owner = parse_owner(name)
        if owner is None or (owner.host == host() and owner.pid in known):
            continue  # the archive of exited processes, or a pytest process counted already
        store = {"spec": spec, "stats": stats.to_dict(), "miss_reasons": []}
        found.append({"pid": name, "stores": [store]})
    return found


class _Report:
    """Collects process snapshots; prints them on the controller."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self.snapshots: list[dict[str, Any]] = []
        self.started = time.time()

    @pytest.hookimpl(trylast=True)
    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        output = getattr(self.config, "workeroutput", None)
        if output is not None:  # an xdist worker: hand the snapshot to the controller
            output[_OUTPUT_KEY] = json.dumps(process_snapshot())

    @pytest.hookimpl(optionalhook=True)
    def pytest_testnodedown(self, node: Any, error: object) -> None:
        payload = getattr(node, "workeroutput", {}).get(_OUTPUT_KEY)
        if payload is not None:
            self.snapshots.append(json.loads(payload))

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        if hasattr(self.config, "workerinput"):
            return
        snapshots = [process_snapshot(), *self.snapshots]
        known = {snap["pid"] for snap in snapshots}
        specs = {store["spec"] for snap in snapshots for store in snap["stores"]}
        specs |= {spec for snap in snapshots for spec in snap.get("opened", ())}
        for spec in sorted(specs):
            snapshots += _other_processes(spec, self.started, known)
        reports = [
            dataclasses.replace(r, entries=_entries_now(r.spec)) for r in summarize(snapshots)
        ]
        terminalreporter.write_sep("-", "stepcache report")
        for line in format_report(reports):
            terminalreporter.write_line(line)
