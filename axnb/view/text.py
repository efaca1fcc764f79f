"""Text renderers of a LayerReport: a rich Table, a mermaid graph, Pulsar2's debug files.

Example:
    >>> from axnb.view.text import render_rich, write_debug         # doctest: +SKIP
    >>> render_rich(rep, rows=3).title                              # doctest: +SKIP
    'Quant Precision Table【PerLayer Reference】'
    >>> txt, mmd = write_debug(rep, "out")                          # doctest: +SKIP
"""

from __future__ import annotations

import io
from pathlib import Path

from axnb.advice import grade
from axnb.files import write_text
from axnb.results.layers import worst_order
from axnb.types import Col

__all__ = ["render_console", "render_rich", "to_mermaid", "write_debug"]

_RICH = {"good": "green", "warn": "yellow", "bad": "red"}
_MERMAID_CLASSES = (("good", "#c8f7c5", "#2e7d32"), ("warn", "#fff3b0", "#b8860b"),
                    ("bad", "#ffc9c9", "#c62828"))


def _fmt(col: str, v) -> str:
    if isinstance(v, float):
        return f"{v:.6f}" if col.startswith((Col.COSINE, Col.RVB)) else \
            f"{v:.2f}" if col == Col.SQNR else f"{v:.4e}"
    return str(tuple(v)) if isinstance(v, list) else str(v)


def render_rich(report, rows: int | None = None):
    """The report as a rich Table titled ``Quant Precision Table【<method> <mode>】``; cosines
    coloured on the scale of :func:`axnb.advice.grade` (green / yellow / red)."""
    from rich.table import Table

    df = report.to_frame()
    fin = "; ".join(f"{o}: Cosin {m[Col.COSINE]:.6f}" for o, m in report.final.items())
    notes = " ".join(report.meta.get("notes", []))
    t = Table(title=report.title, caption=f"{report.meta.get('samples')} samples (all used); "
              f"final {fin}. {notes}".strip())
    for c in df.columns:
        t.add_column(c, justify="right" if df[c].dtype.kind == "f" else "left")
    for r in df.head(rows).itertuples(index=False):
        t.add_row(*[f"[{_RICH[grade(v)]}]{_fmt(c, v)}[/]" if c == Col.COSINE else _fmt(c, v)
                    for c, v in zip(df.columns, r)])
    return t


def render_console(report, width: int = 100, rows: int = 15):
    """The ``rows`` worst rows of the report for a terminal ``width`` columns wide: position,
    the full operator and tensor names, type, QDType, cosine, SQNR; no cell is cut (a name
    longer than the space folds). The whole table is :func:`write_debug`'s text file.

    Example:
        >>> from rich.console import Console                          # doctest: +SKIP
        >>> Console(width=80).print(render_console(rep, width=80))    # doctest: +SKIP
    """
    from rich.table import Table

    df = report.to_frame()
    df = df.assign(**{"#": range(len(df))}).iloc[worst_order(df)].head(rows)
    names = [c for c in (Col.OPERATOR, Col.OUTPUT) if c in df]
    small = [c for c in ("#", Col.TYPE, Col.QDTYPE, Col.COSINE, Col.SQNR) if c in df]
    cell = {c: max(len(c), *(len(_fmt(c, v)) for v in df[c])) + 3 for c in small}
    need = {c: max(len(c), *(len(str(v)) for v in df[c])) + 3 for c in names}
    # NOTE: both names when they fit on one line each, else the operator alone (the name
    # layer_configs and wb.set_qtype take); then SQNR and Type give way to the name
    if len(names) > 1 and sum(cell.values()) + sum(need.values()) + 1 > width:
        names = names[:1]
    for c in (Col.SQNR, Col.TYPE):
        if c in small and sum(cell.values()) + sum(need[n] for n in names) + 1 > width:
            small.remove(c)
            cell.pop(c)
    fixed = sum(cell.values())
    room = max(12, (width - fixed - 1) // max(1, len(names)) - 3)
    t = Table(title=f"{report.title}: the {len(df)} worst of {len(report.rows)} rows",
              caption="all rows: quant/debug/precision_analysis_table.txt", width=width,
              title_justify="left", caption_justify="left")
    for c in ["#", *names, *small[1:]]:
        wide = c in names
        t.add_column(c, justify="left" if wide or c in (Col.TYPE, Col.QDTYPE) else "right",
                     overflow="fold", no_wrap=not wide, max_width=room if wide else None,
                     ratio=1 if wide else None)
    for _, r in df.iterrows():
        t.add_row(*[f"[{_RICH[grade(r[c])]}]{_fmt(c, r[c])}[/]" if c == Col.COSINE
                    else _fmt(c, r[c]) for c in ["#", *names, *small[1:]]])
    return t


def to_mermaid(report) -> str:
    """A mermaid ``graph TD``: a node per row's tensor (shape, types, cosine, MSE), edges
    labelled with op type and node name, nodes coloured by cosine."""
    def q(s) -> str:
        return str(s).replace('"', "#quot;").replace("|", "#124;")

    ids = {r[Col.OUTPUT]: f"t{i}" for i, r in enumerate(report.rows)}
    lines, cls = ["graph TD"], {"good": [], "warn": [], "bad": []}
    for r in report.rows:
        i, c = ids[r[Col.OUTPUT]], r[Col.COSINE]
        shape = "x".join(map(str, r.get(Col.SHAPE, []))) or r.get(Col.OPERATOR, "")
        lines.append(f'  {i}["{q(r[Col.OUTPUT])}<br/>{shape}<br/>'
                     f'{r.get(Col.DTYPE, "FP32")}->{r[Col.QDTYPE]}<br/>'
                     f'cos {c:.6f} mse {r[Col.MSE]:.3e}"]')
        cls[grade(c)].append(i)
    for a, b, op, name in report.meta.get("edges", []):
        if a in ids and b in ids:
            lines.append(f'  {ids[a]} -->|"{q(op)} {q(name)}"| {ids[b]}')
    lines += [f"  classDef {k} fill:{f},stroke:{s}" for k, f, s in _MERMAID_CLASSES]
    lines += [f"  class {','.join(v)} {k}" for k, v in cls.items() if v]
    return "\n".join(lines) + "\n"


def write_debug(report, out_dir: str | Path) -> tuple[Path, Path]:
    """Write Pulsar2's ``<out_dir>/quant/debug/precision_analysis_table.txt`` (the rich table
    as wide plain text) and ``precision_analysis.mmd``; temp names, then rename."""
    from rich.console import Console

    d = Path(out_dir) / "quant" / "debug"
    con = Console(file=io.StringIO(), width=4000, record=True, color_system=None)
    con.print(render_rich(report))
    lines = [ln.rstrip() for ln in con.export_text().splitlines()]
    lines += ["", "Metrics:", *(f"  {f}" for f in report.meta.get("formulas", []))]
    return (write_text(d / "precision_analysis_table.txt", "\n".join(lines) + "\n"),
            write_text(d / "precision_analysis.mmd", to_mermaid(report)))
