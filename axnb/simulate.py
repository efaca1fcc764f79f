"""Build the quantized model: fake-quant (Reference) or QDQ (Backend, and the export).

Both modes quantize the same tensors with the same parameters:

- every float activation tensor (graph inputs and node outputs) whose plan QType is not FP32,
  per tensor: unsigned types asymmetric, signed symmetric (``qmath.qparams`` on the range
  ``stats.range(t, method, qtype)``);
- weights (input 1 of Conv/ConvTranspose/Gemm/MatMul): S8 symmetric per output channel;
- biases (input 2 of Conv/ConvTranspose/Gemm) as S32 at scale s_in * s_w when
  ``conv_bias_data_type`` is S32 and both the input and the weight are quantized.

Naming: in the quantized graph the quantized value of tensor ``t`` is still called ``t`` (the
op now writes ``t__f``, which is quantized into ``t``); a graph input ``x`` keeps its name and
type and its quantized value is ``x__q``. So every quantized tensor can be compared with the
float tensor of the same name, and the quantized model's inputs and outputs keep the float
model's names, types and shapes.

**Reference** is float fake-quant, ``(clip(round(x / s) + z, qmin, qmax) - z) * s`` in float32
(bit-identical to :func:`axnb.qmath.fake_quant`, which equals ONNX QuantizeLinear +
DequantizeLinear), where ``s, z, qmin, qmax`` and an on/off flag are *inputs* of the session,
gathered from five vectors: one onnxruntime session serves every activation plan, and a
U8 <-> U16 toggle changes only data. **Backend** is a standard QDQ model (opset 21, so 16-bit
Q/DQ are standard ops) run with onnxruntime's graph optimizations on, so that 8-bit patterns
execute on its integer kernels; it is also what ``save()`` exports as ``quantized.onnx``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper

from axnb import qmath
from axnb.calibrate import weight_axis
from axnb.errors import ModelError
from axnb.graph import Model, make_session, save_model
from axnb.types import CalibMethod, Mode, QType, parse_enum

QDQ_OPSET = 21
# NOTE: the largest float32 below 2**31; both modes saturate biases there so they agree exactly.
S32_MAX = 2147483520.0
PARAMS = ("__axnb_s", "__axnb_z", "__axnb_qmin", "__axnb_qmax", "__axnb_on")


@dataclass(frozen=True)
class QParams:
    """Quantization parameters of one activation tensor."""

    scale: float
    zero_point: int
    qtype: QType
    lo: float
    hi: float


def act_qparams(stats, plan, method=None) -> dict[str, QParams]:
    """Scale and zero point of every quantized activation (FP32 tensors are left out).

    Example:
        >>> qp = act_qparams(stats, plan, "MinMax")     # doctest: +SKIP
        >>> qp["x"].qtype
        <QType.U8: 'U8'>
    """
    out = {}
    for t, qt in plan.acts.items():
        if qt.is_float or t not in stats.activations:
            continue
        lo, hi = stats.range(t, method, qt)
        s, z = qmath.qparams(lo, hi, qt)
        out[t] = QParams(float(s), int(z), qt, lo, hi)
    return out


@dataclass(frozen=True)
class WeightQ:
    """A quantized weight: integer values, per-channel scales and the channel axis."""

    q: np.ndarray
    scale: np.ndarray
    axis: int

    def dequantized(self) -> np.ndarray:
        return qmath.dequantize(self.q, self.scale, np.zeros_like(self.q, shape=self.scale.shape),
                                axis=self.axis)


def weighted_nodes(model: Model) -> list[onnx.NodeProto]:
    """Conv/ConvTranspose/Gemm/MatMul nodes whose weight (input 1) is an initializer."""
    return [n for n in model.nodes if n.op_type in ("Conv", "ConvTranspose", "Gemm", "MatMul")
            and len(n.input) > 1 and n.input[1] in model.initializers]


def weight_q(model: Model, plan) -> dict[str, WeightQ]:
    """S8 per-output-channel quantization of every weight the plan does not keep in FP32."""
    out = {}
    for n in weighted_nodes(model):
        w = n.input[1]
        if w in out or plan.weights.get(w, QType.S8).is_float:
            continue
        arr = model.weight(w).astype(np.float32)
        axis = weight_axis(model, n) if arr.ndim > 1 else 0
        s, z = qmath.weight_qparams(arr, QType.S8, axis=axis)
        out[w] = WeightQ(qmath.quantize(arr, s, z, QType.S8, axis=axis), s, axis)
    return out


def _bias_nodes(model: Model, wq: Mapping[str, WeightQ], qp: Mapping[str, QParams] | None):
    """(node, bias name, input tensor, weight) for biases that get S32 quantization."""
    for n in weighted_nodes(model):
        if n.op_type in ("Conv", "ConvTranspose", "Gemm") and len(n.input) > 2 and n.input[2] \
                and n.input[2] in model.initializers and n.input[1] in wq \
                and (qp is None or n.input[0] in qp):
            yield n, n.input[2], n.input[0], n.input[1]


# ---- graph surgery shared by both modes ----------------------------------------------------
def _copy(model: Model, opset: int | None = None) -> onnx.ModelProto:
    p = onnx.ModelProto()
    p.CopyFrom(model.proto)
    if opset and _opset(p) < opset:
        from onnx import version_converter

        try:
            p = version_converter.convert_version(p, opset)
        except Exception as e:  # noqa: BLE001
            raise ModelError(f"cannot convert the model to opset {opset} for 16-bit QDQ: "
                             f"{str(e).splitlines()[0]}") from e
    return p


def _opset(p: onnx.ModelProto) -> int:
    return next((o.version for o in p.opset_import if o.domain in ("", "ai.onnx")), 1)


def _rewire(p: onnx.ModelProto, tensors: list[str]) -> dict[str, tuple[str, str]]:
    """Make room for a quantizer on each tensor: returns t -> (float source, quantized name).

    A node output ``t`` is renamed ``t__f`` and the quantizer writes ``t``; a graph input ``x``
    keeps its name and its consumers read ``x__q``.
    """
    g = p.graph
    inputs = {i.name for i in g.input}
    want = set(tensors)
    io = {}
    for t in tensors:
        io[t] = (t, f"{t}__q") if t in inputs else (f"{t}__f", t)
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


def _drop_initializers(g: onnx.GraphProto, names) -> None:
    """Remove initializers by name, in one pass (each rebuild copies every tensor)."""
    names = set(names)
    if not names:
        return
    keep = [t for t in g.initializer if t.name not in names]
    del g.initializer[:]
    g.initializer.extend(keep)


# ---- Reference: fake-quant with parameters as data ----------------------------------------
def reference_model(model: Model, wq: Mapping[str, WeightQ], bias_s32: bool = True
                    ) -> tuple[onnx.ModelProto, list[str], dict[str, str]]:
    """The fake-quant graph: every activation gets a switchable quantizer fed by PARAMS.

    Returns:
        (proto, tensors, qnames): tensor i of ``tensors`` uses entry i of each PARAMS vector;
        ``qnames[t]`` is the name of t's quantized value in the graph.
    """
    p = _copy(model, opset=13 if _opset(model.proto) < 13 else None)
    g = p.graph
    tensors = model.activations()
    io = _rewire(p, tensors)
    for name, dt in zip(PARAMS, [onnx.TensorProto.FLOAT] * 4 + [onnx.TensorProto.BOOL]):
        g.input.append(helper.make_tensor_value_info(name, dt, [len(tensors)]))
    index = {t: i for i, t in enumerate(tensors)}
    for i, t in enumerate(tensors):
        g.node.extend(_fake_quant_nodes(i, *io[t]))
    biases = list(_bias_nodes(model, wq, None)) if bias_s32 else []
    _drop_initializers(g, list(wq) + [b for _, b, _, _ in biases])
    for w, q in wq.items():
        g.initializer.append(numpy_helper.from_array(q.dequantized().astype(np.float32), w))
    if bias_s32:
        for _, b, x, w in biases:
            # NOTE: the float bias moves to `b__float`; the quantized bias takes its name.
            g.initializer.extend([
                numpy_helper.from_array(model.weight(b).astype(np.float32), f"{b}__float"),
                numpy_helper.from_array(wq[w].scale.astype(np.float32), f"{b}__sw")])
            g.node.extend(_bias_nodes_fq(b, index[x]))
    return _sorted(p), tensors, {t: io[t][1] for t in tensors}


def _fake_quant_nodes(i: int, src: str, dst: str) -> list[onnx.NodeProto]:
    """(clip(round(x / s) + z, qmin, qmax) - z) * s where the flag is on, else x."""
    v = f"{dst}__fq"
    idx = helper.make_tensor(f"{v}_i", onnx.TensorProto.INT64, [], [i])
    nodes = [helper.make_node("Constant", [], [f"{v}_i"], value=idx)]
    s, z, lo, hi, on = (f"{v}_{k}" for k in ("s", "z", "lo", "hi", "on"))
    for vec, out in zip(PARAMS, (s, z, lo, hi, on)):
        nodes.append(helper.make_node("Gather", [vec, f"{v}_i"], [out]))
    nodes += [
        helper.make_node("Div", [src, s], [f"{v}_d"]),
        helper.make_node("Round", [f"{v}_d"], [f"{v}_r"]),
        helper.make_node("Add", [f"{v}_r", z], [f"{v}_a"]),
        helper.make_node("Clip", [f"{v}_a", lo, hi], [f"{v}_c"]),
        helper.make_node("Sub", [f"{v}_c", z], [f"{v}_u"]),
        helper.make_node("Mul", [f"{v}_u", s], [f"{v}_q"]),
        helper.make_node("Where", [on, f"{v}_q", src], [dst]),
    ]
    return nodes


def _bias_nodes_fq(b: str, i: int) -> list[onnx.NodeProto]:
    """In-graph S32 bias fake-quant at scale s_in * s_w (s_in is data, so U16 toggles work)."""
    v = f"{b}__bq"
    idx = helper.make_tensor(f"{v}_i", onnx.TensorProto.INT64, [], [i])
    return [
        helper.make_node("Constant", [], [f"{v}_i"], value=idx),
        helper.make_node("Constant", [], [f"{v}_zero"],
                         value=helper.make_tensor(f"{v}_zero", onnx.TensorProto.FLOAT, [], [0.0])),
        helper.make_node("Constant", [], [f"{v}_min"], value=helper.make_tensor(
            f"{v}_min", onnx.TensorProto.FLOAT, [], [-(2.0**31)])),
        helper.make_node("Constant", [], [f"{v}_max"], value=helper.make_tensor(
            f"{v}_max", onnx.TensorProto.FLOAT, [], [S32_MAX])),
        helper.make_node("Gather", [PARAMS[0], f"{v}_i"], [f"{v}_sin"]),
        helper.make_node("Gather", [PARAMS[4], f"{v}_i"], [f"{v}_on"]),
        helper.make_node("Mul", [f"{v}_sin", f"{b}__sw"], [f"{v}_sb"]),
        helper.make_node("Div", [f"{b}__float", f"{v}_sb"], [f"{v}_d"]),
        helper.make_node("Round", [f"{v}_d"], [f"{v}_r"]),
        helper.make_node("Clip", [f"{v}_r", f"{v}_min", f"{v}_max"], [f"{v}_rc"]),
        helper.make_node("Mul", [f"{v}_rc", f"{v}_sb"], [f"{v}_m"]),
        # NOTE: as bias_quantize: a scale that underflowed to 0 gives bias 0, not NaN.
        helper.make_node("Greater", [f"{v}_sb", f"{v}_zero"], [f"{v}_pos"]),
        helper.make_node("Where", [f"{v}_pos", f"{v}_m", f"{v}_zero"], [f"{v}_q"]),
        helper.make_node("Where", [f"{v}_on", f"{v}_q", f"{b}__float"], [b]),
    ]


def _sorted(p: onnx.ModelProto) -> onnx.ModelProto:
    """Topologically sort nodes (inserted nodes were appended at the end)."""
    g = p.graph
    have = {i.name for i in g.input} | {t.name for t in g.initializer} | {""}
    todo, out = list(g.node), []
    while todo:
        rest = []
        for n in todo:
            if all(i in have for i in n.input):
                out.append(n)
                have.update(n.output)
            else:
                rest.append(n)
        if len(rest) == len(todo):
            raise ModelError(f"cannot order the quantized graph at node {rest[0].name!r}")
        todo = rest
    del g.node[:]
    g.node.extend(out)
    return p


def param_vectors(tensors: list[str], qp: Mapping[str, QParams]) -> dict[str, np.ndarray]:
    """The five PARAMS vectors for a set of activation qparams (absent tensor = not quantized)."""
    n = len(tensors)
    s, z = np.ones(n, np.float32), np.zeros(n, np.float32)
    lo, hi, on = np.zeros(n, np.float32), np.zeros(n, np.float32), np.zeros(n, bool)
    for i, t in enumerate(tensors):
        q = qp.get(t)
        if q is not None:
            s[i], z[i], on[i] = q.scale, q.zero_point, True
            lo[i], hi[i] = qmath.qrange(q.qtype)
    return dict(zip(PARAMS, (s, z, lo, hi, on)))


# ---- Backend: a standard QDQ model ---------------------------------------------------------
def qdq_model(model: Model, qp: Mapping[str, QParams], wq: Mapping[str, WeightQ],
              bias_s32: bool = True) -> onnx.ModelProto:
    """A QDQ ONNX model (opset >= 21) with the given parameters; loads in stock onnxruntime."""
    p = _copy(model, opset=QDQ_OPSET)
    g = p.graph
    tensors = model.activations()
    io = _rewire(p, tensors)
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
                             name=f"{t}__DQ"),
        ])
    biases = list(_bias_nodes(model, wq, qp)) if bias_s32 else []
    _drop_initializers(g, list(wq) + [b for _, b, _, _ in biases])
    for w, q in wq.items():
        _dq_initializer(g, w, q.q, q.scale, q.axis)
    for _, b, x, w in biases:
        sb = (np.float32(qp[x].scale) * wq[w].scale).astype(np.float32)
        _dq_initializer(g, b, bias_quantize(model.weight(b), sb), sb, 0)
    return _sorted(p)


def bias_quantize(b: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """S32 bias: round_half_even(b / scale) saturated to int32 (QuantizeLinear semantics)."""
    scale = scale.astype(np.float32)
    with np.errstate(divide="ignore", invalid="ignore"):
        q = np.rint(b.astype(np.float32) / scale)
    # NOTE: a scale that underflowed to 0 (tiny input scale x tiny weight scale) keeps bias 0.
    q = np.where(scale > 0, q, 0.0)
    return np.clip(q, -(2.0**31), S32_MAX).astype(np.int32)


def _dq_initializer(g: onnx.GraphProto, name: str, q: np.ndarray, scale: np.ndarray,
                    axis: int) -> None:
    g.initializer.extend([
        numpy_helper.from_array(q, f"{name}__i"),
        numpy_helper.from_array(scale.astype(np.float32), f"{name}__s"),
        numpy_helper.from_array(np.zeros(scale.shape, q.dtype), f"{name}__z"),
    ])
    g.node.append(helper.make_node("DequantizeLinear", [f"{name}__i", f"{name}__s",
                                                        f"{name}__z"], [name],
                                   name=f"{name}__DQ", axis=axis))


# ---- the result ----------------------------------------------------------------------------
@dataclass
class QuantModel:
    """A quantized model in one mode, ready to run, with everything needed to export it.

    Attributes:
        model: the float model it was built from.
        mode: Reference or Backend.
        qparams: activation tensor -> QParams; weights: weight -> WeightQ.
        qnames: float tensor name -> name of its quantized value in ``proto``.
    """

    model: Model
    mode: Mode
    plan: object
    qparams: dict[str, QParams]
    weights: dict[str, WeightQ]
    bias_s32: bool = True
    proto: onnx.ModelProto | None = None
    qnames: dict[str, str] = field(default_factory=dict)
    method: CalibMethod = CalibMethod.MinMax
    _params: dict[str, np.ndarray] = field(default_factory=dict, repr=False)
    _sessions: dict = field(default_factory=dict, repr=False)

    def run(self, feed: Mapping[str, np.ndarray], outputs: list[str] | None = None
            ) -> dict[str, np.ndarray]:
        """Run one sample; ``outputs`` are float tensor names (default: the model outputs)."""
        outputs = list(outputs or self.model.outputs)
        names = [self.qnames.get(t, t) for t in outputs]
        sess = self.session(tuple(names))
        vals = sess.run(names, {**feed, **self._params})
        return dict(zip(outputs, vals))

    def session(self, names: tuple[str, ...] = ()):
        """A session exposing ``names`` (cached); Backend runs with all optimizations."""
        graph_out = {o.name for o in self.proto.graph.output}
        key = tuple(n for n in names if n not in graph_out)
        if key not in self._sessions:
            p = self.proto
            if key:
                p = onnx.ModelProto()
                p.CopyFrom(self.proto)
                for n in key:
                    p.graph.output.append(helper.make_empty_tensor_value_info(n))
            level = True if self.mode is Mode.Backend else "extended"
            self._sessions[key] = make_session(p, optimize=level)
        return self._sessions[key]

    def with_plan(self, stats, plan, method=None) -> QuantModel:
        """The same model under another plan or method, reusing the Reference session.

        NOTE: only the parameter vectors change when the weights' types stay the same, so a
        U8 <-> U16 toggle or a calibration-method change costs no graph build and no session.
        """
        method = parse_enum(CalibMethod, method or stats.method, "calibration_method")
        qp = act_qparams(stats, plan, method)
        if self.mode is Mode.Reference and _weights_key(plan, self.model) == \
                _weights_key(self.plan, self.model):
            tensors = self.model.activations()
            return QuantModel(self.model, self.mode, plan, qp, self.weights, self.bias_s32,
                              self.proto, self.qnames, method, param_vectors(tensors, qp),
                              self._sessions)
        return simulate(self.model, stats, plan, self.mode, method,
                        "S32" if self.bias_s32 else "FP32")

    def qdq(self) -> onnx.ModelProto:
        """The QDQ model of this plan and these parameters (what gets exported)."""
        if self.mode is Mode.Backend:
            return self.proto
        return qdq_model(self.model, self.qparams, self.weights, self.bias_s32)

    def save(self, path: str | Path) -> Path:
        """Write ``quantized.onnx`` (QDQ, loads in stock onnxruntime); temp name, then rename."""
        return save_model(self.qdq(), path)


def _weights_key(plan, model: Model) -> tuple:
    return tuple(sorted(w for w, q in plan.weights.items() if q.is_float))


def simulate(model: Model, stats, plan, mode="Reference", method=None,
             conv_bias_data_type: str = "S32") -> QuantModel:
    """Build the quantized model for a plan.

    Args:
        model: the float model.
        stats: CalibStats of that model.
        plan: a QuantPlan (QType per activation and weight).
        mode: "Reference" (fake-quant, parameters as data) or "Backend"/"NPUBackend" (QDQ with
            onnxruntime's integer kernels).
        method: calibration method for the ranges (default: ``stats.method``).
        conv_bias_data_type: "S32" (bias quantized at s_in * s_w) or "FP32".

    Returns:
        QuantModel; ``.run(feed)`` gives the outputs, ``.save(path)`` exports QDQ ONNX.

    Example:
        >>> q = simulate(model, stats, plan, "Reference")          # doctest: +SKIP
        >>> q.run(feed)["fetch_name_0"].shape                        # doctest: +SKIP
        (1, 4)
    """
    mode = parse_enum(Mode, mode, "precision_analysis_mode")
    method = parse_enum(CalibMethod, method or stats.method, "calibration_method")
    qp = act_qparams(stats, plan, method)
    wq = weight_q(model, plan)
    s32 = str(conv_bias_data_type).upper() == "S32"
    if mode is Mode.Backend:
        proto = qdq_model(model, qp, wq, s32)
        return QuantModel(model, mode, plan, qp, wq, s32, proto,
                          {t: t for t in model.activations()}
                          | {t: f"{t}__q" for t in model.inputs}, method)
    proto, tensors, qnames = reference_model(model, wq, s32)
    return QuantModel(model, mode, plan, qp, wq, s32, proto, qnames, method,
                      param_vectors(tensors, qp))
