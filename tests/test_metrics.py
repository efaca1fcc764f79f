"""metrics.py: the four metrics against hand-computed values, edge cases, the accumulator; the
honest-metrics rules (non-float outputs, near-silent samples and tensors, NaN named) on real
onnxruntime runs of tiny graphs."""

from __future__ import annotations

import math

import numpy as np
import onnx
import pytest
import tiny
from onnx import TensorProto, helper

from axnb import metrics
from axnb.metrics import Accumulator, cosine, from_moments, max_abs, moments, mse, sqnr


def test_hand_computed_values():
    x, y = np.array([3.0, 4.0]), np.array([4.0, 3.0])
    # x.y = 24, |x| = |y| = 5; d = (-1, 1): sum d^2 = 2, sum x^2 = 25
    assert cosine(x, y) == pytest.approx(24 / 25, abs=1e-15)
    assert mse(x, y) == pytest.approx(1.0, abs=1e-15)
    assert sqnr(x, y) == pytest.approx(10 * math.log10(25 / 2), abs=1e-12)
    assert max_abs(x, y) == 1.0


def test_tensors_are_flattened_and_accumulated_in_float64():
    x = np.array([[1.0, 2.0], [3.0, 4.0]], np.float32)
    y = np.array([[1.0, 2.0], [3.0, 5.0]], np.float32)
    assert cosine(x, y) == pytest.approx(34 / math.sqrt(30 * 39), abs=1e-15)
    assert mse(x, y) == 0.25
    # NOTE: in float32, 2**48 + 1 + 1 == 2**48; the float64 sums keep both ones.
    big = np.array([2.0**24, 1.0, 1.0], np.float32)
    assert moments(big, np.zeros(3, np.float32))[2] == 2.0**48 + 2


def test_edge_cases():
    z = np.zeros(4)
    assert cosine(z, z) == 1.0
    assert cosine(z, np.ones(4)) == 0.0 and cosine(np.ones(4), z) == 0.0
    assert sqnr(np.ones(4), np.ones(4)) == math.inf
    assert sqnr(z, z) == math.inf
    assert mse(z, z) == 0.0 and max_abs(z, z) == 0.0
    assert sqnr(np.ones(4), z) == 0.0          # all signal lost: noise power == signal power
    assert cosine([1.0, 0.0], [-1.0, 0.0]) == -1.0


def test_nan_gives_nan_without_raising():
    x, y = np.array([1.0, np.nan]), np.array([1.0, 2.0])
    for f in (cosine, mse, sqnr, max_abs):
        assert math.isnan(f(x, y)), f.__name__
    # an in-graph max may ignore NaN; the sum of squares carries it into MaxAbs
    m = moments(x, y)
    m[5] = 1.0
    assert math.isnan(from_moments(m)["MaxAbs"])


def test_shape_mismatch_is_an_error():
    with pytest.raises(ValueError, match="3 and 2 elements"):
        cosine(np.ones(3), np.ones(2))


def test_accumulator_averages_per_sample_values():
    acc = Accumulator()
    acc.add([3.0, 4.0], [4.0, 3.0])            # cos 0.96, mse 1
    acc.add([1.0, 0.0], [1.0, 0.0])            # cos 1, mse 0, sqnr inf
    r = acc.result()
    assert acc.samples == 2
    assert r["Cosin"] == pytest.approx(0.98) and r["MSE"] == pytest.approx(0.5)
    assert r["SQNR"] == math.inf and r["MaxAbs"] == pytest.approx(0.5)


def test_vector_accumulator_matches_scalar_metrics():
    rng = np.random.default_rng(0)
    xs = [rng.normal(size=(3, 10)) for _ in range(4)]
    ys = [x + rng.normal(scale=0.1, size=x.shape) for x in xs]
    acc = Accumulator((3,))
    for x, y in zip(xs, ys):
        acc.add_moments(np.stack([moments(a, b) for a, b in zip(x, y)]))
    r = acc.result()
    for i in range(3):
        assert r["Cosin"][i] == pytest.approx(np.mean([cosine(x[i], y[i])
                                                        for x, y in zip(xs, ys)]), rel=1e-14)
        assert r["SQNR"][i] == pytest.approx(np.mean([sqnr(x[i], y[i])
                                                       for x, y in zip(xs, ys)]), rel=1e-14)
    assert math.isnan(Accumulator().result()["Cosin"])


# ---- honest metrics (issue 28): real onnxruntime runs on tiny graphs ---------------------------
def _proto(name, nodes, inputs, outputs, inits):
    info = helper.make_tensor_value_info
    g = helper.make_graph(
        [helper.make_node(op, i, o, name=f"{op}_{k}") for k, (op, i, o) in enumerate(nodes)],
        name, [info(*x) for x in inputs], [info(*x) for x in outputs],
        [onnx.numpy_helper.from_array(np.asarray(v, np.float32), k) for k, v in inits.items()])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    onnx.checker.check_model(m, full_check=True)
    return m


def _workbench(proto, feeds, fusion="npu"):
    from axnb import Workbench
    from axnb.config import load_config
    from axnb.graph import Model
    from axnb.types import Fusion

    model = Model(onnx.shape_inference.infer_shapes(proto), fusion=Fusion(fusion))
    return Workbench(model, load_config({"quant": {"fusion": fusion}}), calibration=feeds,
                     analysis=feeds, progress=False)


def _ids_copy():
    """Conv -> y (float) beside an Identity copy of int64 token ids (as exported encoders do)."""
    w = tiny.weights(4, 3, 3, 3, scale=0.2)
    nodes = [("Conv", ["x", "w"], ["y"]), ("Identity", ["ids"], ["ids_copy"])]
    proto = _proto("ids_copy", nodes, [("x", TensorProto.FLOAT, [1, 3, 8, 8]),
                                       ("ids", TensorProto.INT64, [1, 8])],
                   [("y", TensorProto.FLOAT, [1, 4, 6, 6]),
                    ("ids_copy", TensorProto.INT64, [1, 8])], {"w": w})
    feeds = [{"x": tiny.image(3, 8, 8, s), "ids": tiny.token_ids(8, 6, s)} for s in range(4)]
    return proto, feeds


def test_int_outputs_are_skipped_and_said_everywhere(tmp_path):
    from axnb.cli import summary

    wb = _workbench(*_ids_copy())
    fm = wb.final_metrics()
    assert set(wb.final_cosine()) == {"y"}          # NOTE: was {"y": .., "ids_copy": 1.0}
    assert fm["ids_copy"][metrics.SKIPPED].startswith("int64 output")
    assert fm["ids_copy"]["equal_samples"] == 4 and "Cosin" not in fm["ids_copy"]
    an = wb.snapshot(by_method=False)
    assert set(an.skipped()) == {"ids_copy"} and set(an.final_cosine()) == {"y"}
    assert any("ids_copy: int64 output" in n for n in an.advice.details["notes"])
    assert "1 note on how it was measured" in an.advice.headline
    s = summary(an, tmp_path)
    assert s["final"]["Reference"]["ids_copy"]["dtype"] == "int64"
    assert "Cosin" in s["final"]["Reference"]["y"]
    assert set(wb.evaluator()(wb.plan)) == {"y"} and list(an.to_frame()["Output"]) == ["y"]
    assert "final output ids_copy (Reference): int64 output" in _cli_final(an)


def _cli_final(an) -> str:
    from rich.console import Console

    from axnb.cli import _final

    con = Console(record=True, width=300)
    _final(con, an)
    return con.export_text()


def _tiles():
    """A super-resolution-like Conv -> Relu on 16 image tiles, the last one near-black."""
    w = np.abs(tiny.weights(2, 1, 3, 3, scale=0.3)) + 0.05
    proto = _proto("tiles", [("Conv", ["x", "w"], ["c"]), ("Relu", ["c"], ["y"])],
                   [("x", TensorProto.FLOAT, [1, 1, 8, 8])],
                   [("y", TensorProto.FLOAT, [1, 2, 6, 6])], {"w": w})
    feeds = [{"x": tiny.image(1, 8, 8, s) * 0.25 + 0.5} for s in range(15)]
    dark = tiny.image(1, 8, 8, 15) * 0.25 + 0.5
    feeds.append({"x": (dark * 2e-3).astype(np.float32)})
    return proto, feeds


def test_a_near_silent_sample_is_judged_by_its_error_and_said():
    from axnb import advice

    wb = _workbench(*_tiles())
    m = wb.final_metrics()["y"]
    assert m["silent"] == [15]
    # NOTE: its plain cosine collapses (the U8 step is set by the bright tiles) ...
    assert m["per_sample_cosine"][15] < 0.9 < min(m["per_sample_cosine"][:15])
    # ... while its error, against the typical tile's energy, is as small as any tile's
    assert m["per_sample"][15] > 0.999 and m["Cosin"] > m["raw_cosine"]
    assert m["Cosin"] == pytest.approx(np.mean(m["per_sample"]), abs=1e-12)
    an = wb.snapshot(by_method=False)
    assert any("near-silent" in n for n in an.advice.details["notes"])
    assert "1 of 16 samples near-silent" in _cli_final(an)
    assert advice.spreads(an)["Reference"]["y"]["min"] > 0.999


def test_a_near_silent_sample_with_a_large_error_still_fails():
    """The rule is not a pass: a dark float tile whose quantized output is as bright as the
    others scores by that error (an orthogonal error of the median energy: 1/sqrt(2))."""
    x = [np.full(16, v) for v in (1.0, 1.2, 0.8, 1e-3)]
    y = [v.copy() for v in x[:3]] + [np.full(16, 1.0)]
    m = metrics.output_metrics([{"p": a} for a in x], [{"p": b} for b in y])["p"]
    assert m["silent"] == [3] and m["per_sample"][3] == pytest.approx(1 / np.sqrt(2), abs=0.05)
    assert m["Cosin"] < 0.98


def test_near_silent_line_is_relative_to_the_median():
    e = np.array([1.0, 2.0, 1.0, 0.011, 0.009])
    assert metrics.near_silent(e, metrics.SILENT_SAMPLE).tolist() == [False] * 4 + [True]
    assert not metrics.near_silent([0.0, 0.0], metrics.SILENT_SAMPLE).any()
    # NOTE: tensors: RMS 5e-4 of the median's (energy 2.5e-7) is silent, 2e-3 (4e-6) is not
    assert metrics.silent_tensors([1.0, 1.0, 5e-4, 2e-3]).tolist() == [False, False, True, False]


def _quiet_difference():
    """y = a + s, where s = (a + c) - a with c ~1e-6: s is c in the float model, and in the
    quantized one (fusion none: every tensor U8) a + c rounds to a's own grid, so s is lost.
    s is near-silent with a low cosine; y is fine."""
    w = tiny.weights(4, 3, 3, 3, scale=0.3)
    nodes = [("Conv", ["x", "w"], ["a"]), ("Add", ["a", "c"], ["b"]), ("Sub", ["b", "a"], ["s"]),
             ("Add", ["a", "s"], ["y"])]
    proto = _proto("quiet", nodes, [("x", TensorProto.FLOAT, [1, 3, 8, 8])],
                   [("y", TensorProto.FLOAT, [1, 4, 6, 6])],
                   {"w": w, "c": 1e-6 * (1.5 + tiny.weights(4, 1, 1, offset=0.3))})
    return proto, [{"x": tiny.image(3, 8, 8, s)} for s in range(4)]


def test_near_silent_tensors_are_flagged_not_named_nor_ranked_worst():
    from axnb.advice import where_lines
    from axnb.types import Col

    wb = _workbench(*_quiet_difference(), fusion="none")
    rep = wb.report("EndToEnd")
    rows = {r[Col.OUTPUT]: r for r in rep.rows}
    assert rows["s"][Col.COSINE] < 0.9 and rows["s"][Col.RMS] < 1e-4 * rows["a"][Col.RMS]
    assert rows["y"][Col.COSINE] > 0.999
    assert rep.meta["silent"] == ["s"] and any("near-silent" in n for n in rep.meta["notes"])
    assert list(rep.worst(10)[Col.OUTPUT])[-1] == "s"
    assert wb.ranking("EndToEnd")[-1] == "Sub_2"
    (line,) = where_lines({"EndToEnd": rep})
    assert "1 near-silent tensors under it passed over" in line and "Sub_2" not in line


def test_a_nan_final_metric_names_its_first_tensor(recwarn):
    """Unfused, a LayerNorm row of near-constant values has std 0 in the quantized model: the
    final cosine is NaN, and the API says where it starts (as the CLI's table notes do)."""
    from axnb.errors import NonFiniteWarning
    from axnb.search import search

    proto, _ = tiny.layernorm_decomposed()
    feeds = [tiny.layernorm_decomposed(sample=i)[1] for i in range(4)]
    for f in feeds:
        f["x"][0, 0, :] = 0.5 + 1e-4 * np.arange(16, dtype=np.float32)
    wb = _workbench(proto, feeds, fusion="none")
    with pytest.warns(NonFiniteWarning, match=r"quantized model gives NaN/Inf first at .*\(xn\)"):
        cos = wb.final_cosine()
    assert np.isnan(cos["y"]) and wb.final_metrics()["y"]["nonfinite"]["tensor"] == "xn"
    assert any("NaN/Inf" in n and "xn" in n for n in wb.snapshot(by_method=False)
               .advice.details["notes"])
    with pytest.warns(NonFiniteWarning, match=r"search: the baseline score of y .*\(xn\)"):
        res = search(wb.evaluator(), wb.plan, target=0.99, budget=2, progress=False)
    assert res.nonfinite["tensor"] == "xn"
