"""The view layer: tables (pandas Styler), plots (matplotlib Figures), text (rich, mermaid,
Pulsar2's debug files), netron, HTML report. It renders frozen results and runs no model.

Nothing here is imported by ``import axnb``; each name below is loaded on first use, so
``from axnb.view import layer_table`` imports pandas only, not matplotlib or jinja2.

Example:
    >>> from axnb.view import layer_table, cosine_along_depth      # doctest: +SKIP
    >>> layer_table(report.to_frame())                             # doctest: +SKIP
"""

from __future__ import annotations

import importlib

_WHERE = {
    "layer_table": "tables", "outlier_table": "tables", "plan_table": "tables",
    "outlier_html": "tables", "diagnosis_table": "tables",
    "io_table": "tables", "io_frame": "tables", "to_html": "tables", "cosine_colour": "tables",
    "render_rich": "text", "to_mermaid": "text", "write_debug": "text",
    "cosine_along_depth": "plots", "channel_absmax": "plots", "fig_to_svg": "plots",
    "fig_to_png_b64": "plots",
    "serve": "netron_view", "NetronServer": "netron_view",
    "render_report": "report", "write_report": "report",
}

__all__ = sorted(_WHERE)


def __getattr__(name: str):
    # NOTE: lazy (PEP 562) so that importing one view function does not pull in every UI library.
    if name in _WHERE:
        return getattr(importlib.import_module(f"axnb.view.{_WHERE[name]}"), name)
    raise AttributeError(f"module 'axnb.view' has no attribute {name!r}")
