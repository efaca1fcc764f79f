"""The HTML report: one self-contained offline file (inline CSS, inline SVG, a tiny script).

It renders an :class:`~axnb.results.Analysis` (``Workbench.snapshot()``) and runs no model: a
saved Analysis re-renders without the model. It names no external URL (no CDN, font or image),
so it opens from disk anywhere. The layer tables hold every tensor, worst first, in a scrollable
box that sorts and filters; cells carry one class at most, so a 1500-layer model stays well
under 5 MB.

Example:
    >>> from axnb.view.report import write_report                  # doctest: +SKIP
    >>> write_report(wb.snapshot(), "out/report.html")             # doctest: +SKIP
    PosixPath('out/report.html')
"""

from __future__ import annotations

import json
import math
from enum import Enum
from pathlib import Path

from markupsafe import Markup, escape

from axnb import advice
from axnb.advice import FINAL, LAYER, line
from axnb.metrics import final_notes, scored
from axnb.results import Analysis, OCol
from axnb.results.layers import worst_order
from axnb.types import Col, QType
from axnb.view.compact import bucket_css, is_number, table
from axnb.view.tables import OUTLIER_SHOWN, diagnosis_table, frame_of, outlier_html, to_html

LAYER_COLUMNS = Col.TENSOR_TABLE
FORMULAS = (
    ("Cosin (cosine)", "sum(x*y) / (||x|| ||y||), per sample on the flattened tensors, "
                       "averaged over samples (1 when both are all-zero)"),
    ("MSE", "mean((x - y)^2)"),
    ("SQNR", "10 log10(sum x^2 / sum (x - y)^2), in dB"),
    ("MaxAbs", "max |x - y|"),
)
TASK_ROWS = 100
_RVB = Col.RVB.removesuffix(" " + Col.COSINE)  # "Ref vs Backend", any per-output suffix
RVB_ROWS = 50


def _mode(value) -> str:
    from axnb.errors import ConfigError
    from axnb.types import Mode, parse_enum

    try:
        return parse_enum(Mode, value).value
    except ConfigError:  # NOTE: free text in a DataFrame's attrs is shown as it is
        return str(value or "")


def _meta_parts(meta: dict) -> tuple[list[str], list[tuple]]:
    """(notes, chips): note texts (lists flattened) and the scalar items to show."""
    notes = [str(n) for k, v in meta.items() if "note" in k.lower() or "subsampl" in k.lower()
             for n in (v if isinstance(v, (list, tuple)) else [v])]
    chips = [(k, getattr(v, "value", v)) for k, v in meta.items()
             if k not in ("kind", "columns") and isinstance(v, (str, int, float, Enum))]
    return notes, chips


def _graph_order(df, an: Analysis):
    # NOTE: isolation rows come worst first; plot and number them in graph order.
    pos = {n: j for j, n in enumerate(an.model.get("node_order", []))}
    order = df[Col.OPERATOR].map(pos).fillna(len(pos)).argsort(kind="stable")
    return df.iloc[order].reset_index(drop=True)


def _final_rows(final, label: str, mode: str) -> list[dict]:
    if hasattr(final, "to_dict"):
        final = final.to_dict("index")
    names = {"cosin": Col.COSINE, "cosine": Col.COSINE, "mse": Col.MSE, "sqnr": Col.SQNR,
             "maxabs": Col.MAXABS, "max_abs": Col.MAXABS}
    rows = []
    for out, v in dict(final or {}).items():
        vals = v if isinstance(v, dict) else {Col.COSINE: v}
        rows.append({"Output": out, "Mode": mode, "From": label,
                     **{names.get(str(k).lower(), k): float(x) for k, x in vals.items()
                        if is_number(x) or hasattr(x, "item")}})
    return rows


def _layer_section(i: int, label: str, rep, an: Analysis, threshold: float,
                   fine: float) -> dict:
    from axnb.view.plots import cosine_along_depth, fig_to_svg

    df, meta, final = frame_of(rep)
    df = df.reset_index(drop=True)
    if meta.get("kind") == "layers" and Col.OPERATOR in df:
        df = _graph_order(df, an)
    cols = [c for c in LAYER_COLUMNS if c in df] + [c for c in df if c not in LAYER_COLUMNS]
    if Col.ORIGINAL in df and (df[Col.ORIGINAL] == df.get(Col.OUTPUT)).all():
        cols.remove(Col.ORIGINAL)
    u16 = {n for q, ns in an.plan.get("layers", {}).items() if QType(q).bits == 16 for n in ns}
    svg = fig_to_svg(cosine_along_depth(df, threshold, u16=u16, fine=fine, title=label))
    worst = df.iloc[worst_order(df)]
    mode = _mode(meta.get("mode", ""))
    notes, chips = _meta_parts(meta)
    return {"id": f"layers{i}", "label": label, "df": df, "meta": meta, "mode": mode,
            "method": str(getattr(meta.get("method"), "value", meta.get("method", ""))),
            "final": _final_rows(final, f"{label} report", mode), "notes": notes, "chips": chips,
            "n": len(df), "n_low": int((df[Col.COSINE] < threshold).sum()),
            "n_fine": int((df[Col.COSINE] < fine).sum()), "svg": Markup(svg),
            "table": table(worst[cols], threshold=threshold, fine=fine, index=True,
                            cls="t sortable layers")}


def _rvb_pairs(sections: list[dict], threshold: float, fine: float) -> list[dict]:
    out, by_method = [], {}
    for s in sections:
        by_method.setdefault(s["method"], {}).setdefault(s["mode"], s)
    for method, d in by_method.items():
        if not {"Reference", "NPUBackend"} <= set(d):
            continue
        keys = [c for c in (Col.OUTPUT, Col.OPERATOR) if c in d["Reference"]["df"]]
        ref = d["Reference"]["df"][keys + [Col.COSINE]]
        be = d["NPUBackend"]["df"][[keys[0], Col.COSINE]]
        m = ref.merge(be, on=keys[0], suffixes=(" Reference", " Backend"))
        m["Delta"] = m[f"{Col.COSINE} Backend"] - m[f"{Col.COSINE} Reference"]
        top = m.iloc[m["Delta"].abs().argsort()[::-1][:RVB_ROWS]]
        out.append({"text": f"{method}: {len(m)} tensors in both reports; largest cosine "
                            f"difference {m['Delta'].abs().max():.3g}; the {len(top)} "
                            "largest:", "table": table(top, threshold=threshold, fine=fine)})
    return out


def _ref_vs_backend(sections: list[dict], threshold: float, fine: float) -> list[dict]:
    """Reference vs Backend: two reports of one method in both modes, or the Backend
    report's own "Ref vs Backend Cosin" column."""
    out = _rvb_pairs(sections, threshold, fine)
    for s in sections:
        col = next((c for c in s["df"] if _RVB in str(c)), None)
        if col is None or not len(s["df"]):
            continue
        df = s["df"][[c for c in (Col.OUTPUT, Col.OPERATOR, Col.COSINE, col) if c in s["df"]]]
        low = df.iloc[df[col].fillna(math.inf).argsort(kind="stable")[:RVB_ROWS]]
        first = low.iloc[0]
        out.append({"text": f"{s['label']}: cosine between the Reference and the Backend "
                            f"tensors ({col}); lowest {first[col]:.6f} at "
                            f"{first.get(Col.OUTPUT, '')}; the {len(low)} lowest:",
                    "table": table(low, threshold=threshold, fine=fine)})
    return out


def _model_info(an: Analysis) -> dict:
    m = an.model
    return {"name": m.get("name", ""), "nodes": m.get("nodes", ""), "opset": m.get("opset", ""),
            "io": [tuple(x) for x in m.get("io", [])]}


def _plan(an: Analysis) -> dict:
    import pandas as pd

    default = an.plan.get("default", "U8")
    df = pd.DataFrame(an.plan.get("rows", []))
    keep = df[(df["qtype"] != default) & (df["qtype"] != "S8")] if len(df) else df
    # NOTE: tensors inside a fused group stay float by construction, not by the plan's choice.
    inside = keep["source"].astype(str).str.startswith("inside ") if len(keep) else keep
    n_inside = int(inside.sum()) if len(keep) else 0
    keep = keep[~inside] if len(keep) else keep
    return {"summary": an.plan.get("summary", ""), "n": len(keep), "default": default,
            "inside": n_inside, "table": table(keep, cls="t sortable") if len(keep) else None}


class _Absmax:
    """The per-channel abs-max kept in an Analysis, shaped like CalibStats for the plot."""

    def __init__(self, absmax: dict) -> None:
        self.absmax = absmax

    def observer(self, tensor: str):
        import numpy as np

        return type("Obs", (), {"channel_absmax": np.asarray(self.absmax[tensor])})()


def _outliers(an: Analysis) -> dict:
    from axnb.view.plots import channel_absmax, fig_to_svg

    rep = an.outliers
    df = rep.to_frame() if rep is not None else None
    n = 0 if df is None else len(df)
    top = df[OCol.TENSOR].iloc[0] if n else None
    svg = Markup(fig_to_svg(channel_absmax(_Absmax(an.outlier_absmax), top))) \
        if n and top in an.outlier_absmax else None
    # NOTE: the plot first, then the worst rows; the rest behind a toggle (issue 15: the plot
    # sat below a 60-row table)
    return {"rep": rep, "n": n, "shown": min(n, OUTLIER_SHOWN), "svg": svg,
            "level5": len(rep.tensors_at_level(5)) if rep is not None else 0,
            "table": Markup(outlier_html(df)) if n else None}


def _smooth(an: Analysis):
    import pandas as pd

    s = an.smoothing
    if s is None:
        return None
    rows = ([{"status": "applied", **r} for r in s.get("applied", [])]
            + [{"status": "skipped", **r} for r in s.get("skipped", [])])
    return {"n_applied": len(s.get("applied", [])), "n_skipped": len(s.get("skipped", [])),
            "alpha": s.get("alpha"), "threshold": s.get("threshold"),
            "table": table(pd.DataFrame(rows))}


def _task_rows(r) -> tuple[list[dict], str]:
    """The flipped samples of a TaskReport (right <-> wrong), or for a graded metric (IoU,
    MAE) the ones it hurt most; and what they are."""
    rows = [x for x in r.rows if x["float_score"] != x["quant_score"]] if r.binary else \
        r.worst(TASK_ROWS)
    what = "flipped samples (the score changed)" if r.binary else \
        "samples the quantization hurt most"
    out = [{"Sample": x["sample"], "Label": x.get("label"),
            "Float prediction": x.get("float_pred"), "Quantized prediction": x.get("quant_pred"),
            "Float score": x["float_score"], "Quantized score": x["quant_score"],
            f"{Col.COSINE} (float vs quantized)": x["cosine"]} for x in rows[:TASK_ROWS]]
    if r.metric != "top1" and r.metric != "topk":
        out = [{k: v for k, v in x.items() if k != "Label" or v is not None} for x in out]
    return out, what


def _task(an: Analysis, threshold: float, fine: float) -> dict | None:
    """The task-metric section: float vs quantized per mode, the verdict at the max drop and
    the flipped samples (from the Analysis: no model run)."""
    import pandas as pd

    from axnb.results.task import amount, task_label, task_line

    if not an.task:
        return None
    ok, verdict = an.task_verdict()
    summary = pd.DataFrame([{
        "Mode": m, "Metric": task_label(r), "Output": r.output, "Samples": r.samples,
        "Float": r.float_score, "Quantized": r.quant_score, "Drop": amount(r, r.drop),
        "Flips": len(r.flips) if r.binary else "-", f"{Col.COSINE}": r.cosine}
        for m, r in an.task.items()])
    modes = []
    for m, r in an.task.items():
        rows, what = _task_rows(r)
        modes.append({"mode": m, "line": task_line(r), "note": r.note, "what": what,
                      "per_sample": bool(r.rows),
                      "n": len(rows), "shown": min(len(rows), TASK_ROWS),
                      "nan": any(not math.isfinite(x["cosine"]) for x in r.rows),
                      "table": table(pd.DataFrame(rows), threshold=threshold, fine=fine)
                      if rows else None})
    first = next(iter(an.task.values()))
    return {"ok": ok, "verdict": verdict, "table": table(summary, threshold, fine),
            "modes": modes, "label": task_label(first), "params": first.params,
            "reference": first.reference, "max_drop": amount(first, an.max_drop),
            "source": an.max_drop_source()}


def _diagnosis(an: Analysis):
    """The checklist without its "next step": that advice is the Verdict section's, printed
    once."""
    if an.diagnosis is None:
        return None
    df = an.diagnosis.to_frame()
    return Markup(to_html(diagnosis_table(df[df["check"] != "next step"])))


def steps_heading(verdict, steps) -> str:
    """The words above the next steps, true to them: how many were measured (a step that was
    tried says "(tried)"; "Not measured yet" ones were not).

    Example:
        >>> from types import SimpleNamespace as N
        >>> steps_heading(N(verdict="fail"), ["MSE calibration: 0.96 -> 0.99 (tried); ...",
        ...                                   "Not measured yet (so not recommended): U16"])
        'Next steps (1 measured on these samples, best first; 1 not measured yet)'
    """
    if verdict.verdict == "pass":
        return "Next"
    tried = sum("(tried)" in s for s in steps)
    later = sum(s.startswith("Not measured yet") for s in steps)
    if not tried:
        return "Next steps (none measured yet)" if later else "Next steps"
    return (f"Next steps ({tried} measured on these samples, best first"
            + (f"; {later} not measured yet)" if later else ")"))


def _deployed(an: Analysis):
    """The deployed-input check (:func:`axnb.checks.deployed_input`) of the diagnosis, or
    None: its one line sits in the Verdict section (what the compiled model will take)."""
    if an.diagnosis is None:
        return None
    return next((c for c in an.diagnosis.checks if c.name == "deployed input"), None)


def _extra(extra: dict | None) -> list[tuple[str, Markup]]:
    from axnb.view.plots import fig_to_svg

    out = []
    for title, v in (extra or {}).items():
        if hasattr(v, "savefig"):
            html = Markup(fig_to_svg(v))
        elif hasattr(v, "to_html") and hasattr(v, "data"):
            html = Markup(to_html(v))
        elif hasattr(v, "itertuples"):
            html = table(v)
        else:
            html = v if isinstance(v, Markup) else Markup(f"<pre>{escape(str(v))}</pre>")
        out.append((str(title), html))
    return out


def render_report(analysis: Analysis, extra: dict | None = None, *,
                  threshold: float = FINAL, fine: float = LAYER) -> str:
    """An :class:`~axnb.results.Analysis` as one self-contained HTML page (no model run).

    Args:
        analysis: ``Workbench.snapshot()`` (or ``Analysis.load(path)``).
        extra: more sections, title -> Figure, Styler, DataFrame, Markup or text.
        threshold: the final-output cosine line (98%, Pulsar2's guide).
        fine: the per-layer line (99.9%).

    Example:
        >>> html = render_report(wb.snapshot())                     # doctest: +SKIP
    """
    import jinja2
    import pandas as pd

    an = analysis
    sections = [_layer_section(i, k, r, an, threshold, fine)
                for i, (k, r) in enumerate(an.reports.items())]
    label = f"Workbench ({an.samples.get('analysis', '?')} analysis samples)"
    rows = [{"Output": o, "Mode": m, "From": label,
             **{k: v[k] for k in Col.METRICS if k in v}}
            for m, f in an.final.items() for o, v in scored(f).items()]
    rows += [r for s in sections for r in s["final"]]
    same = (threshold, fine) == (an.advice.threshold, an.advice.fine) if an.advice else False
    v = an.advice if same else advice.for_analysis(an, threshold, fine)

    env = jinja2.Environment(loader=jinja2.FileSystemLoader(Path(__file__).parent
                                                            / "templates"), autoescape=True)
    env.filters["pct"] = line
    return env.get_template("report.html.j2").render(
        an=an, model=_model_info(an), env=list(an.environment), verdict=v,
        steps=an.replace(advice=v).steps(), steps_head=steps_heading(v, an.replace(advice=v)
                                                                      .steps()),
        finals=table(pd.DataFrame(rows), threshold=threshold, fine=fine), sections=sections,
        spread=[(m, o, "; ".join([advice.spread_text(sp, threshold),
                                  *final_notes(an.final[m][o])]))
                for m, outs in advice.spreads(an, threshold).items() for o, sp in outs.items()]
        + [(m, o, why) for m in an.final for o, why in an.skipped(m).items()],
        rvb=_ref_vs_backend(sections, threshold, fine), outliers=_outliers(an), plan=_plan(an),
        smooth=_smooth(an), diagnosis=_diagnosis(an), deployed=_deployed(an),
        extra=_extra(extra), formulas=FORMULAS,
        task=_task(an, threshold, fine),
        threshold=threshold, fine=fine, bucket_css=Markup(bucket_css(threshold, fine)),
        config=json.dumps(an.config, indent=2, default=str))


def write_report(source, path: str | Path, extra: dict | None = None, *,
                 diagnosis: bool = True, **kw) -> Path:
    """Write :func:`render_report` to ``path`` (temp name in the same folder, then rename).

    ``source``: an Analysis, or a Workbench: then its ``snapshot()`` is rendered, with the
    troubleshooting checks (:func:`axnb.checks.diagnose`) when ``diagnosis``, and the task
    metric when the config has an ``evaluation`` block.

    Example:
        >>> write_report(wb, "out/report.html")                      # doctest: +SKIP
    """
    from axnb.files import write_text

    an = source
    if not isinstance(source, Analysis):
        an = source.snapshot(task=source.config.evaluation is not None)
        if diagnosis and an.diagnosis is None:
            from axnb.checks import diagnose

            an = an.replace(diagnosis=diagnose(source, analysis=an))
    return write_text(Path(path), render_report(an, extra, **kw))
