"""README.md and docs/*.md: every ```python block runs as written, and every relative link resolves.

Each block runs in a fresh namespace (a user pasting it into a new notebook), in a scratch
folder (its ``out/`` files stay there), after the zoo's sample sets are prepared. The first line
of a block may opt out or opt in to the slow tier:

- ``# not run by tests`` (exactly this prefix, e.g. ``# not run by tests: it needs your model,
  config and Dask scheduler``): skipped, for blocks that need the reader's own files, a Dask
  scheduler or a notebook front end;
- ``# slow:`` (e.g. ``# slow: builds the MiniLM Workbench (about 30 s)``): run, marked ``slow``
  (blocks of more than ~20 s; ``make test`` leaves them to ``make test-all``).

Every other block must start with ``import axnb`` or ``from axnb`` (it is self-contained).
Keep running blocks few and cheap: a zoo Workbench costs seconds to build.

Links: every ``[text](target)`` whose target is not a URL must name a file of the repository,
relative to the page; a ``#fragment`` must be a heading of that page (GitHub's anchors).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SKIP = "# not run by tests"
SLOW = "# slow:"


def _blocks() -> list:
    out = []
    for page in PAGES:
        found = re.findall(r"^```python\n(.*?)^```", page.read_text(encoding="utf-8"), re.S | re.M)
        for i, code in enumerate(found, 1):
            if code.startswith(SKIP):
                continue
            name = f"{page.relative_to(ROOT)}:{i}"
            marks = [pytest.mark.slow] if code.startswith(SLOW) else []
            out.append(pytest.param(name, code, id=name, marks=marks))
    return out


BLOCKS = _blocks()


def test_the_docs_have_runnable_blocks():
    assert len(BLOCKS) >= 4
    for p in BLOCKS:
        name, code = p.values
        body = code.split("\n", 1)[1] if code.startswith(SLOW) else code
        assert body.startswith(("import axnb", "from axnb")), f"{name} does not import axnb first"


@pytest.mark.timeout(600)
@pytest.mark.parametrize(("name", "code"), BLOCKS)
def test_doc_block_runs_as_written(name, code, zoo_ready, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    exec(compile(code, f"{name} (python block)", "exec"), {"__name__": "docs"})


def _anchor(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[`*]|\[([^\]]*)\]\([^)]*\)", r"\1", heading.strip()).lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def _anchors(page: Path) -> set[str]:
    text = re.sub(r"^```.*?^```", "", page.read_text(encoding="utf-8"), flags=re.S | re.M)
    return {_anchor(h) for h in re.findall(r"^#{1,6} (.+)$", text, re.M)}


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(page):
    text = re.sub(r"^```.*?^```", "", page.read_text(encoding="utf-8"), flags=re.S | re.M)
    bad = []
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if re.match(r"[a-z][a-z0-9+.-]*:", target):          # https:, mailto:, ...
            continue
        path, _, fragment = target.partition("#")
        dest = (page.parent / path).resolve() if path else page
        if not dest.is_file() or ROOT not in dest.parents:
            bad.append(f"{target}: no such file in the repository")
        elif fragment and dest.suffix == ".md" and fragment not in _anchors(dest):
            bad.append(f"{target}: no heading #{fragment} in {dest.relative_to(ROOT)}")
    assert not bad, f"{page.relative_to(ROOT)}: " + "; ".join(bad)
