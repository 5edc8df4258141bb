"""fingerprint: keys are the same in every process and equal for equal values (properties)."""

from __future__ import annotations

import copy
import importlib
import json
import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from types import ModuleType
from typing import Any

from hypothesis import assume, given, settings
from hypothesis import strategies as st

from stepcache.fingerprint import fingerprint
from stepcache.testing.processes import run_python

HERE = Path(__file__).resolve().parent
DEADLINE = 120  # seconds for a subprocess: imports numpy on a busy machine

KEYS_SCRIPT = textwrap.dedent(
    """
    import json, sys
    sys.path.insert(0, sys.argv[1])
    import fingerprint_corpus
    print(json.dumps(fingerprint_corpus.keys()))
    """
)


def corpus_module() -> ModuleType:
    # Imported by name from its directory, as the subprocesses do: the module
    # name is part of the keys of the classes it defines.
    if str(HERE) not in sys.path:
        sys.path.insert(0, str(HERE))
    return importlib.import_module("fingerprint_corpus")


def keys_in_subprocesses(seeds: list[str]) -> list[dict[str, str]]:
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", KEYS_SCRIPT, str(HERE)],
            env={**os.environ, "PYTHONHASHSEED": seed},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for seed in seeds
    ]
    results = []
    for proc in procs:
        try:
            out, err = proc.communicate(timeout=DEADLINE)
        finally:
            proc.kill()
        assert proc.returncode == 0, err
        results.append(json.loads(out))
    return results


def test_keys_are_identical_across_processes_and_hash_seeds() -> None:
    in_process = corpus_module().keys()
    strict = [key for name, key in in_process.items() if name.startswith("strict:")]
    assert len(set(strict)) == len(strict)  # the corpus is not degenerate
    for keys in keys_in_subprocesses(["0", "1", "12345"]):
        assert keys == in_process


def test_importing_fingerprint_does_not_import_numpy() -> None:
    script = (
        "import sys; from stepcache.fingerprint import fingerprint; "
        "fingerprint({'a': [1.0, (2, 'x')], 'b': {1, 2}}); "
        "print('numpy' in sys.modules)"
    )
    assert run_python(script, timeout=DEADLINE).stdout.strip() == "False"


def test_corpus_keys_do_not_depend_on_insertion_order() -> None:
    corpus = corpus_module()
    program = corpus.program()
    params = dict(reversed(list(program.params.items())))
    params["tags"] = set(sorted(params["tags"], reverse=True))
    reordered = type(program)(program.name, program.body, params, program.symbols)
    assert fingerprint(reordered) == fingerprint(program)


leaves = (
    st.integers() | st.floats(allow_nan=True) | st.text() | st.binary() | st.booleans() | st.none()
)
hashable = st.recursive(
    st.integers() | st.text() | st.binary() | st.floats(allow_nan=False),
    lambda inner: st.tuples(inner, inner) | st.frozensets(inner, max_size=4),
    max_leaves=8,
)
values = st.recursive(
    leaves,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.lists(inner, max_size=4).map(tuple)
        | st.dictionaries(hashable, inner, max_size=4)
        | st.frozensets(hashable, max_size=4)
    ),
    max_leaves=20,
)


def reordered(value: Any) -> Any:
    """An equal value whose dicts list their items in reverse order (rebuilt throughout)."""
    if isinstance(value, dict):
        return {k: reordered(v) for k, v in reversed(list(value.items()))}
    if isinstance(value, list):
        return [reordered(v) for v in value]
    if isinstance(value, tuple):
        return tuple(reordered(v) for v in value)
    if isinstance(value, frozenset):
        return frozenset(reversed(sorted(value, key=fingerprint)))
    return value


def leaf_count(value: Any) -> int:
    if isinstance(value, dict):
        return sum(leaf_count(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return sum(leaf_count(v) for v in value)
    if isinstance(value, frozenset):
        return 0  # elements stay as they are: changing one may merge it with another
    return 1


def changed(leaf: Any) -> Any:
    """A leaf that is certainly a different value (by type or by content)."""
    if isinstance(leaf, bool) or leaf is None:
        return 0
    if isinstance(leaf, int):
        return leaf + 1
    if isinstance(leaf, float):
        return math.nextafter(leaf, math.inf) if math.isfinite(leaf) else 0.0
    if isinstance(leaf, bytes):
        return leaf + b"!"
    return leaf + "!"


def with_leaf_changed(value: Any, index: int) -> tuple[Any, int]:
    """Copy of ``value`` with its ``index``-th leaf changed; returns (copy, leaves left)."""
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            out[k], index = with_leaf_changed(v, index)
        return out, index
    if isinstance(value, (list, tuple)):
        items = []
        for v in value:
            item, index = with_leaf_changed(v, index)
            items.append(item)
        return type(value)(items), index
    if isinstance(value, frozenset):
        return value, index
    return (changed(value) if index == 0 else value), index - 1


@settings(max_examples=75, deadline=None)
@given(values)
def test_equal_values_give_equal_keys(value: Any) -> None:
    key = fingerprint(value)
    assert fingerprint(copy.deepcopy(value)) == key
    assert fingerprint(reordered(value)) == key


@settings(max_examples=75, deadline=None)
@given(values, st.data())
def test_changing_one_leaf_changes_the_key(value: Any, data: st.DataObject) -> None:
    count = leaf_count(value)
    assume(count > 0)
    index = data.draw(st.integers(0, count - 1), label="leaf")
    other, _ = with_leaf_changed(value, index)
    assert fingerprint(other) != fingerprint(value)
