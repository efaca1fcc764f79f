"""notebooks/: each runs top to bottom on a fresh kernel (the venv's python3) without errors.

Run with the venv's python (``.venv/bin/python -m pytest``): the python3 kernel spec launches
``python``, which jupyter_client maps to the interpreter running the tests.
"""

from __future__ import annotations

import re
import shutil
import sys
import time
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

NOTEBOOKS = sorted((Path(__file__).resolve().parent.parent / "notebooks").glob("[0-9]*.ipynb"))
RELATIVE_OUT = re.compile(r"(?<![\w/.-])out/\S+")
BUDGET = 180  # NOTE: each should take ~2 minutes at most; the timeout leaves headroom


def test_the_five_notebooks_exist_and_are_stored_without_outputs():
    assert [p.name[:2] for p in NOTEBOOKS] == ["01", "02", "03", "04", "05"]
    for p in NOTEBOOKS:
        nb = nbformat.read(p, as_version=4)
        code = [c for c in nb.cells if c.cell_type == "code"]
        assert code and all(not c.outputs and c.execution_count is None for c in code), p.name
        assert any(c.cell_type == "markdown" for c in nb.cells), p.name


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs_top_to_bottom(path, tmp_path, zoo_ready):
    work = tmp_path / "nb"
    work.mkdir()
    shutil.copy(path, work / path.name)  # NOTE: exports land in the copy's out/, not the repo
    nb = nbformat.read(work / path.name, as_version=4)
    client = nbclient.NotebookClient(nb, timeout=BUDGET, kernel_name="python3",
                                     resources={"metadata": {"path": str(work)}})
    t = time.perf_counter()
    client.execute()  # NOTE: raises CellExecutionError on the first failing cell
    took = time.perf_counter() - t
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs
              if o.output_type == "error"]
    assert not errors
    # NOTE: an exported file is printed with its absolute path (was out/..., relative to a
    # kernel folder the reader may not know)
    text = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code"
                   for o in c.outputs if o.output_type == "stream")
    assert not RELATIVE_OUT.findall(text), RELATIVE_OUT.findall(text)
    print(f"{path.name}: {took:.1f} s", file=sys.stderr)
    assert took < 2 * BUDGET


def test_notebook_03_ends_with_an_explorer():
    nb = nbformat.read(NOTEBOOKS[2], as_version=4)
    last = [c for c in nb.cells if c.cell_type == "code"][-1]
    assert "Explorer(wb)" in last.source and last.source.strip().endswith("explorer")
