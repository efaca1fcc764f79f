"""tests/tiny.py: every hand-made model passes onnx.checker, runs in onnxruntime and equals an
independent numpy computation of the same function (float64, to 1e-5)."""

from __future__ import annotations

import math

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import tiny
from numpy.lib.stride_tricks import sliding_window_view


def _run(model: onnx.ModelProto, feed: dict) -> list[np.ndarray]:
    onnx.checker.check_model(model, full_check=True)
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, feed)


def _init(model: onnx.ModelProto, name: str) -> np.ndarray:
    (t,) = [i for i in model.graph.initializer if i.name == name]
    return onnx.numpy_helper.to_array(t).astype(np.float64)


def _conv(x, w, b):
    """3x3, stride 1, pad 1, NCHW."""
    xp = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    win = sliding_window_view(xp, (3, 3), axis=(2, 3))               # n c h w kh kw
    return np.einsum("nchwij,ocij->nohw", win, w) + b[None, :, None, None]


def _ln(x, g, b):
    mu = x.mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(((x - mu) ** 2).mean(-1, keepdims=True) + tiny.EPS) * g + b


def _softmax(s):
    e = np.exp(s - s.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def _sigmoid(x):
    return 1 / (1 + np.exp(-x))


def oracle(name: str, m: onnx.ModelProto, feed: dict, **kw) -> list[np.ndarray]:
    w = lambda n: _init(m, n)  # noqa: E731
    x = next(iter(feed.values())).astype(np.float64)
    if name == "conv_bias_relu":
        for i in range(len(m.graph.initializer) // 2):
            x = np.maximum(_conv(x, w(f"w{i}"), w(f"b{i}")), 0)
        return [x]
    if name == "gemm_matmul_shared_bias":
        return [x @ w("w1") + w("b"), x @ w("w2") + w("b")]
    if name == "layernorm_decomposed":
        return [_ln(x, w("gamma"), w("beta"))]
    if name == "rmsnorm":
        return [x / np.sqrt((x ** 2).mean(-1, keepdims=True) + tiny.EPS) * w("gamma")]
    if name == "gelu":
        h = x @ w("w") + w("b")
        if kw.get("kind", "erf") == "erf":
            return [0.5 * h * (1 + np.vectorize(math.erf)(h / math.sqrt(2)))]
        return [0.5 * h * (1 + np.tanh(math.sqrt(2 / math.pi) * (h + 0.044715 * h ** 3)))]
    if name == "silu":
        h = _conv(x, w("w"), w("b"))
        return [h * _sigmoid(h)]
    if name == "hardswish":
        h = _conv(x, w("w"), w("b"))
        return [h * np.clip(h + 3, 0, 6) / 6]
    if name == "attention_mask_softmax":
        d = x.shape[-1]
        q, k, v = x @ w("wq"), x @ w("wk"), x @ w("wv")
        valid = feed["attention_mask"].astype(bool)[:, None, :]
        s = np.where(valid, q @ k.transpose(0, 2, 1) / math.sqrt(d), -np.inf)
        return [_softmax(s) @ v]
    if name == "opset11_squeeze_unsqueeze":
        return [x @ w("w") + w("b")]
    if name == "scalar_output":
        g = np.maximum(_conv(x, w("w"), w("b")), 0).mean((2, 3))
        return [_sigmoid(g @ w("wf").T + w("bf"))]
    if name == "int32_gather_embedding":
        return [w("table")[feed["input_ids"]] @ w("w")]
    raise KeyError(name)


CASES = [(n, {}) for n in tiny.BUILDERS] + [
    ("layernorm_decomposed", {"variant": "sum"}), ("gelu", {"kind": "tanh"}),
    ("attention_mask_softmax", {"fill": "min"})]


@pytest.mark.parametrize(("name", "kw"), CASES, ids=[f"{n}-{kw}" if kw else n for n, kw in CASES])
def test_builder_runs_and_matches_numpy(name, kw):
    m, feed = tiny.BUILDERS[name](**kw)
    got = _run(m, feed)
    ref = oracle(name, m, feed, **kw)
    assert len(got) == len(ref) == len(m.graph.output)
    for g, r, o in zip(got, ref, m.graph.output):
        assert g.shape == r.shape and np.isfinite(g).all(), o.name
        assert g.dtype == np.float32
        np.testing.assert_allclose(g, r, rtol=1e-5, atol=1e-5, err_msg=f"{name} {kw} {o.name}")
        assert np.ptp(g) > 1e-3 or g.size == 1, "a degenerate (constant) output tests nothing"
    # NOTE: deterministic: the same call gives the same bytes; another sample gives other data.
    m2, feed2 = tiny.BUILDERS[name](**kw)
    assert m2.SerializeToString() == m.SerializeToString()
    assert all(np.array_equal(feed[k], feed2[k]) for k in feed)
    _, other = tiny.BUILDERS[name](**kw, sample=1)
    assert any(not np.array_equal(feed[k], other[k]) for k in feed)


def test_models_have_what_the_fusion_tests_look_for():
    ops = {n: [x.op_type for x in b()[0].graph.node] for n, b in tiny.BUILDERS.items()}
    assert ops["conv_bias_relu"] == ["Conv", "Relu", "Conv", "Relu"]
    assert ops["layernorm_decomposed"] == ["ReduceMean", "Sub", "Pow", "ReduceMean", "Add",
                                           "Sqrt", "Div", "Mul", "Add"]
    sum_ln = [x.op_type for x in tiny.layernorm_decomposed(variant="sum")[0].graph.node]
    assert {"ReduceSum", "Reciprocal"} <= set(sum_ln) and "ReduceMean" not in sum_ln
    assert "Erf" in ops["gelu"] and "Tanh" in [x.op_type for x in
                                              tiny.gelu(kind="tanh")[0].graph.node]
    assert ops["silu"][-2:] == ["Sigmoid", "Mul"] and "Clip" in ops["hardswish"]
    gm = tiny.gemm_matmul_shared_bias()[0]
    assert sum("b" in n.input for n in gm.graph.node) == 2                     # shared bias
    o11 = tiny.opset11_squeeze_unsqueeze()[0]
    assert [(o.domain, o.version) for o in o11.opset_import] == [("", 11)]
    assert all(any(a.name == "axes" for a in n.attribute)
               for n in o11.graph.node if n.op_type in ("Squeeze", "Unsqueeze"))
    m, feed = tiny.scalar_output()
    assert _run(m, feed)[0].size == 1
    m, feed = tiny.int32_gather_embedding()
    assert m.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.INT32
    assert feed["input_ids"].dtype == np.int32
    for fill, want in (("-inf", -np.inf), ("min", np.finfo(np.float32).min)):
        m, _ = tiny.attention_mask_softmax(fill)
        assert _init(m, "neg") == want
    names = [n.name for b in tiny.BUILDERS.values() for n in b()[0].graph.node]
    assert all(names)


def test_data_looks_like_data():
    img = tiny.image()
    assert img.shape == (1, 3, 16, 16) and -3 < img.min() < img.max() < 3
    h = tiny.hidden()
    peak = np.abs(h[0]).max(0)
    assert peak.argmax() == 3 and peak[3] > 10 * np.median(peak)       # one outlier channel
    ids = tiny.token_ids()
    assert ids[0, 0] == 101 and ids[0, 5] == 102 and not ids[0, 6:].any()
    w = tiny.weights(16, 16)
    assert np.linalg.matrix_rank(w) == 16 and w.min() >= -1 and w.max() < 1
