"""The Explorer's layer table as pure functions of DataFrames (no ipywidgets): one page of
rows (filter, sort, cut) and one row's HTML.

Example:
    >>> import pandas as pd
    >>> df = pd.DataFrame({"Operator": list("abc"), "Cosin": [1.0, 0.5, 0.9]})
    >>> rows_for_page(df, size=2, sort="cosine").rows["Operator"].tolist()
    ['b', 'c']
"""

from __future__ import annotations

import html
from typing import NamedTuple

from axnb.types import Col

SORTS = ("depth", "cosine", "cosine desc")


class Page(NamedTuple):
    """One page of the layer table: its rows, the page shown, how many pages and rows match."""

    rows: object
    page: int
    pages: int
    total: int


def rows_for_page(df, page: int = 0, size: int = 25, query: str = "", worst: int = 0,
                  sort: str = "depth", pinned=None) -> Page:
    """Filter, sort and cut one page of a layer table (index = depth in the graph).

    Args:
        df: ``LayerReport.to_frame()``.
        page: 0-based, clamped to the pages that exist.
        size: rows per page.
        query: case-insensitive substring of Operator, Type or Output Tensor.
        worst: keep only the ``worst`` lowest-cosine rows (0 = all).
        sort: "depth" (graph order), "cosine" (worst first) or "cosine desc".
        pinned: the index labels of the rows shown before (e.g. before a toggle): the page
            keeps them in that order, with their new values, so no row moves under the
            pointer; ignored when one of them is gone (another graph).

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
    if pinned is not None and all(i in df.index for i in pinned):
        return Page(df.loc[list(pinned)], page, pages, len(df))
    return Page(df.iloc[page * size:(page + 1) * size], page, pages, len(df))


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
             (num(Col.MSE, "{:.2e}"), ""), (num(Col.SQNR, "{:.1f}"), ""),
             (r.get(Col.SOURCE, ""), "")]
    out = "".join(
        f'<div title="{html.escape(str(t))}" style="flex:none;width:{w}px;overflow:hidden;'
        f'text-overflow:ellipsis;white-space:nowrap;padding:0 4px;background:{bg or "none"}">'
        f"{html.escape(str(t))}</div>" for (t, bg), w in zip(cells, widths))
    return (f'<div style="display:flex;font:12px monospace;{"" if active else "color:#888"}">'
            f"{out}</div>")
