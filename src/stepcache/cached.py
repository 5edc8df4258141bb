"""CachedStep: a step whose results are kept in a store, keyed so they never go stale.

The key of a call covers the wrapped step's identity *and every setting*
(its dataclass fields), the ``version`` string and the input. Replacing a
setting of the inner step therefore changes the key; it can never return a
result computed under the old setting.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator, Mapping
from functools import cached_property
from typing import TYPE_CHECKING, Any, cast

import xxhash

from stepcache.fingerprint import fingerprint
from stepcache.step import FieldStep, FunctionStep
from stepcache.stores.base import MISSING, Store

if TYPE_CHECKING:
    from stepcache._dirstep import CachedDirStep
    from stepcache.explain import MissReport
    from stepcache.identity import CodeIdentity, Toolchain

__all__ = ["CachedDirStep", "CachedStep", "MissReport", "default_label"]

_KEY_VERSION = "stepcache.CachedStep/1"
_MANIFEST_FILES = 200  # per declared module: enough to name the edited file


def default_label(inp: Any) -> str:
    """The input's ``name`` attribute if it is a string, else ``""``."""
    name = getattr(inp, "name", None)
    return name if isinstance(name, str) else ""


def step_name(step: Any) -> str:
    """A readable name for a step: a wrapped function's or the class's qualified name."""
    if isinstance(step, FunctionStep):
        return step.name
    return type(step).__qualname__


def _add_parts(out: dict[str, str], prefix: str, value: Any, parts: Mapping[str, str]) -> None:
    """Add a value's manifest ``parts`` under ``prefix`` (its whole digest if it has none)."""
    from stepcache.fingerprint._manifest import leaf_entry

    if not parts:
        out[prefix] = leaf_entry(value)
    for path, digest in parts.items():
        out[f"{prefix}{'' if path.startswith('[') else '.'}{path}"] = digest


@functools.cache
def _json() -> tuple[Callable[[Any], str], Callable[[str], str]]:
    """``json.dumps`` of a mapping as entries store it (sorted, compact), and of a string;
    made once, where ``json.dumps`` with options makes an encoder per call."""
    import json
    from json.encoder import encode_basestring_ascii

    return json.JSONEncoder(separators=(",", ":"), sort_keys=True).encode, encode_basestring_ascii


class _EntryInfo(Mapping[str, Any]):
    """Entry info whose label and manifest are computed only when asked for.

    A hit needs only the step's name (hits are counted per step); the label
    is asked for by a miss (which records it), the whole info by a write.
    """

    def __init__(self, cached: CachedStep, inp: Any) -> None:
        self._cached, self._inp = cached, inp
        self._label: str | None = None
        self._all: dict[str, Any] | None = None

    def _full(self) -> dict[str, Any]:
        if self._all is None:
            manifest = self._cached.manifest_for(self._inp)
            self._all = {"step": self._cached.name, "label": self["label"], "manifest": manifest}
        return self._all

    def __getitem__(self, name: str) -> Any:
        if name == "step":
            return self._cached.name
        if name == "label":
            if self._label is None:
                self._label = self._cached.label_for(self._inp)
            return self._label
        return self._full()[name]

    def get(self, name: str, default: Any = None) -> Any:
        """``info[name]``, or ``default``; the step's name without Mapping.get's extra call."""
        return self._cached.name if name == "step" else super().get(name, default)

    def __iter__(self) -> Iterator[str]:
        return iter(self._full())

    def __len__(self) -> int:
        return len(self._full())

    def info_json(self) -> bytes:
        """The info as :func:`stepcache.codec.pack_entry` encodes a mapping (sorted, compact
        JSON), with the step's fixed manifest encoded once per step instead of once per entry.

        The input's entries all sort between the fixed ones below ``input`` and
        those above it (no fixed path starts with ``input``), so the manifest is
        the fixed JSON around the input's.
        """
        encode, string = _json()
        before, after = self._cached._fixed_json
        middle = encode(self._cached._input_manifest(self._inp))[1:-1]
        manifest = ",".join(part for part in (before, middle, after) if part)
        label, step = string(self["label"]), string(self._cached.name)
        return f'{{"label":{label},"manifest":{{{manifest}}},"step":{step}}}'.encode()


class CachedStep(FieldStep):
    """Wrap ``step`` so its results are kept in ``store``.

    ``replace(**changes)`` replaces this wrapper's own fields and forwards
    every other name to the wrapped step's ``replace``, so settings meant for
    the inner step work through the cache (and change its key). Like the
    other steps stepcache makes, it is a frozen value (see
    :class:`~stepcache.step.FieldStep`).

    >>> import dataclasses, stepcache as sc
    >>> @dataclasses.dataclass(frozen=True)
    ... class Translate(sc.StepBase):
    ...     enable_itir_transforms: bool = True
    ...     def __call__(self, program: str) -> str:
    ...         return program.upper() if self.enable_itir_transforms else program
    >>> cached = sc.CachedStep(Translate(), sc.MemoryStore())
    >>> cached("lap")
    'LAP'
    >>> off = cached.replace(enable_itir_transforms=False)
    >>> off("lap"), off.key_for("lap") != cached.key_for("lap")
    ('lap', True)
    """

    # No __slots__: the cached properties below live in the instance's __dict__.
    _fields = ("step", "store", "version", "key", "code", "toolchain", "label", "timeout")
    step: Callable[[Any], Any]
    store: Store
    version: str
    key: Callable[[Any], str]
    code: tuple[str, ...]
    toolchain: Toolchain | None
    label: Callable[[Any], str] | None
    timeout: float | None

    def __init__(
        self,
        step: Callable[[Any], Any],
        store: Store,
        version: str = "",
        key: Callable[[Any], str] = fingerprint,
        code: tuple[str, ...] = (),
        toolchain: Toolchain | None = None,
        label: Callable[[Any], str] | None = None,
        timeout: float | None = None,
    ) -> None:
        given: object = code
        if isinstance(given, str):  # a single module name is a common slip
            given = (given,)
        if given:  # checked now: a misspelled module would never re-key anything
            from stepcache.identity import code_modules

            code = code_modules(cast("tuple[str, ...]", given))
        if not callable(step):
            raise TypeError(f"CachedStep needs a callable step, got {type(step).__name__}")
        if not isinstance(store, Store):
            raise TypeError(
                f"CachedStep needs a stepcache Store, got {type(store).__name__}; "
                "use stepcache.open_store(...)"
            )
        self._set(step=step, store=store, version=version, key=key, code=code,
                  toolchain=toolchain, label=label, timeout=timeout)  # fmt: skip

    @cached_property
    def name(self) -> str:
        """The wrapped step's name, recorded in every entry it writes (found once)."""
        return step_name(self.step)

    @cached_property
    def _salt(self) -> bytes:
        # Computed once per CachedStep: the step's configuration does not change
        # (frozen), so only the input is fingerprinted per call.
        return bytes.fromhex(fingerprint(self._identity()))

    @cached_property
    def code_identities(self) -> tuple[CodeIdentity, ...]:
        """Identity of each module named in ``code`` (computed once per instance)."""
        if not self.code:
            return ()
        from stepcache.identity import code_identity

        return tuple(code_identity(name) for name in self.code)

    def _identity(self) -> tuple[Any, ...]:
        return (_KEY_VERSION, self.step, self.version, self.code_identities, self.toolchain)

    def __stepcache_fingerprint__(self) -> tuple[Any, ...]:
        return self._identity()

    def key_for(self, inp: Any) -> str:
        """The store key for ``inp``: 32 hex characters."""
        return xxhash.xxh3_128_hexdigest(self._salt + self.key(inp).encode())

    def label_for(self, inp: Any) -> str:
        """The human-readable label recorded with the entry for ``inp``."""
        return (self.label or default_label)(inp)

    @cached_property
    def _fixed_manifest(self) -> dict[str, str]:
        # Version, code, toolchain and step are fixed per (frozen) instance:
        # computed on the first write, not again for every entry.
        from stepcache.fingerprint import manifest
        from stepcache.fingerprint._manifest import leaf_entry

        out = {"version": leaf_entry(self.version)}
        for ident in self.code_identities:
            out[f"code[{ident.name}]"] = ident.digest[:16]
            for rel, digest in ident.files[:_MANIFEST_FILES]:
                out[f"code[{ident.name}]:{rel}"] = digest[:16]
        if self.toolchain is not None:
            out.update(self.toolchain.manifest())
        _add_parts(out, "step", self.step, manifest(self.step, depth=2))
        return out

    @cached_property
    def _fixed_json(self) -> tuple[str, str]:
        """The fixed manifest as sorted JSON members: those sorting before ``input``, and after."""

        def members(part: dict[str, str]) -> str:
            return _json()[0](part)[1:-1]

        fixed = self._fixed_manifest
        before = {k: v for k, v in fixed.items() if k < "input"}
        return members(before), members({k: v for k, v in fixed.items() if k not in before})

    def _input_manifest(self, inp: Any) -> dict[str, str]:
        from stepcache.fingerprint._manifest import manifest

        out: dict[str, str] = {}
        _add_parts(out, "input", inp, manifest(inp, depth=3))
        return out

    def manifest_for(self, inp: Any) -> dict[str, str]:
        """Digests of the top levels of configuration, version and input (for :meth:`explain`)."""
        return {**self._fixed_manifest, **self._input_manifest(inp)}

    def __call__(self, inp: Any, /) -> Any:
        return self.store.get_or_compute(
            self.key_for(inp),
            lambda: self.step(inp),
            timeout=self.timeout,
            info=_EntryInfo(self, inp),
        )

    def _info(self, inp: Any) -> Mapping[str, Any]:
        return _EntryInfo(self, inp)

    def explain(self, inp: Any) -> MissReport:
        """Say whether ``inp`` hits and, if not, which parts differ from the nearest entry.

        The nearest entry is the stored entry of the same step (preferring the
        same label) whose manifest differs in the fewest paths.
        """
        from stepcache.explain import MissReport, compare_to_nearest

        key, label = self.key_for(inp), self.label_for(inp)
        # Verified, not just present: a damaged entry would miss on the next call.
        if self._present(key):
            return MissReport(True, key, self.name, label)
        return compare_to_nearest(
            self.store.headers(), key, self.name, label, self.manifest_for(inp)
        )

    def _present(self, key: str) -> bool:
        return self.store.peek(key, MISSING) is not MISSING

    def replace(self, **changes: Any) -> CachedStep:
        """Replace own fields; forward every other name to the wrapped step's ``replace``."""
        own_names = set(self._fields)
        own = {k: v for k, v in changes.items() if k in own_names}
        inner = {k: v for k, v in changes.items() if k not in own_names}
        if inner:
            replace = getattr(self.step, "replace", None)
            if replace is None:
                raise TypeError(
                    f"CachedStep.replace() got {', '.join(map(repr, sorted(inner)))}, which is not "
                    f"a CachedStep field ({', '.join(sorted(own_names))}) and the wrapped "
                    f"{type(self.step).__name__} has no replace()"
                )
            try:
                own["step"] = replace(**inner)
            except TypeError as exc:
                raise TypeError(
                    f"CachedStep.replace() could not apply {', '.join(map(repr, sorted(inner)))}: "
                    f"not a CachedStep field ({', '.join(sorted(own_names))}), and the wrapped "
                    f"{type(self.step).__name__} refused it: {exc}"
                ) from exc
        return self._replaced(own)


def __getattr__(name: str) -> object:
    # The explanation side (MissReport and its helpers) and CachedDirStep are
    # loaded on first use, so a process that needs neither does not build them;
    # the names stay importable from here.
    if name in ("MissReport", "compare_to_nearest", "describe_change"):
        from stepcache.explain import MissReport

        return MissReport
    if name == "CachedDirStep":
        from stepcache._dirstep import CachedDirStep

        return CachedDirStep
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
