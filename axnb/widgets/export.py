"""What the Explorer's Export tab writes and checks (a folder of deployable files, the I/O
check of the exported model), as plain functions of a Workbench.
"""

from __future__ import annotations

from pathlib import Path


def export_all(wb, folder: str | Path, analysis=None) -> dict[str, Path]:
    """Write quantized.onnx, config.json (the plan as layer_configs) and report.html (of
    ``analysis``, default ``wb.snapshot()``).

    Example:
        >>> export_all(wb, "out/run1")["config"].name               # doctest: +SKIP
        'config.json'
    """
    from axnb.view.report import write_report

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    return {"quantized": wb.export_quantized(folder / "quantized.onnx"),
            "config": wb.export_config(folder / "config.json"),
            "report": write_report(analysis if analysis is not None else wb.snapshot(),
                                   folder / "report.html")}


def io_check(wb, quantized_path: str | Path) -> tuple:
    """(Check, HTML table) of the inputs/outputs of the float vs the exported model: one
    check (:func:`axnb.checks.input_types`), rendered by :func:`axnb.view.tables.io_table`.

    Example:
        >>> io_check(wb, "out/quantized.onnx")[0].verdict          # doctest: +SKIP
        'pass'
    """
    from axnb.checks.inputs import input_types
    from axnb.view.tables import io_table, to_html

    check = input_types(wb.model, quantized_path)
    return check, to_html(io_table(check))
