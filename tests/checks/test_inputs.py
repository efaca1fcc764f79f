"""checks/inputs.py: THE float-vs-quantized I/O check (the view only renders its rows)."""

from __future__ import annotations

import onnx
from onnx import TensorProto, helper

from axnb.checks import input_types
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
