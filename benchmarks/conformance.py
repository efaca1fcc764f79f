"""Conformance suite: axnb on real public ONNX models shipped inside PyPI wheels.

For each model of ``benchmarks/conformance/models.py`` (prepares missing samples first):

1. ``axnb build --input MODEL --config CFG --output-dir TMP --overwrite`` as a subprocess:
   exit code, first error line, wall time, peak RSS of that child (``os.wait4``);
2. the exported ``TMP/quant/quantized.onnx`` measured with plain onnxruntime (no axnb code):
   per float output, the mean over samples of the per-sample cosine against the float model (an
   output with under 8 elements per sample: the cosine of the vector stacked across samples,
   marked ``*``; a near-silent sample judged by its error, as axnb defines its final metric,
   see ``compare_outputs``), and whether any output is NaN/Inf; at two onnxruntime levels:
   ``cos`` runs the Q/DQ as written (no graph optimization: exact integer semantics, what an
   NPU computes and what axnb's NPUBackend reports), ``(cpu)`` at level all on this CPU's
   integer kernels (which add u8*s8 pairs in saturating int16 on AVX2 without VNNI);
3. onnxruntime's own ``quantize_static`` (QDQ, U8 activations, S8 per-channel weights, MinMax,
   the same samples; ``quant_pre_process`` first when it works) measured the same way;
4. axnb's reported NPUBackend final cosine: ``TMP/summary.json`` if the build wrote one, else
   ``Workbench(MODEL, CFG, progress=False).final_cosine("NPUBackend")`` in a subprocess.

Cosine columns show the worst output; ``|d|`` is the largest per-output |reported - independent|.
A failing step is recorded and the suite goes on. Results: a table on stdout and
``out/conformance.json``.

Run: ``make conformance`` or
``.venv/bin/python benchmarks/conformance.py [--only NAME ...] [--samples 16] [--axnb-src DIR]
[--set quant.fusion=ort ...]``
(``--axnb-src`` puts another axnb source tree first on the children's PYTHONPATH, e.g. an
exported commit, to compare two versions).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import re
import shutil
import signal
import sys
import tempfile
import time
import traceback
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from conformance import models as M  # noqa: E402
from conformance import prepare as P  # noqa: E402
from timing import proc_kb  # noqa: E402

ROOT = M.ROOT


# ---------------------------------------------------------------- child processes

def run_child(cmd: list[str], log: Path, timeout: float, env: dict | None = None) -> dict:
    """Run ``cmd`` with stdout+stderr to ``log``: exit code, seconds, peak RSS (MB) of the child.

    Peak RSS is the child's own VmHWM, polled every 20 ms (``ru_maxrss`` of a forked child
    starts from the parent's RSS on Linux, so it would report this big process instead). The
    child runs in the log's folder, so ``python -c`` does not pick up a source tree from the
    current directory (``--axnb-src`` / the installed axnb decide).
    """
    import subprocess

    t0 = time.perf_counter()
    hwm, timed_out = 0, False
    with open(log, "wb") as fh:
        p = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env, cwd=log.parent,
                             start_new_session=True)
        while p.poll() is None:
            hwm = max(hwm, proc_kb(p.pid))
            if time.perf_counter() - t0 > timeout:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
                timed_out = True
                break
            time.sleep(0.02)
    secs = time.perf_counter() - t0
    return {"rc": p.returncode, "seconds": round(secs, 2), "peak_rss_mb": round(hwm / 1024, 1),
            "timed_out": timed_out}


def first_error(log: Path) -> str | None:
    """``axnb: error: ...`` if printed, else the exception line closing a traceback."""
    lines = [ln.rstrip() for ln in log.read_text(errors="replace").splitlines() if ln.strip()]
    for ln in lines:
        if ln.startswith("axnb: error:"):
            return ln
    for ln in reversed(lines):
        if re.match(r"^[A-Za-z_][\w.]*(Error|Exception|Fail\w*|Exit)\b", ln):
            return ln
    return lines[-1] if lines else None


def child_env(axnb_src: str | None) -> dict:
    env = dict(os.environ)
    if axnb_src:
        env["PYTHONPATH"] = os.pathsep.join(
            [str(Path(axnb_src).resolve())] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH")
                                               else []))
    return env


def axnb_cmd() -> list[str]:
    exe = Path(sys.executable).with_name("axnb")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "axnb.cli"]


# ---------------------------------------------------------------- measurements (plain ORT)

# NOTE: quantized models are measured twice: "exact" runs their Q/DQ as written (no graph
# optimization: integer semantics, as an NPU computes, and what axnb's NPUBackend reports; since
# onnxruntime 1.21 level basic already rewrites float-weight Conv between Q/DQ and fuses GELU);
# "cpu" at level all runs 8-bit patterns on this CPU's integer kernels, which saturate on AVX2
# without VNNI.
LEVELS = {"exact": "ORT_DISABLE_ALL", "cpu": "ORT_ENABLE_ALL"}


def session(path: Path, level: str = "ORT_ENABLE_ALL"):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.log_severity_level = 3
    so.graph_optimization_level = getattr(ort.GraphOptimizationLevel, level)
    if level == LEVELS["exact"]:   # NOTE: as written: a packed float Gemm weight sums otherwise
        so.add_session_config_entry("session.disable_prepacking", "1")
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def run_all(path: Path, feeds: list[dict], level: str = "ORT_ENABLE_ALL"
            ) -> tuple[list[str], list[list[np.ndarray]]]:
    s = session(path, level)
    names = [o.name for o in s.get_outputs()]
    return names, [[np.asarray(o) for o in s.run(None, f)] for f in feeds]


def _cos(a: np.ndarray, b: np.ndarray) -> float:
    if a.shape != b.shape:
        return 0.0  # NOTE: a data-dependent length that quantization changed: nothing aligns
    a, b = a.astype(np.float64).ravel(), b.astype(np.float64).ravel()
    na, nb = np.linalg.norm(a), np.linalg.norm(b)
    if not (np.isfinite(na) and np.isfinite(nb)):
        return float("nan")
    if na == 0 and nb == 0:
        return 1.0
    if na == 0 or nb == 0:
        return 0.0
    return float(np.dot(a, b) / (na * nb))


# NOTE: the same definitions as axnb's final metric, written again here (independently): fewer
# than MIN_ELEMENTS per sample -> compared across the samples; a sample whose float energy is
# under SILENT x the median sample's is judged by its error against the median energy of the
# other samples (1 / sqrt(1 + mse / median)), not by its own cosine; integer outputs unscored.
MIN_ELEMENTS, SILENT = 8, 1e-2


def _judged(fr: list, fq: list) -> tuple[float, float, int]:
    """(judged mean, plain mean of per-sample cosines, near-silent samples)."""
    cos = np.array([_cos(a, b) for a, b in zip(fr, fq)])
    energy = np.array([np.mean(a.astype(np.float64) ** 2) for a in fr])
    ok = energy[np.isfinite(energy)]
    med = float(np.median(ok)) if ok.size else 0.0
    silent = (energy < SILENT * med) if med > 0 else np.zeros(len(fr), bool)
    # NOTE: a sample of another shape quantized keeps its cosine 0: no error to judge it by.
    same = np.array([a.shape == b.shape for a, b in zip(fr, fq)])
    silent &= same
    if not silent.any():
        return float(np.mean(cos)), float(np.mean(cos)), 0
    base = float(np.median(energy[~silent & np.isfinite(energy)]))
    mse = np.array([np.mean((a.astype(np.float64) - b) ** 2) if s else np.inf
                    for a, b, s in zip(fr, fq, same)])
    return float(np.mean(np.where(silent, 1 / np.sqrt(1 + mse / base), cos))), \
        float(np.mean(cos)), int(silent.sum())


def compare_outputs(ref_names, ref, q_names, q) -> dict:
    """Per float output: cosine (see the NOTE above: judged, stacked for outputs of under
    MIN_ELEMENTS per sample), the plain per-sample mean, near-silent samples, non-finite."""
    out = {}
    for i, name in enumerate(ref_names):
        j = q_names.index(name) if name in q_names else i
        fr = [r[i] for r in ref]
        fq = [s[j] for s in q]
        if not np.issubdtype(fr[0].dtype, np.floating):
            continue
        one = all(x.size < MIN_ELEMENTS for x in fr)
        if one:
            c = plain = _cos(np.stack([x.ravel() for x in fr]), np.stack([x.ravel() for x in fq]))
            silent = 0
        else:
            c, plain, silent = _judged(fr, fq)
        out[name] = {"cosine": c, "plain": plain, "silent": silent, "stacked": one,
                     "nonfinite": bool(any(not np.isfinite(x).all() for x in fq)),
                     "shape_mismatch": sum(a.shape != b.shape for a, b in zip(fr, fq))}
    return out


def worst(per_out: dict | None) -> float | None:
    if not per_out:
        return None
    vals = [v["cosine"] if isinstance(v, dict) else v for v in per_out.values()]
    if any(v is None or (isinstance(v, float) and math.isnan(v)) for v in vals):
        return float("nan")
    return min(vals)


class _Reader:
    def __init__(self, feeds):
        self._it = iter([dict(f) for f in feeds])

    def get_next(self):
        return next(self._it, None)


def ort_quantize(model: Path, feeds: list[dict], work: Path) -> tuple[Path | None, str | None, str]:
    """onnxruntime quantize_static (QDQ, QUInt8 / QInt8 per-channel, MinMax) of ``model``."""
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    src, how = work / "float.onnx", "raw"
    # NOTE: loaded and saved, not copied: external weights (khmer_seg's model.onnx.data) inline
    onnx.save(onnx.load(str(model)), str(src))
    pre = work / "pre.onnx"
    # NOTE: a failed symbolic shape inference saves sym_shape_infer_temp.onnx and its
    # <uuid>.data into the current directory: keep them in the work folder
    with contextlib.chdir(work):
        try:
            quant_pre_process(str(src), str(pre), skip_symbolic_shape=False)
            src, how = pre, "pre_process"
        except Exception:
            try:
                quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)
                src, how = pre, "pre_process(no symbolic)"
            except Exception:
                pass
    out, err = work / "ort_qdq.onnx", None
    cands = [(src, how)] + ([(work / "float.onnx", "raw")] if src != work / "float.onnx" else [])
    for cand, label in cands + [(None, "opset 13")]:
        try:
            if cand is None:     # NOTE: per-channel DequantizeLinear needs opset 13 (axis)
                cand = _opset13(work / "float.onnx", work / "opset13.onnx")
            quantize_static(str(cand), str(out), _Reader(feeds), quant_format=QuantFormat.QDQ,
                            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                            per_channel=True, calibrate_method=CalibrationMethod.MinMax)
            session(out)                     # an invalid model counts as a failure
            return out, None, label
        except Exception as e:  # noqa: BLE001 - recorded, the suite goes on
            err = f"{label}: {_short(e)}" if err is None else f"{err}; {label}: {_short(e)}"
    return None, err, how


def _opset13(src: Path, dst: Path) -> Path:
    """``src`` converted to opset 13 by onnx's version converter (no-op at 13 or above)."""
    import onnx
    from onnx import version_converter

    m = onnx.load(str(src))
    if next((o.version for o in m.opset_import if o.domain in ("", "ai.onnx")), 1) >= 13:
        raise RuntimeError("already at opset >= 13")
    onnx.save(version_converter.convert_version(m, 13), str(dst))
    return dst


def _short(e: BaseException, n: int = 200) -> str:
    s = f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}"
    return s[:n]


# ---------------------------------------------------------------- axnb's own figure

_WB = """import json, sys
import axnb
wb = axnb.Workbench(sys.argv[1], sys.argv[2], progress=False)
print("@@" + json.dumps({k: float(v) for k, v in wb.final_cosine("NPUBackend").items()}))
"""


def _find_npu(summary: dict) -> dict | None:
    """The NPUBackend final cosine per scored output of a build's summary.json.

    NOTE: it searched for a dict of numbers under an "NPUBackend" key, which summary.json never
    has (each output holds a dict of metrics), so every model fell back to a fresh Workbench on
    all its analysis samples: a second calibration, and the wrong samples under --samples."""
    final = summary.get("final", {}).get("NPUBackend") or {}
    out = {str(o): float(m["Cosin"]) for o, m in final.items()
           if isinstance(m, dict) and "Cosin" in m}
    return out or None


def reported(out_dir: Path, model: Path, cfg: Path, work: Path, env: dict, timeout: float):
    """(per-output cosines, source, error)."""
    sj = out_dir / "summary.json"
    if sj.is_file():
        try:
            r = _find_npu(json.loads(sj.read_text()))
            if r:
                return r, "summary.json", None
        except ValueError:
            pass
    log = work / "workbench.log"
    res = run_child([sys.executable, "-c", _WB, str(model), str(cfg)], log, timeout, env)
    text = log.read_text(errors="replace")
    m = re.search(r"^@@(.*)$", text, re.M)
    if res["rc"] == 0 and m:
        return json.loads(m.group(1)), "Workbench.final_cosine", None
    return None, "Workbench.final_cosine", first_error(log) or f"exit {res['rc']}"


def build_log_cosines(log: Path) -> dict:
    """The NPUBackend figures the build printed (a cross-check of ``reported``)."""
    txt = re.sub(r"\s+", " ", log.read_text(errors="replace"))
    return {m.group(1): float(m.group(2)) for m in re.finditer(
        r"final output (\S+) cosine \(NPUBackend\): ([-0-9.eE+naif]+)", txt)}


# ---------------------------------------------------------------- one model

def opset(path: Path) -> int | None:
    import onnx

    m = onnx.load(str(path), load_external_data=False)
    return next((o.version for o in m.opset_import if o.domain in ("", "ai.onnx")), None)


def run_model(spec: M.Spec, n: int, args, env: dict) -> dict:
    r: dict = {"name": spec.name, "family": spec.family, "package": f"{spec.dist}=={spec.version}",
               "file": spec.file, "features": list(spec.features)}
    model = M.model_path(spec)
    if model is None:
        r["error"] = f"{spec.dist}=={spec.version} not installed (make setup)"
        return r
    r["opset"] = opset(model)
    P.prepare(spec.name, max(n, P.N_SAMPLES))
    work = Path(tempfile.mkdtemp(prefix=f"conf-{spec.name}-"))
    try:
        out_dir = work / "build"
        log = work / "build.log"
        cmd = axnb_cmd() + ["build", "--input", str(model), "--config", str(spec.config),
                            "--output-dir", str(out_dir), "--overwrite"]
        if n != P.N_SAMPLES:
            cmd += ["--samples", str(n)]
        for kv in args.set or ():
            k, _, v = kv.partition("=")
            cmd += [f"--{k}", v]
        b = run_child(cmd, log, args.timeout, env)
        r["build"] = {**b, "ok": b["rc"] == 0, "error": None if b["rc"] == 0 else first_error(log)}
        if args.logs:
            args.logs.mkdir(parents=True, exist_ok=True)
            shutil.copy(log, args.logs / f"{spec.name}.build.log")
        r["build_log_npu_cosine"] = build_log_cosines(log)

        s0 = session(model)
        feeds = P.load_samples(spec, [i.name for i in s0.get_inputs()])[:n]
        del s0
        t0 = time.perf_counter()
        ref_names, ref = run_all(model, feeds)
        r["float_seconds_per_sample"] = round((time.perf_counter() - t0) / len(feeds), 4)
        r["float_nonfinite"] = bool(any(not np.isfinite(x).all() for o in ref for x in o))

        qpath = out_dir / "quant" / "quantized.onnx"
        if qpath.is_file():
            try:
                r["export"], r["export_cpu"] = measure(qpath, feeds, ref_names, ref)
            except Exception as e:  # noqa: BLE001
                r["export_error"] = _short(e)
        else:
            r["export_error"] = "no quant/quantized.onnx"

        if not args.no_ort:
            try:
                opath, err, how = ort_quantize(model, feeds, work)
                r["ort_pre"] = how
                if err:
                    r["ort_error"] = err
                else:
                    r["ort"], r["ort_cpu"] = measure(opath, feeds, ref_names, ref)
            except Exception as e:  # noqa: BLE001
                r["ort_error"] = _short(e)

        if not args.no_reported:
            rep, src, err = reported(out_dir, model, spec.config, work, env, args.timeout)
            r["reported_source"] = src
            if rep:
                r["reported"] = rep
            else:
                r["reported_error"] = err
            if rep and r.get("export"):
                d = [abs(rep[k] - v["cosine"]) for k, v in r["export"].items() if k in rep]
                r["reported_delta"] = max(d) if d else None
    except Exception as e:  # noqa: BLE001
        r["error"] = _short(e)
        r["traceback"] = traceback.format_exc()
    finally:
        if args.keep:
            r["work_dir"] = str(work)
        else:
            shutil.rmtree(work, ignore_errors=True)
    return r


def measure(path: Path, feeds, ref_names, ref) -> tuple[dict, dict]:
    """compare_outputs of a quantized model at each of LEVELS (exact, cpu)."""
    return tuple(compare_outputs(ref_names, ref, *run_all(path, feeds, lv))
                 for lv in LEVELS.values())


# ---------------------------------------------------------------- table

def _f(v, nd=5) -> str:
    if v is None:
        return "-"
    if isinstance(v, float) and math.isnan(v):
        return "nan"
    return f"{v:.{nd}f}"


def _cos_cell(per_out: dict | None, err: str | None, width: int = 28) -> str:
    if per_out:
        star = "*" if any(v.get("stacked") for v in per_out.values()) else ""
        return _f(worst(per_out)) + star
    return ("ERR " + err)[:width] if err else "-"


def row(r: dict) -> list[str]:
    b = r.get("build", {})
    exp = r.get("export")
    nanfree = "-" if not exp else ("yes" if not any(v["nonfinite"] for v in exp.values())
                                   else "NO")
    return [r["name"], r["family"], str(r.get("opset", "-")), ",".join(r["features"])[:46],
            "ok" if b.get("ok") else (f"rc={b.get('rc')}" if b else "ERR"), nanfree,
            _cos_cell(exp, r.get("export_error") if b.get("ok") else None),
            _cos_cell(r.get("export_cpu"), None),
            _cos_cell(r.get("ort"), r.get("ort_error")), _cos_cell(r.get("ort_cpu"), None),
            _f(worst(r.get("reported"))) if r.get("reported") else
            ("ERR " + (r.get("reported_error") or ""))[:28] if r.get("reported_error") else "-",
            _f(r.get("reported_delta"), 2 if (r.get("reported_delta") or 0) > 0.01 else 5)
            if r.get("reported_delta") is not None else "-",
            _f(b.get("seconds"), 1), _f(b.get("peak_rss_mb"), 0)]


HEAD = ["model", "family", "opset", "features", "build", "NaN-free", "axnb export cos",
        "(cpu)", "ORT quantize_static cos", "(cpu)", "axnb reported", "|d|", "build s",
        "RSS MB"]


def table(rows: list[dict]) -> str:
    cells = [HEAD] + [row(r) for r in rows]
    w = [max(len(c[i]) for c in cells) for i in range(len(HEAD))]
    lines = ["  ".join(c[i].ljust(w[i]) for i in range(len(HEAD))) for c in cells]
    lines.insert(1, "  ".join("-" * x for x in w))
    errs = [f"  {r['name']}: {r['build']['error']}" for r in rows
            if r.get("build") and not r["build"]["ok"]]
    errs += [f"  {r['name']}: {r['error']}" for r in rows if r.get("error")]
    foot = ["* = an output with under 8 elements per sample: cosine of the vector stacked across "
            "samples; cosines are the worst float output's (near-silent samples judged by "
            "their error)",
            "cos: the Q/DQ run as written (exact integer semantics, no graph optimization); "
            "(cpu): level all, this CPU's integer kernels (saturate on AVX2 without VNNI)"]
    return "\n".join(lines + foot + (["build / suite errors:"] + errs if errs else []))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", nargs="+", default=None, choices=list(M.BY_NAME), metavar="NAME")
    ap.add_argument("--samples", type=int, default=P.N_SAMPLES)
    ap.add_argument("--out", type=Path, default=ROOT / "out" / "conformance.json")
    ap.add_argument("--logs", type=Path, default=ROOT / "out" / "conformance",
                    help="folder for the build logs (default %(default)s)")
    ap.add_argument("--axnb-src", default=None, help="axnb source tree to run instead")
    ap.add_argument("--timeout", type=float, default=900.0, help="seconds per child")
    ap.add_argument("--no-ort", action="store_true", help="skip onnxruntime quantize_static")
    ap.add_argument("--no-reported", action="store_true", help="skip axnb's reported cosine")
    ap.add_argument("--set", nargs="+", metavar="KEY=VALUE",
                    help="config overrides for axnb build, e.g. quant.fusion=ort")
    ap.add_argument("--keep", action="store_true", help="keep the temporary build folders")
    args = ap.parse_args(argv)
    env = child_env(args.axnb_src)
    specs = [M.BY_NAME[n] for n in args.only] if args.only else M.MODELS
    missing = [s for s in specs if not M.installed(s)]
    if missing:
        print("not installed (run `make setup`, which installs CONF_PKGS): " +
              ", ".join(sorted({f"{s.dist}=={s.version}" for s in missing})), file=sys.stderr)
    rows = []
    for s in specs:
        t0 = time.perf_counter()
        print(f"== {s.name} ...", file=sys.stderr, flush=True)
        rows.append(run_model(s, args.samples, args, env))
        print(f"   {time.perf_counter() - t0:.1f} s: {row(rows[-1])}", file=sys.stderr,
              flush=True)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"samples": args.samples, "axnb_src": args.axnb_src,
                                        "models": rows}, indent=1, default=str))
    print(table(rows))
    print(f"\nwritten: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
