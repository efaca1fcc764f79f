"""The tuner (axnb.tune) beside today's greedy U16 search, on the conformance models below 0.98.

Per model, in one run on the same analysis samples: one float pass; the start (the config's
plan, MinMax U8); the greedy U16 search (``axnb.search.search`` ranked by the PerLayer table,
the ``--search-target`` path) with its score, layers, 16-bit MAC share, evaluations, seconds;
the tuner with the same; and the tuned plan's export (``QuantModel.qdq()``) run by plain
onnxruntime with no optimization, scored against the float model run by plain onnxruntime
(benchmarks/conformance.py's independent metric). Results: a table on stdout and
``out/bench_tune.json``.

Run: ``.venv/bin/python benchmarks/bench_tune.py [--only NAME ...] [--samples 4]
[--seconds 900] [--greedy-seconds 900]`` (``make bench`` runs it on the first two of HARD).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from conformance import models as M  # noqa: E402
from conformance import prepare as P  # noqa: E402

# NOTE: benchmarks/conformance/ (the package) shadows benchmarks/conformance.py (the suite)
_spec = importlib.util.spec_from_file_location(
    "conformance_suite", Path(__file__).resolve().parent / "conformance.py")
C = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(C)

HARD = ["basic_pitch", "oww_melspec", "silero_vad_op15", "akiki_vad", "ppocrv4_det",
        "ppocrv4_rec", "layout_cdla", "silero_vad_seq", "ppocrv6_rec_small", "u2netp"]


def _exported(wb, spec, work: Path) -> float:
    """The worst output cosine of the workbench's plan, exported and run by plain onnxruntime."""
    path = wb.export_quantized(work / f"{spec.name}.onnx")
    feeds = [dict(f) for f in wb.samples]
    ref_names, ref = C.run_all(M.model_path(spec), feeds)
    q_names, q = C.run_all(path, feeds, C.LEVELS["exact"])
    return C.worst(C.compare_outputs(ref_names, ref, q_names, q))


def run(name: str, n: int, seconds: float, greedy_seconds: float) -> dict:
    from axnb import Workbench
    from axnb.search import search
    from axnb.tune import layer_macs, plan_cost

    spec = next(s for s in M.MODELS if s.name == name)
    P.prepare(spec.name)  # NOTE: the conformance samples (idempotent), as conformance.py does
    wb = Workbench(str(M.model_path(spec)), str(spec.config), progress=False)
    wb.set_samples(wb.samples[:n], wb.sample_names[:n])
    t = time.perf_counter()
    wb.model.run_float(wb.samples)
    r = {"model": name, "samples": len(wb.samples), "float_s": time.perf_counter() - t,
         "start": min(wb.final_cosine().values())}
    macs = layer_macs(wb.model, wb.stats.shapes)
    if greedy_seconds > 0:
        t = time.perf_counter()
        g = search(wb.evaluator(), wb.plan, target=0.98, ranking=wb.ranking(), progress=False,
                   max_seconds=greedy_seconds)
        r["greedy"] = {"score": min(g.final.values(), default=math.nan), "met": g.met,
                       "layers": len(g.promoted), "stopped": g.stopped,
                       "cost16": plan_cost(g.plan, macs)[1], "evaluations": g.evaluations,
                       "seconds": time.perf_counter() - t}
    res = wb.tune(target=0.98, max_seconds=seconds, progress=False)
    res.apply(wb)
    with tempfile.TemporaryDirectory() as d:
        r["tune"] = {"summary": res.summary(), "score": res.score, "met": res.met,
                     "stopped": res.stopped, "setting": res.setting,
                     "u16": len(res.layers("U16")), "fp32": len(res.layers("FP32")),
                     "cost16": res.cost16, "costfp32": res.costfp32, "ceiling": res.ceiling,
                     "evaluations": res.evaluations, "seconds": res.seconds,
                     "export": _exported(wb, spec, Path(d))}
    return r


def _row(r: dict) -> str:
    g, t = r.get("greedy", {}), r["tune"]
    greedy = (f"{g['score']:.5f} {g['layers']:>3} U16 {100 * g['cost16']:5.1f}% "
              f"{g['evaluations']:>3} ev {g['seconds']:6.0f} s {g['stopped']:<11}") if g else "-"
    return (f"{r['model']:<18} {r['start']:.5f}  {greedy}  {t['score']:.5f} (export "
            f"{t['export']:.5f}) {t['setting']:<28} U16 {t['u16']:>3} ({100 * t['cost16']:5.1f}%)"
            f" FP32 {t['fp32']:>3} ({100 * t['costfp32']:5.1f}%) {t['evaluations']:>3} ev "
            f"{t['seconds']:6.0f} s ({t['seconds'] / r['float_s']:.0f}x float) {t['stopped']}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--only", nargs="*", default=HARD[:2],
                   help=f"models (the hard ones: {' '.join(HARD)})")
    p.add_argument("--samples", type=int, default=4)
    p.add_argument("--seconds", type=float, default=900.0)
    p.add_argument("--greedy-seconds", type=float, default=900.0)
    p.add_argument("--out", default="out/bench_tune.json")
    args = p.parse_args(argv)
    print(f"{'model':<18} {'start':<8} {'greedy U16 search (score, layers, MACs, evals, s)':<62}"
          "  tuner")
    rows = []
    for name in args.only:
        if M.model_path(next(s for s in M.MODELS if s.name == name)) is None:
            print(f"{name:<18} not installed (make conformance installs it)")
            continue
        rows.append(run(name, args.samples, args.seconds, args.greedy_seconds))
        print(_row(rows[-1]), flush=True)
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(rows, indent=1, default=float))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
