"""Build the quantized model: fake-quant (Reference) or QDQ (Backend, and the export).

Both modes quantize the same tensors with the same parameters:

- every float activation tensor (graph inputs and node outputs) whose plan QType is not FP32,
  per tensor: unsigned types asymmetric, signed symmetric (``qmath.qparams`` on the range
  ``stats.range(t, method, qtype)``);
- weights (input 1 of Conv/ConvTranspose/Gemm/MatMul): S8 symmetric per output channel;
- biases (input 2 of Conv/ConvTranspose/Gemm) as S32 at scale s_in * s_w when
  ``conv_bias_data_type`` is S32 and both the input and the weight are quantized; a channel whose
  bias would not fit int32 gets a larger weight scale first (:func:`axnb.qdq.fit_biases`,
  onnxruntime's rule), so the weights depend on the plan's input scales.

Naming: in the quantized graph the quantized value of tensor ``t`` is still called ``t`` (the
op now writes ``t__f``, which is quantized into ``t``); a graph input ``x`` keeps its name and
type and its quantized value is ``x__q``. So every quantized tensor can be compared with the
float tensor of the same name, and the quantized model's inputs and outputs keep the float
model's names, types and shapes.

**Reference** is float fake-quant in float32, bit-identical to :func:`axnb.qmath.fake_quant`
(= ONNX QuantizeLinear + DequantizeLinear), in the one encoding of :mod:`axnb.qdq` whose
parameters are *inputs* of the session: one onnxruntime session serves every activation plan,
and a U8 <-> U16 toggle changes only data. **Backend** is a standard QDQ model (opset 21, so
16-bit Q/DQ are standard ops), what ``save()`` exports as ``quantized.onnx``, run with no
onnxruntime graph optimization: the Q/DQ nodes execute as written, i.e. exact integer
semantics, the same on every analysis machine. NOTE: at level "all" onnxruntime runs 8-bit
Conv/MatMul patterns on its CPU integer kernels, which on AVX2 CPUs without VNNI add pairs of
u8*s8 products in saturating int16 (measured: PP-OCRv4 det output cosine 0.93449 exact,
0.93078 on such kernels); an NPU (and a VNNI CPU) does not saturate, so that figure belongs to
the laptop, not the deployment. Level "basic" is not "as written" either since onnxruntime
1.21: it rewrites float weights between Q/DQ and fuses GELU
(:data:`axnb.runtime.DISABLED_OPTIMIZERS`), and its Identity elimination moved a PP-OCRv4 rec
output by 7.6e-5 on one plan of the differential suite; unoptimized runs as fast on the zoo
(PP-OCR det 1.05 vs 0.99 s per sample, MiniLM 0.10 vs 0.11 s).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper

from axnb import qdq, runtime
from axnb.graph import Model, save_model
from axnb.qdq import QParams, WeightQ, act_qparams, param_vectors, weight_q
from axnb.runtime import SessionCache
from axnb.types import CalibMethod, Mode, QType, parse_enum

__all__ = ["QParams", "QuantModel", "WeightQ", "act_qparams", "reference_model", "simulate",
           "weight_q"]


def reference_model(model: Model, wq: Mapping[str, WeightQ], bias_s32: bool = True
                    ) -> tuple[onnx.ModelProto, list[str], dict[str, str]]:
    """The fake-quant graph: every activation gets a switchable quantizer fed by qdq.VECS.

    Returns:
        (proto, tensors, qnames): tensor i of ``tensors`` uses entry i of each vector;
        ``qnames[t]`` is the name of t's quantized value in the graph.
    """
    p = qdq.copy(model, shared=True)     # NOTE: run, never saved (export is qdq_model)
    g = p.graph
    tensors = model.points()
    io = qdq.rewire(p, tensors)
    qdq.add_param_inputs(g, len(tensors))
    fq = qdq.FakeQuant(g, tensors)
    for t in tensors:
        fq.fq(t, *io[t])
    bqs = qdq.bias_nodes(model, wq) if bias_s32 else []
    qdq.rename_biases(g, bqs)
    qdq.shift_float_biases(model, g, wq, bqs)
    qdq.drop_initializers(g, list(wq) + [b.bias for b in bqs if b.name == b.bias])
    for w, q in wq.items():
        g.initializer.append(numpy_helper.from_array(q.dequantized().astype(np.float32), w))
    for b in {b.name: b for b in bqs}.values():
        fq.bias(b.name, qdq.bias_value(model, b, wq), wq[b.weight].scale, b.x)
    return qdq.toposort(p), tensors, {t: io[t][1] for t in tensors}


# ---- the result ----------------------------------------------------------------------------
@dataclass
class QuantModel:
    """A quantized model in one mode, ready to run, with everything needed to export it.

    Attributes:
        model: the float model it was built from.
        mode: Reference or Backend.
        qparams: activation tensor -> QParams; weights: weight -> WeightQ.
        qnames: float tensor name -> name of its quantized value in ``proto``.
        method: the calibration method of the ranges.
        sessions: the sessions built on ``proto`` (shared by :meth:`with_plan` clones).
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
    params: dict[str, np.ndarray] = field(default_factory=dict, repr=False)
    sessions: SessionCache = field(default_factory=SessionCache, repr=False)
    rtn: dict[str, WeightQ] | None = field(default=None, repr=False)

    @property
    def fitted(self) -> dict[str, int]:
        """Weight -> channels whose scale was raised so that an S32 bias fits (qdq.fit_biases)."""
        return qdq.fitted(self.rtn or self.weights, self.weights)

    def run(self, feed: Mapping[str, np.ndarray], outputs: list[str] | None = None
            ) -> dict[str, np.ndarray]:
        """Run one sample; ``outputs`` are float tensor names (default: the model outputs)."""
        outputs = list(outputs or self.model.outputs)
        names = [self.qnames.get(t, t) for t in outputs]
        sess = self.session(tuple(names))
        vals = sess.run(names, {**feed, **self.params})
        return dict(zip(outputs, vals))

    def session(self, names: tuple[str, ...] = ()):
        """A session exposing ``names`` (cached); both modes run unoptimized (module docstring)."""
        graph_out = {o.name for o in self.proto.graph.output}
        key = tuple(n for n in names if n not in graph_out)
        return self.sessions.get(key, lambda: self._build(key))

    def _build(self, key: tuple[str, ...]):
        p = self.proto
        if key:
            p = onnx.ModelProto()
            p.CopyFrom(self.proto)
            for n in key:
                p.graph.output.append(helper.make_empty_tensor_value_info(n))
        # NOTE: both modes as written (module docstring) and unpacked (runtime.session): the
        # same float arithmetic in both, so they differ only where their quantizers do
        return runtime.session(p, optimize=False, consume=bool(key), low_memory=bool(key),
                               prepack=False)

    def with_plan(self, stats, plan, method=None) -> QuantModel:
        """The same model under another plan or method, reusing the Reference session.

        NOTE: only the parameter vectors change when the weights stay the same (their types,
        and the channels qdq.fit_biases raises), so a U8 <-> U16 toggle or a calibration-method
        change costs no graph build and no session, unless it moves a bias fit.
        """
        method = parse_enum(CalibMethod, method or stats.method, "calibration_method")
        qp = act_qparams(stats, plan, method)
        same_types = self.rtn is not None and \
            _weights_key(plan, self.model) == _weights_key(self.plan, self.model)
        if self.mode is Mode.Reference and same_types:
            wq = qdq.fit_biases(self.model, self.rtn, qp) if self.bias_s32 else self.rtn
            if _same_weights(wq, self.weights):
                tensors = self.model.points()
                return QuantModel(self.model, self.mode, plan, qp, self.weights, self.bias_s32,
                                  self.proto, self.qnames, method, param_vectors(tensors, qp),
                                  self.sessions, self.rtn)
        return simulate(self.model, stats, plan, self.mode, method,
                        "S32" if self.bias_s32 else "FP32", rtn=self.rtn if same_types else None)

    def qdq(self) -> onnx.ModelProto:
        """The QDQ model of this plan and these parameters (what gets exported)."""
        if self.mode is Mode.Backend:
            return self.proto
        return qdq.qdq_model(self.model, self.qparams, self.weights, self.bias_s32)

    def save(self, path: str | Path) -> Path:
        """Write ``quantized.onnx`` (QDQ, loads in stock onnxruntime); temp name, then rename."""
        return save_model(self.qdq(), path)


def _weights_key(plan, model: Model) -> tuple:
    """What the weights depend on besides the input scales: types other than S8, and fixes."""
    return (tuple(sorted((w, q) for w, q in plan.weights.items() if q is not QType.S8)),
            tuple(sorted(getattr(plan, "fixes", {}).items())))


def _same_weights(a: Mapping[str, WeightQ], b: Mapping[str, WeightQ]) -> bool:
    return a.keys() == b.keys() and all(
        a[w] is b[w] or np.array_equal(a[w].scale, b[w].scale) for w in a)


def simulate(model: Model, stats, plan, mode="Reference", method=None,
             conv_bias_data_type: str = "S32", rtn: Mapping[str, WeightQ] | None = None
             ) -> QuantModel:
    """Build the quantized model for a plan.

    Args:
        model: the float model.
        stats: CalibStats of that model.
        plan: a QuantPlan (QType per activation and weight).
        mode: "Reference" (fake-quant, parameters as data) or "Backend"/"NPUBackend" (QDQ with
            onnxruntime's integer kernels).
        method: calibration method for the ranges (default: ``stats.method``).
        conv_bias_data_type: "S32" (bias quantized at s_in * s_w) or "FP32".
        rtn: the plan's round-to-nearest weights (:func:`weight_q`), if already computed.

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
    rtn = dict(rtn) if rtn is not None else weight_q(model, plan, stats)
    s32 = str(conv_bias_data_type).upper() == "S32"
    wq = qdq.fit_biases(model, rtn, qp) if s32 else rtn
    if mode is Mode.Backend:
        proto = qdq.qdq_model(model, qp, wq, s32)
        return QuantModel(model, mode, plan, qp, wq, s32, proto,
                          {t: t for t in model.activations()}
                          | {t: f"{t}__q" for t in model.inputs}, method, rtn=rtn)
    proto, tensors, qnames = reference_model(model, wq, s32)
    return QuantModel(model, mode, plan, qp, wq, s32, proto, qnames, method,
                      param_vectors(tensors, qp), rtn=rtn)
