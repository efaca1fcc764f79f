"""Compact HTML tables for the report: escaped text, one class per cosine cell, nothing else.

A pandas Styler writes an id and a CSS rule per styled cell; for a 1500-layer table that is
megabytes, so the report's big tables come from here and the colours from a few classes
(``.k0`` .. ``.k7``, see :func:`bucket_css`) on the scale of :func:`tables.cosine_colour`.

Example:
    >>> import pandas as pd
    >>> str(table(pd.DataFrame({"Cosin": [0.5]})))[-62:]
    '<tbody><tr><td class="k0 n">0.500000</td></tr></tbody></table>'
"""

from __future__ import annotations

import math
import numbers

from markupsafe import Markup, escape

from axnb.advice import FINAL, LAYER
from axnb.types import Col
from axnb.view.tables import HIGH_PRECISION, LAYER_FORMATS, cosine_colour

QTYPE_COLUMNS = (Col.QDTYPE, "qtype")


def cosine_bucket(c: float, threshold: float = FINAL, fine: float = LAYER) -> int:
    """0 under ``threshold``, 1-4 from threshold to ``fine``, 5-7 from fine to 1; -1 for NaN.

    Example:
        >>> [cosine_bucket(c) for c in (0.5, FINAL, 0.9995, 1.0)]
        [0, 1, 6, 7]
    """
    if c is None or not math.isfinite(c):
        return -1
    if c < threshold:
        return 0
    if c < fine:
        return 1 + min(int(4 * (c - threshold) / (fine - threshold)), 3)
    return 5 + min(int(3 * (c - fine) / max(1.0 - fine, 1e-12)), 2)


def bucket_css(threshold: float, fine: float) -> str:
    """CSS rules ``.k0{background:...}`` .. ``.k7`` at the middle of each bucket.

    Example:
        >>> bucket_css(FINAL, LAYER)[:23]
        '.k0{background:#f8696b}'
    """
    mids = [threshold - 1] + [threshold + (fine - threshold) * (i + 0.5) / 4 for i in range(4)]
    mids += [fine + (1 - fine) * (i + 0.5) / 3 for i in range(3)]
    return "".join(f".k{i}{{background:{cosine_colour(c, threshold, fine)}}}"
                   for i, c in enumerate(mids))


def _fmt(v, col: str = "") -> str:
    v = v.item() if hasattr(v, "item") and getattr(v, "ndim", 1) == 0 else v
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    if isinstance(v, float):
        return LAYER_FORMATS.get(col, "{:.6g}").format(v)
    if isinstance(v, (tuple, list)):
        sep = "x" if all(isinstance(x, int) for x in v) and col == Col.SHAPE else ", "
        return sep.join(map(str, v))
    return str(v)


def table(df, threshold=FINAL, fine=LAYER, index=False, cls="t") -> Markup:
    """A compact HTML table: escaped text, one class on cosine ("Cosin...") cells, class ``n``
    on number cells (the report never breaks a number inside its value), no other per-cell
    markup; rows of U16/S16/FP32 tensors get class ``hp``."""
    cols = list(df.columns)
    head = ("<th>#</th>" if index else "") + "".join(f"<th>{escape(c)}</th>" for c in cols)
    out = [f'<table class="{cls}"><thead><tr>{head}</tr></thead><tbody>']
    for i, row in zip(df.index, df.itertuples(index=False)):
        cells = [f'<td class="n">{i}</td>'] if index else []
        hp = any(str(v) in HIGH_PRECISION for c, v in zip(cols, row) if c in QTYPE_COLUMNS)
        for c, v in zip(cols, row):
            num = is_number(v)
            k = cosine_bucket(float(v), threshold, fine) if Col.COSINE in str(c) and num else -1
            cls = " ".join(([f"k{k}"] if k >= 0 else []) + (["n"] if num else []))
            cells.append(f'<td class="{cls}">' if cls else "<td>")
            cells.append(f"{escape(_fmt(v, c))}</td>")
        out.append(('<tr class="hp">' if hp else "<tr>") + "".join(cells) + "</tr>")
    return Markup("".join(out) + "</tbody></table>")


def is_number(v) -> bool:
    """A real number (numpy scalars included), not a bool."""
    return isinstance(v, numbers.Real) and not isinstance(v, bool)
