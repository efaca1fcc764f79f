"""The one home of quantizer graph code: parameters, the fake-quant encoding, S32 biases, QDQ.

Every graph axnb builds around a float model (the Reference model, the compare graph, the
isolation graph, the exported QDQ model) gets its quantizers from here:

- :class:`QParams` / :class:`WeightQ`: the parameters of an activation / a weight;
  :func:`act_qparams`, :func:`weight_q`: computed from statistics and a plan.
- ONE fake-quant encoding with ONE parameter layout (:data:`VECS`, :func:`param_vectors`):
  ``Mul(Clip(Sub(Add(Div(x, s), m), m), lo, hi), s)`` with per-tensor scalars gathered from
  five session inputs. With ``m = 1.5 * 2**23`` the Add/Sub pair is round-half-to-even in
  float32, and ``clip(round(x/s), qmin - z, qmax - z) * s == (clip(round(x/s) + z, qmin, qmax)
  - z) * s`` for integers in float32: bit-identical to :func:`axnb.qmath.fake_quant` (= ONNX
  QuantizeLinear + DequantizeLinear). An unquantized tensor gets ``s = 1, m = 0`` and infinite
  bounds: exactly the identity, so a plan change is data, never a graph change (and no Where,
  7x slower than Mul in onnxruntime).
- S32 biases at ``s_in * s_w`` (:func:`biases` in numpy, :meth:`FakeQuant.bias` in the graph),
  saturated identically in both; where ``s_in * s_w`` is too small for a bias to fit int32,
  :func:`fit_biases` first raises that channel's weight scale (onnxruntime's rule).
- :func:`qdq_model`: the standard QDQ model (what is exported and what Backend mode runs).

Graph edits: :func:`rewire` makes room for a quantizer on a tensor (its producer writes
``t__f``, the quantizer writes ``t``; a graph input ``x`` keeps its name and its readers read
``x__q``), :func:`toposort` orders appended nodes. Every model reaching here is already at the
canonical opset (:data:`axnb.graph.CANONICAL_OPSET` or newer): nothing converts opsets here.

Example:
    >>> import numpy as np
    >>> q = QParams(0.5, 0, QType.S8, -64.0, 63.5)
    >>> v = param_vectors(["x", "y"], {"x": q})
    >>> v[VECS[0]].tolist(), v[VECS[1]].tolist(), v[VECS[3]].tolist()
    ([0.5, 1.0], [True, False], [-128.0, -inf])
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from axnb import qmath
from axnb.errors import ModelError
from axnb.graph import BIASED_OPS, Model, subgraphs_of, weight_axis, weighted_nodes
from axnb.types import QType

QDQ_OPSET = 21
# NOTE: written into every exported model (see axnb.runtime.DISABLED_OPTIMIZERS for why).
RUNTIME_NOTE = ("axnb measured this model with its Q/DQ run as written: onnxruntime "
                "graph_optimization_level ORT_DISABLE_ALL with session.disable_prepacking=1 "
                "gives the same outputs; level basic "
                "and above may rewrite float weights and fuse GELU/LayerNorm, and level all runs "
                "CPU integer kernels (int16-saturating on AVX2 without VNNI)")
# NOTE: the largest float32 below 2**31; both modes saturate biases there so they agree exactly.
S32_MAX = 2147483520.0
MAGIC = 1.5 * 2.0**23  # NOTE: (v + MAGIC) - MAGIC == round_half_even(v) in float32, |v| < 2**22
# scale, on/off, rounding magic, clip low, clip high: one entry per quantizable tensor
VECS = ("__axnb_s", "__axnb_on", "__axnb_rm", "__axnb_clo", "__axnb_chi")


# ---- parameters ----------------------------------------------------------------------------
@dataclass(frozen=True)
class QParams:
    """Quantization parameters of one activation tensor."""

    scale: float
    zero_point: int
    qtype: QType
    lo: float
    hi: float


@dataclass(frozen=True)
class WeightQ:
    """A quantized weight: integer values, per-channel scales and the channel axis.

    ``qtype``: S8 or S4 (held in int8); ``shift``: what bias correction adds to the layer's
    float bias before it is quantized (:mod:`axnb.recover`), None when nothing.
    """

    q: np.ndarray
    scale: np.ndarray
    axis: int
    qtype: QType = QType.S8
    shift: np.ndarray | None = None

    def dequantized(self) -> np.ndarray:
        return qmath.dequantize(self.q, self.scale, np.zeros_like(self.q, shape=self.scale.shape),
                                axis=self.axis)


@dataclass(frozen=True)
class BiasQ:
    """A bias quantized to S32 for one consumer: ``name`` is what the node reads."""

    node: str
    bias: str
    x: str
    weight: str
    name: str


def act_qparams(stats, plan, method=None) -> dict[str, QParams]:
    """Scale and zero point of every quantized activation (FP32 tensors are left out).

    Example:
        >>> qp = act_qparams(stats, plan, "MinMax")     # doctest: +SKIP
        >>> qp["x"].qtype                               # doctest: +SKIP
        <QType.U8: 'U8'>
    """
    out, own = {}, getattr(plan, "methods", {})
    for t, qt in plan.acts.items():
        if qt.is_float or t not in stats.activations:
            continue
        # NOTE: a follower shares its source's range, so it shares its source's method too
        m = own.get(t) or own.get(stats.follows.get(t, t)) or method
        lo, hi = stats.range(t, m, qt)
        s, z = qmath.qparams(lo, hi, qt)
        out[t] = QParams(float(s), int(z), qt, lo, hi)
    return out


def weight_q(model: Model, plan, stats=None, progress: bool = False) -> dict[str, WeightQ]:
    """Symmetric per-output-channel quantization (S8, or S4 where the plan says) of every
    weight the plan does not keep in FP32, with the plan's weight fixes applied
    (:attr:`QuantPlan.fixes`, computed from ``stats.moments``: :mod:`axnb.recover`)."""
    from tqdm.auto import tqdm

    out, fixes = {}, getattr(plan, "fixes", {})
    for n in tqdm(weighted_nodes(model), desc="weight fixes", unit="weight",
                  disable=not (progress and fixes)):
        w = n.input[1]
        qt = plan.weights.get(w, QType.S8)
        if w in out or qt.is_float:
            continue
        arr = model.weight(w).astype(np.float32)
        axis = weight_axis(model, n) if arr.ndim > 1 else 0
        s, z = qmath.weight_qparams(arr, qt, axis=axis)
        out[w] = WeightQ(qmath.quantize(arr, s, z, qt, axis=axis), s, axis, qt)
        fix = fixes.get(w)
        if fix is not None and not fix.is_identity:
            from axnb import recover

            out[w] = recover.fixed(model, n, out[w], fix, stats)
    return out


def bias_nodes(model: Model, wq: Mapping[str, WeightQ],
               qp: Mapping[str, QParams] | None = None) -> list[BiasQ]:
    """The biases that get S32 quantization (input and weight quantized), one per consumer.

    NOTE: a bias initializer shared by several nodes (tied layers) whose inputs differ gets one
    quantized copy per node (``<bias>__<node>``): its scale s_in * s_w differs per node.
    """
    found = []
    for n in weighted_nodes(model):
        if n.op_type in BIASED_OPS and len(n.input) > 2 and n.input[2] \
                and n.input[2] in model.initializers and n.input[1] in wq \
                and (qp is None or n.input[0] in qp):
            found.append((n.name, n.input[2], n.input[0], n.input[1]))
    keys: dict[str, set] = {}
    for _, b, x, w in found:
        keys.setdefault(b, set()).add((x, w))
    return [BiasQ(node, b, x, w, b if len(keys[b]) == 1 else f"{b}__{node}")
            for node, b, x, w in found]


# NOTE: onnxruntime's rule (QDQQuantizer._adjust_weight_scale_for_int32_bias, after TFLite's):
# a channel whose bias would not fit int32 at s_in * s_w gets the weight scale
# s_w * (1.0001 * 2|b| / (2**32 - 2)) / (s_in * s_w) and is requantized. Saturating
# the bias instead cost PP-OCR det all-U16 0.968 -> 0.745 (a U16 s_in is ~256x smaller than a
# U8 one); the same rule in both modes, the export and onnxruntime's quantize_static keeps all
# four bit-identical. conv_bias_data_type FP32 keeps the bias float (no fit needed).
_BIAS_EPS = 1.0001
_S32_QRANGE = float(np.iinfo(np.int32).max) - float(np.iinfo(np.int32).min + 1)


def fit_biases(model: Model, wq: Mapping[str, WeightQ], qp: Mapping[str, QParams]
               ) -> dict[str, WeightQ]:
    """``wq`` with the weight scale raised where an S32 bias would saturate (NOTE above).

    Unchanged weights are the same objects, so callers can tell cheaply what moved.

    Example:
        >>> fit = fit_biases(model, weight_q(model, plan), qp)      # doctest: +SKIP
    """
    scales: dict[str, np.ndarray] = {}
    for bq in bias_nodes(model, wq, qp):
        s = scales.get(bq.weight, wq[bq.weight].scale)
        b = np.abs(bias_value(model, bq, wq)).reshape(-1)
        if b.size not in (1, s.size):
            continue
        # NOTE: float32 up to the division, as onnxruntime's per-channel branch computes it
        # (NumPy 2 keeps python-float * float32 in float32): bit-equal weight scales.
        need = (np.float32(_BIAS_EPS) * (np.float32(2.0) * np.broadcast_to(b, s.shape))
                ).astype(np.float64) / _S32_QRANGE
        s64 = s.astype(np.float64)
        cand = np.float64(np.float32(qp[bq.x].scale)) * s64
        low = (cand < need) & (cand > 0.0)
        if low.any():
            s = s.copy()
            s[low] = (s64[low] * (need[low] / cand[low])).astype(np.float32)
            scales[bq.weight] = s
    out = dict(wq)
    for w, s in scales.items():
        # NOTE: a raised channel is rounded to nearest again (a weight fix's rounding was made
        # for the old scale); rare: only where s_in * s_w is too small for the bias.
        arr, old = model.weight(w).astype(np.float32), wq[w]
        raised = s != old.scale
        q = qmath.quantize(arr, s, np.zeros(s.shape, np.int8), old.qtype, axis=old.axis)
        keep = qmath._along(~raised, arr.ndim, old.axis) if s.size > 1 else ~raised
        out[w] = dataclasses.replace(old, q=np.where(keep, old.q, q), scale=s)
    return out


def bias_value(model: Model, bq: BiasQ, wq: Mapping[str, WeightQ]) -> np.ndarray:
    """The float bias a quantized layer computes with: the model's, plus its weight's bias
    correction (:attr:`WeightQ.shift`)."""
    b = model.weight(bq.bias).astype(np.float32)
    shift = wq[bq.weight].shift
    return b if shift is None else (b + shift.reshape(b.shape)).astype(np.float32)


def fitted(rtn: Mapping[str, WeightQ], wq: Mapping[str, WeightQ]) -> dict[str, int]:
    """Weight -> number of channels :func:`fit_biases` raised (``rtn``: before the fit)."""
    return {w: int(np.count_nonzero(q.scale != rtn[w].scale)) for w, q in wq.items()
            if q is not rtn.get(w, q)}


def shift_float_biases(model: Model, g: onnx.GraphProto, wq: Mapping[str, WeightQ],
                       s32: list[BiasQ]) -> None:
    """A bias left float (its input not quantized, or ``conv_bias_data_type`` FP32) still takes
    its weight's bias correction: a private ``<bias>__shift_<node>`` copy (NOTE: without it
    the Reference's switched-off quantizer kept the shift and the QDQ model did not)."""
    quantized, moved = {b.node for b in s32}, set()
    nodes = {n.name: n for n in g.node}
    for n in weighted_nodes(model):
        w = n.input[1]
        if n.name in quantized or w not in wq or wq[w].shift is None or len(n.input) < 3 \
                or n.input[2] not in model.initializers:
            continue
        bq = BiasQ(n.name, n.input[2], n.input[0], w, f"{n.input[2]}__shift_{n.name}")
        g.initializer.append(numpy_helper.from_array(bias_value(model, bq, wq), bq.name))
        nodes[n.name].input[2] = bq.name
        moved.add(bq.bias)
    # NOTE: an original no node reads any more goes: onnxruntime prunes an unread initializer
    # and then fails to hand it the shared array (axnb.runtime.shared_copy) of a session graph
    if moved:
        drop_initializers(g, moved - _read(g) - {o.name for o in g.output})


def _read(g: onnx.GraphProto) -> set[str]:
    """Every name a node of ``g`` or of its subgraphs (If / Loop bodies) reads."""
    return {i for n in g.node for i in n.input}.union(
        *(_read(sub) for n in g.node for sub in subgraphs_of(n)))


def bias_quantize(b: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """S32 bias: round_half_even(b / scale) saturated to int32 (QuantizeLinear semantics)."""
    scale = scale.astype(np.float32)
    # NOTE: the quotient in float64, as onnxruntime's quantizer computes it (a float32 quotient
    # rounds differently at ties: one S32 bias off by 1 cost the zoo CNN 0.0013 cosine).
    with np.errstate(divide="ignore", invalid="ignore"):
        q = np.rint(b.astype(np.float64) / scale.astype(np.float64))
    # NOTE: a scale that underflowed to 0 (tiny input scale x tiny weight scale) keeps bias 0.
    q = np.where(scale > 0, q, 0.0)
    return np.clip(q, -(2.0**31), S32_MAX).astype(np.int32)


def biases(model: Model, wq: Mapping[str, WeightQ], qp: Mapping[str, QParams]
           ) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """THE S32 bias computation: quantized name -> (int32 values, float32 scale s_in * s_w)."""
    out = {}
    for bq in bias_nodes(model, wq, qp):
        sb = (np.float32(qp[bq.x].scale) * wq[bq.weight].scale).astype(np.float32)
        out[bq.name] = (bias_quantize(bias_value(model, bq, wq), sb), sb)
    return out


def param_vectors(tensors: list[str], qp: Mapping[str, QParams]) -> dict[str, np.ndarray]:
    """The five :data:`VECS` session inputs for a set of qparams (absent = not quantized)."""
    n = len(tensors)
    s, on = np.ones(n, np.float32), np.zeros(n, bool)
    lo, hi = np.full(n, -np.inf, np.float32), np.full(n, np.inf, np.float32)
    for i, t in enumerate(tensors):
        q = qp.get(t)
        if q is not None:
            qmin, qmax = qmath.qrange(q.qtype)
            s[i], on[i], lo[i], hi[i] = q.scale, True, qmin - q.zero_point, qmax - q.zero_point
    return dict(zip(VECS, (s, on, np.where(on, MAGIC, 0.0).astype(np.float32), lo, hi)))


# ---- graph edits ---------------------------------------------------------------------------
def copy(model: Model, shared: bool = False) -> onnx.ModelProto:
    """A copy of the model's proto to build on; ``shared``: for session-only graphs, with the
    large weights shared in memory (:meth:`Model.work_copy`), never to be saved."""
    if shared:
        return model.work_copy()
    p = onnx.ModelProto()
    p.CopyFrom(model.proto)
    return p


def add_param_inputs(g: onnx.GraphProto, n: int) -> None:
    """The five parameter vectors as graph inputs of length ``n``."""
    for name in VECS:
        dt = TensorProto.BOOL if name == VECS[1] else TensorProto.FLOAT
        g.input.append(helper.make_tensor_value_info(name, dt, [n]))


def rewire(p: onnx.ModelProto, tensors: list[str]) -> dict[str, tuple[str, str]]:
    """Make room for a quantizer on each tensor: returns t -> (float source, quantized name)."""
    g = p.graph
    inputs = {i.name for i in g.input}
    want = set(tensors)
    io = {t: (t, f"{t}__q") if t in inputs else (f"{t}__f", t) for t in tensors}
    for n in g.node:
        for k, o in enumerate(n.output):
            if o in want and o not in inputs:
                n.output[k] = io[o][0]
        for k, i in enumerate(n.input):
            if i in want and i in inputs:
                n.input[k] = io[i][1]
    for o in g.output:
        if o.name in inputs:
            raise ModelError(f"graph input {o.name!r} is also a graph output; not supported")
    return io


def rename_biases(g: onnx.GraphProto, bqs: list[BiasQ]) -> None:
    """Point each node at its own quantized copy of a shared bias."""
    by_node = {b.node: b for b in bqs if b.name != b.bias}
    for n in g.node:
        if n.name in by_node:
            n.input[2] = by_node[n.name].name


def drop_initializers(g: onnx.GraphProto, names) -> None:
    """Remove initializers by name, in one pass (each rebuild copies every tensor)."""
    names = set(names)
    if not names:
        return
    keep = [t for t in g.initializer if t.name not in names]
    del g.initializer[:]
    g.initializer.extend(keep)


def toposort(p: onnx.ModelProto) -> onnx.ModelProto:
    """Topologically sort nodes, each as soon as its inputs exist (inserted nodes were appended
    at the end).

    NOTE: onnxruntime runs nodes in this order and frees a tensor after its last reader, so a
    reduction or quantizer placed right after its producer keeps memory flat: appended at the
    end, every tensor it reads would stay alive for the whole run (GBs on large detectors).
    """
    import heapq

    g = p.graph
    have = {i.name for i in g.input} | {t.name for t in g.initializer} | {""}
    nodes = list(g.node)
    ready_at = {t: 0 for t in have}         # tensor -> position of the node that made it
    waiting: dict[str, list[int]] = {}
    missing = []
    for k, n in enumerate(nodes):
        need = {i for i in n.input if i not in have}
        missing.append(len(need))
        for i in need:
            waiting.setdefault(i, []).append(k)
    heap = [(0, k) for k, c in enumerate(missing) if c == 0]
    heapq.heapify(heap)
    out, pos = [], 0
    while heap:
        _, k = heapq.heappop(heap)
        out.append(nodes[k])
        pos += 1
        for o in nodes[k].output:
            if o in ready_at:
                continue
            ready_at[o] = pos
            for j in waiting.pop(o, []):
                missing[j] -= 1
                if missing[j] == 0:
                    heapq.heappush(heap, (pos, j))
    if len(out) != len(nodes):
        stuck = next(n for n, c in zip(nodes, missing) if c > 0)
        raise ModelError(f"cannot order the quantized graph at node {stuck.name!r}")
    del g.node[:]
    g.node.extend(out)
    return p


# ---- the fake-quant encoding ---------------------------------------------------------------
class FakeQuant:
    """Adds fake-quantizers (the module's encoding) to a graph with :func:`add_param_inputs`.

    Args:
        g: the graph.
        tensors: the quantizable tensors; tensor i uses entry i of every vector.
    """

    def __init__(self, g: onnx.GraphProto, tensors: list[str]) -> None:
        self.g = g
        self.index = {t: i for i, t in enumerate(tensors)}
        self._scalars: dict[int, tuple[str, ...]] = {}

    def _scalar(self, i: int) -> tuple[str, ...]:
        """(s, on, m, lo, hi) of tensor i, gathered once per graph."""
        if i not in self._scalars:
            v = f"__axnb_p{i}"
            self.g.initializer.append(numpy_helper.from_array(np.array(i, np.int64), v))
            self._scalars[i] = tuple(f"{v}_{k}" for k in ("s", "on", "m", "lo", "hi"))
            for vec, out in zip(VECS, self._scalars[i]):
                self.g.node.append(helper.make_node("Gather", [vec, v], [out]))
        return self._scalars[i]

    def fq(self, t: str, src: str, dst: str) -> str:
        """``dst = fake_quant(src)`` with tensor ``t``'s parameters; returns ``dst``."""
        s, _, m, lo, hi = self._scalar(self.index[t])
        self.g.node.extend([
            helper.make_node("Div", [src, s], [f"{dst}_d"]),
            helper.make_node("Add", [f"{dst}_d", m], [f"{dst}_a"]),
            helper.make_node("Sub", [f"{dst}_a", m], [f"{dst}_r"]),
            helper.make_node("Clip", [f"{dst}_r", lo, hi], [f"{dst}_c"]),
            helper.make_node("Mul", [f"{dst}_c", s], [dst])])
        return dst

    def bias(self, dst: str, b_float: np.ndarray, w_scale: np.ndarray, x: str) -> str:
        """``dst`` = the S32 fake-quant of a bias at ``s_x * s_w`` (s_x is data, so a U16
        toggle needs no rebuild); the float bias where ``x`` is not quantized."""
        v = f"{dst}__bq"
        s, on, *_ = self._scalar(self.index[x])
        f64 = {"b64": b_float.astype(np.float64), "min": np.float64(-(2.0**31)),
               "max": np.float64(S32_MAX)}
        self.g.initializer.extend(
            [numpy_helper.from_array(b_float.astype(np.float32), f"{v}_float"),
             numpy_helper.from_array(w_scale.astype(np.float32), f"{v}_sw"),
             numpy_helper.from_array(np.array(0.0, np.float32), f"{v}_zero")]
            + [numpy_helper.from_array(np.asarray(c), f"{v}_{k}") for k, c in f64.items()])
        # NOTE: the quotient in float64, as :func:`bias_quantize` (and onnxruntime) compute it.
        self.g.node.extend([
            helper.make_node("Mul", [s, f"{v}_sw"], [f"{v}_sb"]),
            helper.make_node("Cast", [f"{v}_sb"], [f"{v}_sbd"], to=TensorProto.DOUBLE),
            helper.make_node("Div", [f"{v}_b64", f"{v}_sbd"], [f"{v}_d"]),
            helper.make_node("Round", [f"{v}_d"], [f"{v}_r"]),
            helper.make_node("Clip", [f"{v}_r", f"{v}_min", f"{v}_max"], [f"{v}_rcd"]),
            helper.make_node("Cast", [f"{v}_rcd"], [f"{v}_rc"], to=TensorProto.FLOAT),
            helper.make_node("Mul", [f"{v}_rc", f"{v}_sb"], [f"{v}_m"]),
            # NOTE: as bias_quantize: a scale that underflowed to 0 gives bias 0, not NaN.
            helper.make_node("Greater", [f"{v}_sb", f"{v}_zero"], [f"{v}_pos"]),
            helper.make_node("Where", [f"{v}_pos", f"{v}_m", f"{v}_zero"], [f"{v}_q"]),
            helper.make_node("Where", [on, f"{v}_q", f"{v}_float"], [dst])])
        return dst


# ---- QDQ -----------------------------------------------------------------------------------
def qdq_model(model: Model, qp: Mapping[str, QParams], wq: Mapping[str, WeightQ],
              bias_s32: bool = True) -> onnx.ModelProto:
    """A QDQ ONNX model (opset >= 21) with the given parameters; loads in stock onnxruntime."""
    p = copy(model)
    g = p.graph
    tensors = model.points()
    io = rewire(p, tensors)
    for t in tensors:
        src, dst = io[t]
        q = qp.get(t)
        if q is None:
            g.node.append(helper.make_node("Identity", [src], [dst], name=f"{t}__id"))
            continue
        zp = np.array(q.zero_point, qmath.np_dtype(q.qtype))
        g.initializer.extend([numpy_helper.from_array(np.array(q.scale, np.float32), f"{t}__s"),
                              numpy_helper.from_array(zp, f"{t}__z")])
        g.node.extend([
            helper.make_node("QuantizeLinear", [src, f"{t}__s", f"{t}__z"], [f"{t}__i"],
                             name=f"{t}__Q"),
            helper.make_node("DequantizeLinear", [f"{t}__i", f"{t}__s", f"{t}__z"], [dst],
                             name=f"{t}__DQ")])
    bqs = bias_nodes(model, wq, qp) if bias_s32 else []
    rename_biases(g, bqs)
    shift_float_biases(model, g, wq, bqs)
    drop_initializers(g, list(wq) + [b.bias for b in bqs])
    for w, q in wq.items():
        _dq_initializer(g, w, q.q, q.scale, q.axis, q.qtype)
    for name, (q, sb) in (biases(model, wq, qp) if bias_s32 else {}).items():
        _dq_initializer(g, name, q, sb, _bias_axis(q.shape, sb.size))
    _keep_shared(model, g, [b.bias for b in bqs])
    onnx.helper.set_model_props(p, {**{e.key: e.value for e in p.metadata_props},
                                    "axnb.onnxruntime": RUNTIME_NOTE})
    return toposort(p)


def _keep_shared(model: Model, g: onnx.GraphProto, dropped: list[str]) -> None:
    """Put back a dropped float bias that some node still reads (a non-quantized consumer)."""
    read = {i for n in g.node for i in n.input}
    have = {t.name for t in g.initializer} | {o for n in g.node for o in n.output}
    for b in dict.fromkeys(dropped):
        if b in read and b not in have:
            g.initializer.append(numpy_helper.from_array(model.weight(b), b))


def _bias_axis(shape: tuple[int, ...], n: int) -> int:
    """The axis of a per-channel bias scale: the one dim of size ``n`` ([N], [1, N], ...)."""
    if n <= 1 or len(shape) <= 1:
        return 0
    return max(i for i, d in enumerate(shape) if d == n)


def _dq_initializer(g: onnx.GraphProto, name: str, q: np.ndarray, scale: np.ndarray,
                    axis: int, qtype: QType | None = None) -> None:
    z = np.zeros(scale.shape, q.dtype)
    if qtype is QType.S4:   # NOTE: ONNX INT4 (opset 21); onnxruntime >= 1.20 dequantizes it
        import ml_dtypes

        q, z = q.astype(ml_dtypes.int4), z.astype(ml_dtypes.int4)
    g.initializer.extend([
        numpy_helper.from_array(q, f"{name}__i"),
        numpy_helper.from_array(scale.astype(np.float32), f"{name}__s"),
        numpy_helper.from_array(z, f"{name}__z")])
    g.node.append(helper.make_node("DequantizeLinear", [f"{name}__i", f"{name}__s",
                                                        f"{name}__z"], [name],
                                   name=f"{name}__DQ", axis=axis))

