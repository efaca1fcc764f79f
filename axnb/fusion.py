"""Fused operator groups: where a deployed model has quantizers, and where it has none.

A real NPU toolchain (and onnxruntime's QDQ quantizer) quantizes at the boundaries of fused
operator groups, not on every tensor. :func:`find_groups` finds, once per model and policy
(:class:`~axnb.types.Fusion`), the groups whose *internal* tensors stay float:

- Conv / ConvTranspose / Gemm / MatMul + a bias Add (initializer) + Relu / Clip / LeakyRelu;
- normalizations, recognized by what they compute, not how they are spelled: from one tensor x,
  statistics (reductions of x, of x - mean or of x squared, then any math on reductions only)
  and x scaled by a second-moment statistic (Div, or Mul by a Reciprocal / Pow -0.5), then a
  constant affine: LayerNorm (a mean subtracted) and RMSNorm. x (a residual Add or any op)
  stays outside and keeps its quantizer; the group's output is the last op of the norm+affine;
- elementwise regions around a seed op (Sqrt, Erf, Tanh, Sigmoid, HardSigmoid, Softplus, Clip)
  computed from one float tensor (the earliest tensor the seed is a function of alone) with one
  output read outside: GELU (Erf and Tanh forms), SiLU / Swish, HardSwish, Mish;
- additive attention masks: the branch of the Add before a Softmax that does not descend from
  a weighted op stays float up to the Softmax (a -inf or float32-min mask quantized to 8 bits
  destroys the scores).

Policy ``ort`` instead keeps float every tensor that no op of onnxruntime's QDQ registry reads
or writes (so axnb reproduces what ``quantize_static`` deploys); ``none`` keeps nothing float.

Example:
    >>> import onnx
    >>> from onnx import helper, numpy_helper
    >>> import numpy as np
    >>> g = helper.make_graph(
    ...     [helper.make_node("MatMul", ["x", "w"], ["m"], name="mm"),
    ...      helper.make_node("Add", ["m", "b"], ["a"], name="add"),
    ...      helper.make_node("Relu", ["a"], ["y"], name="relu")], "g",
    ...     [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 4])],
    ...     [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 4])],
    ...     [numpy_helper.from_array(np.eye(4, dtype=np.float32), "w"),
    ...      numpy_helper.from_array(np.ones(4, np.float32), "b")])
    >>> from axnb.graph import Model
    >>> [(f.name, f.op, f.internal) for f in Model(helper.make_model(g)).groups]
    [('mm', 'MatMul+Add+Relu', ('m', 'a'))]
"""

from __future__ import annotations

from dataclasses import dataclass

from axnb.types import Fusion

__all__ = ["ELEMENTWISE", "ORT_SAME_PARAMS", "SAME_PARAMS", "SEEDS", "Group", "find_groups",
           "shared_params"]

ELEMENTWISE = frozenset({"Add", "Sub", "Mul", "Div", "Pow", "Sqrt", "Reciprocal", "Erf", "Tanh",
                         "Sigmoid", "HardSigmoid", "Softplus", "Clip", "Neg", "Abs", "Exp",
                         "ReduceMean", "ReduceSum", "ReduceSumSquare", "Cast", "Max", "Min", "Log",
                         # NOTE: shape-only ops (constant shapes) appear inside exported norms
                         "Reshape", "Expand", "Unsqueeze", "Squeeze"})
SEEDS = frozenset({"Sqrt", "Erf", "Tanh", "Sigmoid", "HardSigmoid", "Softplus", "Clip"})
ACTIVATIONS = frozenset({"Relu", "Clip", "LeakyRelu"})
_AFFINE = frozenset({"Add", "Mul", "Sub", "Div"})
_WEIGHTED = frozenset({"Conv", "ConvTranspose", "Gemm", "MatMul"})
_DATA_MOVEMENT = frozenset({"Reshape", "Transpose", "Flatten", "Squeeze", "Unsqueeze", "Slice",
                            "Gather", "GatherElements", "Concat", "Split", "Pad"})
# NOTE: ops whose output is a selection or rearrangement of their input's values: a deployed
# model keeps the input's scale and zero point through them (onnxruntime's QDQDirect8BitOp,
# QDQSplit, QDQGather, QDQMaxPool, QDQResize; NPU compilers do not requantize a reshape).
SAME_PARAMS = frozenset({"Reshape", "Transpose", "Squeeze", "Unsqueeze", "Flatten", "Slice",
                         "Gather", "GatherElements", "Split", "MaxPool", "AveragePool",
                         "Resize", "DepthToSpace", "SpaceToDepth", "Pad"})
# NOTE: exactly onnxruntime's (operators/direct_q8.py, gather.py, split.py, pad.py, maxpool.py,
# resize.py): the set of policy ``ort`` and of the onnxruntime overrides export.
ORT_SAME_PARAMS = frozenset({"Reshape", "Transpose", "Squeeze", "Unsqueeze", "Flatten",
                             "AveragePool", "Slice", "TopK", "Gather", "GatherElements", "Split",
                             "Pad", "MaxPool", "Resize"})
_LINEAR = frozenset({"Reshape", "Transpose", "Squeeze", "Unsqueeze", "Div", "Mul", "Cast"})
_MAX_BACK = 12      # NOTE: the longest decomposed norm (ReduceSum/N variants) is 9 nodes back
# NOTE: not ReduceL2: x / ||x|| (an embedding's unit length) is left as it was measured.
_REDUCE = frozenset({"ReduceMean", "ReduceSum", "ReduceSumSquare"})
_SHAPE = frozenset({"Reshape", "Expand", "Unsqueeze", "Squeeze"})
_PASS = _SHAPE | {"Cast"}    # NOTE: ops that keep a value's meaning (a square stays a square)
_MAX_NORM = 64      # NOTE: nodes visited forward from x; a decomposed norm has at most ~20


@dataclass(frozen=True)
class Group:
    """One fused operator group: float inside, quantized at ``output``.

    Attributes:
        name: the group's name (its head node: the weighted op, else the output's producer).
        op: what it is, e.g. ``"LayerNorm"``, ``"GELU"``, ``"Conv+Add+Relu"``, ``"mask"``.
        members: node names, topological order.
        internal: tensors that stay float (every member output but ``output``).
        output: the tensor quantized at the group's type ("" for a mask: float to the Softmax).
    """

    name: str
    op: str
    members: tuple[str, ...]
    internal: tuple[str, ...]
    output: str


def find_groups(model, policy=Fusion.npu) -> tuple[Group, ...]:
    """The fused groups of ``model`` under ``policy`` (disjoint; members in graph order)."""
    policy = Fusion(policy)
    if policy is Fusion.none:
        return ()
    if policy is Fusion.ort:
        return _ort(model)
    taken: set[str] = set()
    groups = []
    for finder in (_indices, _masks, _linear, _norms, _regions):
        for g in finder(model, taken):
            groups.append(g)
            taken.update(g.members)
    order = {n.name: i for i, n in enumerate(model.nodes)}
    return tuple(sorted(groups, key=lambda g: order.get(g.members[0], -1) if g.members else -1))


# ---- helpers ---------------------------------------------------------------------------------
def _is_const(model, t: str) -> bool:
    return t in model.initializers or t == ""


def _dyn(model, n) -> list[str]:
    """Non-constant inputs of a node."""
    return [i for i in n.input if not _is_const(model, i)]


def _group(model, nodes, output: str, op: str, head=None) -> Group:
    order = {n.name: i for i, n in enumerate(model.nodes)}
    nodes = sorted(nodes, key=lambda n: order[n.name])
    internal = tuple(o for n in nodes for o in n.output if o and o != output)
    head = head or (model.producer[output] if output else nodes[-1])
    return Group(head.name, op, tuple(n.name for n in nodes), internal, output)


def _closed(model, nodes, output: str) -> bool:
    """Every tensor made inside is read only inside (except ``output``) and is not a graph
    output."""
    names = {n.name for n in nodes}
    for n in nodes:
        for o in n.output:
            if o == output or not o:
                continue
            if o in model.outputs or any(c.name not in names for c in model.consumers.get(o, [])):
                return False
    return True


# ---- weighted op + bias + activation -----------------------------------------------------------
def _linear(model, taken: set[str]):
    for n in model.nodes:
        if n.op_type not in _WEIGHTED or n.name in taken or len(n.input) < 2 \
                or n.input[1] not in model.initializers:
            continue
        nodes, end, ops = [n], n.output[0], [n.op_type]
        nxt = _single(model, end, taken)
        # NOTE: a bias Add and a constant affine (a BatchNorm written as Mul/Add, as Paddle
        # exports) fold into the weights on an NPU: they are inside the group.
        while nxt is not None and nxt.op_type in _AFFINE and len(_dyn(model, nxt)) == 1 \
                and len(nodes) < 4:
            nodes.append(nxt)
            end, ops = nxt.output[0], [*ops, nxt.op_type]
            nxt = _single(model, end, taken)
        if nxt is not None and nxt.op_type in ACTIVATIONS and len(_dyn(model, nxt)) == 1:
            nodes.append(nxt)
            end, ops = nxt.output[0], [*ops, nxt.op_type]
        if len(nodes) > 1 and _closed(model, nodes, end):
            yield _group(model, nodes, end, "+".join(ops), head=n)


def _single(model, t: str, taken: set[str]):
    """The only consumer of ``t`` (None if several, none, or already in a group)."""
    cs = model.consumers.get(t, [])
    if len(cs) != 1 or cs[0].name in taken or t in model.outputs:
        return None
    return cs[0]


# ---- normalizations, by meaning ----------------------------------------------------------------
def _norms(model, taken: set[str]):
    """One group per normalization: tried from each reduction's input (and what that input is a
    plain function of: Cast, reshapes, a square), nearest first."""
    for r in model.nodes:
        if r.op_type in _REDUCE and r.name not in taken and r.input \
                and not _is_const(model, r.input[0]):
            g = next((g for x in _roots(model, r.input[0]) if (g := _norm(model, x, taken))),
                     None)
            if g is not None:
                taken.update(g.members)
                yield g


def _roots(model, t: str) -> list[str]:
    """``t`` and the tensors it is computed from through one-input ops (at most 3 back)."""
    out = [t]
    while (p := model.producer.get(t)) is not None and len(out) < 4 and p.op_type in \
            (_PASS | {"Pow", "Mul", "Div", "Abs"}) and len(set(_dyn(model, p))) == 1:
        t = _dyn(model, p)[0]
        out.append(t)
    return out


def _norm(model, x: str, taken: set[str]) -> Group | None:
    """The normalization of ``x``: from x (outside) to its last scaling op and constant affine.

    None unless x is scaled by a statistic from a mean of squares (a LayerNorm's variance, an
    RMSNorm's mean square) and the region is closed (its insides read only inside).
    """
    roles = _moments(model, x, taken)
    scaled = [model.node_by_name[n] for n, r in roles.items() if r == "scale"]
    if not scaled:
        return None
    order = {n.name: i for i, n in enumerate(model.nodes)}
    end = _affine(model, max(scaled, key=lambda n: order[n.name]).output[0], taken)
    members = model.subgraph([x], [end])
    if any(n.name in taken or n.op_type not in ELEMENTWISE for n in members) \
            or not _closed(model, members, end):
        return None
    centered = any(roles.get(n.name) == "center" for n in members)
    return _group(model, members, end, "LayerNorm" if centered else "RMSNorm")


def _moments(model, x: str, taken: set[str]) -> dict[str, str]:
    """The roles of what is computed from ``x`` alone (and constants) through elementwise ops.

    Each tensor reached gets flags: ``stat`` (a reduction of x, or math on reductions only),
    ``m2`` (a statistic from a mean of squares), ``sq`` (a square of x), ``post`` (after a
    scaling).

    Returns:
        node name -> ``center`` (x minus a statistic), ``scale`` (x times / by an m2 one) or
        ``mix`` (x with a statistic otherwise), for the nodes that combine the two.
    """
    kind: dict[str, frozenset] = {x: frozenset()}
    roles: dict[str, str] = {}
    todo, seen = [x], set()
    while todo and len(seen) < _MAX_NORM:
        for c in model.consumers.get(todo.pop(0), []):
            ins = _dyn(model, c)
            if c.name in seen or c.name in taken or c.op_type not in ELEMENTWISE \
                    or not all(i in kind for i in ins):
                continue
            seen.add(c.name)
            flags = _flags(model, c, [kind[i] for i in ins], roles)
            if flags is not None:
                kind.update({o: flags for o in c.output if o})
                todo.extend(o for o in c.output if o)
    return roles


def _flags(model, c, fl: list[frozenset], roles: dict) -> frozenset | None:
    """The flags of ``c``'s output from its inputs' (see :func:`_moments`); None stops there."""
    stat = [f for f in fl if "stat" in f]
    full = [f for f in fl if "stat" not in f]
    if c.op_type in _REDUCE:
        # NOTE: a reduction of a scaled tensor is the next norm's statistic, not this one's.
        if stat or "post" in fl[0]:
            return None
        m2 = "sq" in fl[0] or c.op_type == "ReduceSumSquare"
        return frozenset({"stat", "m2"} if m2 else {"stat"})
    if not full:
        return frozenset().union(*stat)
    post = frozenset({"post"}) if any("post" in f for f in full) else frozenset()
    if not stat:
        dyn = _dyn(model, c)
        square = (c.op_type == "Pow" and len(dyn) == 1) or (c.op_type == "Mul" and len(dyn) == 2
                                                             and dyn[0] == dyn[1])
        keep = c.op_type in _PASS and "sq" in fl[0]
        return post | ({"sq"} if square or keep else set())
    if c.op_type in ("Div", "Mul") and any("m2" in f for f in stat):
        roles[c.name] = "scale"
        return frozenset({"post"})
    roles[c.name] = "center" if c.op_type in ("Sub", "Add") else "mix"
    return post


def _affine(model, t: str, taken: set[str]) -> str:
    """The end of the constant affine (and Casts) after ``t``; reshapes only in between."""
    end = t
    while (c := _single(model, t, taken)) is not None and len(set(_dyn(model, c))) == 1 \
            and c.op_type in (_AFFINE | _PASS):
        t = c.output[0]
        if c.op_type not in _SHAPE:
            end = t
    return end


# ---- elementwise regions (activations; the norms _norms missed) ------------------------------
def _regions(model, taken: set[str]):
    for seed in model.nodes:
        if seed.op_type not in SEEDS or seed.name in taken:
            continue
        g = _region(model, seed, taken)
        if g is not None:
            taken.update(g.members)
            yield g


def _region(model, seed, taken: set[str]) -> Group | None:
    """The elementwise region around ``seed``: from its one float input X (the backward cone's
    leaf every other leaf derives from) to the last elementwise op computed only from X."""
    x = _source(model, seed, taken)
    if x is None:
        return None
    derived = _reach(model, x, taken)
    end = seed.output[0]
    while (c := _single(model, end, taken)) is not None and c.op_type in ELEMENTWISE \
            and all(i in derived for i in _dyn(model, c)):
        end = c.output[0]
    members = [n for n in model.subgraph([x], [end]) if n.name not in taken]
    if len(members) < 2 or any(n.op_type not in ELEMENTWISE for n in members) \
            or seed not in members or not _closed(model, members, end):
        return None
    return _group(model, members, end, _name(members))


def _source(model, seed, taken: set[str]) -> str | None:
    """The float input of the region: the earliest tensor of the seed's backward elementwise
    cone that the seed is computed from alone.

    NOTE: not the cone's leaves: a residual Add's inputs are leaves, its output is the input.
    """
    cone, todo, tensors = {}, [(seed, 0)], []
    while todo:
        n, depth = todo.pop()
        for t in _dyn(model, n):
            tensors.append(t)
            p = model.producer.get(t)
            if p is not None and p.op_type in ELEMENTWISE and p.name not in taken \
                    and depth < _MAX_BACK and p.name not in cone:
                cone[p.name] = p
                todo.append((p, depth + 1))
    order = {n.name: i for i, n in enumerate(model.nodes)}
    pos = {t: order[p.name] if (p := model.producer.get(t)) else -1 for t in tensors}
    for cand in sorted(dict.fromkeys(tensors), key=pos.__getitem__):
        if all(i in _reach(model, cand, taken) for i in _dyn(model, seed)):
            return cand
    return None


def _reach(model, x: str, taken: set[str]) -> set[str]:
    """Tensors computed from ``x`` alone (and constants) through elementwise ops (bounded)."""
    out, frontier = {x}, [x]
    for _ in range(2 * _MAX_BACK):
        nxt = []
        for t in frontier:
            for c in model.consumers.get(t, []):
                if c.op_type in ELEMENTWISE and c.name not in taken \
                        and all(i in out for i in _dyn(model, c)):
                    new = [o for o in c.output if o and o not in out]
                    out.update(new)
                    nxt.extend(new)
        if not nxt:
            break
        frontier = nxt
    return out


def _name(members) -> str:
    # NOTE: no norm names: _norms names the norms; a region it left is not one (e.g. a std alone)
    ops = {n.op_type for n in members}
    if "Tanh" in ops and ops & {"Softplus", "Log"}:
        return "Mish"
    if "Erf" in ops or ("Tanh" in ops and ("Pow" in ops or len(members) >= 6)):
        return "GELU"
    if "HardSigmoid" in ops or {"Clip", "Add", "Mul"} <= ops:
        return "HardSwish"
    if "Sigmoid" in ops and "Mul" in ops:
        return "SiLU"
    return "+".join(sorted(ops))


# ---- float tensors that are really integers ---------------------------------------------------
_FLOAT_TYPES = frozenset({1, 10, 11, 16})   # FLOAT, FLOAT16, DOUBLE, BFLOAT16
_INDEX_INPUT = {"Gather": 1, "GatherElements": 1, "GatherND": 1, "ScatterND": 1,
                "ScatterElements": 1, "OneHot": 0}


def _indices(model, taken: set[str]):
    """Float tensors read only as indices or cast to integers (token ids fed as float): a
    quantizer would change which row is read, and no toolchain puts one there."""
    for t in model.activations():
        cs = model.consumers.get(t, [])
        if cs and t not in model.outputs and all(_as_index(c, t) for c in cs):
            yield Group(t, "index", (), (t,), "")


def _as_index(node, t: str) -> bool:
    if node.op_type == "Cast":
        to = next((a.i for a in node.attribute if a.name == "to"), 1)
        return to not in _FLOAT_TYPES
    k = _INDEX_INPUT.get(node.op_type)
    return k is not None and len(node.input) > k and node.input[k] == t \
        and t not in node.input[:k]


# ---- additive attention masks --------------------------------------------------------------------
def _masks(model, taken: set[str]):
    heavy = _heavy(model)
    for sm in (n for n in model.nodes if n.op_type == "Softmax"):
        add, path = _mask_add(model, sm)
        if add is None:
            continue
        light = [i for i in _dyn(model, add) if not heavy.get(i, False)]
        if len(light) != 1 or len(_dyn(model, add)) != 2:
            continue
        branch = _ancestors(model, light[0])
        nodes = [n for n in [*branch, add, *path] if n.name not in taken]
        if nodes:
            internal = tuple(dict.fromkeys(
                [i for i in model.inputs if i in _branch_inputs(model, branch, light[0])]
                + [o for n in nodes for o in n.output if o]))
            order = {n.name: i for i, n in enumerate(model.nodes)}
            nodes.sort(key=lambda n: order[n.name])
            yield Group(add.name, "mask", tuple(n.name for n in nodes), internal, "")


def _mask_add(model, sm):
    """The Add whose output reaches the Softmax through at most 3 linear ops, and those ops."""
    t, path = sm.input[0], []
    for _ in range(4):
        p = model.producer.get(t)
        if p is None:
            return None, []
        if p.op_type == "Add":
            return p, path
        if p.op_type not in _LINEAR or len(_dyn(model, p)) != 1 \
                or len(model.consumers.get(t, [])) != 1:
            return None, []
        path.append(p)
        t = _dyn(model, p)[0]
    return None, []


def _heavy(model) -> dict[str, bool]:
    """tensor -> True when it descends from a weighted op (the scores, not the mask)."""
    heavy: dict[str, bool] = {}
    for n in model.nodes:
        h = n.op_type in _WEIGHTED or any(heavy.get(i, False) for i in n.input)
        for o in n.output:
            heavy[o] = h
    return heavy


def _ancestors(model, t: str) -> list:
    """The nodes computing ``t`` (back to graph inputs and initializers)."""
    seen: dict[str, object] = {}
    todo = [t]
    while todo:
        p = model.producer.get(todo.pop())
        if p is not None and p.name not in seen:
            seen[p.name] = p
            todo.extend(i for i in p.input if i)
    return list(seen.values())


def _branch_inputs(model, branch, t: str) -> set[str]:
    ins = {i for n in branch for i in n.input}
    return ins | {t}


# ---- onnxruntime's QDQ quantizer -----------------------------------------------------------------
def _ort(model) -> tuple[Group, ...]:
    """One pseudo-group holding every tensor quantize_static's QDQ quantizer leaves float.

    Its default op set is QLinearOpsRegistry + QDQRegistry; a tensor is quantized when an op of
    the set reads or writes it, except that data-movement ops (Reshape, Squeeze, ...) only pass
    a quantization on. Measured against quantize_static's QuantizeLinear inputs: every tensor it
    quantizes is quantized here (zoo CNN 71/71, MiniLM 206/206), plus a few it leaves float
    (graph outputs of Softmax / LayerNormalization, Adds read only by non-registry ops).
    """
    from onnxruntime.quantization.registry import QDQRegistry, QLinearOpsRegistry

    ops = set(QDQRegistry) | set(QLinearOpsRegistry)
    direct = ops & (_DATA_MOVEMENT | {"MaxPool", "Resize", "TopK", "ArgMax"})
    touched: set[str] = set()
    for n in model.nodes:
        if n.op_type in ops and n.op_type not in direct:
            touched.update(i for i in n.input if i)
            touched.update(o for o in n.output if o)
    for n in model.nodes:                    # NOTE: graph order: chains of moves propagate
        if n.op_type in direct and n.input and n.input[0] in touched:
            touched.update(o for o in n.output if o)
    touched -= _removed_activation_inputs(model, touched)
    float_only = tuple(t for t in model.activations() if t not in touched)
    if not float_only:
        return ()
    members = tuple(dict.fromkeys(model.producer[t].name for t in float_only
                                  if t in model.producer))
    return (Group("onnxruntime-unquantized", "ort", members, float_only, ""),)


def _removed_activation_inputs(model, touched: set[str]) -> set[str]:
    """Inputs of the Relu / Clip nodes quantize_static removes (QDQRemovableActivation).

    NOTE: with asymmetric activations it drops a Relu / Clip whose input is quantized, read
    only by it and neither a graph input nor output: the producer writes the activation's
    output at the activation's range, whose saturation does the clipping. Keeping the node with
    its input float and its output quantized computes the same values.
    """
    outputs = set(model.outputs)
    return {n.input[0] for n in model.nodes
            if n.op_type in ("Relu", "Clip") and n.input[0] in touched and n.output[0] in touched
            and len(model.consumers.get(n.input[0], ())) == 1 and n.input[0] in model.producer
            and n.input[0] not in outputs}


def shared_params(model) -> dict[str, str]:
    """Output tensor -> the input tensor whose quantization parameters it reuses (policies npu
    and ort; ``none`` gives every tensor its own range, as before).

    Under ``npu`` a constant Pad (other than 0) and a cubic Resize can leave their input's
    range, so they get their own; ``ort`` follows onnxruntime exactly (:data:`ORT_SAME_PARAMS`).
    """
    if model.fusion is Fusion.none:
        return {}
    npu, out = model.fusion is Fusion.npu, {}
    for n in model.nodes:
        if n.op_type not in (SAME_PARAMS if npu else ORT_SAME_PARAMS) or not n.input or \
                _is_const(model, n.input[0]):
            continue
        if npu and ((n.op_type == "Pad" and not _zero_pad(model, n)) or (
                n.op_type == "Resize" and _attr(n, "mode", b"nearest") == b"cubic")):
            continue
        for o in n.output:
            if o:
                out[o] = out.get(n.input[0], n.input[0])
    return out


def _attr(n, name: str, default):
    return next((a.s for a in n.attribute if a.name == name), default)


def _zero_pad(model, n) -> bool:
    import numpy as np

    if _attr(n, "mode", b"constant") != b"constant":
        return True
    v = n.input[2] if len(n.input) > 2 else ""
    return v == "" or (v in model.initializers and not np.any(model.weight(v)))
