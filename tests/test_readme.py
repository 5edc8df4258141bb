"""The README's example runs as written and says what the README says it does."""

from __future__ import annotations

import re
import sys
import types
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_example_runs_and_explains_the_changed_setting(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    code = re.search(r"## In 20 lines\n\n```python\n(.*?)```", README.read_text(), re.S)
    assert code is not None
    module = types.ModuleType("readme_example")  # dataclasses look their module up
    monkeypatch.setitem(sys.modules, module.__name__, module)
    exec(compile(code.group(1), str(README), "exec"), module.__dict__)
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "/* C for laplacian */"
    changed = r"step\.enable_itir_transforms: False -> True"
    assert re.fullmatch(rf"differs from [0-9a-f]{{12}} in {changed}", out[1])


def test_readme_shows_both_set_up_commands() -> None:
    text = README.read_text()
    # The first command installs what the demo needs (numpy, in the demo extra).
    assert text.index("pip install -e '.[demo]'") < text.index("stepcache demo")
    assert "pip install -e .  " not in text  # without the extra, the demo cannot run
    assert "pip install -e '.[test]'" in text
    assert "\npytest " in text
