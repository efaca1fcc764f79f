"""pandas Styler builders for the result tables (notebooks, widgets and small report tables).

Colours are explicit CSS (no matplotlib colormap), so the same scale is used by the Stylers
here and by the compact layer table of the HTML report (:func:`cosine_colour`).

Example:
    >>> from axnb.view.tables import layer_table, to_html          # doctest: +SKIP
    >>> html = to_html(layer_table(report.to_frame()))             # doctest: +SKIP
"""

from __future__ import annotations

import math
import re

from axnb.advice import FINAL, LAYER
from axnb.types import Col

RED, YELLOW, GREEN = (248, 105, 107), (255, 235, 132), (99, 190, 123)
WHITE, ORANGE = (255, 255, 255), (244, 140, 66)
QTYPE_COLOURS = {"U16": "#cfe2ff", "S16": "#cfe2ff", "FP32": "#e2d4f0"}
HIGH_PRECISION = frozenset(QTYPE_COLOURS)
MISMATCH = "#f8d7da"
LAYER_FORMATS = {Col.COSINE: "{:.6f}", Col.MSE: "{:.3e}", Col.SQNR: "{:.2f}", Col.MAXABS: "{:.4g}"}
_CLASS_CSS = [
    {"selector": "td.axnb-low", "props": "font-weight: bold; color: #7a0000;"},
    {"selector": "td.axnb-hp", "props": "border-left: 3px solid #3b6fd8;"},
    {"selector": "td.axnb-mismatch", "props": "font-weight: bold;"},
]


def _mix(a: tuple, b: tuple, t: float) -> str:
    t = min(max(t, 0.0), 1.0)
    return "#" + "".join(f"{round(x + (y - x) * t):02x}" for x, y in zip(a, b))


def cosine_colour(c: float, threshold: float = FINAL, fine: float = LAYER) -> str:
    """Background colour of a cosine: red under ``threshold``, red->yellow up to ``fine``,
    yellow->green up to 1; "" for NaN (the lines of :mod:`axnb.advice`).

    Example:
        >>> cosine_colour(0.5), cosine_colour(1.0)
        ('#f8696b', '#63be7b')
    """
    if c is None or not math.isfinite(c):
        return ""
    if c < threshold:
        return _mix(RED, YELLOW, 0.0)
    if c < fine:
        return _mix(RED, YELLOW, (c - threshold) / max(fine - threshold, 1e-12))
    return _mix(YELLOW, GREEN, (c - fine) / max(1.0 - fine, 1e-12))


def heat_colour(t: float) -> str:
    """White -> orange for t in [0, 1] (ratios, levels); "" for NaN or 0.

    Example:
        >>> heat_colour(1.0)
        '#f48c42'
    """
    return "" if not t or not math.isfinite(t) else _mix(WHITE, ORANGE, t)


def frame_of(report) -> tuple:
    """(DataFrame, meta, final) of a LayerReport or of a DataFrame (meta/final from ``attrs``).

    Example:
        >>> df, meta, final = frame_of(report)                      # doctest: +SKIP
    """
    if hasattr(report, "to_frame"):
        return (report.to_frame(), dict(getattr(report, "meta", None) or {}),
                getattr(report, "final", None) or {})
    return report, dict(report.attrs.get("meta", {})), report.attrs.get("final", {})


def _bg(colour: str) -> str:
    return f"background-color: {colour};" if colour else ""


def _classes(df, fn) -> object:
    import pandas as pd

    return pd.DataFrame([[fn(r, c) for c in df.columns] for _, r in df.iterrows()],
                        index=df.index, columns=df.columns)


def layer_table(df, threshold: float = FINAL, fine: float = LAYER):
    """Styler of a layer table (``LayerReport.to_frame()`` columns, Pulsar2 names).

    NOTE: every Styler here escapes cell text (tensor names are user data).

    Cosines get the red->yellow->green scale and class ``axnb-low`` under ``threshold``;
    every cell of a U16/S16/FP32 row gets class ``axnb-hp`` and its QDType is tinted.

    Example:
        >>> layer_table(report.to_frame(), threshold=0.95)          # doctest: +SKIP
    """
    st = df.style.hide(axis="index")
    if Col.COSINE in df:
        st = st.map(lambda c: _bg(cosine_colour(c, threshold, fine)), subset=[Col.COSINE])
    if Col.QDTYPE in df:
        st = st.map(lambda q: _bg(QTYPE_COLOURS.get(str(q), "")), subset=[Col.QDTYPE])

    def cls(row, col) -> str:
        out = "axnb-hp" if str(row.get(Col.QDTYPE, "")) in HIGH_PRECISION else ""
        c = row.get(Col.COSINE, math.nan) if col == Col.COSINE else math.nan
        return f"{out} axnb-low".strip() if c == c and c < threshold else out

    fmts = {k: v for k, v in LAYER_FORMATS.items() if k in df}
    return (st.set_td_classes(_classes(df, cls)).format(fmts, na_rep="-", escape="html")
            .set_table_styles(_CLASS_CSS, overwrite=False))


def outlier_table(df):
    """Styler of ``OutlierReport.to_frame()``: white->orange on the ratio columns, one scale
    for the whole table (its largest ratio is full orange: a 1.6% cell is not as orange as a
    62.5% one in the next column), and on "Max level" (3 = white, 8 = full); ratios as
    percentages.

    Example:
        >>> outlier_table(wb.outliers().to_frame())                 # doctest: +SKIP
    """
    ratios = [c for c in df.columns if "ratio" in c]
    st = df.style.hide(axis="index")
    top = float(df[ratios].max().max()) if len(df) and ratios else 0.0
    if ratios:
        st = st.map(lambda v: _bg(heat_colour(v / top if top > 0 else 0.0)), subset=ratios)
    if "Max level" in df:
        st = st.map(lambda v: _bg(heat_colour((v - 3) / 5 if v > 3 else 0.0)),
                    subset=["Max level"])
    fmts = {c: "{:.1%}" for c in ratios} | ({"Max level": "{:.2f}"} if "Max level" in df else {})
    return st.format(fmts, na_rep="-", escape="html")


OUTLIER_SHOWN = 10
"""Rows of the outlier table shown beside its plot (the worst tensors)."""
OUTLIER_ALL = 300
"""Rows behind the "all tensors" toggle (the rest are in ``OutlierReport.to_frame()``)."""


def outlier_html(df, shown: int = OUTLIER_SHOWN, limit: int = OUTLIER_ALL) -> str:
    """The outlier table cut to its ``shown`` worst rows, the rest (up to ``limit``) behind a
    ``<details>`` toggle, so a plot put before it is not pushed below a long table (the report
    and the Explorer's Outliers tab). "" for an empty table.

    Example:
        >>> import pandas as pd
        >>> df = pd.DataFrame({"Tensor": [f"t{i}" for i in range(12)], "Max level": 3.5})
        >>> html = outlier_html(df)
        >>> html.count("<details"), "all 12 tensors" in html
        (1, True)
    """
    if not len(df):
        return ""
    top = to_html(outlier_table(df.head(shown)))
    if len(df) <= shown:
        return top
    what = f"all {len(df)} tensors" if len(df) <= limit else \
        f"the worst {limit} of {len(df)} tensors"
    return (top + f'<details class="axnb-outliers-all"><summary>{what}</summary>'
            '<div style="max-height:420px;overflow:auto">'
            f"{to_html(outlier_table(df.head(limit)))}</div></details>")


VERDICT_COLOURS = {"pass": "#d4edda", "warn": "#fff3cd", "fail": "#f8d7da"}


def diagnosis_table(diagnosis):
    """Styler of a :class:`~axnb.results.Diagnosis` (or its ``to_frame()``): worst first, the
    verdict tinted (pass green, warn yellow, fail red), a fix column only when a check has one.
    The report and the Explorer's Diagnosis tab show this one table.

    Example:
        >>> from axnb.results import Check, Diagnosis
        >>> st = diagnosis_table(Diagnosis((Check("a", "pass", "ok"), Check("b", "fail", "x"))))
        >>> list(st.data["check"]), list(st.data.columns)
        (['b', 'a'], ['check', 'verdict', 'summary'])
    """
    from axnb.results import VERDICTS

    df = diagnosis.to_frame() if hasattr(diagnosis, "to_frame") else diagnosis
    df = df.iloc[df["verdict"].map(lambda v: -VERDICTS.index(v) if v in VERDICTS else 0)
                 .argsort(kind="stable")].reset_index(drop=True)
    if "fix" in df and not df["fix"].astype(str).str.strip().any():
        df = df.drop(columns=["fix"])
    st = df.style.hide(axis="index").format(escape="html")
    return st.map(lambda v: _bg(VERDICT_COLOURS.get(str(v), "")) + " font-weight: bold;",
                  subset=["verdict"])


def plan_table(df):
    """Styler of ``QuantPlan.to_frame()``: U16/S16 blue, FP32 purple, class ``axnb-hp``.

    Example:
        >>> plan_table(wb.plan.to_frame())                          # doctest: +SKIP
    """
    st = df.style.hide(axis="index").format(escape="html")
    if "qtype" in df:
        st = st.map(lambda q: _bg(QTYPE_COLOURS.get(str(q), "")), subset=["qtype"])
        st = st.set_td_classes(_classes(
            df, lambda r, c: "axnb-hp" if str(r["qtype"]) in HIGH_PRECISION else ""))
    return st.set_table_styles(_CLASS_CSS, overwrite=False)


def _shape_text(s) -> str:
    return "x".join(map(str, s)) if s is not None else "missing"


def io_frame(check, quant_specs=None):
    """DataFrame of the input/output type check (see :func:`io_table`).

    ``check``: the :func:`axnb.checks.input_types` Check (or its rows); the view only renders
    it. Given two models (or spec mappings), the check is run first.
    """
    import pandas as pd

    if quant_specs is not None:
        from axnb.checks.inputs import input_types

        check = input_types(check, quant_specs)
    rows = check.details["rows"] if hasattr(check, "details") else check
    out = [{"Tensor": r["name"], "Kind": r["kind"], "Float dtype": r["float dtype"] or "missing",
            "Float shape": _shape_text(r["float shape"]),
            "Quantized dtype": r["quantized dtype"] or "missing",
            "Quantized shape": _shape_text(r["quantized shape"]), "Match": r["match"]}
           for r in rows]
    return pd.DataFrame(out, columns=["Tensor", "Kind", "Float dtype", "Float shape",
                                      "Quantized dtype", "Quantized shape", "Match"])


def io_table(check, quant_specs=None):
    """Styler of the input/output type check (:func:`axnb.checks.input_types`): name, dtype
    and shape in the float and the quantized model; the cells of what the check found
    different tinted red with class ``axnb-mismatch``.

    Example:
        >>> io_table(input_types(wb.model, wb.quantized().qdq()))    # doctest: +SKIP
    """
    df = io_frame(check, quant_specs)
    pairs = {"Float dtype": "Quantized dtype", "Float shape": "Quantized shape"}
    pairs |= {v: k for k, v in pairs.items()}
    what = {"Float dtype": "dtype", "Quantized dtype": "dtype", "Float shape": "shape",
            "Quantized shape": "shape"}

    def bad(row, col) -> bool:
        m = row["Match"]
        return (col in pairs and (m == "missing" or what[col] in m.split(" + "))) or \
            (col == "Match" and m != "ok")

    st = df.style.hide(axis="index").format(escape="html").set_td_classes(
        _classes(df, lambda r, c: "axnb-mismatch" if bad(r, c) else ""))
    st = st.apply(lambda r: [_bg(MISMATCH) if bad(r, c) else "" for c in df.columns], axis=1)
    return st.set_table_styles(_CLASS_CSS, overwrite=False)


# NOTE: a cell that is one number (0.920195, -1.2e-05, 62.5%) gets class "n": the report
# keeps it on one line (its cells may otherwise break anywhere, for long tensor names).
_NUM_CELL = re.compile(r'(<td\b[^>]*?class=")([^"]*)("[^>]*>\s*[-+]?(?:\d[\d,]*\.?\d*|\.\d+)'
                       r'(?:e[-+]?\d+)?%?\s*</td>)')


def to_html(styler) -> str:
    """The Styler as an HTML fragment (``<style>`` + ``<table>``), for reports and widgets;
    a cell holding one number gets the class ``n`` (the report never breaks it).

    Example:
        >>> import pandas as pd
        >>> 'class="data row0 col0 n"' in to_html(pd.DataFrame({"c": [0.920195]}).style)
        True
    """
    return _NUM_CELL.sub(r"\1\2 n\3", styler.to_html())

