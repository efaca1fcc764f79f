"""The HTML report: one self-contained offline file (inline CSS, inline SVG, a tiny script).

It names no external URL (no CDN, font or image), so it opens from disk anywhere. The layer
tables hold every tensor, worst first, in a scrollable box that sorts and filters; cells carry
one class at most, so a 1500-layer model stays well under 5 MB.

Example:
    >>> from axnb.view.report import write_report                  # doctest: +SKIP
    >>> write_report(wb, "out/report.html")                        # doctest: +SKIP
    PosixPath('out/report.html')
"""

from __future__ import annotations

import datetime
import json
import math
import platform
from enum import Enum
from pathlib import Path

from markupsafe import Markup, escape

from axnb.view.compact import bucket_css, is_number, table
from axnb.view.tables import frame_of, io_specs, outlier_table, to_html
from axnb.view.verdict import line, verdict

LAYER_COLUMNS = ("Operator", "Type", "Output Tensor", "Original Tensor", "Shape", "DType",
                 "QDType", "Cosin", "MSE", "SQNR", "MaxAbs", "Source")
FORMULAS = (
    ("Cosin (cosine)", "sum(x*y) / (||x|| ||y||), per sample on the flattened tensors, "
                       "averaged over samples (1 when both are all-zero)"),
    ("MSE", "mean((x - y)^2)"),
    ("SQNR", "10 log10(sum x^2 / sum (x - y)^2), in dB"),
    ("MaxAbs", "max |x - y|"),
)
OUTLIER_ROWS = 100
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


def _graph_order(df, wb):
    # NOTE: isolation rows come worst first; plot and number them in graph order.
    pos = {n.name: j for j, n in enumerate(wb.model.nodes)}
    order = df["Operator"].map(pos).fillna(len(pos)).argsort(kind="stable")
    return df.iloc[order].reset_index(drop=True)


def _final_rows(final, label: str, mode: str) -> list[dict]:
    if hasattr(final, "to_dict"):
        final = final.to_dict("index")
    names = {"cosin": "Cosin", "cosine": "Cosin", "mse": "MSE", "sqnr": "SQNR",
             "maxabs": "MaxAbs", "max_abs": "MaxAbs"}
    rows = []
    for out, v in dict(final or {}).items():
        vals = v if isinstance(v, dict) else {"Cosin": v}
        rows.append({"Output": out, "Mode": mode, "From": label,
                     **{names.get(str(k).lower(), k): float(x) for k, x in vals.items()
                        if is_number(x) or hasattr(x, "item")}})
    return rows


def _default_reports(wb) -> dict:
    # NOTE: both methods, the configured one first: EndToEnd shows where the loss starts,
    # PerLayer which layers cause it (the guide's next step); compare runs both in one pass.
    first = wb.config.quant.precision_analysis_method.value
    methods = [first] + [m for m in ("EndToEnd", "PerLayer") if m != first]
    return wb.report(methods)


def _layer_section(i: int, label: str, rep, wb, threshold: float, fine: float) -> dict:
    from axnb.view.plots import cosine_along_depth, fig_to_svg

    df, meta, final = frame_of(rep)
    df = df.reset_index(drop=True)
    if meta.get("kind") == "layers" and "Operator" in df:
        df = _graph_order(df, wb)
    cols = [c for c in LAYER_COLUMNS if c in df] + [c for c in df if c not in LAYER_COLUMNS]
    if "Original Tensor" in df and (df["Original Tensor"] == df.get("Output Tensor")).all():
        cols.remove("Original Tensor")
    u16 = {n for q in ("U16", "S16") for n in wb.plan.layers(q)}
    svg = fig_to_svg(cosine_along_depth(df, threshold, u16=u16, fine=fine, title=label))
    worst = df.iloc[df["Cosin"].fillna(math.inf).argsort(kind="stable")]
    mode = _mode(meta.get("mode", ""))
    notes, chips = _meta_parts(meta)
    return {"id": f"layers{i}", "label": label, "df": df, "meta": meta, "mode": mode,
            "method": str(getattr(meta.get("method"), "value", meta.get("method", ""))),
            "final": _final_rows(final, f"{label} report", mode), "notes": notes, "chips": chips,
            "n": len(df), "n_low": int((df["Cosin"] < threshold).sum()),
            "n_fine": int((df["Cosin"] < fine).sum()), "svg": Markup(svg),
            "table": table(worst[cols], threshold=threshold, fine=fine, index=True,
                            cls="t sortable layers")}


def _rvb_pairs(sections: list[dict], threshold: float, fine: float) -> list[dict]:
    out, by_method = [], {}
    for s in sections:
        by_method.setdefault(s["method"], {}).setdefault(s["mode"], s)
    for method, d in by_method.items():
        if not {"Reference", "NPUBackend"} <= set(d):
            continue
        keys = [c for c in ("Output Tensor", "Operator") if c in d["Reference"]["df"]]
        ref = d["Reference"]["df"][keys + ["Cosin"]]
        be = d["NPUBackend"]["df"][[keys[0], "Cosin"]]
        m = ref.merge(be, on=keys[0], suffixes=(" Reference", " Backend"))
        m["Delta"] = m["Cosin Backend"] - m["Cosin Reference"]
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
        col = next((c for c in s["df"] if "Ref vs Backend" in str(c)), None)
        if col is None or not len(s["df"]):
            continue
        df = s["df"][[c for c in ("Output Tensor", "Operator", "Cosin", col) if c in s["df"]]]
        low = df.iloc[df[col].fillna(math.inf).argsort(kind="stable")[:RVB_ROWS]]
        first = low.iloc[0]
        out.append({"text": f"{s['label']}: cosine between the Reference and the Backend "
                            f"tensors ({col}); lowest {first[col]:.6f} at "
                            f"{first.get('Output Tensor', '')}; the {len(low)} lowest:",
                    "table": table(low, threshold=threshold, fine=fine)})
    return out


def _environment(wb) -> list[tuple[str, str]]:
    import numpy
    import onnx
    import onnxruntime

    import axnb

    return [("axnb", axnb.__version__), ("onnx", onnx.__version__),
            ("onnxruntime", onnxruntime.__version__), ("numpy", numpy.__version__),
            ("Python", platform.python_version()), ("Platform", platform.platform()),
            ("Machine", platform.machine()),
            ("Execution providers", ", ".join(wb.providers or ["CPUExecutionProvider"])),
            ("Date", datetime.datetime.now().astimezone().isoformat(timespec="seconds"))]


def _model_info(wb) -> dict:
    m = wb.model
    opset = next((o.version for o in m.proto.opset_import if o.domain in ("", "ai.onnx")), "")
    io = [(k, n, "x".join(map(str, s)), d) for n, (k, s, d) in io_specs(m).items()]
    return {"name": m.source.name if m.source else "(in memory)", "nodes": len(m.nodes),
            "opset": opset, "io": io}


def _plan(wb) -> dict:
    df = wb.plan.to_frame()
    keep = df[(df["qtype"] != wb.plan.default.value) & (df["qtype"] != "S8")]
    return {"summary": wb.plan.summary(), "n": len(keep),
            "table": table(keep, cls="t sortable") if len(keep) else None}


def _outliers(wb) -> dict:
    from axnb.view.plots import channel_absmax, fig_to_svg

    rep = wb.outliers()
    df = rep.to_frame()
    svg = Markup(fig_to_svg(channel_absmax(wb.stats, df["Op outputs"].iloc[0]))) \
        if len(df) else None
    return {"rep": rep, "n": len(df), "shown": min(len(df), OUTLIER_ROWS), "svg": svg,
            "level5": len(rep.tensors_at_level(5)),
            "table": Markup(to_html(outlier_table(df.head(OUTLIER_ROWS)))) if len(df) else None}


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


def render_report(workbench, reports: dict | None = None, extra: dict | None = None, *,
                  threshold: float = 0.98, fine: float = 0.999, modes=None) -> str:
    """The report of a Workbench as one self-contained HTML page.

    Args:
        workbench: an :class:`axnb.Workbench`.
        reports: label -> LayerReport (or its DataFrame, ``attrs["meta"]``/``attrs["final"]``);
            None runs EndToEnd and PerLayer (the configured method first) with
            ``wb.report`` (one compare pass for both methods, cached by the Workbench).
        extra: more sections, title -> Figure, Styler, DataFrame, Markup or text.
        threshold: the final-output cosine line (98%, Pulsar2's guide).
        fine: the per-layer line (99.9%).
        modes: modes for the final-output cosines (default: the Workbench's and the reports').

    Example:
        >>> html = render_report(wb, {"EndToEnd": rep})             # doctest: +SKIP
    """
    import jinja2
    import pandas as pd

    from axnb.types import Mode, parse_enum

    wb = workbench
    reports = _default_reports(wb) if reports is None else reports
    sections = [_layer_section(i, k, r, wb, threshold, fine)
                for i, (k, r) in enumerate(reports.items())]
    modes = [parse_enum(Mode, m) for m in (modes or [wb.mode] + [
        s["mode"] for s in sections if s["mode"] in ("Reference", "NPUBackend")])]
    finals = {m: wb.final_cosine(m) for m in dict.fromkeys(modes)}
    label = f"Workbench ({len(wb.samples)} analysis samples)"
    rows = [{"Output": o, "Mode": m.value, "From": label, "Cosin": c}
            for m, f in finals.items() for o, c in f.items()]
    rows += [r for s in sections for r in s["final"]]
    out = _outliers(wb)
    v = verdict(finals[wb.mode], [(s["label"], s["df"], s) for s in sections], out["rep"],
                wb.method.value, wb.smooth, wb.plan.summary(), threshold, fine, wb.mode.value)

    env = jinja2.Environment(loader=jinja2.FileSystemLoader(Path(__file__).parent.parent
                                                            / "templates"), autoescape=True)
    env.filters["pct"] = line
    return env.get_template("report.html.j2").render(
        wb=wb, model=_model_info(wb), env=_environment(wb), verdict=v,
        finals=table(pd.DataFrame(rows), threshold=threshold, fine=fine), sections=sections,
        rvb=_ref_vs_backend(sections, threshold, fine), outliers=out, plan=_plan(wb),
        smooth=table(wb.smooth.to_frame()) if wb.smooth is not None else None,
        extra=_extra(extra), formulas=FORMULAS, threshold=threshold, fine=fine,
        bucket_css=Markup(bucket_css(threshold, fine)),
        config=json.dumps(wb.config.to_dict(), indent=2, default=str))


def write_report(workbench, path: str | Path, reports: dict | None = None,
                 extra: dict | None = None, **kw) -> Path:
    """Write :func:`render_report` to ``path`` (temp name in the same folder, then rename).

    Example:
        >>> write_report(wb, "out/report.html")                      # doctest: +SKIP
    """
    from axnb.io import write_bytes as _atomic_write

    text = render_report(workbench, reports, extra, **kw)
    return _atomic_write(Path(path), text.encode("utf-8"))
