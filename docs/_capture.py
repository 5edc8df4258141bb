"""Regenerate the command output shown in the docs by running the commands, or check it.

Every console block in the docs that shows output is preceded by a marker
``<!-- captured: NAME -->``. This script replays the story the docs tell, in
a temporary directory standing in for ``/tmp``: it runs each ``$`` line of a
block with the real ``stepcache`` and ``pytest`` (``export`` lines set the
environment of the lines after them, as in a shell), and puts what they
printed under the line::

    python docs/_capture.py           # rewrite the blocks in place
    python docs/_capture.py --check   # exit 1 and show the first difference

``--check`` compares with what differs from machine to machine masked:
times, sizes, keys, digests, ratios and counts. What is left (commands,
column names, labels, the words of every message) must match, so a doc can
never show output that the command line no longer prints.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

DOCS = Path(__file__).resolve().parent
ROOT = DOCS.parent
PAGES = [ROOT / "README.md", DOCS / "observability.md", DOCS / "cli.md"]
MARKER = re.compile(r"<!-- captured: ([\w-]+)( key=\w+)? -->\n```console\n(.*?)```\n", re.S)
PYTHON = re.compile(r"```python\n(# (?P<name>[\w.]+)\n)?(?P<code>.*?)```\n", re.S)
# Keys chosen during the story, named in commands as {name}.
Picks = dict[str, str]


def blocks(text: str) -> Iterator[tuple[str, str]]:
    """``(name, content)`` of every captured block of a page."""
    for match in MARKER.finditer(text):
        yield match.group(1), match.group(3)


def commands(content: str) -> list[str]:
    """The ``$`` lines of a block, without the prompt."""
    return [line[2:] for line in content.splitlines() if line.startswith("$ ")]


class Story:
    """Runs commands as the docs show them, in a temporary /tmp, and records their output."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("STEPCACHE_")}
        # The default store is under a home of the story's own, shown as ~.
        (tmp / "home").mkdir()
        self.env.update(
            HOME=str(tmp / "home"),
            XDG_CACHE_HOME=str(tmp / "home" / ".cache"),
            COLUMNS="100",
            NO_COLOR="1",
            PYTHONDONTWRITEBYTECODE="1",
            STEPCACHE_MEMO_DIR=str(tmp / "memo"),
            # Only the plugins the story uses, whatever else this machine has installed.
            PYTEST_DISABLE_PLUGIN_AUTOLOAD="1",
            PYTEST_ADDOPTS="-p no:cacheprovider -p xdist -p stepcache.pytest_plugin",
        )
        src = str(ROOT / "src")
        self.env["PYTHONPATH"] = os.pathsep.join([src, self.env.get("PYTHONPATH", "")])
        self.picks: Picks = {}

    def real(self, text: str) -> str:
        return text.replace("/tmp/", f"{self.tmp}/")

    def shown(self, text: str) -> str:
        return text.replace(f"{self.tmp}/home", "~").replace(f"{self.tmp}/", "/tmp/")

    def run(self, line: str) -> str:
        """Run one ``$`` line; return what it printed (stdout and stderr, as a terminal shows)."""
        line = line.format(**self.picks)
        if line.startswith("export "):
            name, _, value = line[len("export ") :].partition("=")
            self.env[name] = self.real(value)
            return ""
        done = subprocess.run(
            ["bash", "-c", self.real(line)],
            cwd=self.tmp,
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=600,
            check=False,
        )
        return self.shown(done.stdout)

    def python(self, code: str) -> None:
        """Run a Python snippet of the docs, as a user would paste it into a file."""
        script = self.tmp / "snippet.py"
        script.write_text(code)
        subprocess.run(
            [sys.executable, str(script)], cwd=self.tmp, env=self.env, check=True, timeout=600
        )

    def block(self, content: str) -> str:
        """The block with each command's output captured afresh."""
        out = []
        for line in commands(content):
            out.append(f"$ {line.format(**self.picks)}\n")
            out.append(self.run(line))
        return "".join(out)


def _pick_translate_key(story: Story, label: str) -> str:
    found = story.run(f"stepcache ls --step Translate --label {label} --sort created --json")
    keys = re.findall(r'"key": "([0-9a-f]{32})"', found)
    return keys[-1][:12]


def _python_block(text: str, name: str | None, contains: str = "") -> str:
    for match in PYTHON.finditer(text):
        if match.group("name") == name and contains in match.group("code"):
            return match.group("code")
    raise LookupError(f"no python block {name or contains!r}")


#: per block: what to do before it runs (write files, pick keys)
Before = Callable[[Story, str], None]


def _suite_file(story: Story, page: str) -> None:
    (story.tmp / "test_kernels.py").write_text(_python_block(page, "test_kernels.py"))


def _upwind(story: Story, page: str) -> None:
    story.picks["upwind"] = _pick_translate_key(story, "upwind_f32_i")


def _variants(story: Story, page: str) -> None:
    story.python(_python_block(page, None, "enable_transforms=False"))
    story.picks["changed"] = _pick_translate_key(story, "upwind_f32_i")


BEFORE: dict[str, Before] = {
    "pytest-cold": _suite_file,
    "show": _upwind,
    "explain-changed": _variants,
}


def capture(pages: list[Path]) -> dict[Path, str]:
    """Every page with its captured blocks replaced by fresh output."""
    out: dict[Path, str] = {}
    for page in pages:
        text = page.read_text()
        tmp = Path(tempfile.mkdtemp(prefix="stepcache-docs-"))
        try:
            story = Story(tmp)
            story.picks.update(changed="{changed}", upwind="{upwind}")  # until picked

            def fresh(match: re.Match[str], story: Story = story, text: str = text) -> str:
                name, key, content = match.group(1), match.group(2) or "", match.group(3)
                if name in BEFORE:
                    BEFORE[name](story, text)
                if key:  # the key a command names is the one picked in this run
                    content = re.sub(r"\b[0-9a-f]{12}\b", "{" + key[5:] + "}", content)
                block = story.block(content)
                return f"<!-- captured: {name}{key} -->\n```console\n{block}```\n"

            out[page] = MARKER.sub(fresh, text)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return out


_MASKS = [
    (re.compile(r"^[.sxF]+ +\[100%\]$", re.M), "<progress>"),  # pytest's dots, in any order
    (re.compile(r"\d{4}-\d\d-\d\dT[\d:]+\+00:00"), "<time>"),
    (re.compile(r"\b[0-9a-f]{12,32}\b"), "<hex>"),
    (re.compile(r"\b\d+(\.\d+)? ?(B|KiB|MiB|GiB)\b"), "<size>"),
    (re.compile(r"\b\d+(\.\d+)?(%|[xsmhd]\b)"), "<n>"),
    (re.compile(r"\b(faster|slower)\b"), "<than>"),
    (re.compile(r"as fast as"), "<n> <than> than"),
    (re.compile(r" \(the cost of filling the cache\)"), ""),
    (re.compile(r"\d[\d,]*"), "<n>"),
    (re.compile(r"-{3,}"), "---"),
]


def mask(text: str) -> str:
    """``text`` without what varies from machine to machine (see the module docstring)."""
    for pattern, replacement in _MASKS:
        text = pattern.sub(replacement, text)
    # Wrapped cells (a long reason) re-flow when a value changes width, and
    # columns re-align: compare the words in their order.
    return " ".join(text.split())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare instead of rewriting")
    parser.add_argument("pages", nargs="*", type=Path, help="pages (default: all)")
    args = parser.parse_args(argv)
    fresh = capture([p.resolve() for p in args.pages] or PAGES)
    failed = 0
    for page, text in fresh.items():
        if not args.check:
            page.write_text(text)
            continue
        old = dict(blocks(page.read_text()))
        for name, content in blocks(text):
            if mask(old.get(name, "")) != mask(content):
                failed += 1
                print(f"{page.name}: block {name!r} differs from the current output:")
                print(content)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
