"""README.md: every ```python snippet runs as written, in order, each in a fresh namespace (a
user pasting it into a new notebook), in a scratch folder so its out/ files stay there."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parent.parent / "README.md"
# NOTE: a block that needs the reader's own files or services says so on its first line
ALL = re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), re.S)
BLOCKS = [b for b in ALL if not b.startswith("# not run by tests/test_readme.py")]


def test_the_readme_has_snippets():
    assert len(BLOCKS) >= 3 and all(b.startswith(("import axnb", "from axnb")) for b in BLOCKS)


@pytest.mark.timeout(600)
@pytest.mark.parametrize("i", range(len(BLOCKS)))
def test_readme_snippet_runs_as_written(i, zoo_ready, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    exec(compile(BLOCKS[i], f"README.md python block {i + 1}", "exec"), {"__name__": "readme"})
