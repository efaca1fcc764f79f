"""results/: every saveable result is frozen and round-trips; Analysis as plain data."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pandas as pd
import pytest

from axnb.advice import advise
from axnb.observers import Observer
from axnb.results import (
    Advice,
    Analysis,
    CalibStats,
    Check,
    Diagnosis,
    Evaluation,
    LayerReport,
    OutlierReport,
    SearchResult,
)
from axnb.types import Col, QType


def test_every_result_is_frozen():
    for cls in (CalibStats, OutlierReport, LayerReport, Evaluation, SearchResult, Check,
                Diagnosis, Advice, Analysis):
        assert dataclasses.is_dataclass(cls) and cls.__dataclass_params__.frozen, cls


def test_layer_report_from_frame_keeps_meta_final_and_shapes(tmp_path):
    df = pd.DataFrame({Col.OPERATOR: ["a"], Col.SHAPE: [(1, 2)], Col.COSINE: [np.float64(0.5)]})
    df.attrs["meta"] = {"method": "PerLayer", "mode": "Reference"}
    df.attrs["final"] = {"out": {Col.COSINE: 0.9}}
    rep = LayerReport.from_frame(df)
    assert rep.rows == [{"Operator": "a", "Shape": [1, 2], "Cosin": 0.5}]
    assert rep.meta["columns"] == ["Operator", "Shape", "Cosin"]
    assert rep.final["out"]["Cosin"] == 0.9
    assert rep.to_frame()[Col.SHAPE].iloc[0] == (1, 2)
    back = LayerReport.load(rep.save(tmp_path / "r.json"))
    assert back == rep and back.title == "Quant Precision Table【PerLayer Reference】"


def test_check_and_diagnosis_round_trip(tmp_path):
    d = Diagnosis((Check("a", "pass", "ok", {"x": np.float32(1.5)}), Check("b", "fail", "no")))
    assert d.worst == "fail" and d["a"].details == {"x": 1.5}
    assert Diagnosis.load(d.save(tmp_path / "d.json")) == d
    assert Check.load(d["a"].save(tmp_path / "c.json")) == d["a"]
    assert d["a"].to_frame()["verdict"].tolist() == ["pass"] and "<table>" in d["a"]._repr_html_()
    with pytest.raises(ValueError, match="verdict"):
        Check("x", "ok", "bad verdict")


def test_calib_stats_frozen_copy_by_method():
    o = Observer(channel_axis=1, histogram=False)
    o.observe(np.arange(8, dtype=np.float32).reshape(1, 2, 2, 2))
    s = CalibStats({"t": o}, samples=1)
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.samples = 2
    assert s.with_method("MinMax") == s


def _analysis() -> Analysis:
    rep = LayerReport([{Col.OPERATOR: "conv", Col.OUTPUT: "y", Col.QDTYPE: "U8",
                        Col.COSINE: 0.97, Col.MSE: 0.1, Col.SQNR: math.inf}],
                      {"method": "PerLayer", "mode": "Reference", "samples": 2},
                      {"out": {Col.COSINE: 0.95}})
    final = {"Reference": {"out": {Col.COSINE: 0.95, Col.MSE: 0.01, Col.SQNR: 13.0,
                                   Col.MAXABS: 0.2, "per_sample": [0.9, 1.0],
                                   "across_samples": False, "elements": 4}}}
    an = Analysis(config={"quant": {}}, method="MinMax", mode="Reference",
                  analysis_method="PerLayer",
                  plan={"summary": "1 layers: 1 U8", "default": "U8", "layer_configs": [],
                        "rows": [], "layers": {"U8": ["conv"]}},
                  reports={"PerLayer": rep}, final=final, by_method={"MSE": 0.99},
                  outliers=OutlierReport([]),
                  model={"name": "m.onnx", "io": [("input", "x", "1x3", "float32")]},
                  samples={"calibration": 2, "analysis": 2},
                  environment=(("axnb", "0"),),
                  diagnosis=Diagnosis((Check("input types", "pass", "ok"),)))
    return an.replace(advice=advise(an.final_cosine(), an.reports, an.outliers, an.method,
                                    by_method=an.by_method, mode=an.mode))


def test_analysis_round_trips_as_json(tmp_path):
    an = _analysis()
    assert an.advice.verdict == "warn" and "set calibration_method MSE" in an.advice.fix
    back = Analysis.load(an.save(tmp_path / "analysis.json"))
    assert back == an
    assert back.final_cosine() == {"out": 0.95} and back.model["io"] == [("input", "x", "1x3",
                                                                          "float32")]
    assert list(an.to_frame().columns) == ["Mode", "Output", *Col.METRICS]
    assert "<table" in an._repr_html_() and "m.onnx" in repr(an)
    with pytest.raises(dataclasses.FrozenInstanceError):
        an.mode = "NPUBackend"


def test_search_result_round_trip(tmp_path):
    ev = Evaluation(("L1",), {"out": 0.99}, True, 0.1, "full")
    res = SearchResult(("L1",), QType.U16, 0.98, "cosine", True, {"out": 0.9}, {"out": 0.99},
                       (ev,), 1, 0.1, None, "met")
    back = SearchResult.load(res.save(tmp_path / "s.json"))
    assert back == res and back.to_layer_configs() == [{"layer_names": ["L1"],
                                                        "data_type": "U16"}]


def _task():
    """Task reports of hand-made outputs: sample b flips right -> wrong in NPUBackend only."""
    from axnb.taskmetrics import score

    f = [{"p": np.array([[0.1, 0.9]])}, {"p": np.array([[0.8, 0.2]])}]
    same = [{"p": np.array([[0.2, 0.8]])}, {"p": np.array([[0.7, 0.3]])}]
    flip = [{"p": np.array([[0.2, 0.8]])}, {"p": np.array([[0.4, 0.6]])}]
    return {m: score("top1", f, q, labels={"a": 1, "b": 0}, names=["a", "b"], mode=m)
            for m, q in (("Reference", same), ("NPUBackend", flip))}


def test_analysis_with_task_reports_round_trips_and_judges_the_worst_mode(tmp_path):
    from axnb.results.task import MAX_DROP, task_line

    an = _analysis().replace(task=_task())
    back = Analysis.load(an.save(tmp_path / "analysis.json"))
    assert back == an and back.task["NPUBackend"].flips == ("b",)
    assert back.task["NPUBackend"].rows[1]["quant_pred"] == 1 and back.max_drop == MAX_DROP
    assert task_line(back.task["NPUBackend"]) == ("top-1 float 1.000, quantized 0.500 "
                                                 "(NPUBackend): drop 50.0 points, 1 of 2 "
                                                 "samples flip")
    ok, text = back.task_verdict()
    assert not ok and text == ("top-1 drops 50.0 points (1.000 -> 0.500, NPUBackend): too much "
                               "at the default max drop of 1.0 points")
    ok, text = back.replace(max_drop=0.5).task_verdict()
    assert ok and text.endswith("acceptable at your --max-drop of 50.0 points")
    cfg = back.replace(config={"evaluation": {"max_drop": 0.6}}, max_drop=0.6)
    assert cfg.task_verdict()[1].endswith("at the config's evaluation.max_drop of 60.0 points")
    assert "top-1 float 1.000, quantized 1.000 (Reference)" in repr(back)
    assert "too much at the default max drop" in back._repr_html_()
    assert _analysis().task_verdict() is None and _analysis().task == {}
    from axnb.results.task import flipped_text

    assert flipped_text(back.task["Reference"]) == ""
    assert flipped_text(back.task["NPUBackend"]).startswith("flipped: b (cosine 0.7")


def test_steps_are_the_advice_s_and_the_advice_reads_the_task_verdict():
    """Analysis.steps() filters nothing (it dropped "Check the task metric" by matching its
    text); the advice (for_analysis) takes the task verdict and asks for no task metric once
    one is measured."""
    from axnb.advice import for_analysis

    fine = _analysis().replace(final={"Reference": {"out": {Col.COSINE: 0.99}}})
    alone = fine.replace(advice=for_analysis(fine))
    assert alone.steps() == alone.advice.steps
    assert alone.steps()[0].startswith("Check the task metric")
    measured = fine.replace(task=_task(), max_drop=0.5)            # drop 50 points accepted
    stale = measured.replace(advice=alone.advice)
    assert stale.steps() == alone.steps()                           # no text matching any more
    an = measured.replace(advice=for_analysis(measured))
    assert an.steps() == an.advice.steps == (
        "Confirm with precision_analysis_mode NPUBackend and on the board.",)
    assert an.advice.details["task_verdict"]["ok"] and an.advice.verdict == "pass"


def test_diagnosis_repr_is_one_line_per_check_without_the_figures():
    rows = [{"tensor": f"t{i}", "cosine": 0.5} for i in range(200)]
    d = Diagnosis((Check("a", "pass", "ok", {"rows": rows}),
                   Check("b", "fail", "broken", {"rows": rows}, fix="do x")))
    lines = repr(d).splitlines()
    assert lines == ["Diagnosis: 2 checks, worst fail", "  fail  b: broken",
                     "        fix: do x", "  pass  a: ok"]
    assert repr(d.checks[1]) == "Check('b', 'fail': broken)"
