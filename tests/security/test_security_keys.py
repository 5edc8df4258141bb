"""Hostile keys: only the hex form ``fingerprint`` produces reaches a store or the CLI.

A key names a file in a DirectoryStore, so a key like ``../../x`` must never
get near the filesystem: every entry point raises ``InvalidKeyError`` (a
``ValueError``) before touching anything, and the CLI answers a usage error.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import stepcache as sc
from stepcache.cli import main
from stepcache.errors import InvalidKeyError, StepCacheError
from stepcache.stores.base import Store
from stepcache.stores.directory import DirectoryStore
from stepcache.testing import key


class HexStr(str):
    """A str subclass could carry any behaviour; stores take only plain str."""


HOSTILE: list[Any] = [
    "../" * 6 + "etc/passwd",
    "../" + "a" * 32,
    "/etc/passwd",
    "/" + "a" * 32,
    "ab" * 16 + "/../../x",
    "ab/" + "cd" * 15,
    "a" * 31 + "\0",
    "\0" + "a" * 31,
    "a" * 65,  # longer than any key
    "a" * 100_000,
    "A" * 32,  # upper case is not the form fingerprint() produces
    "ab" * 16 + "\n",
    " " + "ab" * 16,
    "",
    "abc",
    "\u0661" * 32,  # ARABIC-INDIC DIGIT ONE: a digit to str.isdigit, not to a store
    "\uff41" * 32,  # FULLWIDTH LATIN SMALL LETTER A
    b"ab" * 16,
    Path("ab" * 16),
    HexStr("ab" * 16),
    None,
    0xAB,
]


def tree(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = DirectoryStore(tmp_path / "cache")
    s[key(1)] = "an honest entry"
    yield s
    s.close()


def calls(store: Store, bad: Any, src: Path) -> dict[str, Callable[[], Any]]:
    """Every public method that takes a key, called with ``bad``."""

    def never() -> Any:
        raise AssertionError("a computation ran for a hostile key")

    return {
        "set": lambda: store.set(bad, 1),
        "setitem": lambda: store.__setitem__(bad, 1),
        "get": lambda: store.get(bad),
        "getitem": lambda: store[bad],
        "delitem": lambda: store.__delitem__(bad),
        "get_or_compute": lambda: store.get_or_compute(bad, never),
        "get_or_compute_dir": lambda: store.get_or_compute_dir(bad, never),
        "header": lambda: store.header(bad),
        "put_dir": lambda: store.put_dir(bad, src),
        "get_dir": lambda: store.get_dir(bad),
    }


@pytest.mark.parametrize("bad", HOSTILE, ids=lambda b: repr(b)[:40])
def test_every_key_taking_method_refuses_a_hostile_key_before_any_io(
    store: Store, tmp_path: Path, bad: Any
) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "lib.so").write_bytes(b"ELF")
    before = tree(tmp_path)
    for name, call in calls(store, bad, src).items():
        with pytest.raises(InvalidKeyError) as info:
            call()
        assert isinstance(info.value, ValueError), name
        assert isinstance(info.value, StepCacheError), name
        assert "16-64 lowercase hex" in str(info.value), name
    assert bad not in store
    assert tree(tmp_path) == before
    assert list(store) == [key(1)]
    assert store.stats().errors == 0


def test_a_hostile_key_in_a_memory_store_is_refused_too() -> None:
    store = sc.MemoryStore()
    for bad in HOSTILE:
        with pytest.raises(InvalidKeyError):
            store[bad] = 1
        assert bad not in store
    assert len(store) == 0


def test_the_error_message_of_a_huge_key_stays_short(store: Store) -> None:
    with pytest.raises(InvalidKeyError) as info:
        store.get("a" * 100_000)
    assert len(str(info.value)) < 200


def test_keys_that_fingerprint_produces_are_accepted(store: Store) -> None:
    for k in (sc.fingerprint("x"), sc.fingerprint(("a", 1)), "0" * 16, "f" * 64):
        store[k] = k
        assert store[k] == k


# -- the command line ---------------------------------------------------------------------
CLI_HOSTILE = [
    "../../../../etc/passwd",
    "/etc/passwd",
    "ab" * 16 + "/..",
    "..",
    "-" * 6,
    "abcdef\0",
    "abc",  # too short to be a prefix
    "\u0661" * 8,
    "ghijkl",
    "",
]


@pytest.mark.parametrize("command", ["show", "explain"])
@pytest.mark.parametrize("bad", CLI_HOSTILE, ids=repr)
def test_cli_refuses_a_hostile_key_argument_as_a_usage_error(
    store: Store, command: str, bad: str, capsys: pytest.CaptureFixture[str]
) -> None:
    root = store.path  # type: ignore[attr-defined]
    before = tree(root)
    code = main(["--store", str(root), command, "--", bad])
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.startswith("stepcache: error:")
    assert "is not a key or a key prefix" in err
    assert tree(root) == before


@pytest.mark.parametrize("command", ["show", "explain"])
def test_cli_key_prefixes_match_only_stored_keys(
    store: Store, command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    root = str(store.path)  # type: ignore[attr-defined]
    assert main(["--store", root, command, "--json", key(1)[:8].upper()]) in (0, 1)
    assert "no entry" not in capsys.readouterr().err  # found, whatever explain concludes
    too_long = key(1) + "0" * 70  # hex, but longer than any key: matches nothing
    assert main(["--store", root, command, too_long]) == 1
    assert "no entry with key" in capsys.readouterr().err


def test_is_key_accepts_exactly_what_the_key_pattern_does() -> None:
    # is_key strips hex digits instead of matching a regular expression; it
    # must agree with the pattern it replaces on every edge.
    import re

    from stepcache.stores._keys import is_key

    pattern = re.compile(r"[0-9a-f]{16,64}")
    edges = [k for k in HOSTILE if type(k) is str]
    edges += ["a" * n for n in (15, 16, 64, 65)] + ["0123456789abcdef", "0123456789abcdeg"]
    edges += ["ab" * 8 + c for c in "-.\t\u00e9\u0430"] + [c + "ab" * 8 for c in "gxyz"]
    for k in edges:
        assert is_key(k) == (pattern.fullmatch(k) is not None), repr(k)
