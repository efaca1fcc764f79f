"""Isolation: the model outputs' sensitivity to each layer quantized alone (everything else float).

The ranking :func:`axnb.trials.measure` starts its U16 search from; one Reference session
serves every layer (only parameter vectors and fed weights change). :func:`isolation_chunk` and
:func:`isolation_finish` split it across a Dask cluster's workers (:mod:`axnb.cluster`).

Example:
    >>> iso = isolation(wb.model, wb.stats, wb.plan, wb.samples[:2], layers=["Softmax.0"],
    ...                 progress=False)
    >>> iso.rows[0]["Operator"]
    'Softmax.0'
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable

import numpy as np
import onnx
from onnx import helper, numpy_helper

from axnb import metrics, qdq
from axnb.compare import analysis_session, base_graph, param_feed, table_meta
from axnb.errors import ModelError, did_you_mean
from axnb.graph import DATA_MOVEMENT_OPS, Model
from axnb.qdq import act_qparams, weight_q
from axnb.results import LayerReport
from axnb.simulate import QuantModel
from axnb.types import CalibMethod, Col, Mode, parse_enum

__all__ = ["estimate", "isolation", "isolation_chunk", "isolation_finish", "isolation_setup"]
log = logging.getLogger(__name__)


def _iso_graph(model: Model, q: QuantModel, weights) -> onnx.ModelProto:
    """The float model with a fake-quantizer on every tensor (off unless the vectors say on) and
    the weights and biases as inputs (float by default), so one session isolates every layer.

    NOTE: a quantized input is quantized where it is produced, so all its readers see it (one
    type per tensor, as in the plan).
    """
    p = base_graph(model)
    fake = qdq.FakeQuant(p.graph, model.points())
    for t, (src, dst) in qdq.rewire(p, model.points()).items():
        fake.fq(t, src, dst)
    bqs = [b for b in qdq.bias_nodes(model, q.weights) if b.name != b.bias]
    qdq.rename_biases(p.graph, bqs)
    for b in {b.name: b for b in bqs}.values():     # NOTE: own copies of a shared bias
        p.graph.initializer.append(numpy_helper.from_array(model.weight(b.bias), b.name))
    inits = {t.name: t for t in p.graph.initializer}
    for w in weights:
        p.graph.input.append(helper.make_tensor_value_info(w, inits[w].data_type,
                                                           inits[w].dims))
    return qdq.toposort(p)


def _quantized_weights(model: Model, q: QuantModel) -> dict[str, np.ndarray]:
    """Every quantized (dequantized) weight and S32 bias, valued as the Reference graph's."""
    out = {w: v.dequantized() for w, v in q.weights.items()}
    for b, (iq, sb) in (qdq.biases(model, q.weights, q.qparams) if q.bias_s32 else {}).items():
        out[b] = (iq.astype(np.float64) * sb).astype(np.float32)
    return out


def _iso_layers(model: Model, q: QuantModel, layers) -> tuple[list[str], list[str]]:
    """(layers to isolate, data-movement layers skipped by default)."""
    if layers is not None:
        layers = [layers] if isinstance(layers, str) else list(layers)
        for name in layers:
            if name not in model.node_by_name:
                raise ModelError(f"isolation: unknown layer {name!r}"
                                 f"{did_you_mean(name, model.node_by_name)}")
        return layers, []
    heads = {g.name for g in model.groups if g.output}
    quant = [n for n in model.nodes
             if (n.name not in model.group_of or n.name in heads)
             and (any(t in q.qparams for t in _iso_tensors(model, n))
                  or (len(n.input) > 1 and n.input[1] in q.weights))]
    return ([n.name for n in quant if n.op_type not in DATA_MOVEMENT_OPS],
            [n.name for n in quant if n.op_type in DATA_MOVEMENT_OPS])


def _members(model: Model, n) -> list:
    g = model.group_of.get(n.name)
    return [model.node_by_name[m] for m in g.members] if g is not None and g.output else [n]


def _iso_tensors(model: Model, n) -> list[str]:
    """A layer's (or its fused group's) input and output tensors."""
    return [t for m in _members(model, n) for t in [*m.input, *m.output]]


def _score(sess, names, feeds, ref, params, weights) -> dict[str, np.ndarray]:
    acc = metrics.Accumulator((len(names),))
    for f, r in zip(feeds, ref):
        y = sess.run(names, {**f, **params, **weights})
        acc.add_moments(np.stack([metrics.moments(a, b) for a, b in zip(r, y)]))
    return acc.result()


def isolation(model: Model, stats, plan, feeds: Iterable, layers=None, method=None,
              progress: bool = True) -> LayerReport:
    """Sensitivity of the model outputs to each layer quantized alone (everything else float).

    A layer's inputs and outputs take their plan types, its weight S8 and its bias S32; one
    Reference session serves every layer (only parameter vectors and fed weights change).
    Rows are sorted worst first by ``Cosin`` (the minimum over the model outputs; MSE and MaxAbs
    are the maximum, SQNR the minimum; ``Cosin[output]`` columns when there are several).

    Args:
        model, stats, plan: as for :func:`axnb.simulate.simulate`.
        feeds: analysis samples (kept in memory: every layer runs all of them).
        layers: node names to isolate (default: every quantized layer except data-movement
            ops, whose quantization is their input's; the report's notes say so).
        method: calibration method of the ranges (default ``stats.method``).
        progress: tqdm bar over the layers; the estimated cost is logged before starting.

    Example:
        >>> rep = isolation(model, stats, plan, feeds[:2])                 # doctest: +SKIP
        >>> ranking = [r["Operator"] for r in rep.rows]  # most sensitive first  # doctest: +SKIP
    """
    from tqdm.auto import tqdm

    q, names, skipped = isolation_setup(model, stats, plan, layers, method)
    feeds = list(feeds)
    prep = _iso_prepare(model, q)
    ref, dt = _iso_ref(model, prep, feeds)
    msg = estimate(len(names), len(feeds), dt)
    log.info(msg)
    if progress:
        tqdm.write(msg)
    scores = {None: _iso_score(model, q, prep, feeds, ref, None)}
    for name in tqdm(names, desc="isolation", unit="layer", disable=not progress):
        scores[name] = _iso_score(model, q, prep, feeds, ref, name)
    return isolation_finish(model, plan, q, len(feeds), names, skipped, scores, msg)


def isolation_setup(model: Model, stats, plan, layers=None, method=None):
    """(the Reference QuantModel of the ranges, layers to isolate, data-movement layers
    skipped) of :func:`isolation`: the client's part when the layers run elsewhere."""
    method = parse_enum(CalibMethod, method or stats.method, "calibration_method")
    qp, rtn = act_qparams(stats, plan, method), weight_q(model, plan, stats)
    q = QuantModel(model, Mode.Reference, plan, qp, qdq.fit_biases(model, rtn, qp), rtn=rtn)
    return (q, *_iso_layers(model, q, layers))


def _iso_prepare(model: Model, q: QuantModel) -> tuple:
    allw = _quantized_weights(model, q)
    own = {(b.node, b.bias): b.name for b in qdq.bias_nodes(model, q.weights)}
    return analysis_session(_iso_graph(model, q, allw)), allw, own


def _iso_ref(model: Model, prep: tuple, feeds: list) -> tuple[list, float]:
    """The float outputs of every sample through the isolation graph (all quantizers off),
    and the median seconds of one run."""
    sess, off, ref, times = prep[0], param_feed(model, {}), [], []
    for f in feeds:
        t0 = time.perf_counter()
        ref.append(sess.run(list(model.outputs), {**f, **off}))
        times.append(time.perf_counter() - t0)
    return ref, float(np.median(times[1:] or times))


def estimate(layers: int, samples: int, dt: float) -> str:
    """The cost of isolating ``layers`` on ``samples`` at ``dt`` seconds per run, in words."""
    return (f"isolation: {layers} layers x {samples} samples x {dt * 1e3:.1f} ms/run "
            f"~ {(layers + 1) * samples * dt:.0f} s")


def _iso_score(model: Model, q: QuantModel, prep: tuple, feeds, ref, name: str | None):
    """One layer's scores (``name`` None: every layer quantized, the report's ``final``)."""
    sess, allw, own = prep
    outs = list(model.outputs)
    if name is None:
        return _score(sess, outs, feeds, ref, param_feed(model, q.qparams), allw)
    n = model.node_by_name[name]
    vec = param_feed(model, {t: q.qparams[t] for t in _iso_tensors(model, n) if t in q.qparams})
    w = {k: allw[k] for m in _members(model, n)
         for k in (own.get((m.name, i), i) for i in m.input) if k in allw}
    return _score(sess, outs, feeds, ref, vec, w)


def isolation_chunk(model: Model, q: QuantModel, feeds, layers, cache: dict | None = None
                    ) -> dict:
    """Scores of some layers (None: the all-quantized ``final``): one chunk of
    :func:`isolation`, a pure function of the layers (each runs every sample, in order, so
    a layer's scores are the single-process ones bit for bit). ``cache``, a dict the caller
    keeps for this ``q``, holds the session and the float outputs for the next chunk."""
    feeds = list(feeds)
    hit = (cache or {}).get("iso")
    if hit is None:
        prep = _iso_prepare(model, q)
        hit = (prep, _iso_ref(model, prep, feeds)[0])
        if cache is not None:
            cache["iso"] = hit
    prep, ref = hit
    return {name: _iso_score(model, q, prep, feeds, ref, name) for name in layers}


def isolation_finish(model: Model, plan, q: QuantModel, samples: int, names, skipped,
                     scores: dict, estimate: str) -> LayerReport:
    """The isolation LayerReport from every layer's scores (``scores[None]``: final)."""
    outs = list(model.outputs)
    rows = [_iso_row(model, plan, model.node_by_name[n], outs, scores[n]) for n in names]
    rows.sort(key=lambda r: (not np.isnan(r[Col.COSINE]), r[Col.COSINE]))
    cols = [c for c in Col.LAYER_TABLE if c not in (Col.ORIGINAL, Col.SHAPE, Col.DTYPE)]
    meta = table_meta(model, "Isolation", q.mode.value, samples, kind="layers",
                 columns=cols + ([f"{Col.COSINE}[{o}]" for o in outs] if len(outs) > 1 else []),
                 estimate=estimate, skipped=list(skipped))
    if skipped:
        meta["notes"].append(f"{len(skipped)} data-movement layers not isolated (their "
                             "quantization is their input's); pass layers= to include them")
    final = scores[None]
    return LayerReport(rows, meta, {o: {k: float(v[i]) for k, v in final.items()}
                                    for i, o in enumerate(outs)})


def _iso_row(model: Model, plan, n, outs: list[str], res: dict) -> dict:
    g = model.group_of.get(n.name)
    out = g.output if g is not None and g.output else \
        next((o for o in n.output if o in model.points()), n.output[0])
    row = {Col.OPERATOR: n.name, Col.TYPE: n.op_type, Col.OUTPUT: out,
           Col.QDTYPE: str(getattr(plan, "layer_types", {}).get(n.name, plan.acts.get(out, ""))),
           Col.COSINE: float(np.min(res[Col.COSINE])), Col.MSE: float(np.max(res[Col.MSE])),
           Col.SQNR: float(np.min(res[Col.SQNR])), Col.MAXABS: float(np.max(res[Col.MAXABS])),
           Col.SOURCE: getattr(plan, "layer_sources", {}).get(n.name, "")}
    if len(outs) > 1:
        row.update({f"{Col.COSINE}[{o}]": float(res[Col.COSINE][i]) for i, o in enumerate(outs)})
    return row
