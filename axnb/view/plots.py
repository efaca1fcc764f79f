"""matplotlib Figures of the analysis (object API with the Agg canvas; no pyplot state).

Every function returns a :class:`matplotlib.figure.Figure`; Jupyter shows it when it is the
last expression of a cell, :func:`fig_to_svg` inlines it into HTML.

Example:
    >>> from axnb.view.plots import cosine_along_depth, fig_to_svg     # doctest: +SKIP
    >>> svg = fig_to_svg(cosine_along_depth(report.to_frame()))        # doctest: +SKIP
"""

from __future__ import annotations

import base64
import io
import re
from collections.abc import Iterable

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from axnb.advice import FINAL, LAYER
from axnb.types import Col

HIGH_PRECISION = {"U16": "#3b6fd8", "S16": "#3b6fd8", "FP32": "#8e44ad"}
_SVG_JUNK = [
    re.compile(r"<\?xml[^>]*\?>\s*"),
    re.compile(r"<!DOCTYPE[^>]*>\s*"),
    re.compile(r"<metadata>.*?</metadata>\s*", re.S),
    re.compile(r'\s+xmlns(:\w+)?="[^"]*"'),
]


def _figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)  # NOTE: explicit Agg canvas: never touches pyplot's global backend
    return fig


def _marks(df, u16: Iterable[str]) -> dict[str, np.ndarray]:
    names = set(u16)
    qd = df[Col.QDTYPE].astype(str).to_numpy() if Col.QDTYPE in df else np.full(len(df), "")
    picked = np.zeros(len(df), bool)
    for col in (Col.OUTPUT, Col.OPERATOR):
        if col in df and names:
            picked |= df[col].astype(str).isin(names).to_numpy()
    out = {q: qd == q for q in HIGH_PRECISION}
    extra = picked & ~np.isin(qd, list(HIGH_PRECISION))
    if extra.any():
        out["U16"] = out["U16"] | extra
    return {q: m for q, m in out.items() if m.any()}


def cosine_along_depth(df, threshold: float = FINAL, u16: Iterable[str] = (),
                       fine: float | None = LAYER, title: str = "") -> Figure:
    """Cosine of every tensor in topological order (row order of ``df``), with the
    ``threshold`` line and the U16/S16/FP32 layers marked.

    Args:
        df: a layer table (columns "Cosin", optional "QDType", "Output Tensor", "Operator").
        threshold: the red line (Pulsar2's guide: 98% at the final output).
        u16: tensor or operator names to mark as U16 in addition to the QDType column.
        fine: a dotted line (99.9%: layers under it are worth a look); None for none.
        title: axes title.

    Example:
        >>> fig = cosine_along_depth(report.to_frame(), u16={"conv_5.out"})  # doctest: +SKIP
    """
    cos = df[Col.COSINE].to_numpy(float)
    x = np.arange(len(cos))
    fig = _figure(9, 3.2)
    ax = fig.add_subplot()
    # NOTE: no per-point markers on long tables: each is an SVG element in the report.
    ax.plot(x, cos, ".-" if len(cos) <= 300 else "-", color="#555555", lw=0.8, ms=3,
            label="cosine", gid="cosine")
    ax.axhline(threshold, color="#d62728", lw=1, ls="--", label=f"{threshold:.1%}",
               gid="threshold")
    if fine is not None:
        ax.axhline(fine, color="#2ca02c", lw=0.8, ls=":", label=f"{fine:.1%}", gid="fine")
    for q, m in _marks(df, u16).items():
        ax.scatter(x[m], cos[m], s=28, marker="D", color=HIGH_PRECISION[q], zorder=3,
                   label=f"{q} ({int(m.sum())})", gid=f"mark-{q}")
    finite = cos[np.isfinite(cos)]
    low = min(float(finite.min()) if finite.size else 1.0, threshold)
    ax.set_ylim(low - 0.05 * max(1.0 - low, 0.01), 1.0 + 0.05 * max(1.0 - low, 0.01))
    ax.set_xlim(-0.5, max(len(cos) - 0.5, 0.5))
    ax.set_xlabel("tensor (topological order)")
    ax.set_ylabel("cosine")
    if title:
        ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower left", fontsize=8, ncols=5)
    return fig


def channel_absmax(stats, tensor: str, log: bool = True, level: int = 5) -> Figure:
    """Per-channel abs-max of one tensor as bars, with the per-tensor max and the level line
    (``max / 2**level``): channels under it lose ``level`` bits to the largest one, which is
    what the outlier table counts.

    Args:
        stats: CalibStats (or anything with ``observer(tensor).channel_absmax``).
        tensor: activation or weight name.
        log: log2 y axis (levels read directly).
        level: the level line to draw (5: the outlier table's SmoothQuant hint).

    Example:
        >>> fig = channel_absmax(wb.stats, "p2o.pd_op.relu.1.0")    # doctest: +SKIP
    """
    from axnb.errors import AxnbError

    a = stats.observer(tensor).channel_absmax
    if a is None:
        raise AxnbError(f"{tensor!r} has no per-channel statistics")
    a = np.abs(np.asarray(a, float)).ravel()
    top = float(a.max()) if a.size else 0.0
    fig = _figure(9, 3.2)
    ax = fig.add_subplot()
    under = a < top / 2 ** level
    pos = a[a > 0]
    floor = float(pos.min()) / 2 if log and pos.size else 0.0
    # NOTE: one LineCollection, not a Rectangle per channel: 10x faster and a small SVG.
    ax.vlines(np.arange(a.size), floor, np.maximum(a, floor), gid="channels",
              colors=np.where(under, "#f48c42", "#4c72b0"),
              linewidths=float(np.clip(400 / max(a.size, 1), 0.4, 14)))
    ax.axhline(top, color="#d62728", lw=1, label=f"per-tensor max {top:.4g}", gid="tensor-max")
    if top > 0:
        ax.axhline(top / 2 ** level, color="#f48c42", lw=1, ls="--", gid="level",
                   label=f"level {level} ({int((under & (a > 0)).sum())}/{a.size} channels)")
    if log and top > 0:
        ax.set_yscale("log", base=2)
        ax.set_ylim(bottom=floor)
    ax.set_xlabel("channel")
    ax.set_ylabel("abs max")
    ax.set_title(tensor, fontsize=10)
    ax.legend(loc="best", fontsize=8)
    return fig


def fig_to_svg(fig: Figure, inline: bool = True) -> str:
    """The figure as SVG text; ``inline`` drops the XML prolog, metadata and namespace
    declarations (an HTML5 page needs none), so the text names no URL at all.

    Example:
        >>> fig_to_svg(cosine_along_depth(df))[:4]                   # doctest: +SKIP
        '<svg'
    """
    buf = io.StringIO()
    fig.savefig(buf, format="svg", metadata={"Date": None})
    text = buf.getvalue()
    if inline:
        for pat in _SVG_JUNK:
            text = pat.sub("", text)
    return text


def fig_to_png_b64(fig: Figure, dpi: int = 100) -> str:
    """The figure as base64 PNG (for ``<img src="data:image/png;base64,...">``).

    Example:
        >>> fig_to_png_b64(fig)[:8]                                  # doctest: +SKIP
        'iVBORw0K'
    """
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return base64.b64encode(buf.getvalue()).decode("ascii")
