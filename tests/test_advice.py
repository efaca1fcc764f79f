"""advice.py: the thresholds written once and the tuning flowchart as one function."""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from axnb import advice
from axnb.advice import FINAL, LAYER, advise, grade, layer_step
from axnb.outliers import outlier_row
from axnb.results import Advice, OutlierReport

PACKAGE = Path(__file__).resolve().parents[1] / "axnb"


def test_the_thresholds_live_only_in_advice():
    """No number 0.98 / 0.999 in the package's code outside advice.py (docs may quote them)."""
    assert (FINAL, LAYER) == (0.98, 0.999)
    found = [f"{p.relative_to(PACKAGE.parent)}:{n.lineno}"
             for p in PACKAGE.rglob("*.py") if p.name != "advice.py"
             for n in ast.walk(ast.parse(p.read_text(encoding="utf-8")))
             if isinstance(n, ast.Constant) and type(n.value) is float and n.value in (0.98, 0.999)]
    assert found == []


def test_grade_is_the_one_colour_scale():
    assert [grade(c) for c in (0.5, FINAL, 0.995, LAYER, 1.0, float("nan"))] == \
        ["bad", "warn", "warn", "good", "good", "bad"]


def _outliers(hot: bool) -> OutlierReport:
    a = np.ones(64)
    if hot:
        a[0] = 1000.0
    return OutlierReport([outlier_row("t", a, "Add")])


def test_pass_warn_fail_branches():
    ok = advise({"out": 0.99}, method="MinMax", mode="Reference")
    assert ok.ok and ok.verdict == "pass" and "roughly normal" in ok.headline
    assert "NPUBackend" in ok.fix and ok.details["by_method"] == {"MinMax": 0.99}
    warn = advise({"out": 0.95}, method="MinMax", by_method={"MSE": 0.985, "Percentile": 0.96},
                  outliers=_outliers(True))
    assert warn.verdict == "warn" and "set calibration_method MSE" in warn.fix
    assert not any("SmoothQuant" in s for s in warn.steps)          # a method alone is enough
    fail = advise({"out": 0.9}, method="MinMax", by_method={"MSE": 0.91},
                  outliers=_outliers(True), plan_summary="73 layers: 73 U8")
    assert fail.verdict == "fail" and "enable_smooth_quant" in fail.fix
    assert "level>=5" in fail.summary and "PerLayer" in fail.fix
    assert "axnb.search(wb.evaluator(), wb.plan, target=0.98)" in fail.fix
    assert set(fail.details["by_method"]) == {"MinMax", "MSE"}
    quiet = advise({"out": 0.9}, outliers=_outliers(False))
    assert "unlikely to help" in quiet.steps[2]
    assert "Percentile or MSE" in quiet.steps[1] and "now MinMax" in quiet.steps[1]


def test_a_measured_method_that_is_worse_is_not_recommended():
    a = advise({"out": 0.9}, method="MinMax", by_method={"MSE": 0.8, "Percentile": 0.902})
    assert "set calibration_method" not in a.fix and "as good as any" in a.steps[1]


def test_layer_step_prefers_perlayer_and_names_where_the_loss_starts():
    df = pd.DataFrame({"Operator": ["a", "b", "c"], "Cosin": [0.9999, 0.99, 0.995]})
    e2e = layer_step([("EndToEnd", df, {"method": "EndToEnd"})])
    assert "where the loss starts" in e2e[0] and "Run PerLayer" in e2e[0]
    both = layer_step([("EndToEnd", df, {"method": "EndToEnd"}),
                       ("PerLayer", df, {"method": "PerLayer"})])
    assert both[0].startswith("PerLayer: 2 of 3 tensors under 99.9%; worst: b (0.9900)")


def test_advice_round_trips_and_is_frozen(tmp_path):
    a = advise({"out": 0.9}, by_method={"MSE": 0.95})
    assert Advice.load(a.save(tmp_path / "a.json")) == a
    with pytest.raises(AttributeError):
        a.ok = True
    assert a.to_check().name == "next step" and a.to_check().verdict == a.verdict
    assert "<ol>" in a._repr_html_() and str(a).startswith(a.headline)
    assert advice.line(0.9995) == "99.95%"
