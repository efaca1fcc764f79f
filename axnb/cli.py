"""`axnb` command line: the analysis part of `pulsar2 build`, on the same engine calls.

Commands:
    axnb build --input M.onnx --config C.json --output-dir out/ [--quant.KEY VALUE ...]
    axnb demo                      `build --tune` on a zoo model that loses accuracy (MiniLM),
                                   then a recap: the loss, where it starts, the fix, the
                                   fixed figure, the exported configs, how long it took
    axnb zoo [prepare|list]        write the real sample sets / list the zoo models

`build` writes, through a temporary folder renamed at the end (an existing output folder is
never mixed with a new run; ``--overwrite`` replaces it):

    frontend/optimized.onnx                 the float model after the frontend
    quant/quantized.onnx                    QDQ model of the plan (loads in stock onnxruntime)
    quant/quant_config.json                 per-tensor QType, source, range, scale, zero point
    quant/calib_stats.npz                   the calibration statistics
    quant/debug/precision_analysis_table.txt, precision_analysis.mmd   (quant.precision_analysis)
    ort_quant/                              onnxruntime quantize_static reproducing the plan
                                            (python ort_quant/quantize.py; axnb.ortquant)
    pulsar2/config.json                     the config with the method, SmoothQuant and the
                                            plan as layer_configs (Pulsar2 recalibrates)
    pulsar2/quantonnx/                      model.onnx (QDQ, axnb's own parameters) + its
                                            config.json ("model_type": "QuantONNX")
    tune.json                               with --tune: the tuner's answer and trace
    analysis.json                           the Analysis the report renders (Analysis.load)
    report.html                             the self-contained report

It prints the tables, the final-output metrics in both modes, the task metric of the config's
``evaluation`` block (float vs quantized, both modes; the verdict then judges its drop against
``--max-drop``) and the next steps of :mod:`axnb.advice`, from the same Analysis snapshot the
report renders. ``--tune [TARGET]`` first runs the tuner (:mod:`axnb.tune`: calibration method,
SmoothQuant, U16 / FP32 groups and regions at the least cost; ``--tune-seconds``, default 900;
bare, it tunes what the verdict judges: the evaluation block's task metric within max_drop, else
the final cosine) and builds the rest on its answer, which is never below the start.
``--no-measure`` skips trying the next steps (minutes
on big models).

Errors print one line (no traceback unless ``--debug``) and exit with status 2.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

from axnb import metrics
from axnb.advice import FINAL
from axnb.errors import AxnbError
from axnb.files import atomic_dir, write_text
from axnb.results.task import MAX_DROP
from axnb.types import Col, WeightFix

# NOTE: the demo shows the loop on a model that loses accuracy at U8: MiniLM's nearest-
# neighbour agreement starts 37 points under float (cosine 0.72); a bare --tune (what the
# verdict judges: the task metric within max_drop) met it (0.625 -> 0.969) in 120 s of tuning,
# the whole demo 2 min 41 s on 2 cores at load average 3.9 (another job held a core; with a
# 60 s budget an unloaded build met it in 1 min 19 s, a loaded one did not: hence 120 s).
# PP-OCR det also loses (IoU 0.781) but its tuner needs minutes more (its full --tune build
# took 4 min 41 s); the CNN loses nothing (0.99999).
DEMO_MODEL = "minilm"
DEMO_TUNE_SECONDS = 120.0


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="axnb", description=__doc__.splitlines()[0])
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = p.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build", help="calibrate, quantize, analyse and report",
                       description="Unknown --a.b VALUE options are config overrides, e.g. "
                                   "--quant.calibration_method MSE")
    _build_args(b)
    d = sub.add_parser("demo", help="`build --tune` on a zoo model that loses accuracy")
    d.add_argument("--model", default=DEMO_MODEL, help="zoo model name (default %(default)s)")
    d.add_argument("--output-dir", default=None, help="default: the config's output_dir")
    d.add_argument("--tune-seconds", type=float, default=DEMO_TUNE_SECONDS, metavar="S",
                   help="the tuner's time budget (default %(default)s)")
    z = sub.add_parser("zoo", help="zoo models and their real sample sets")
    z.add_argument("action", choices=["prepare", "list"])
    return p


def _build_args(b: argparse.ArgumentParser) -> None:
    b.add_argument("--input", default=None, help="float ONNX model (default: config 'input')")
    b.add_argument("--config", required=True, help="Pulsar2-style JSON config")
    b.add_argument("--output-dir", default=None, help="default: config 'output_dir' or out/")
    b.add_argument("--input-shapes", default=None, help='e.g. "x:1x3x224x224"')
    b.add_argument("--overwrite", action="store_true", help="replace an existing output dir")
    b.add_argument("--search-target", type=float, default=None,
                   help="run the mixed-precision search to this final-output cosine")
    b.add_argument("--tune", type=float, nargs="?", const=-1.0, default=None, metavar="TARGET",
                   help="tune (method, SmoothQuant, U16/FP32): to this cosine, or without a "
                        "value to the config's task metric within max_drop when it has an "
                        f"evaluation block, else to cosine {FINAL}")
    b.add_argument("--tune-seconds", type=float, default=900.0, metavar="S",
                   help="the tuner's time budget (default %(default)s)")
    b.add_argument("--samples", type=int, default=None,
                   help="analysis samples to use (default: all of the analysis set)")
    b.add_argument("--fail-under", type=float, default=None, metavar="COSINE",
                   help="exit with status 3 when a final-output cosine (either mode) is below")
    b.add_argument("--max-drop", type=_max_drop, default=None, metavar="DROP",
                   help="accepted task-metric drop, in the metric's units (0.01 = 1 point of "
                        "top-1; default: the config's evaluation.max_drop, else "
                        f"{MAX_DROP})")
    b.add_argument("--no-measure", action="store_true",
                   help="do not try the next steps (calibration methods, SmoothQuant, U16); "
                        "the advice then recommends none of the unmeasured ones")
    b.add_argument("--dask", default=None, metavar="ADDRESS",
                   help="run on a Dask cluster: a scheduler address, or local:N for N local "
                        "workers (needs pip install axnb[dask])")


def _max_drop(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        v = float("nan")
    if not v >= 0 or v == float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r}: a number >= 0 in the metric's units "
                                         "(0.01 = 1 point of top-1)")
    return v


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args, rest = _parser().parse_known_args(argv)
    try:
        args.overrides = _overrides(rest) if args.cmd == "build" else {}
        if rest and args.cmd != "build":
            raise AxnbError(f"unrecognized arguments: {' '.join(rest)}")
        return {"build": build, "demo": _demo, "zoo": _zoo}[args.cmd](args)
    except Exception as e:  # noqa: BLE001 - the CLI's contract is one line, not a traceback
        if args.debug:
            raise
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        kind = "" if isinstance(e, AxnbError | FileNotFoundError | PermissionError) \
            else f"{type(e).__name__}: "
        # NOTE: "\n" first: a progress bar cut short by the error leaves its line unfinished
        print(f"\naxnb: error: {kind}{msg}", file=sys.stderr)
        return 2


def _overrides(rest: list[str]) -> dict[str, str]:
    """`--quant.calibration_method MSE` pairs -> {"quant.calibration_method": "MSE"}."""
    out, i = {}, 0
    while i < len(rest):
        key = rest[i]
        if not key.startswith("--") or "." not in key:
            raise AxnbError(f"unrecognized argument {key!r} (config overrides look like "
                            "--quant.calibration_method MSE)")
        if "=" in key:
            k, v = key[2:].split("=", 1)
            i += 1
        elif i + 1 < len(rest):
            k, v = key[2:], rest[i + 1]
            i += 2
        else:
            raise AxnbError(f"{key}: missing value")
        out[k] = v
    return out


def _zoo(args) -> int:
    from rich.console import Console
    from rich.table import Table

    from axnb import zoo

    if args.action == "prepare":
        for d in zoo.prepare():
            print(f"samples ready: {d}")
        return 0
    t = Table(title="axnb zoo")
    for c in ("name", "package", "summary"):
        t.add_column(c)
    for m in zoo.MODELS.values():
        t.add_row(m.name, f"{m.dist}=={m.version}", m.summary)
    Console().print(t)
    return 0


def _demo(args) -> int:
    """``axnb demo``: ``build --tune`` (bare: what the verdict judges) on a zoo model, then
    :func:`_recap` of what the build wrote."""
    import time

    from axnb import zoo

    t0 = time.perf_counter()
    zoo.prepare(args.model)
    ns = argparse.Namespace(config=str(zoo.config_path(args.model)), input=None,
                            output_dir=args.output_dir, debug=args.debug, input_shapes=None,
                            overwrite=True, search_target=None, samples=None, overrides={},
                            max_drop=None, no_measure=False, tune=-1.0,
                            tune_seconds=args.tune_seconds)
    rc = build(ns)
    if rc == 0:
        from rich.console import Console

        from axnb.config import load_config

        out = Path(args.output_dir or load_config(ns.config).output_dir or "out")
        Console(width=None if sys.stdout.isatty() else 160).print(
            _recap(out, ns.where_before, time.perf_counter() - t0), markup=False,
            soft_wrap=True)
    return rc


def _recap(out: Path, where: tuple[str, ...], seconds: float) -> str:
    """The demo's closing lines, read from the files the build wrote (``tune.json``,
    ``summary.json``): the loss, where it starts (``where``: the start plan's layer tables),
    the fix, the fixed figure, the exported configs, how long it took on how many cores."""
    import os

    from axnb.results.tune import TuneResult

    res, summ = TuneResult.load(out / "tune.json"), json.loads((out / "summary.json").read_text())
    task = summ["task"].get("NPUBackend") or next(iter(summ["task"].values()), None)
    fixed = f"{res.metric_name} {res.score:.5f}" + (
        f" (the build's NPUBackend run: {task['label']} {task['quantized']:.3f}, "
        f"float {task['float']:.3f})" if task else "")
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    return "\n".join([
        f"demo recap ({summ['model']}):",
        f"  the loss:   {res.metric_name} {res.start:.5f} at the start ({res.start_setting}, the "
        f"config's plan), target {res.target:g}",
        *(f"  where:      {w}" for w in where),
        f"  the fix:    {res.summary()}",
        f"  fixed:      {fixed}; verdict: {summ['verdict']}",
        f"  deploy it:  {(out / 'pulsar2' / 'config.json').resolve()} (Pulsar2 recalibrates), "
        f"or {(out / 'pulsar2' / 'quantonnx').resolve()}/ (axnb's own scales and weights)",
        f"  took {int(seconds // 60)} min {seconds % 60:.0f} s on {os.cpu_count()} cores "
        f"(load average {load})"])


# ---- build ---------------------------------------------------------------------------------
def build(args) -> int:
    """The `build` command; see the module docstring for what it writes."""
    from rich.console import Console

    from axnb import zoo
    from axnb.config import load_config, parse_input_shapes

    con = Console(width=None if sys.stdout.isatty() else 160)
    cfg = load_config(args.config)
    if args.overrides:
        cfg = cfg.with_overrides(args.overrides)
    src = args.input or cfg.input
    if not src:
        raise AxnbError("no model: give --input or set \"input\" in the config")
    model_file = zoo.resolve(src) if str(src).startswith("zoo:") else \
        (Path(src) if args.input else cfg.resolve_path(src))
    out = Path(args.output_dir or cfg.output_dir or "out")
    _check_output_dir(out, args.overwrite)
    shapes = parse_input_shapes(args.input_shapes) if args.input_shapes else None
    args.cluster = _cluster(con, getattr(args, "dask", None))
    try:
        with atomic_dir(out, replace=True) as tmp:
            _run(con, model_file, cfg, tmp, shapes, args)
    finally:
        if args.cluster is not None:
            args.cluster.close()
    con.print(f"[bold green]done[/]: outputs in {out.resolve()}; report: "
              f"{(out / 'report.html').resolve()}")
    fail = getattr(args, "fail_under", None)
    if fail is not None:
        summ = json.loads((out / "summary.json").read_text())
        low = [(mode, o, m[Col.COSINE]) for mode, outs in summ["final"].items()
               for o, m in outs.items() if not m[Col.COSINE] >= fail]
        if low:
            mode, o, c = min(low, key=lambda x: (x[2] == x[2], x[2]))
            con.print(f"[bold red]fail-under[/]: {o} ({mode}) cosine {c:.5f} < {fail}")
            return 3
    return 0


def _cluster(con, address):
    """The axnb.cluster.Cluster of ``--dask`` (None without it)."""
    if not address:
        return None
    from axnb.cluster import Cluster

    cl = Cluster(address)
    con.print(f"[bold]dask[/]: {cl!r}")
    return cl


def _weight_fix(con, wb) -> None:
    """What the config's weight-side keys ran, and the figure they recovered (measured)."""
    for note in wb.fix_notes:
        con.print(f"[bold yellow]weight fix[/]: {note}")
    if wb.equalization is not None:
        con.print(f"[bold]weight fix[/]: {wb.equalization.line()}")
    if not wb.plan.fixes:
        return
    t = time.perf_counter()
    line = wb.fix_report().line()
    ev = wb.evaluator()
    nearest = wb.plan.with_fixes(dict.fromkeys(wb.plan.fixes, WeightFix()))
    b, a = min(ev(nearest).values()), min(ev(wb.plan).values())
    con.print(f"[bold]weight fix[/]: {line}; final {ev.metric} {b:.5f} (round to nearest) -> "
              f"{a:.5f} (measured in {time.perf_counter() - t:.0f} s)")


def _check_output_dir(out: Path, overwrite: bool) -> None:
    if out.exists() and not out.is_dir():
        raise AxnbError(f"output dir {out} exists and is not a directory")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise AxnbError(f"output dir {out} exists and is not empty; pass --overwrite to "
                        "replace it or choose another --output-dir")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=out.parent, prefix=".axnb-probe-"):
            pass
    except OSError as e:
        raise AxnbError(f"output dir {out} is not writable: {e.strerror or e}") from None


def _run(con, model_file: Path, cfg, out: Path, shapes, args) -> None:
    from axnb import graph
    from axnb.results import OCol
    from axnb.workbench import Workbench

    model = graph.load(model_file, config=cfg, input_shapes=shapes, output_dir=out)
    con.print(f"[bold]frontend[/]: {model_file.name}: {len(model.nodes)} nodes after "
              f"optimization -> {out.name}/frontend/optimized.onnx")
    wb = Workbench(model, cfg, cluster=getattr(args, "cluster", None))
    if args.samples:
        n = min(args.samples, len(wb.samples))
        wb.set_samples(wb.samples[:n], wb.sample_names[:n],
                       origin=f"the first {n} of {wb.sample_origin} (--samples)")
    con.print(f"[bold]samples[/]: calibration {wb.stats.samples}, analysis "
              f"{len(wb.samples)}: {wb.sample_origin}")
    con.print(_quant_config_table(wb))
    fit = wb.quantized().fitted
    if fit:
        con.print(f"[bold]bias fit[/]: {sum(fit.values())} channels of {len(fit)} weights get a "
                  "larger weight scale so that their S32 bias fits int32 at s_in * s_w "
                  "(onnxruntime's rule; conv_bias_data_type FP32 keeps biases float)")
    _weight_fix(con, wb)
    s = wb.stats
    s.save(out / "quant" / "calib_stats.npz")
    con.print(_df_table(wb.outliers().worst(10).drop(columns=[OCol.OP_TYPE]),
                        "Ratio of outliers in tensor [level=Log(Max_Pertensor/Max_Perchannel)]"))
    if args.search_target:
        from axnb.search import search

        # NOTE: ranked by the PerLayer table (one pass) instead of one evaluation per layer.
        res = search(wb.evaluator(), wb.plan, target=args.search_target,
                     ranking=wb.ranking())
        b, f = res.before_after
        keep = res.improves
        if keep:
            res.apply(wb)
        con.print(f"[bold]search[/]: {len(res.promoted)} layers to {res.qtype.value}: "
                  f"cosine {b:.5f} -> {f:.5f}, target met: {res.met} after {res.evaluations} "
                  f"evaluations{'' if keep else '; not kept (it lowers the score)'}")
    if getattr(args, "tune", None) is not None:
        _tune(con, wb, args, out)
    con.print(_df_table(_layer_config_frame(wb), "Layer Config Table"))
    reports = _precision(con, wb, out) if cfg.quant.precision_analysis else {}
    wb.export_quantized(out / "quant" / "quantized.onnx")
    wb.export_ort(out / "ort_quant")
    wb.export_config(out / "pulsar2" / "config.json")
    wb.export_quantonnx(out / "pulsar2" / "quantonnx")
    if wb.equalization is not None or any(f.bias for f in wb.plan.fixes.values()):
        wb.export_float(out / "pulsar2" / "float_rewritten.onnx")
    _write_json(out / "quant" / "quant_config.json", _quant_config(wb))
    from axnb.checks import diagnose
    from axnb.trials import measured, needs_steps
    from axnb.view.report import write_report

    an = _snapshot(con, wb, reports, args)
    measure = not getattr(args, "no_measure", False)
    if needs_steps(an) and measure:
        # NOTE: also when only the task metric drops too much (each step then scored on it)
        con.print("[bold]next steps[/]: trying each (calibration methods, SmoothQuant, U16)...")
    an = measured(wb, an) if measure else an
    an = an.replace(diagnosis=diagnose(wb, analysis=an))
    con.print(an.diagnosis["deployed input"].line(), markup=False, soft_wrap=True)
    _final(con, an, measure)
    an.save(out / "analysis.json")
    write_report(an, out / "report.html")
    _write_json(out / "summary.json", summary(an, out, reports, measure))


def _tune(con, wb, args, out: Path) -> None:
    """``--tune``: run the tuner, print its line, save its trace, adopt its answer."""
    # NOTE: a bare --tune aims at what the verdict judges: the task metric when the config
    # has an evaluation block (its max_drop, or --max-drop), else the final cosine
    task = args.tune < 0 and wb.config.evaluation is not None
    drop = args.max_drop if getattr(args, "max_drop", None) is not None else wb._max_drop()
    aim = f"{wb.config.evaluation.metric} drop <= {drop:g}" if task else \
        f"cosine {FINAL if args.tune < 0 else args.tune:g}"
    # NOTE: where the loss starts before the tuner moves anything (one compare pass; the
    # tuner's PerLayer ranking of the start plan reads the same cached table)
    from axnb.advice import where_lines

    args.where_before = where_lines(wb.report(["EndToEnd", "PerLayer"]))
    con.print("[bold]before tuning[/]:")
    for w in args.where_before:
        con.print(f"    {w}", markup=False, soft_wrap=True)
    con.print(f"[bold]tune[/] to {aim}: calibration methods, SmoothQuant, U16 / FP32 groups "
              f"and regions (budget {args.tune_seconds:g} s)...")
    res = wb.tune(target=None if task or args.tune < 0 else args.tune,
                  max_drop=drop if task else None, max_seconds=args.tune_seconds)
    res.save(out / "tune.json")
    res.apply(wb)
    con.print(f"[bold]{res.line()}[/]")


def _snapshot(con, wb, reports: dict, args):
    """The build's Analysis: both modes, with the task metric when the config has an
    evaluation block (at ``--max-drop`` when given)."""
    task = wb.config.evaluation is not None
    if task:
        ts = wb.config.evaluation
        con.print(f"[bold]task metric[/]: {ts.metric} on {ts.dataset or 'the analysis samples'}"
                  ", float vs quantized in both modes...")
    an = wb.snapshot(reports=reports, modes=("Reference", "NPUBackend"), task=task)
    md = getattr(args, "max_drop", None)
    if md is not None and not task:
        con.print("[bold yellow]--max-drop ignored[/]: the config has no \"evaluation\" block "
                  "(no task metric to judge; see the README's Configs section)")
    if md is None:
        return an
    from axnb import advice

    an = an.replace(max_drop=md)
    return an.replace(advice=advice.for_analysis(an))  # NOTE: the advice reads the verdict


NOT_MEASURED = ("next steps not measured (--no-measure): SmoothQuant and U16 were not tried, "
                "so not recommended; run without --no-measure to try them")


def summary(an, out: Path, reports: dict | None = None, measured: bool = True) -> dict:
    """``summary.json``: per mode and output the final metrics and their per-sample spread,
    the task metric per mode (``task``, with the config's evaluation block), the verdict (the
    task metric's at ``max_drop`` when measured, else the cosine's; ``cosine`` keeps that one),
    the next steps (``measured``: False with ``--no-measure``), the first non-finite tensors,
    the files written."""
    from axnb.trials import needs_steps

    nonfinite = {label: r.meta["nonfinite"] for label, r in (reports or {}).items()
                 if r.meta.get("nonfinite")}
    nonfinite |= {f"final {mode} {o}": m["nonfinite"]["tensor"] for mode, outs in an.final.items()
                  for o, m in outs.items() if m.get("nonfinite")}
    adv, tv = an.advice, an.task_verdict()
    files = sorted(str(f.relative_to(out)) for f in out.rglob("*") if f.is_file())
    return {"model": an.model.get("name"), "method": an.method, "mode": an.mode,
            "samples": an.samples, "threshold": adv.threshold,
            "ok": tv[0] if tv else adv.ok, "verdict": tv[1] if tv else adv.headline,
            "cosine": {"ok": adv.ok, "verdict": adv.headline},
            "max_drop": an.max_drop if an.task else None, "task": _task_summary(an),
            "measured": measured, "next_steps": list(an.steps()),
            "next_steps_note": "" if measured or not needs_steps(an) else NOT_MEASURED,
            "measured_steps": [t.to_dict() for t in adv.trials],
            "not_recommended": list(adv.details.get("not_recommended", [])),
            "final": _final_summary(an), "first_nonfinite": nonfinite,
            "files": files + ["summary.json"]}


def _final_summary(an) -> dict:
    final = {}
    names = list(an.sample_names) or [f"sample #{i}" for i in
                                      range(an.samples.get("analysis", 0))]
    for mode, outs in an.final.items():
        final[mode] = {}
        for o, m in outs.items():
            if metrics.SKIPPED in m:
                final[mode][o] = {k: m[k] for k in (metrics.SKIPPED, "dtype", "equal_samples",
                                                    "samples")}
                continue
            per = list(m.get("per_sample") or [])
            worst = sorted(range(len(per)), key=lambda i: per[i])[:3]
            final[mode][o] = {
                **{k: m[k] for k in Col.METRICS if k in m},
                "across_samples": bool(m.get("across_samples")),
                "shape_mismatch": list(m.get("shape_mismatch", [])),
                "samples": len(per) or an.samples.get("analysis"),
                "per_sample": ({"mean": sum(per) / len(per), "min": min(per),
                                "worst": [{"sample": i, "name": names[i] if i < len(names)
                                           else f"sample #{i}", Col.COSINE: per[i]}
                                          for i in worst]}
                               if per else None),
                **{k: m[k] for k in ("raw_cosine", "silent", "nonfinite") if k in m},
                "notes": metrics.final_notes(m)}
    return final


def _task_summary(an) -> dict:
    """mode -> the task metric of summary.json (float, quantized, drop, flips, verdict)."""
    from axnb.results.task import task_label, task_line, task_verdict

    out = {}
    for mode, r in an.task.items():
        ok, text = task_verdict({mode: r}, an.max_drop, an.max_drop_source())
        out[mode] = {"metric": r.metric, "label": task_label(r), "output": r.output,
                     "samples": r.samples, "float": r.float_score, "quantized": r.quant_score,
                     "drop": r.drop, "flips": len(r.flips), "flipped": list(r.flips),
                     "cosine": r.cosine, "line": task_line(r), "note": r.note,
                     "verdict": {"ok": ok, "text": text, "max_drop": an.max_drop}}
    return out


def _precision(con, wb, out: Path) -> dict:
    from axnb.view.text import render_console, write_debug

    method = wb.config.quant.precision_analysis_method
    rep = wb.report(method)
    # NOTE: the terminal gets the worst rows with full names, fitted to its width; the whole
    # table (every column, every row) is written to quant/debug/precision_analysis_table.txt
    con.print(render_console(rep, width=con.width))
    write_debug(rep, out)
    return {f"{method.value} {wb.mode.value}": rep}


def _final(con, an, measured: bool = True) -> None:
    """The final-output cosine per mode and output, the task metric per mode, then the verdict
    (the task metric's when measured) and the advice (from the Analysis)."""
    from rich.markup import escape

    from axnb.advice import line, spread_text, spreads
    from axnb.results.task import flipped_text, task_line
    from axnb.trials import needs_steps

    adv, sp = an.advice, spreads(an)
    for mode in ("Reference", "NPUBackend"):
        for o, c in an.final_cosine(mode).items():
            verdict = "roughly normal" if c >= adv.threshold else \
                f"below {line(adv.threshold)}: bisect layer by layer"
            con.print(f"final output [cyan]{o}[/] cosine ({mode}): [bold]{c:.5f}[/] - {verdict}")
            for extra in (spread_text(sp.get(mode, {}).get(o), adv.threshold),
                          *metrics.final_notes(an.final[mode][o])):
                con.print(f"    {extra}", markup=False)
        for o, why in an.skipped(mode).items():
            con.print(f"final output {o} ({mode}): {why}", markup=False)
    for r in an.task.values():
        # NOTE: a callable metric that returns one number has no per-sample rows to count
        on = f" on {r.samples} samples" if r.samples else ""
        con.print(f"task metric{on}: {escape(task_line(r))}")
        for extra in (flipped_text(r), r.note):
            if extra:
                con.print(f"    {extra}", markup=False)
    tv = an.task_verdict()
    if tv:
        con.print(f"[bold]verdict[/]: {escape(tv[1])}")
    head = "cosine" if tv else "verdict" if adv.ok else "next steps"
    con.print(f"[bold]{head}[/]: {escape(adv.headline)}")
    for w in adv.where:
        con.print(f"    {w}", markup=False)
    for step in an.steps():
        con.print(f"  - {step}", markup=False)
    for step in adv.details.get("not_recommended", []):
        con.print(f"  x not recommended: {step}", markup=False)
    if not measured and needs_steps(an):
        con.print(f"  {NOT_MEASURED}", markup=False)


def _quant_config_table(wb):
    from rich.table import Table

    from axnb.data import is_image_input

    q = wb.config.quant
    t = Table(title="Quant Config Table")
    for c in ("Input", "Shape", "Dataset", "Data Format", "Tensor Format", "Mean", "Std"):
        t.add_column(c)
    for name, spec in wb.model.inputs.items():
        ic = wb.config.input_config(name)
        proc = wb.config.input_processor(name)
        # NOTE: a colour order means something for images only, not for token ids or audio
        image = is_image_input(spec, ic.calibration_format if ic else None)
        t.add_row(name, "x".join(map(str, spec.shape)),
                  str(ic.calibration_dataset if ic else "-"),
                  ic.calibration_format.value if ic else "-",
                  proc.tensor_format.value if image else "-",
                  str(list(ic.calibration_mean) if ic and ic.calibration_mean else "-"),
                  str(list(ic.calibration_std) if ic and ic.calibration_std else "-"))
    t.caption = (f"calibration: {wb.stats.samples} samples, method {wb.method.value}; analysis: "
                 f"{len(wb.samples)} samples, {q.precision_analysis_method.value} "
                 f"{wb.mode.value}; smooth quant: {bool(wb.smooth)}")
    return t


def _layer_config_frame(wb):
    import pandas as pd

    rows = [{"Layer": n, "Op": wb.model.node_by_name[n].op_type, "QType": qt.value,
             "Source": wb.plan.layer_sources.get(n, "")}
            for n, qt in wb.plan.layer_types.items() if qt is not wb.plan.default]
    if not rows:
        rows = [{"Layer": "(all)", "Op": "", "QType": wb.plan.default.value, "Source": "default"}]
    return pd.DataFrame(rows)


def _df_table(df, title: str, floats: str = "{:.4f}"):
    from rich.table import Table

    t = Table(title=title)
    for c in df.columns:
        t.add_column(str(c))
    for _, row in df.iterrows():
        t.add_row(*[floats.format(v) if isinstance(v, float) else str(v) for v in row])
    return t


def _quant_config(wb) -> dict:
    qm = wb.quantized()
    tensors = {}
    for t, qt in wb.plan.acts.items():
        q = qm.qparams.get(t)
        tensors[t] = {"qtype": qt.value, "source": wb.plan.sources.get(t, ""),
                      **({"range": [q.lo, q.hi], "scale": q.scale, "zero_point": q.zero_point}
                         if q else {})}
    weights = {w: {"qtype": qt.value, "source": wb.plan.sources.get(w, "")}
               for w, qt in wb.plan.weights.items()}
    return {"calibration_method": wb.method.value, "calibration_samples": wb.stats.samples,
            "layer_configs": wb.plan.to_layer_configs(), "tensors": tensors, "weights": weights}


def _write_json(path: Path, obj) -> None:
    write_text(path, json.dumps(obj, indent=1))


if __name__ == "__main__":
    sys.exit(main())
