"""pandas Styler builders for the result tables (notebooks, widgets and small report tables).

Colours are explicit CSS (no matplotlib colormap), so the same scale is used by the Stylers
here and by the compact layer table of the HTML report (:func:`cosine_colour`).

Example:
    >>> from axnb.view.tables import layer_table, to_html          # doctest: +SKIP
    >>> html = to_html(layer_table(report.to_frame()))             # doctest: +SKIP
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np

RED, YELLOW, GREEN = (248, 105, 107), (255, 235, 132), (99, 190, 123)
WHITE, ORANGE = (255, 255, 255), (244, 140, 66)
QTYPE_COLOURS = {"U16": "#cfe2ff", "S16": "#cfe2ff", "FP32": "#e2d4f0"}
HIGH_PRECISION = frozenset(QTYPE_COLOURS)
MISMATCH = "#f8d7da"
LAYER_FORMATS = {"Cosin": "{:.6f}", "MSE": "{:.3e}", "SQNR": "{:.2f}", "MaxAbs": "{:.4g}"}
_CLASS_CSS = [
    {"selector": "td.axnb-low", "props": "font-weight: bold; color: #7a0000;"},
    {"selector": "td.axnb-hp", "props": "border-left: 3px solid #3b6fd8;"},
    {"selector": "td.axnb-mismatch", "props": "font-weight: bold;"},
]


def _mix(a: tuple, b: tuple, t: float) -> str:
    t = min(max(t, 0.0), 1.0)
    return "#" + "".join(f"{round(x + (y - x) * t):02x}" for x, y in zip(a, b))


def cosine_colour(c: float, threshold: float = 0.98, fine: float = 0.999) -> str:
    """Background colour of a cosine: red under ``threshold``, red->yellow up to ``fine``,
    yellow->green up to 1; "" for NaN.

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


def layer_table(df, threshold: float = 0.98, fine: float = 0.999):
    """Styler of a layer table (``LayerReport.to_frame()`` columns, Pulsar2 names).

    NOTE: every Styler here escapes cell text (tensor names are user data).

    Cosines get the red->yellow->green scale and class ``axnb-low`` under ``threshold``;
    every cell of a U16/S16/FP32 row gets class ``axnb-hp`` and its QDType is tinted.

    Example:
        >>> layer_table(report.to_frame(), threshold=0.98)          # doctest: +SKIP
    """
    st = df.style.hide(axis="index")
    if "Cosin" in df:
        st = st.map(lambda c: _bg(cosine_colour(c, threshold, fine)), subset=["Cosin"])
    if "QDType" in df:
        st = st.map(lambda q: _bg(QTYPE_COLOURS.get(str(q), "")), subset=["QDType"])

    def cls(row, col) -> str:
        out = "axnb-hp" if str(row.get("QDType", "")) in HIGH_PRECISION else ""
        c = row.get("Cosin", math.nan) if col == "Cosin" else math.nan
        return f"{out} axnb-low".strip() if c == c and c < threshold else out

    fmts = {k: v for k, v in LAYER_FORMATS.items() if k in df}
    return (st.set_td_classes(_classes(df, cls)).format(fmts, na_rep="-", escape="html")
            .set_table_styles(_CLASS_CSS, overwrite=False))


def outlier_table(df):
    """Styler of ``OutlierReport.to_frame()``: white->orange per ratio column (scaled to the
    column's maximum) and on "Max level" (3 = white, 8 = full); ratios as percentages.

    Example:
        >>> outlier_table(wb.outliers().to_frame())                 # doctest: +SKIP
    """
    ratios = [c for c in df.columns if "ratio" in c]
    st = df.style.hide(axis="index")
    for c in ratios:
        top = float(df[c].max()) if len(df) else 0.0
        st = st.map(lambda v, top=top: _bg(heat_colour(v / top if top > 0 else 0.0)),
                    subset=[c])
    if "Max level" in df:
        st = st.map(lambda v: _bg(heat_colour((v - 3) / 5 if v > 3 else 0.0)),
                    subset=["Max level"])
    fmts = {c: "{:.1%}" for c in ratios} | ({"Max level": "{:.2f}"} if "Max level" in df else {})
    return st.format(fmts, na_rep="-", escape="html")


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


def _dtype(d) -> str:
    if isinstance(d, int):
        from onnx import helper

        d = helper.tensor_dtype_to_np_dtype(d)
    return np.dtype(d).name


def _spec(v) -> tuple[tuple, str]:
    if isinstance(v, Mapping):
        return tuple(v.get("shape", ())), _dtype(v["dtype"])
    if hasattr(v, "shape") and hasattr(v, "dtype"):
        return tuple(v.shape), _dtype(v.dtype)
    shape, dtype = v
    return tuple(shape), _dtype(dtype)


def _vi(v) -> tuple[tuple, str]:
    t = v.type.tensor_type
    dims = tuple(d.dim_value if d.HasField("dim_value") else (d.dim_param or "?")
                 for d in t.shape.dim)
    return dims, _dtype(t.elem_type)


def io_specs(x) -> dict[str, tuple[str, tuple, str]]:
    """name -> (kind, shape, dtype) of a Model (``.inputs``/``.outputs``), an ONNX ModelProto,
    a mapping name -> TensorSpec / (shape, dtype), or an iterable of TensorSpec.

    Example:
        >>> io_specs({"x": ((1, 3), "float32")})
        {'x': ('', (1, 3), 'float32')}
    """
    if hasattr(x, "graph"):
        inits = {i.name for i in x.graph.initializer}
        return ({v.name: ("input", *_vi(v)) for v in x.graph.input if v.name not in inits}
                | {v.name: ("output", *_vi(v)) for v in x.graph.output})
    if isinstance(getattr(x, "inputs", None), Mapping):
        return ({n: ("input", *_spec(s)) for n, s in x.inputs.items()}
                | {n: ("output", *_spec(s)) for n, s in x.outputs.items()})
    if isinstance(x, Mapping):
        return {n: ("", *_spec(s)) for n, s in x.items()}
    return {s.name: ("", *_spec(s)) for s in x}


def _shape_text(s) -> str:
    return "x".join(map(str, s)) if s is not None else "missing"


def io_frame(float_specs, quant_specs):
    """DataFrame of the input/output type check (see :func:`io_table`)."""
    import pandas as pd

    f, q = io_specs(float_specs), io_specs(quant_specs)
    rows = []
    for name in [*f, *(n for n in q if n not in f)]:
        fk, fs, fd = f.get(name, ("", None, "missing"))
        qk, qs, qd = q.get(name, ("", None, "missing"))
        what = [w for w, bad in (("dtype", fd != qd), ("shape", fs != qs)) if bad]
        match = "missing" if "missing" in (fd, qd) else (" + ".join(what) or "ok")
        rows.append({"Tensor": name, "Kind": fk or qk, "Float dtype": fd,
                     "Float shape": _shape_text(fs), "Quantized dtype": qd,
                     "Quantized shape": _shape_text(qs), "Match": match})
    return pd.DataFrame(rows, columns=["Tensor", "Kind", "Float dtype", "Float shape",
                                       "Quantized dtype", "Quantized shape", "Match"])


def io_table(float_specs, quant_specs):
    """Styler of the input/output type check: name, dtype and shape in the float and the
    quantized model; differing cells tinted red with class ``axnb-mismatch``.

    Example:
        >>> io_table(wb.model, wb.quantized("NPUBackend").proto)    # doctest: +SKIP
    """
    df = io_frame(float_specs, quant_specs)
    pairs = {"Float dtype": "Quantized dtype", "Float shape": "Quantized shape"}
    pairs |= {v: k for k, v in pairs.items()}

    def bad(row, col) -> bool:
        return (col in pairs and row[col] != row[pairs[col]]) or \
            (col == "Match" and row[col] != "ok")

    st = df.style.hide(axis="index").format(escape="html").set_td_classes(
        _classes(df, lambda r, c: "axnb-mismatch" if bad(r, c) else ""))
    st = st.apply(lambda r: [_bg(MISMATCH) if bad(r, c) else "" for c in df.columns], axis=1)
    return st.set_table_styles(_CLASS_CSS, overwrite=False)


def to_html(styler) -> str:
    """The Styler as an HTML fragment (``<style>`` + ``<table>``), for reports and widgets.

    Example:
        >>> to_html(plan_table(wb.plan.to_frame()))[:6]               # doctest: +SKIP
        '<style'
    """
    return styler.to_html()

