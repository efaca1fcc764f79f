"""Tiny hand-made ONNX models for engine tests that need no zoo.

Each builder returns ``(onnx.ModelProto, feed)``: a checked opset-17 model (opset 11 where it
says so) of standard ops with named nodes, and one feed dict of deterministic, structured data
(smooth image-like planes, a residual stream with one outlier channel, real-looking token ids).
``sample=k`` shifts the data for a k-th, different but equally plausible, sample. Weights are a
quadratic Weyl sequence (deterministic, full rank, no RNG). tests/test_tiny.py checks every builder
against an independent numpy computation of the same function.

Example:
    >>> model, feed = conv_bias_relu()
    >>> sorted(feed), feed["x"].shape
    (['x'], (1, 3, 16, 16))
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

F32 = np.float32
EPS = 1e-5
SQRT_2_OVER_PI = float(np.sqrt(2.0 / np.pi))


# ---- deterministic data ---------------------------------------------------------------------
def weights(*shape: int, scale: float = 1.0, offset: float = 0.0) -> np.ndarray:
    """float32 of frac(k^2 phi + k sqrt2 + offset) mapped to [-1, 1), times ``scale``.

    A quadratic Weyl sequence: equidistributed, full rank, the same on every machine (no RNG).
    """
    k = np.arange(1, int(np.prod(shape)) + 1, dtype=np.float64)
    u = np.modf(k * k * 0.6180339887498949 + k * 1.4142135623730951 + offset)[0]
    return ((u * 2 - 1) * scale).reshape(shape).astype(F32)


def image(c: int = 3, h: int = 16, w: int = 16, sample: int = 0) -> np.ndarray:
    """A normalised NCHW image: smooth gradients and ripples, a different phase per channel."""
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    planes = [0.5 + 0.3 * np.sin(x / (2.0 + ch) + sample) * np.cos(y / 3.0 - ch)
              + 0.2 * (x + y) / (h + w) for ch in range(c)]
    return ((np.stack(planes)[None] - 0.5) / 0.25).astype(F32)


def hidden(seq: int = 6, dim: int = 16, sample: int = 0) -> np.ndarray:
    """A transformer residual stream [1, seq, dim]: token waves plus one outlier channel (~20)."""
    t, d = np.mgrid[0:seq, 0:dim].astype(np.float64)
    h = np.sin(0.7 * t + 0.45 * d + sample) + 0.3 * np.cos(1.3 * d - 0.2 * t)
    h[:, 3] += 20.0 + t[:, 3]
    return h[None].astype(F32)


def token_ids(seq: int = 8, valid: int = 6, sample: int = 0, dtype=np.int64) -> np.ndarray:
    """[CLS] w1 .. [SEP] then padding, as a BERT tokenizer writes it: [1, seq]."""
    words = [2023, 2003, 1037, 3231, 6251, 1012, 2009, 4342][sample % 8:] * seq
    ids = [101, *words[:valid - 2], 102] + [0] * (seq - valid)
    return np.array([ids], dtype)


def mask(seq: int = 8, valid: int = 6) -> np.ndarray:
    return (np.arange(seq) < valid).astype(np.int64)[None]


# ---- graph plumbing ---------------------------------------------------------------------------
def _model(name, nodes, inputs, outputs, inits, opset=17) -> onnx.ModelProto:
    info = helper.make_tensor_value_info
    made = [helper.make_node(op, i, o, name=f"{op}_{k}", **a)
            for k, (op, i, o, a) in enumerate(nodes)]
    g = helper.make_graph(
        made,
        name, [info(n, t, s) for n, t, s in inputs], [info(n, t, s) for n, t, s in outputs],
        [numpy_helper.from_array(np.asarray(v), k) for k, v in inits.items()])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)], producer_name="tiny")
    m.ir_version = 8
    onnx.checker.check_model(m, full_check=True)
    return m


def _n(op, inputs, outputs, **attrs):
    return op, inputs, outputs, attrs


FLOAT, INT64, INT32 = TensorProto.FLOAT, TensorProto.INT64, TensorProto.INT32


# ---- builders -----------------------------------------------------------------------------------
def conv_bias_relu(channels: tuple[int, ...] = (3, 8, 8), size: int = 16, sample: int = 0):
    """Conv(+bias) -> Relu, repeated: x [1, C0, s, s] -> y [1, Cn, s, s] (3x3, pad 1)."""
    nodes, inits, x = [], {}, "x"
    for i, (ci, co) in enumerate(zip(channels, channels[1:])):
        inits[f"w{i}"] = weights(co, ci, 3, 3, scale=1.0 / np.sqrt(ci * 9), offset=0.1 * i)
        inits[f"b{i}"] = weights(co, scale=0.2, offset=0.5 + i)
        out = "y" if i == len(channels) - 2 else f"r{i}"
        nodes += [_n("Conv", [x, f"w{i}", f"b{i}"], [f"c{i}"], pads=[1, 1, 1, 1]),
                  _n("Relu", [f"c{i}"], [out])]
        x = out
    shape = [1, channels[0], size, size]
    m = _model("conv_bias_relu", nodes, [("x", FLOAT, shape)],
               [("y", FLOAT, [1, channels[-1], size, size])], inits)
    return m, {"x": image(channels[0], size, size, sample)}


def gemm_matmul_shared_bias(d_in: int = 16, d_out: int = 8, rows: int = 4, sample: int = 0):
    """One bias initializer used by Gemm(x, W1, b) and by MatMul(x, W2) + b: two outputs."""
    inits = {"w1": weights(d_in, d_out, scale=0.25), "w2": weights(d_in, d_out, scale=0.25,
                                                                    offset=0.3),
             "b": weights(d_out, scale=0.5, offset=0.7)}
    nodes = [_n("Gemm", ["x", "w1", "b"], ["y_gemm"]),
             _n("MatMul", ["x", "w2"], ["mm"]), _n("Add", ["mm", "b"], ["y_matmul"])]
    m = _model("gemm_matmul_shared_bias", nodes, [("x", FLOAT, [rows, d_in])],
               [("y_gemm", FLOAT, [rows, d_out]), ("y_matmul", FLOAT, [rows, d_out])], inits)
    return m, {"x": hidden(rows, d_in, sample)[0] / 5}


def layernorm_decomposed(dim: int = 16, seq: int = 6, variant: str = "mean", sample: int = 0):
    """LayerNorm written out over the last axis, then * gamma + beta: x, y [1, seq, dim].

    ``variant="mean"``: ReduceMean, Sub, Pow 2, ReduceMean, Add eps, Sqrt, Div.
    ``variant="sum"``: ReduceSum / N for both means and Reciprocal(Sqrt) * instead of Div.
    """
    inits = {"two": F32(2), "eps": F32(EPS), "gamma": weights(dim, scale=0.5, offset=0.2) + 1,
             "beta": weights(dim, scale=0.1, offset=0.9), "n": F32(dim),
             "axes": np.array([-1], np.int64)}
    if variant == "mean":
        mean = [_n("ReduceMean", ["x"], ["mu"], axes=[-1])]
        var = [_n("ReduceMean", ["sq"], ["var"], axes=[-1])]
        scale = [_n("Div", ["d", "std"], ["xn"])]
    elif variant == "sum":
        mean = [_n("ReduceSum", ["x", "axes"], ["s1"]), _n("Div", ["s1", "n"], ["mu"])]
        var = [_n("ReduceSum", ["sq", "axes"], ["s2"]), _n("Div", ["s2", "n"], ["var"])]
        scale = [_n("Reciprocal", ["std"], ["inv"]), _n("Mul", ["d", "inv"], ["xn"])]
    else:
        raise ValueError(f"variant {variant!r}: 'mean' or 'sum'")
    nodes = [*mean, _n("Sub", ["x", "mu"], ["d"]), _n("Pow", ["d", "two"], ["sq"]), *var,
             _n("Add", ["var", "eps"], ["ve"]), _n("Sqrt", ["ve"], ["std"]), *scale,
             _n("Mul", ["xn", "gamma"], ["g"]), _n("Add", ["g", "beta"], ["y"])]
    if variant == "mean":
        del inits["n"], inits["axes"]
    shape = [1, seq, dim]
    m = _model(f"layernorm_{variant}", nodes, [("x", FLOAT, shape)], [("y", FLOAT, shape)], inits)
    return m, {"x": hidden(seq, dim, sample)}


def rmsnorm(dim: int = 16, seq: int = 6, sample: int = 0):
    """x / sqrt(mean(x^2) + eps) * gamma (Pow, ReduceMean, Add, Sqrt, Div, Mul)."""
    inits = {"two": F32(2), "eps": F32(EPS), "gamma": weights(dim, scale=0.5, offset=0.4) + 1}
    nodes = [_n("Pow", ["x", "two"], ["sq"]), _n("ReduceMean", ["sq"], ["ms"], axes=[-1]),
             _n("Add", ["ms", "eps"], ["mse"]), _n("Sqrt", ["mse"], ["rms"]),
             _n("Div", ["x", "rms"], ["xn"]), _n("Mul", ["xn", "gamma"], ["y"])]
    shape = [1, seq, dim]
    m = _model("rmsnorm", nodes, [("x", FLOAT, shape)], [("y", FLOAT, shape)], inits)
    return m, {"x": hidden(seq, dim, sample)}


def gelu(kind: str = "erf", dim: int = 16, seq: int = 6, sample: int = 0):
    """MatMul + bias -> GELU written out: x [1, seq, dim] -> y [1, seq, 2*dim].

    ``kind="erf"``: 0.5 * h * (1 + erf(h / sqrt 2)) (Div, Erf, Add, Mul, Mul).
    ``kind="tanh"``: 0.5 * h * (1 + tanh(sqrt(2/pi) * (h + 0.044715 h^3))).
    """
    inits = {"w": weights(dim, 2 * dim, scale=1.5 / np.sqrt(dim)),
             "b": weights(2 * dim, scale=0.3, offset=0.6), "one": F32(1), "half": F32(0.5)}
    nodes = [_n("MatMul", ["x", "w"], ["mm"]), _n("Add", ["mm", "b"], ["h"])]
    if kind == "erf":
        inits["sqrt2"] = F32(np.sqrt(2))
        nodes += [_n("Div", ["h", "sqrt2"], ["hs"]), _n("Erf", ["hs"], ["e"])]
    elif kind == "tanh":
        inits |= {"three": F32(3), "c": F32(0.044715), "k": F32(SQRT_2_OVER_PI)}
        nodes += [_n("Pow", ["h", "three"], ["h3"]), _n("Mul", ["h3", "c"], ["h3c"]),
                  _n("Add", ["h", "h3c"], ["inner"]), _n("Mul", ["inner", "k"], ["ik"]),
                  _n("Tanh", ["ik"], ["e"])]
    else:
        raise ValueError(f"kind {kind!r}: 'erf' or 'tanh'")
    nodes += [_n("Add", ["e", "one"], ["e1"]), _n("Mul", ["h", "e1"], ["he"]),
              _n("Mul", ["he", "half"], ["y"])]
    m = _model(f"gelu_{kind}", nodes, [("x", FLOAT, [1, seq, dim])],
               [("y", FLOAT, [1, seq, 2 * dim])], inits)
    x = hidden(seq, dim, sample)
    x[..., 3] /= 10     # NOTE: keep the outlier channel but in a range GELU sees in practice
    return m, {"x": x}


def _conv_then(name: str, act: list, extra: dict, c: int = 8, size: int = 8, sample: int = 0):
    inits = {"w": weights(c, 3, 3, 3, scale=2.0 / np.sqrt(27)),
             "b": weights(c, scale=0.5, offset=0.3), **extra}
    nodes = [_n("Conv", ["x", "w", "b"], ["h"], pads=[1, 1, 1, 1]), *act]
    m = _model(name, nodes, [("x", FLOAT, [1, 3, size, size])],
               [("y", FLOAT, [1, c, size, size])], inits)
    return m, {"x": image(3, size, size, sample)}


def silu(channels: int = 8, size: int = 8, sample: int = 0):
    """Conv -> SiLU written as h * Sigmoid(h)."""
    act = [_n("Sigmoid", ["h"], ["s"]), _n("Mul", ["h", "s"], ["y"])]
    return _conv_then("silu", act, {}, channels, size, sample)


def hardswish(channels: int = 8, size: int = 8, sample: int = 0):
    """Conv -> HardSwish written as h * Clip(h + 3, 0, 6) / 6 (Add, Clip, Mul, Div)."""
    act = [_n("Add", ["h", "three"], ["h3"]), _n("Clip", ["h3", "zero", "six"], ["r6"]),
           _n("Mul", ["h", "r6"], ["hr"]), _n("Div", ["hr", "six"], ["y"])]
    return _conv_then("hardswish", act, {"three": F32(3), "zero": F32(0), "six": F32(6)},
                      channels, size, sample)


def attention_mask_softmax(fill: str = "-inf", dim: int = 16, seq: int = 8, valid: int = 6,
                           sample: int = 0):
    """Single-head attention whose additive mask, made from an int64 attention_mask, goes into
    Softmax: y = Softmax(q k^T / sqrt(d) + bias) v, x [1, seq, dim], attention_mask [1, seq].

    ``fill="-inf"``: bias = Where(mask, 0, -inf); ``fill="min"``: bias = (1 - mask) * float32 min.
    """
    inits = {"wq": weights(dim, dim, scale=1 / np.sqrt(dim)),
             "wk": weights(dim, dim, scale=1 / np.sqrt(dim), offset=0.25),
             "wv": weights(dim, dim, scale=1 / np.sqrt(dim), offset=0.5),
             "scale": F32(1 / np.sqrt(dim)), "shape": np.array([1, 1, seq], np.int64)}
    if fill == "-inf":
        inits |= {"zero": F32(0), "neg": F32(-np.inf)}
        bias = [_n("Cast", ["attention_mask"], ["mb"], to=TensorProto.BOOL),
                _n("Where", ["mb", "zero", "neg"], ["bias2"])]
    elif fill == "min":
        inits |= {"one": F32(1), "neg": F32(np.finfo(F32).min)}
        bias = [_n("Cast", ["attention_mask"], ["mf"], to=FLOAT), _n("Sub", ["one", "mf"], ["inv"]),
                _n("Mul", ["inv", "neg"], ["bias2"])]
    else:
        raise ValueError(f"fill {fill!r}: '-inf' or 'min'")
    nodes = [*bias, _n("Reshape", ["bias2", "shape"], ["bias"]),
             _n("MatMul", ["x", "wq"], ["q"]), _n("MatMul", ["x", "wk"], ["k"]),
             _n("MatMul", ["x", "wv"], ["v"]), _n("Transpose", ["k"], ["kt"], perm=[0, 2, 1]),
             _n("MatMul", ["q", "kt"], ["s"]), _n("Mul", ["s", "scale"], ["ss"]),
             _n("Add", ["ss", "bias"], ["sm"]), _n("Softmax", ["sm"], ["p"], axis=-1),
             _n("MatMul", ["p", "v"], ["y"])]
    m = _model(f"attention_mask_{fill}", nodes,
               [("x", FLOAT, [1, seq, dim]), ("attention_mask", INT64, [1, seq])],
               [("y", FLOAT, [1, seq, dim])], inits)
    return m, {"x": hidden(seq, dim, sample) / 4, "attention_mask": mask(seq, valid)}


def opset11_squeeze_unsqueeze(rows: int = 4, d_in: int = 6, d_out: int = 5, sample: int = 0):
    """Opset 11 (``axes`` attributes): Unsqueeze(0) -> MatMul -> Squeeze(0) -> Add bias."""
    inits = {"w": weights(d_in, d_out, scale=0.4), "b": weights(d_out, scale=0.2, offset=0.1)}
    nodes = [_n("Unsqueeze", ["x"], ["x3"], axes=[0]), _n("MatMul", ["x3", "w"], ["mm"]),
             _n("Squeeze", ["mm"], ["sq"], axes=[0]), _n("Add", ["sq", "b"], ["y"])]
    m = _model("opset11_squeeze_unsqueeze", nodes, [("x", FLOAT, [rows, d_in])],
               [("y", FLOAT, [rows, d_out])], inits, opset=11)
    return m, {"x": hidden(rows, d_in, sample)[0] / 4}


def scalar_output(channels: int = 4, size: int = 8, sample: int = 0):
    """A score model with a 1-element output: Conv -> Relu -> GlobalAveragePool -> Flatten ->
    Gemm to 1 -> Sigmoid; y [1, 1]."""
    inits = {"w": weights(channels, 3, 3, 3, scale=1 / np.sqrt(27)),
             "b": weights(channels, scale=0.2, offset=0.4),
             "wf": weights(1, channels, scale=1.0, offset=0.2), "bf": F32([0.1])}
    nodes = [_n("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1]), _n("Relu", ["c"], ["r"]),
             _n("GlobalAveragePool", ["r"], ["g"]), _n("Flatten", ["g"], ["f"]),
             _n("Gemm", ["f", "wf", "bf"], ["logit"], transB=1), _n("Sigmoid", ["logit"], ["y"])]
    m = _model("scalar_output", nodes, [("x", FLOAT, [1, 3, size, size])],
               [("y", FLOAT, [1, 1])], inits)
    return m, {"x": image(3, size, size, sample)}


def int32_gather_embedding(vocab: int = 8192, dim: int = 8, seq: int = 8, valid: int = 6,
                           sample: int = 0):
    """int32 token ids -> Gather from an embedding table -> MatMul: ids [1, seq] -> y [1, seq, dim].
    """
    inits = {"table": weights(vocab, dim, scale=0.5), "w": weights(dim, dim, scale=0.5,
                                                                   offset=0.3)}
    nodes = [_n("Gather", ["table", "input_ids"], ["e"]), _n("MatMul", ["e", "w"], ["y"])]
    m = _model("int32_gather_embedding", nodes, [("input_ids", INT32, [1, seq])],
               [("y", FLOAT, [1, seq, dim])], inits)
    return m, {"input_ids": token_ids(seq, valid, sample, np.int32)}


BUILDERS = {f.__name__: f for f in (
    conv_bias_relu, gemm_matmul_shared_bias, layernorm_decomposed, rmsnorm, gelu, silu,
    hardswish, attention_mask_softmax, opset11_squeeze_unsqueeze, scalar_output,
    int32_gather_embedding)}
