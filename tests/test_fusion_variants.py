"""fusion.py, property test: normalizations and activations however they are spelled.

Each seed writes one variant with onnx.helper: a LayerNorm or RMSNorm as exporters write it
(ReduceMean or ReduceSum then Div / Mul by N, keepdims or not then Unsqueeze, Pow or Mul for the
square, E[(x-mu)^2] or E[x^2] - mu^2, eps inside or outside the sqrt or a Max, Sqrt or Pow 0.5,
Div or Mul by a Reciprocal or Pow -0.5, Casts and Reshapes in between, with or without the
affine), or a GELU / SiLU / Swish / HardSwish / Mish; after any input x (a graph input, MatMul,
a residual Add, Relu, Tanh, a constant scale), at opsets 11..21 (axes attributes or inputs).

Oracles: the generator knows which nodes are the norm (or activation): the group holds exactly
them, x stays outside with its quantizer, the group's output is quantized. For a subset, the
tiny model MatMul -> residual Add -> norm -> MatMul is quantized both ways: the grouped model's
final cosine beats the ungrouped one's.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from axnb import metrics
from axnb.calibrate import calibrate
from axnb.graph import Model
from axnb.plan import QuantPlan
from axnb.simulate import simulate
from axnb.types import Fusion, QType

N_FAST, N_SLOW = 240, 1200      # norm variants; activations get half as many
N_COSINE = 16


@dataclass
class Expect:
    op: str
    members: set[str]
    x: str
    output: str


class _G:
    """A graph being written: nodes tagged ``n_`` (the region) or not, initializers, opset."""

    def __init__(self, rng, opset: int):
        self.rng, self.opset, self.nodes, self.inits, self.tag = rng, opset, [], {}, ""

    def const(self, v, dtype=np.float32) -> str:
        name = f"k{len(self.inits)}"
        self.inits[name] = np.asarray(v, dtype)
        return name

    def op(self, op: str, ins: list[str], **attrs) -> str:
        out = f"t{len(self.nodes)}"
        self.nodes.append(helper.make_node(op, ins, [out], name=f"{self.tag}{op}_{len(self.nodes)}",
                                           **attrs))
        return out

    def reduce(self, op: str, x: str, axes: list[int], keepdims: int = 1) -> str:
        # NOTE: axes became an input: ReduceSum at 13, the other reductions at 18.
        if self.opset < (13 if op == "ReduceSum" else 18):
            return self.op(op, [x], axes=axes, keepdims=keepdims)
        return self.op(op, [x, self.const(axes, np.int64)], keepdims=keepdims)

    def unsqueeze(self, x: str, axes: list[int]) -> str:
        if self.opset < 13:
            return self.op("Unsqueeze", [x], axes=axes)
        return self.op("Unsqueeze", [x, self.const(axes, np.int64)])

    def pick(self, *choices):
        return choices[int(self.rng.integers(len(choices)))]

    def maybe(self, p: float) -> bool:
        return bool(self.rng.random() < p)

    def model(self, shape: list[int], out: str, out_shape: list[int], extra_out=()):
        vi = helper.make_tensor_value_info
        g = helper.make_graph(
            self.nodes, "variant", [vi("inp", TensorProto.FLOAT, shape)],
            [vi(out, TensorProto.FLOAT, out_shape), *(vi(t, TensorProto.FLOAT, None)
                                                      for t in extra_out)],
            [numpy_helper.from_array(v, k) for k, v in self.inits.items()])
        m = helper.make_model(g, opset_imports=[helper.make_opsetid("", self.opset)])
        m.ir_version = 8
        onnx.checker.check_model(m, full_check=True)
        return m


def _shape(rng) -> list[int]:
    rank = int(rng.integers(2, 5))
    return [int(rng.integers(1, 3)), *(int(v) for v in rng.integers(2, 6, rank - 2)),
            int(rng.integers(4, 17))]


def _x(g: _G, shape: list[int], kind: str) -> str:
    """The region's input: a graph input or any op (never a member)."""
    d = shape[-1]
    w = lambda: g.const(g.rng.normal(0, 1 / np.sqrt(d), (d, d)))  # noqa: E731
    if kind == "input":
        return "inp"
    if kind == "matmul":
        return g.op("MatMul", ["inp", w()])
    if kind == "residual":
        return g.op("Add", ["inp", g.op("MatMul", ["inp", w()])])
    if kind == "scale":
        return g.op("Mul", ["inp", g.const(1.5)])
    return g.op(kind.capitalize(), ["inp"])


def _mean(g: _G, t: str, axes: list[int], n: int, shape: list[int]) -> str:
    """mean over ``axes`` however exporters write it."""
    keep = 0 if g.maybe(0.3) else 1
    how = g.pick("mean", "sum_div", "sum_mul")
    if how == "mean":
        s = g.reduce("ReduceMean", t, axes, keep)
    else:
        s = g.reduce("ReduceSum", t, axes, keep)
        s = g.op("Div", [s, g.const(n)]) if how == "sum_div" else g.op("Mul", [s, g.const(1 / n)])
    if not keep:
        s = g.unsqueeze(s, axes)
    if g.maybe(0.2):
        s = g.op("Cast", [s], to=TensorProto.FLOAT)
    if g.maybe(0.2):
        k = len(axes)
        s = g.op("Reshape", [s, g.const([*shape[:-k], *[1] * k], np.int64)])
    return s


def _square(g: _G, t: str) -> str:
    return g.op("Pow", [t, g.const(2.0)]) if g.maybe(0.5) else g.op("Mul", [t, t])


def _second_moment(g: _G, t: str, axes, n, shape) -> str:
    if g.maybe(0.15):
        s = g.reduce("ReduceSumSquare", t, axes)
        return g.op("Div", [s, g.const(n)])
    return _mean(g, _square(g, t), axes, n, shape)


def _scale(g: _G, d: str, var: str) -> str:
    """d / sqrt(var + eps), every spelling."""
    eps = g.const(1e-5)
    how = g.pick("sqrt_in", "sqrt_out", "pow_half", "max", "rsqrt")
    if how == "rsqrt":
        inv = g.op("Pow", [g.op("Add", [var, eps]), g.const(-0.5)])
        return g.op("Mul", g.pick([d, inv], [inv, d]))
    if how == "sqrt_in":
        std = g.op("Sqrt", [g.op("Add", [var, eps])])
    elif how == "sqrt_out":
        std = g.op("Add", [g.op("Sqrt", [var]), eps])
    elif how == "pow_half":
        std = g.op("Pow", [g.op("Add", [eps, var]), g.const(0.5)])
    else:
        std = g.op("Sqrt", [g.op("Max", [var, eps])])
    if g.maybe(0.2):
        std = g.op("Cast", [std], to=TensorProto.FLOAT)
    by = g.pick("div", "recip", "one_div")
    if by == "div":
        return g.op("Div", [d, std])
    inv = g.op("Reciprocal", [std]) if by == "recip" else g.op("Div", [g.const(1.0), std])
    return g.op("Mul", g.pick([d, inv], [inv, d]))


def norm_variant(seed: int, x_kind: str | None = None, tail: bool | None = None):
    """One LayerNorm / RMSNorm variant: (model, Expect, input shape)."""
    rng = np.random.default_rng(seed)
    g = _G(rng, int(rng.integers(11, 22)))
    shape = _shape(rng)
    rank, d = len(shape), shape[-1]
    k = 2 if rank >= 3 and g.maybe(0.25) else 1
    axes = list(range(rank - k, rank)) if g.maybe(0.5) else list(range(-k, 0))
    n = int(np.prod(shape[-k:]))
    x = _x(g, shape, x_kind or g.pick("input", "matmul", "residual", "relu", "tanh", "scale"))
    g.tag = "n_"
    op = g.pick("LayerNorm", "RMSNorm")
    if op == "LayerNorm":
        mu = _mean(g, x, axes, n, shape)
        dev = g.op("Sub", [x, mu])
        if g.maybe(0.2):        # NOTE: E[x^2] - E[x]^2
            var = g.op("Sub", [_second_moment(g, x, axes, n, shape), g.op("Mul", [mu, mu])])
        else:
            var = _second_moment(g, dev, axes, n, shape)
    else:
        dev, var = x, _second_moment(g, x, axes, n, shape)
    y = _scale(g, dev, var)
    affine = g.pick("none", "gamma", "gamma_beta", "beta")
    if "gamma" in affine:
        y = g.op("Mul", [y, g.const(rng.uniform(0.5, 1.5, shape[-k:]))])
    if "beta" in affine:
        y = g.op("Add", [y, g.const(rng.normal(0, 0.1, shape[-k:]))])
    if g.maybe(0.1):
        y = g.op("Cast", [y], to=TensorProto.FLOAT)
    members = {nd.name for nd in g.nodes if nd.name.startswith("n_")}
    g.tag = ""
    z = g.op("MatMul", [y, g.const(rng.normal(0, 1 / np.sqrt(d), (d, d)))])
    if g.maybe(0.5) if tail is None else tail:      # NOTE: pre-LN: x feeds the next residual
        z = g.op("Add", [x, z])
    return g.model(shape, z, shape), Expect(op, members, x, y), shape


def act_variant(seed: int):
    """One activation variant: GELU (Erf, Tanh), SiLU, Swish, HardSwish, Mish."""
    rng = np.random.default_rng(10**6 + seed)
    g = _G(rng, int(rng.integers(11, 22)))
    shape = _shape(rng)
    x = _x(g, shape, g.pick("input", "matmul", "residual", "relu"))
    g.tag = "a_"
    op = g.pick("GELU-erf", "GELU-tanh", "SiLU", "Swish", "HardSwish", "Mish")
    c = g.const
    if op == "GELU-erf":
        s = g.op("Div", [x, c(np.sqrt(2))]) if g.maybe(0.5) else g.op("Mul", [x, c(0.7071068)])
        e1 = g.op("Add", [g.op("Erf", [s]), c(1.0)])
        half_first = g.maybe(0.5)
        hx = g.op("Mul", [x, c(0.5)]) if half_first else x
        y = g.op("Mul", [hx, e1])
        y = y if half_first else g.op("Mul", [y, c(0.5)])
    elif op == "GELU-tanh":
        x3 = g.op("Pow", [x, c(3.0)]) if g.maybe(0.5) else g.op("Mul", [x, g.op("Mul", [x, x])])
        inner = g.op("Mul", [g.op("Add", [x, g.op("Mul", [x3, c(0.044715)])]), c(0.7978846)])
        y = g.op("Mul", [g.op("Mul", [x, c(0.5)]), g.op("Add", [g.op("Tanh", [inner]), c(1.0)])])
    elif op in ("SiLU", "Swish"):
        t = x if op == "SiLU" else g.op("Mul", [x, c(1.702)])
        sg = g.op("Sigmoid", [t])
        y = g.op("Mul", g.pick([x, sg], [sg, x]))
    elif op == "HardSwish":
        if g.maybe(0.4):
            y = g.op("Mul", [x, g.op("HardSigmoid", [x], alpha=1 / 6, beta=0.5)])
        else:
            r6 = g.op("Clip", [g.op("Add", [x, c(3.0)]), c(0.0), c(6.0)])
            xr = g.op("Mul", [x, r6])
            y = g.op("Div", [xr, c(6.0)]) if g.maybe(0.5) else g.op("Mul", [xr, c(1 / 6)])
    else:
        sp = g.op("Softplus", [x]) if g.maybe(0.5) else g.op(
            "Log", [g.op("Add", [g.op("Exp", [x]), c(1.0)])])
        y = g.op("Mul", [x, g.op("Tanh", [sp])])
    members = {nd.name for nd in g.nodes if nd.name.startswith("a_")}
    g.tag = ""
    d = shape[-1]
    z = g.op("MatMul", [y, c(rng.normal(0, 1 / np.sqrt(d), (d, d)))])
    name = {"GELU-erf": "GELU", "GELU-tanh": "GELU", "Swish": "SiLU"}.get(op, op)
    return g.model(shape, z, shape), Expect(name, members, x, y), shape


def _model(proto, fusion="npu") -> Model:
    return Model(onnx.shape_inference.infer_shapes(proto), fusion=Fusion(fusion))


def _invariants(m: Model):
    """Groups are disjoint and closed: an internal tensor is read only inside, never an output."""
    members = [n for g in m.groups for n in g.members]
    assert len(members) == len(set(members))
    for g in m.groups:
        for t in g.internal:
            assert t not in m.outputs and g.output not in g.internal
            assert {c.name for c in m.consumers.get(t, [])} <= set(g.members), (g, t)


def _check(proto, exp: Expect):
    m = _model(proto)
    _invariants(m)
    gs = [g for g in m.groups if set(g.members) & exp.members]
    assert len(gs) == 1, [(g.op, g.members) for g in m.groups]
    g = gs[0]
    assert (g.op, set(g.members), g.output) == (exp.op, exp.members, exp.output), g
    assert exp.x not in g.internal and exp.x not in g.members
    plan = QuantPlan.from_config(m)
    assert plan.acts[exp.output] is QType.U8 and plan.acts[exp.x] is QType.U8
    assert all(plan.acts[t] is QType.FP32 for t in g.internal if t in plan.acts)


def _seeds(n_fast: int, n_slow: int):
    return [s if s < n_fast else pytest.param(s, marks=pytest.mark.slow) for s in range(n_slow)]


@pytest.mark.parametrize("seed", _seeds(N_FAST, N_SLOW))
def test_norm_variant_is_one_group_from_x_to_its_affine(seed):
    _check(*norm_variant(seed)[:2])


@pytest.mark.parametrize("seed", _seeds(N_FAST // 2, N_SLOW // 2))
def test_activation_variant_is_one_group(seed):
    _check(*act_variant(seed)[:2])


@pytest.mark.parametrize("seed", range(0, 3 * N_FAST, 7)[:N_FAST // 4])
def test_an_exposed_inside_degrades_to_no_group(seed):
    """A tensor inside the norm that is also a graph output cannot stay float: no crash, it is
    not internal, the groups stay closed (what is left may be a smaller group, e.g. from x - mean
    when the mean is an output)."""
    proto, exp, _ = norm_variant(seed)
    inside = [o for n in proto.graph.node if n.name in exp.members for o in n.output
              if o != exp.output]
    t = inside[seed % len(inside)]
    proto.graph.output.append(helper.make_tensor_value_info(t, TensorProto.FLOAT, None))
    m = _model(proto)
    assert not any(t in g.internal for g in m.groups)
    _invariants(m)


def _feeds(shape, n, seed):
    """Rows (tokens) whose scales span 0.1..10, one outlier channel: a residual stream with
    massive activations, where an 8-bit variance loses the small rows."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        x = rng.normal(0, 1, shape) * 10 ** rng.uniform(-1, 1, (*shape[:-1], 1))
        x[..., 1] *= 4
        out.append({"inp": x.astype(np.float32)})
    return out


def _cosine(proto, feeds, fusion) -> float:
    m = _model(proto, fusion)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        stats = calibrate(m, feeds, progress=False)
    q = simulate(m, stats, QuantPlan.from_config(m), "Reference")
    fl = m.session()
    out = m.proto.graph.output[0].name
    return metrics.output_metrics([{out: fl.run([out], f)[0]} for f in feeds],
                                  [{out: q.run(f)[out]} for f in feeds])[out]["Cosin"]


@pytest.mark.parametrize("seed", range(N_COSINE))
def test_grouped_norm_beats_ungrouped(seed):
    """MatMul -> residual Add -> norm variant -> MatMul, quantized with and without groups."""
    proto, exp, shape = norm_variant(5000 + seed, x_kind="residual", tail=False)
    _check(proto, exp)
    feeds = _feeds(shape, 4, seed)
    npu, none = _cosine(proto, feeds, "npu"), _cosine(proto, feeds, "none")
    assert np.isfinite(npu) and not none >= npu, (npu, none)    # NOTE: unfused may be NaN


def test_odd_reductions_do_not_crash():
    """A reduction of a constant, a mean with no square (x * sigmoid(mean x), an SE block) and a
    variance whose scaling reads another tensor: no norm group, closed groups, no exception."""
    g = _G(np.random.default_rng(0), 17)
    c = g.reduce("ReduceMean", g.const(np.ones((1, 4))), [-1])
    se = g.op("Mul", ["inp", g.op("Sigmoid", [g.reduce("ReduceMean", "inp", [-1])])])
    var = g.reduce("ReduceMean", g.op("Mul", ["inp", "inp"]), [-1])
    y = g.op("Add", [g.op("Div", [g.op("Relu", ["inp"]), g.op("Sqrt", [var])]), c])
    m = _model(g.model([1, 4], g.op("Add", [se, y]), [1, 4]))
    _invariants(m)
    assert not any(grp.op in ("LayerNorm", "RMSNorm") for grp in m.groups)
