"""The one evaluator: plan -> scores, for the final cosine and for task metrics, here or on Dask.

Search, the measured next steps, the Explorer and the CLI score plans through this module. A
plan is turned into a QuantModel from the Workbench's state when the evaluator was made
(``QuantModel.with_plan``: new parameters, the same sessions) and run by an **executor**: this
process (:class:`LocalExecutor`) or a Dask cluster (:class:`axnb.cluster.Cluster`), which have
the same methods (``calibrate``, ``compare``, ``outputs``, ``output_metrics``, ``isolation``,
``prepare``, ``plan_runs``, ``side_by_side``) and give the same numbers. Nothing here branches on
where the models run.

Example:
    >>> ev = CosineEvaluator.of(wb)                                       # doctest: +SKIP
    >>> ev(wb.plan.set("Softmax.0", "U16"))                               # doctest: +SKIP
    {'fetch_name_0': 0.9999}
"""

from __future__ import annotations

import time
import weakref
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from axnb import metrics
from axnb.errors import ConfigError
from axnb.graph import Model
from axnb.results.serialize import plain
from axnb.results.task import TaskReport
from axnb.simulate import QuantModel
from axnb.taskmetrics import METRICS, resolve_metric, score
from axnb.types import CalibMethod, Col, Method

__all__ = ["CosineEvaluator", "LocalExecutor", "PlanEvaluator", "TaskEvaluator", "TaskSet",
           "evaluator", "task_report", "task_set"]

COSINE_METRICS = {"cosine": Col.COSINE}
"""Evaluator metric name -> key of :func:`axnb.metrics.output_metrics` (higher is better)."""


def check_metric(metric: str) -> str:
    """The output_metrics key of a search metric name; a bad name names the valid ones.

    Example:
        >>> check_metric("cosine")
        'Cosin'
    """
    if metric not in COSINE_METRICS:
        raise ConfigError(f"search: unknown metric {metric!r}; valid metrics: "
                          f"{', '.join([*COSINE_METRICS, *METRICS])}")
    return COSINE_METRICS[metric]


class LocalExecutor:
    """Runs axnb's work in this process: the methods of :class:`axnb.cluster.Cluster`.

    Example:
        >>> LocalExecutor().side_by_side(8)
        1
    """

    threads = 1

    def __init__(self, providers: list[str] | None = None) -> None:
        self.providers = providers

    def calibrate(self, model: Model, feeds, method=CalibMethod.MinMax,
                  histograms: bool | None = None, progress: bool = True):
        from axnb.calibrate import calibrate

        return calibrate(model, feeds, method=method, histograms=histograms,
                         progress=progress, providers=self.providers)

    def compare(self, model: Model, qmodel: QuantModel, feeds, methods: Iterable[Method],
                progress: bool = True) -> dict:
        from axnb.compare import compare_methods

        return compare_methods(model, qmodel, feeds, methods, progress=progress)

    def compare_final(self, model: Model, qmodel: QuantModel, feeds, methods: Iterable[Method],
                      progress: bool = True, float_outputs: Callable[[], list] | None = None
                      ) -> tuple[dict, dict[str, dict]]:
        """:meth:`compare` and :meth:`output_metrics` from ONE quantized pass:
        ``(reports, final)`` (:func:`axnb.compare.compare_final`)."""
        from axnb.compare import compare_final

        fl = float_outputs() if float_outputs is not None else self.outputs(model, None, feeds)
        return compare_final(model, qmodel, feeds, methods, fl, progress=progress)

    def isolation(self, model: Model, stats, plan, feeds, layers=None, method=None,
                  progress: bool = True):
        from axnb.isolation import isolation

        return isolation(model, stats, plan, feeds, layers, method, progress)

    def outputs(self, model: Model, qmodel: QuantModel | None, feeds,
                progress: bool = False) -> list[dict]:
        """The outputs of ``qmodel`` (None: the float ``model``) on each sample of ``feeds``."""
        if qmodel is None:
            return model.run_float(feeds, providers=self.providers)
        return [qmodel.run(f) for f in feeds]

    def output_metrics(self, model: Model, qmodel: QuantModel, feeds, progress: bool = False,
                       float_outputs: Callable[[], list] | None = None) -> dict[str, dict]:
        """:func:`axnb.metrics.output_metrics` of float vs ``qmodel``; ``float_outputs``: a
        callable giving the float outputs of ``feeds`` when the caller keeps them."""
        fl = float_outputs() if float_outputs is not None else self.outputs(model, None, feeds)
        return metrics.output_metrics(fl, [qmodel.run(f) for f in feeds])

    def prepare(self, feeds) -> list:
        """The samples as :meth:`plan_runs` takes them (a cluster sends them once here)."""
        return list(feeds)

    def side_by_side(self, samples: int) -> int:
        """How many plans run side by side without slowing each: one, in one process."""
        return 1

    def plan_runs(self, model: Model, qmodels: Iterable, feeds, what: str = "terms",
                  stop=None, progress: bool = False, parts: list | None = None,
                  count: int | None = None, float_outputs: list | None = None):
        """``(index, per-sample results, seconds)`` of each QuantModel of ``qmodels``, one
        after the other; none started once ``stop()`` is true. ``what``: ``"terms"``
        (:func:`axnb.metrics.sample_terms` against ``float_outputs``) or ``"outputs"``."""
        feeds = parts if parts is not None else list(feeds)
        fl = float_outputs
        for i, qm in enumerate(qmodels):
            if stop is not None and stop():
                return
            t = time.perf_counter()
            outs = self.outputs(model, qm, feeds)
            if what == "terms":
                # NOTE: the float outputs once per call, not once per plan
                fl = fl if fl is not None else self.outputs(model, None, feeds)
                outs = [metrics.sample_terms(f, q) for f, q in zip(fl, outs)]
            yield i, outs, time.perf_counter() - t

    def __repr__(self) -> str:
        return "LocalExecutor(this process)"


# ---------------------------------------------------------------- evaluators


class PlanEvaluator:
    """``evaluate(plan) -> {name: score}`` (higher is better) over a QuantModel's state when
    made; changes nothing. :meth:`evaluate_many` runs plans through the executor, side by side
    on a cluster (what :func:`axnb.search.search` uses); ``concurrent``: how many plans run
    side by side without slowing each, which the search speculates with.

    Subclasses say what a run returns (``what``) and how it scores (:meth:`_scores`).
    """

    what = "outputs"

    def __init__(self, qmodel: QuantModel, stats, feeds, executor=None,
                 float_outputs: list | None = None, rank: Callable | None = None) -> None:
        self._qm, self._stats, self._feeds = qmodel, stats, list(feeds)
        self._ex = executor if executor is not None else LocalExecutor()
        self._float, self._parts = float_outputs, None
        self.concurrent = self._ex.side_by_side(len(self._feeds))
        if rank is not None:
            self.rank = rank  # NOTE: search's default candidate order (the PerLayer table)

    def _quant(self, plan) -> QuantModel:
        return self._qm if plan is self._qm.plan else \
            self._qm.with_plan(self._stats, plan, self._qm.method)

    def _scores(self, results: list) -> dict[str, float]:
        raise NotImplementedError

    def __call__(self, plan) -> dict[str, float]:
        ((_, s, _),) = self.evaluate_many([plan])
        return s

    def evaluate_many(self, plans, stop=None):
        """``(index, scores, seconds)`` of each plan as it completes; none is started once
        ``stop()`` is true.

        Example:
            >>> [s for _, s, _ in ev.evaluate_many([wb.plan])]             # doctest: +SKIP
            [{'fetch_name_0': 0.9999}]
        """
        if self._parts is None:  # NOTE: a cluster gets the samples once per evaluator
            self._parts = self._ex.prepare(self._feeds)
        runs = self._ex.plan_runs(self._qm.model, (self._quant(p) for p in plans), self._feeds,
                                  self.what, stop, parts=self._parts, count=len(plans),
                                  float_outputs=self._float)
        for i, res, secs in runs:
            yield i, self._scores(res), secs

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.metric}, {self.context}, on {self._ex!r})"


class CosineEvaluator(PlanEvaluator):
    """The final metric (:data:`COSINE_METRICS`) of each model output, float vs the plan.

    Example:
        >>> ev = CosineEvaluator.of(wb)                                   # doctest: +SKIP
        >>> ev(wb.plan) == wb.final_cosine()                              # doctest: +SKIP
        True
    """

    what = "terms"

    def __init__(self, qmodel: QuantModel, stats, feeds, metric: str = "cosine",
                 executor=None, float_outputs: list | None = None, rank=None) -> None:
        self._key, self.metric = check_metric(metric), metric
        super().__init__(qmodel, stats, feeds, executor, float_outputs, rank)
        self.context = {"samples": len(self._feeds), "outputs": list(qmodel.model.outputs),
                        "method": qmodel.method.value, "mode": qmodel.mode.value}

    @classmethod
    def of(cls, wb, metric: str = "cosine", mode=None) -> CosineEvaluator:
        """The evaluator of a Workbench's state as it is now (its samples, executor, ranking)."""
        qm = wb.quantized(mode)
        # NOTE: on a cluster the workers compute the float outputs; here they are cached
        fl = wb.float_outputs() if isinstance(wb.executor, LocalExecutor) else None
        return cls(qm, wb.stats, wb.samples, metric, wb.executor, fl, wb._ranker(mode))

    def locate(self, plan) -> dict | None:
        """The first tensor where ``plan``'s quantized model turns NaN/Inf (the EndToEnd table
        on this evaluator's samples, :func:`axnb.compare.first_nonfinite`), or None."""
        rep = self._ex.compare(self._qm.model, self._quant(plan), self._feeds, [Method.EndToEnd],
                               progress=False)[Method.EndToEnd.value]
        return rep.meta.get("first_nonfinite")

    def _scores(self, terms: list) -> dict[str, float]:
        res = metrics.scored(metrics.combine_outputs(terms))
        return {o: float(m[self._key]) for o, m in res.items()}


# ---------------------------------------------------------------- task metrics

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


def _float_outputs(wb, ts: TaskSet) -> list[dict]:
    if ts.source == "analysis samples":
        return wb.float_outputs()  # NOTE: the Workbench's own cache
    key = (id(wb.model), ts.source, ts.names)
    cache = _SETS.setdefault(wb, {})
    if key not in cache or ts.source == "given feeds":
        cache.clear()  # NOTE: one labelled set per Workbench and model: memory stays flat
        cache[key] = wb.executor.outputs(wb.model, None, ts.feeds, wb.progress)
    return cache[key]


def task_report(wb, metric=None, labels=None, mode=None, feeds=None, output=None,
                **params) -> TaskReport:
    """The task metric of ``wb``'s current plan (see :func:`task_set`); the float outputs of
    the labelled samples are computed once per Workbench, the models run on its executor.

    Example:
        >>> task_report(wb, "agreement").quant_score                   # doctest: +SKIP
        0.9921875
    """
    ts = task_set(wb, metric, labels, feeds, output, **params)
    qm = wb.quantized(mode)
    quant = wb.executor.outputs(qm.model, qm, ts.feeds, wb.progress)
    return score(ts.metric, _float_outputs(wb, ts), quant, ts.labels, ts.names, ts.output,
                 mode=qm.mode.value, **ts.params)


class TaskEvaluator(PlanEvaluator):
    """``evaluate(plan) -> {metric: score}`` for :func:`axnb.search.search`, higher is better
    (``-mae`` for MAE), over a Workbench's state when made; changes nothing.

    ``float_score`` is the float model's score on the same scale, so a maximum drop is the
    target ``float_score - max_drop`` (:meth:`target_for`).

    Example:
        >>> ev = TaskEvaluator(wb, "top1")                                   # doctest: +SKIP
        >>> search(ev, wb.plan, target=ev.target_for(0.01), ranking=wb.ranking())  # doctest: +SKIP
    """

    def __init__(self, wb, metric=None, labels=None, mode=None, feeds=None, output=None,
                 **params) -> None:
        self._ts = task_set(wb, metric, labels, feeds, output, **params)
        qm = wb.quantized(mode)
        super().__init__(qm, wb.stats, self._ts.feeds, wb.executor,
                         _float_outputs(wb, self._ts), wb._ranker(mode))
        first = self._score(self._ex.outputs(qm.model, qm, self._feeds))
        self._sign = 1.0 if first.higher_is_better else -1.0
        self.float_score = self._sign * first.float_score
        self.metric = first.metric
        self.context = {"samples": len(self._feeds), "task_metric": first.metric,
                        "output": first.output, "method": wb.method.value,
                        "mode": qm.mode.value, **plain(self._ts.params)}
        self._first = (qm.plan, first)

    def _score(self, outputs: list[dict]) -> TaskReport:
        ts = self._ts
        return score(ts.metric, self._float, outputs, ts.labels, ts.names, ts.output,
                     mode=self._qm.mode.value, **ts.params)

    def _scores(self, outputs: list) -> dict[str, float]:
        return {self.metric: self._sign * self._score(outputs).quant_score}

    def evaluate_many(self, plans, stop=None):
        """As :meth:`PlanEvaluator.evaluate_many`; the plan the evaluator was made with is not
        run again (its report is kept)."""
        plans, base = list(plans), self._first[0]
        rest = [i for i, p in enumerate(plans) if p is not base]
        for i in (i for i, p in enumerate(plans) if p is base):
            if stop is not None and stop():
                return
            yield i, {self.metric: self._sign * self._first[1].quant_score}, 0.0
        for j, s, secs in super().evaluate_many([plans[i] for i in rest], stop):
            yield rest[j], s, secs

    def report(self, plan) -> TaskReport:
        """The full :class:`TaskReport` of ``plan``."""
        if plan is self._first[0]:
            return self._first[1]
        qm = self._quant(plan)
        return self._score(self._ex.outputs(qm.model, qm, self._feeds))

    def target_for(self, max_drop: float) -> float:
        """The score a plan must reach to lose at most ``max_drop`` (metric units)."""
        if not max_drop >= 0:
            raise ConfigError(f"max_drop must be a number >= 0, got {max_drop!r}")
        return self.float_score - max_drop


def evaluator(wb, metric: str | Callable = "cosine", mode=None) -> PlanEvaluator:
    """A Workbench's evaluator of ``metric``: a cosine one (:data:`COSINE_METRICS`) or a task one
    (a task metric name or a callable, on the config's evaluation samples).

    Example:
        >>> evaluator(wb, "top1").float_score                          # doctest: +SKIP
        0.90625
    """
    if callable(metric) or metric in METRICS:
        return TaskEvaluator(wb, metric, mode=mode)
    return CosineEvaluator.of(wb, metric, mode)
