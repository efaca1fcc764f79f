"""Data-dependent output shapes (NonZero, Loop): lengths that differ across samples, and between
the float and the quantized model, must not crash calibration, the tables or the final metric;
a float/quantized shape difference is an accuracy failure, reported by name."""

from __future__ import annotations

import json
import warnings

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from axnb import metrics

F = TensorProto.FLOAT
THRESHOLD = 0.3
# NOTE: -1 and 1 in every sample fix the U8 range to [-1, 1] (scale 2/255, zero point 128):
# 0.301 sits on the grid point 0.2980 after fake-quantization, under the threshold, so the
# quantized model keeps one element fewer than the float one on the last sample.
SAMPLES = [[-1.0, 1.0, 0.5, 0.1, -0.5, 0.9, 0.0, 0.7],     # 4 elements > 0.3
           [-1.0, 1.0, 0.8, 0.6, -0.2, 0.4, 0.35, 0.1],    # 5
           [-1.0, 1.0, 0.301, 0.0, -0.4, 0.6, 0.1, 0.2]]   # 3 float, 2 quantized


def nonzero_model() -> onnx.ModelProto:
    """x [1, 8] -> h = x @ I -> y = 2 * h[h > 0.3] ([k], k data-dependent); z = Relu(h)."""
    nodes = [helper.make_node("MatMul", ["x", "w"], ["h"], name="mm"),
             helper.make_node("Greater", ["h", "t"], ["gt"], name="gt"),
             helper.make_node("NonZero", ["gt"], ["nz"], name="nz"),
             helper.make_node("Transpose", ["nz"], ["idx"], name="tr", perm=[1, 0]),
             helper.make_node("GatherND", ["h", "idx"], ["v"], name="gather"),
             helper.make_node("Mul", ["v", "two"], ["y"], name="scale"),
             helper.make_node("Relu", ["h"], ["z"], name="relu")]
    inits = [numpy_helper.from_array(np.eye(8, dtype=np.float32), "w"),
             numpy_helper.from_array(np.array(THRESHOLD, np.float32), "t"),
             numpy_helper.from_array(np.array(2.0, np.float32), "two")]
    g = helper.make_graph(nodes, "nonzero", [helper.make_tensor_value_info("x", F, [1, 8])],
                          [helper.make_tensor_value_info("y", F, ["k"]),
                           helper.make_tensor_value_info("z", F, [1, 8])], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(m, full_check=True)
    return m


def feeds() -> list[dict[str, np.ndarray]]:
    return [{"x": np.array([s], np.float32)} for s in SAMPLES]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """(model path, config path): the model, its samples and a Pulsar2-style config."""
    d = tmp_path_factory.mktemp("nonzero")
    onnx.save(nonzero_model(), d / "m.onnx")
    for i, f in enumerate(feeds()):
        np.save(d / f"{i}.npy", f["x"])
    (d / "c.json").write_text(json.dumps({"input": str(d / "m.onnx"), "quant": {
        "input_configs": [{"tensor_name": "DEFAULT", "calibration_dataset": str(d),
                           "calibration_format": "Numpy", "calibration_size": 3}],
        "calibration_method": "MinMax", "precision_analysis_method": "EndToEnd",
        "precision_analysis_mode": "NPUBackend"}}))
    return d / "m.onnx", d / "c.json"


@pytest.fixture(scope="module")
def wb(files):
    import axnb

    with pytest.warns(UserWarning, match="another shape"):
        w = axnb.Workbench(str(files[0]), str(files[1]), calibration=feeds(), analysis=feeds(),
                           progress=False)
        w.final_metrics("Reference")
    return w


def test_mismatched_shapes_score_zero_and_are_named() -> None:
    """A sample whose quantized output has another length scores cosine 0 and is listed."""
    f = [{"y": np.ones(4)}, {"y": np.ones(5)}, {"y": np.ones(3)}]
    q = [{"y": np.ones(4)}, {"y": np.ones(5)}, {"y": np.ones(2)}]
    with pytest.warns(UserWarning, match=r"output y: .*sample 2: float \(3,\) vs quantized "
                                         r"\(2,\)"):
        m = metrics.output_metrics(f, q)["y"]
    assert m["per_sample"] == [1.0, 1.0, 0.0] and m["Cosin"] == pytest.approx(2 / 3)
    assert m["shape_mismatch"] == ["sample 2: float (3,) vs quantized (2,)"]
    assert metrics.from_moments(metrics.mismatch_moments([1.0, 2.0], []))["MaxAbs"] == 2.0


def test_a_near_silent_sample_of_another_shape_is_not_judged_by_its_error() -> None:
    f = [{"y": np.full(4, v)} for v in (1.0, 1.1, 0.9)] + [{"y": np.full(3, 1e-3)}]
    q = [*f[:3], {"y": np.full(2, 1e-3)}]
    with pytest.warns(UserWarning, match="another shape"):
        m = metrics.output_metrics(f, q)["y"]
    assert m["per_sample"][3] == 0.0 and 3 not in m.get("silent", [])


def test_model_lists_data_dependent_tensors(wb) -> None:
    assert {"v", "y"} <= wb.model.dynamic and not {"x", "h", "z"} & wb.model.dynamic


@pytest.mark.parametrize("mode", ["Reference", "NPUBackend"])
def test_tables_run_and_equal_the_final_metric(wb, mode) -> None:
    """Lengths 4, 5 and 3-vs-2 across samples: no crash (the Backend's tensors were fed at one
    fixed shape, and compared in-graph by reshaping), the tables' final rows equal the final
    metric, and the notes name the tensors and both shapes."""
    from axnb.compare import compare_methods

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")     # NOTE: said once, by the fixture
        final = wb.final_metrics(mode)
    assert final["y"]["per_sample"][2] == 0.0 and final["y"]["per_sample"][0] > 0.9999
    assert final["z"]["Cosin"] > 0.9999 and "shape_mismatch" not in final["z"]
    reps = compare_methods(wb.model, wb.quantized(mode), feeds(), progress=False)
    for rep in reps.values():
        for o in ("y", "z"):
            assert rep.final[o]["Cosin"] == pytest.approx(final[o]["Cosin"], abs=1e-9)
        note = next(n for n in rep.meta["notes"] if "another shape" in n)
        assert "y (float (3,) vs quantized (2,) on 1 samples)" in note
    assert set(reps["EndToEnd"].meta["shape_mismatch"]) == {"v", "y"}


def test_build_exits_0_and_reports_the_mismatch(files, tmp_path, capsys) -> None:
    from axnb.cli import main

    out = tmp_path / "out"
    with pytest.warns(UserWarning):
        rc = main(["build", "--config", str(files[1]), "--output-dir", str(out), "--no-measure"])
    text = capsys.readouterr().out
    assert rc == 0, text
    said = ("the quantized model gives another shape than the float model on 1 sample(s) "
            "(sample 2: float (3,) vs quantized (2,))")
    assert said in " ".join(text.split())
    y = json.loads((out / "summary.json").read_text())["final"]["NPUBackend"]["y"]
    assert y["shape_mismatch"] == ["sample 2: float (3,) vs quantized (2,)"]
    assert any(said in n for n in y["notes"])
