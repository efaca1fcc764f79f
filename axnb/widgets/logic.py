"""What the Explorer does, as pure functions of a Workbench and DataFrames (no ipywidgets),
so that all of it is testable without a browser.

Example:
    >>> import pandas as pd
    >>> df = pd.DataFrame({"Operator": list("abc"), "Cosin": [1.0, 0.5, 0.9]})
    >>> rows_for_page(df, size=2, sort="cosine").rows["Operator"].tolist()
    ['b', 'c']
"""

from __future__ import annotations

import html
from pathlib import Path
from typing import NamedTuple

from axnb.advice import FINAL
from axnb.types import Col

THRESHOLD = FINAL
CALIB_METHODS = ("MinMax", "MSE", "Percentile", "KL")
ANALYSIS_METHODS = ("EndToEnd", "PerLayer")
MODES = ("Reference", "NPUBackend")
SORTS = ("depth", "cosine", "cosine desc")
HIGH = ("U16", "S16")


class Page(NamedTuple):
    """One page of the layer table: its rows, the page shown, how many pages and rows match."""

    rows: object
    page: int
    pages: int
    total: int


def rows_for_page(df, page: int = 0, size: int = 25, query: str = "", worst: int = 0,
                  sort: str = "depth") -> Page:
    """Filter, sort and cut one page of a layer table (index = depth in the graph).

    Args:
        df: ``LayerReport.to_frame()``.
        page: 0-based, clamped to the pages that exist.
        size: rows per page.
        query: case-insensitive substring of Operator, Type or Output Tensor.
        worst: keep only the ``worst`` lowest-cosine rows (0 = all).
        sort: "depth" (graph order), "cosine" (worst first) or "cosine desc".

    Example:
        >>> import pandas as pd
        >>> df = pd.DataFrame({"Operator": [f"conv{i}" for i in range(1500)],
        ...                    "Cosin": [1 - i / 1e4 for i in range(1500)]})
        >>> p = rows_for_page(df, page=99, query="conv1")
        >>> p.page, p.pages, p.total
        (24, 25, 611)
    """
    cols = [c for c in (Col.OPERATOR, Col.TYPE, Col.OUTPUT) if c in df]
    if query:
        hit = df[cols].astype(str).apply(
            lambda s: s.str.lower().str.contains(query.lower(), regex=False))
        df = df[hit.any(axis=1)]
    if worst and worst > 0:
        df = df.sort_values(Col.COSINE, kind="stable", na_position="first").head(worst)
    df = (df.sort_values(Col.COSINE, ascending=sort == "cosine", kind="stable",
                         na_position="first") if sort.startswith("cosine")
          else df.sort_index(kind="stable"))
    pages = max(1, -(-len(df) // size))
    page = min(max(int(page), 0), pages - 1)
    return Page(df.iloc[page * size:(page + 1) * size], page, pages, len(df))


def toggleable(plan) -> set[str]:
    """Layers that get a U16 toggle: compute layers (data-movement ops follow their inputs).

    Example:
        >>> "p2o.pd_op.conv2d.0.0" in toggleable(wb.plan)         # doctest: +SKIP
        True
    """
    return {n for n in plan.layer_types
            if not plan.layer_sources.get(n, "").startswith("follows")}


def is_u16(plan, layer: str) -> bool:
    """Whether ``layer`` runs at 16 bits in ``plan``."""
    return str(plan.layer_types.get(layer, "")) in HIGH


def apply_toggle(wb, layer: str, on: bool):
    """``layer`` to U16 (on), or back to its config type, U8 if that is 16-bit (off).

    Example:
        >>> apply_toggle(wb, "HardSwish.0", True).plan.layers("U16")  # doctest: +SKIP
        ['HardSwish.0']
    """
    if on:
        return wb.set_qtype(layer, "U16")
    base = wb.plan.clear(layer)
    # NOTE: a layer U16 by layer_configs stays U16 when its override is cleared: force U8.
    return wb.set_qtype(layer, "U8") if is_u16(base, layer) else wb.set_plan(base)


def layer_report(wb, method: str = "EndToEnd"):
    """LayerReport of the current plan in ``wb.mode`` (cached by the Workbench).

    Example:
        >>> layer_report(wb, "PerLayer").worst(3)                   # doctest: +SKIP
    """
    return wb.report(method)


def task_short(report) -> str:
    """A task report in a few words, for the status line.

    Example:
        >>> from axnb.evaluate import TaskReport
        >>> task_short(TaskReport("top1", "p", 0.90625, 0.9140625))
        'top-1 float 0.906 -> quantized 0.914'
    """
    from axnb.results.analysis import task_label

    def num(v):
        return f"{v:.3f}" if v == v else "NaN (no finite value)"
    return f"{task_label(report)} float {num(report.float_score)} -> quantized " \
           f"{num(report.quant_score)}"


def dashboard_link(cluster) -> str | None:
    """The Dask dashboard URL of a Workbench's cluster (``wb.cluster``), or None.

    Example:
        >>> dashboard_link(None) is None
        True
    """
    if cluster is None:
        return None
    try:
        link = getattr(cluster, "dashboard_link", None) or cluster.client.dashboard_link
    except Exception:  # noqa: BLE001 - a closed or odd cluster shows no link, not an error
        return None
    return str(link) if link else None


def summary(analysis, method: str | None = None, dashboard: str | None = None) -> dict:
    """What the Summary tab shows, from an :class:`~axnb.results.Analysis` (the report's and
    the CLI's numbers and advice): verdict, next steps, U16 count, plan, methods, outputs, the
    task metric (when the snapshot has one) and the Dask ``dashboard`` link (when given).

    Example:
        >>> summary(wb.snapshot(), "EndToEnd")["u16"]               # doctest: +SKIP
        0
    """
    from axnb.advice import spread_text, spreads
    from axnb.results.analysis import flipped_text, task_line

    an = analysis
    adv, final = an.advice, an.final_cosine()
    sp = spreads(an, adv.threshold).get(an.mode, {})
    layers = an.plan.get("layers", {})
    tv = an.task_verdict()
    return {"ok": adv.ok, "verdict": adv.headline, "steps": list(an.steps()),
            "task": [(m, task_line(r), task_short(r)) for m, r in an.task.items()],
            "flipped": [flipped_text(r) for r in an.task.values()],
            "task_ok": tv[0] if tv else None, "task_verdict": tv[1] if tv else "",
            "dashboard": dashboard,
            "where": list(adv.where), "rejected": list(adv.details.get("not_recommended", [])),
            "u16": sum(len(layers.get(q, [])) for q in HIGH), "plan": an.plan.get("summary", ""),
            "calibration": an.method, "analysis": method or an.analysis_method,
            "mode": an.mode, "smooth": an.smoothing is not None,
            "samples": an.samples.get("analysis"),
            "outputs": [(o, c, c >= adv.threshold, spread_text(sp.get(o), adv.threshold))
                        for o, c in final.items()]}


def change(before: float | None, after: float | None) -> str:
    """The change of the final cosine (min over outputs) an action made, for the status line;
    a drop is marked. Empty when there is no "before".

    Example:
        >>> change(0.9675, 0.9894), change(0.9675, 0.9447), change(None, 0.9)
        ('0.96750 -> 0.98940 (+0.02190), ', '0.96750 -> 0.94470 (-0.02280, lowers it), ', '')
    """
    if before is None or after is None:
        return ""
    d = after - before
    return f"{before:.5f} -> {after:.5f} ({d:+.5f}{', lowers it' if d < 0 else ''}), "


def status_line(s: dict) -> str:
    """A :func:`summary` as one line of text (the Explorer's header).

    Example:
        >>> status_line(summary(wb.snapshot(), "EndToEnd"))         # doctest: +SKIP
        'U16 layers: 0 | final cosine 99.0000% >= 98% | MinMax | EndToEnd | Reference'
    """
    worst = min((c for _, c, *_ in s["outputs"]), default=float("nan"))
    task = "".join(f" | {short}" for _, _, short in s.get("task", ()))
    return (f"U16 layers: {s['u16']} | final cosine {worst:.4%} "
            f"{'>=' if s['ok'] else '<'} {THRESHOLD:.0%}{task} | {s['calibration']} | "
            f"{s['analysis']} | {s['mode']}{' | SmoothQuant' if s['smooth'] else ''}"
            + (f" | {s['samples']} samples" if s.get("samples") else ""))


def row_html(r, active: bool, widths: tuple) -> str:
    """One layer-table row as fixed-width cells (aligned across rows); ``r`` a frame row."""
    from axnb.view.tables import QTYPE_COLOURS, cosine_colour

    def num(col, spec):
        v = r.get(col)
        return "-" if v is None or v != v else spec.format(v)

    cells = [(r.name, ""), (r.get(Col.OPERATOR, ""), ""), (r.get(Col.TYPE, ""), ""),
             (r.get(Col.OUTPUT, ""), ""),
             (r.get(Col.QDTYPE, ""), QTYPE_COLOURS.get(str(r.get(Col.QDTYPE)), "")),
             (num(Col.COSINE, "{:.6f}"), cosine_colour(r.get(Col.COSINE, float("nan")))),
             (num(Col.MSE, "{:.2e}"), ""), (num(Col.SQNR, "{:.1f}"), "")]
    out = "".join(
        f'<div title="{html.escape(str(t))}" style="flex:none;width:{w}px;overflow:hidden;'
        f'text-overflow:ellipsis;white-space:nowrap;padding:0 4px;background:{bg or "none"}">'
        f"{html.escape(str(t))}</div>" for (t, bg), w in zip(cells, widths))
    return (f'<div style="display:flex;font:12px monospace;{"" if active else "color:#888"}">'
            f"{out}</div>")


def export_all(wb, folder: str | Path, analysis=None) -> dict[str, Path]:
    """Write quantized.onnx, config.json (the plan as layer_configs) and report.html (of
    ``analysis``, default ``wb.snapshot()``).

    Example:
        >>> export_all(wb, "out/run1")["config"].name               # doctest: +SKIP
        'config.json'
    """
    from axnb.view.report import write_report

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    return {"quantized": wb.export_quantized(folder / "quantized.onnx"),
            "config": wb.export_config(folder / "config.json"),
            "report": write_report(analysis if analysis is not None else wb.snapshot(),
                                   folder / "report.html")}


def io_check(wb, quantized_path: str | Path) -> tuple:
    """(Check, HTML table) of the inputs/outputs of the float vs the exported model: one
    check (:func:`axnb.checks.input_types`), rendered by :func:`axnb.view.tables.io_table`.

    Example:
        >>> io_check(wb, "out/quantized.onnx")[0].verdict          # doctest: +SKIP
        'pass'
    """
    from axnb.checks.inputs import input_types
    from axnb.view.tables import io_table, to_html

    check = input_types(wb.model, quantized_path)
    return check, to_html(io_table(check))
