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
