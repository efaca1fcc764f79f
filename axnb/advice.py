"""The thresholds and the tuning flowchart of Pulsar2's accuracy-tuning guide, written once.

The guide: a final-output cosine >= :data:`FINAL` (98%) is roughly normal; under it, run the
PerLayer analysis to find the layers under :data:`LAYER` (99.9%), try the MSE or Percentile
calibration, enable SmoothQuant when the outlier table shows channels at level >= 5, and set the
worst layers to U16. axnb recommends none of these before it has tried it:
:func:`axnb.trials.measure` runs each on a Workbench (its state restored) and returns measured
trials; :func:`advise` turns the numbers and the trials into an :class:`Advice` whose steps are
only the trials that raised the final cosine, best first ("MSE calibration: 0.9671 -> 0.9906
(tried)"). The HTML report, the Explorer, the CLI and the checks all show that one result
(:func:`axnb.trials.measured` gives the measured snapshot, :func:`for_analysis` the advice
of one).

Imports only engine-level modules (types, results), so every layer can use the constants.

Example:
    >>> a = advise({"out": 0.99})
    >>> a.ok, a.verdict, a.headline[:24]
    (True, 'pass', 'Final-output cosine 99.0')
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from axnb.metrics import final_notes, scored, skipped
from axnb.results import Advice, Trial, TrialKind
from axnb.results.layers import silent_rows, worst_order
from axnb.types import CalibMethod, Col

__all__ = ["FINAL", "LAYER", "METHODS_TRIED", "Advice", "advise", "calibration_trials",
           "for_analysis", "grade", "helps", "line", "spread", "spread_text", "spreads",
           "step_text", "where_lines"]

FINAL = 0.98
"""Final-output cosine line: at or above it the quantized model is roughly normal."""
LAYER = 0.999
"""Per-layer cosine line: layers under it are worth a look (PerLayer analysis)."""
METHODS_TRIED = tuple(m.value for m in CalibMethod)
"""Calibration methods measured (no model re-run) when the final cosine misses :data:`FINAL`:
every one Pulsar2 offers (the report's method table and the measured steps alike)."""
GAIN = 0.005
"""A measured method is recommended only when it beats the current one by more than this."""


def grade(c: float, final: float = FINAL, layer: float = LAYER) -> str:
    """The colour scale of every table: "good" >= ``layer``, "warn" >= ``final``, else "bad"
    (NaN: "bad").

    Example:
        >>> [grade(c) for c in (0.5, 0.99, 0.9995, float("nan"))]
        ['bad', 'warn', 'good', 'bad']
    """
    if c is None or not math.isfinite(c):
        return "bad"
    return "good" if c >= layer else "warn" if c >= final else "bad"


def _pct(c: float) -> str:
    return f"{c:.2%}" if math.isfinite(c) else "n/a"


def line(t: float) -> str:
    """A threshold as a short percentage.

    Example:
        >>> line(0.98), line(0.999), line(0.9995)
        ('98%', '99.9%', '99.95%')
    """
    return f"{round(t * 100, 4):g}%"


def _name(label: str, method: str) -> str:
    return label if label.startswith(method) else f"{method} ({label})"


def _names(df, n: int = 5) -> str:
    col = Col.OPERATOR if Col.OPERATOR in df else Col.OUTPUT
    rows = df.drop_duplicates(col).head(n)
    return ", ".join(f"{r[col]} ({r[Col.COSINE]:.4f})" for _, r in rows.iterrows())


def _frames(reports) -> list[tuple[str, object, dict]]:
    """(label, DataFrame, meta) of label -> LayerReport (or of such triples)."""
    if isinstance(reports, Mapping):
        return [(str(k), r.to_frame(), dict(r.meta)) for k, r in reports.items()]
    return list(reports or ())


def where_lines(reports, fine: float = LAYER) -> tuple[str, ...]:
    """Where the loss starts (EndToEnd) and the layers that cause it (PerLayer / Isolation),
    kept apart: the first rows EndToEnd names are where the error becomes visible, which is
    not the same as the layers whose own error is large. Near-silent tensors
    (:func:`axnb.results.layers.silent_rows`: their error is explained by their magnitude) are
    passed over, and counted.

    Example:
        >>> import pandas as pd
        >>> df = pd.DataFrame({"Operator": ["a", "b"], "Cosin": [0.99, 0.9999]})
        >>> where_lines([("EndToEnd", df, {"method": "EndToEnd"})])[0][:30]
        'Where the loss starts (EndToEn'
    """
    out = []
    for label, df, meta in _frames(reports):
        m = str(getattr(meta.get("method", ""), "value", meta.get("method", "")))
        low, quiet = ~(df[Col.COSINE] >= fine), silent_rows(df)
        bad, skip = df[low & ~quiet], int((low & quiet).sum())
        # NOTE: a NaN row is under every line: it is named, never passed over silently
        note = (f" ({skip} near-silent tensors under it passed over: their error is explained "
                "by their magnitude)") if skip else ""
        if m == "EndToEnd":
            out.append(f"Where the loss starts ({_name(label, m)}, errors accumulate): "
                       f"{len(bad)} of {len(df)} tensors under {line(fine)}{note}"
                       + (f"; the first: {_names(bad)}." if len(bad) else "."))
        elif m in ("PerLayer", "Isolation"):
            bad = bad.iloc[worst_order(bad)]
            what = "each layer's own error" if m == "PerLayer" else "each layer quantized alone"
            out.append(f"The layers that cause it ({_name(label, m)}, {what}): {len(bad)} of "
                       f"{len(df)} under {line(fine)}{note}" +
                       (f"; worst: {_names(bad)}." if len(bad) else "."))
    return tuple(out)


def spread(per_sample, names=(), threshold: float = FINAL, n: int = 3) -> dict | None:
    """The per-sample spread of a final cosine: mean, min, the ``n`` worst samples by name, how
    many are under ``threshold`` and the mean of the others. None without per-sample values
    (a 1-element output is compared across samples).

    Example:
        >>> sp = spread([0.99, 0.69, 0.995, 0.98], ["a", "b", "c", "d"])
        >>> sp["min"], sp["worst"][0], sp["under"], round(sp["mean_others"], 4)
        (0.69, ('b', 0.69), 1, 0.9883)
    """
    per = [float(c) for c in per_sample or ()]
    if not per:
        return None
    names = list(names) if len(names or ()) == len(per) else [f"sample #{i}" for i in
                                                                range(len(per))]
    order = sorted(range(len(per)), key=lambda i: (math.isfinite(per[i]), per[i]))
    under = [i for i in order if not per[i] >= threshold]
    others = [per[i] for i in range(len(per)) if i not in set(under)]
    return {"n": len(per), "mean": sum(per) / len(per), "min": per[order[0]],
            "worst": [(names[i], per[i]) for i in order[:n]], "under": len(under),
            "mean_others": sum(others) / len(others) if others else math.nan}


def spreads(analysis, threshold: float = FINAL) -> dict[str, dict[str, dict | None]]:
    """mode -> output -> :func:`spread` of an :class:`~axnb.results.Analysis`.

    Example:
        >>> spreads(wb.snapshot())["Reference"]["fetch_name_0"]["min"]   # doctest: +SKIP
        0.6934
    """
    a = analysis
    return {m: {o: spread(v.get("per_sample"), a.sample_names, threshold)
                for o, v in scored(outs).items()} for m, outs in a.final.items()}


def spread_text(sp: Mapping | None, threshold: float = FINAL) -> str:
    """A :func:`spread` as one sentence; it says when a few samples are the whole story.

    Example:
        >>> t = spread_text(spread([0.99, 0.69, 0.995, 0.98], ["a", "b", "c", "d"]))
        >>> print(t[:53]); print(t[74:])
        per sample: mean 0.9137, min 0.6900; worst: b 0.6900,
        1 of 4 under 98% (the others average 0.9883)
    """
    if not sp:
        return "per sample: n/a (a 1-element output is compared across the samples)"
    worst = ", ".join(f"{n} {c:.4f}" for n, c in sp["worst"])
    text = (f"per sample: mean {sp['mean']:.4f}, min {sp['min']:.4f}; worst: {worst}; "
            f"{sp['under']} of {sp['n']} under {line(threshold)}")
    if sp["under"] and math.isfinite(sp["mean_others"]):
        text += f" (the others average {sp['mean_others']:.4f})"
    return text


def _spread_line(sp: Mapping | None, threshold: float) -> tuple[str, ...]:
    if not sp or not sp["under"]:
        return ()
    if sp["under"] <= max(1, sp["n"] // 4) and sp["mean_others"] >= threshold:
        worst = ", ".join(f"{n} {c:.4f}" for n, c in sp["worst"][:sp["under"]])
        return (f"A few samples are the whole story: {sp['under']} of {sp['n']} are under "
                f"{line(threshold)} ({worst}); the others average {sp['mean_others']:.4f}.",)
    return (f"Spread: {spread_text(sp, threshold)}.",)


def _smooth_hint(outliers) -> list:
    return [] if outliers is None else outliers.tensors_at_level(5)


def step_text(t: Trial) -> str:
    """A trial as the one line every surface prints; with the task metric measured too (its
    ``task``: the drop before and with the step), that figure follows the cosine's.

    Example:
        >>> t = Trial("calibration", "MSE calibration", 0.9671, 0.9906,
        ...           {"calibration_method": "MSE"}, 'quant.calibration_method = "MSE"')
        >>> step_text(t)
        'MSE calibration: 0.9671 -> 0.9906 (tried); quant.calibration_method = "MSE"'
        >>> from axnb.results import TaskDelta
        >>> step_text(t.with_task(TaskDelta("top-1", "NPUBackend", 0.023, 0.008,
        ...                                 "top-1 drop 2.3 -> 0.8 points")))[16:]
        ' 0.9671 -> 0.9906 (tried), top-1 drop 2.3 -> 0.8 points; quant.calibration_method = "MSE"'
    """
    cost = f" [{t.cost}]" if t.cost else ""
    task = f", {t.task.text}" if t.task else ""
    return f"{t.label}: {t.before:.4f} -> {t.after:.4f} (tried){task}{cost}; {t.how}"


def helps(t: Trial, gain: float = GAIN) -> bool:
    """A trial is recommended only when it was measured to raise the metric by more than
    ``gain`` or a tenth of the remaining loss (1 - before), whichever is smaller; never one
    that lowers it. A trial measured on the task metric too (its ``task``, when that verdict
    failed) is judged by it: recommended when it lowers the drop.

    Example:
        >>> from axnb.results import TaskDelta
        >>> def t(before, after): return Trial("u16", "U16 for a", before, after)
        >>> helps(t(0.96, 0.95)), helps(t(0.96, 0.99))
        (False, True)
        >>> helps(t(0.9998, 0.99995))                         # 75% of what was left
        True
        >>> helps(t(0.99, 0.999).with_task(TaskDelta("top-1", "", 0.02, 0.03, "")))
        False
    """
    if t.task is not None:
        d = t.task
        return math.isfinite(d.after) and (not math.isfinite(d.before)
                                           or d.after < d.before - 1e-12)
    need = min(gain, 0.1 * (1 - t.before)) if math.isfinite(t.before) else gain
    return math.isfinite(t.after) and t.after > t.before + need


def _best_first(t: Trial) -> tuple:
    # NOTE: the smallest task-metric drop first when the task was measured, then the cosine
    return (t.task.after if t.task else 0.0, -t.after)


def calibration_trials(method: str, score: float, by_m: Mapping[str, float]) -> list[Trial]:
    """The measured final cosine of each other calibration method as a :class:`Trial`."""
    return [Trial(TrialKind.calibration, f"{m} calibration", score, v,
                  {"calibration_method": m}, f'set calibration_method {m} '
                  f'(quant.calibration_method = "{m}"; wb.set_method("{m}"))')
            for m, v in by_m.items() if m != method]


def advise(final: Mapping[str, float], reports=(), outliers=None, method: str = "MinMax",
           smooth: Mapping | None = None, plan_summary: str = "", mode: str = "",
           by_method: Mapping[str, float] | None = None, threshold: float = FINAL,
           fine: float = LAYER, trials=(), spread: Mapping | None = None,
           task: tuple[bool, str] | None = None, max_drop: float | None = None,
           notes: tuple[str, ...] = ()) -> Advice:
    """The tuning flowchart with this model's numbers, ending in measured next steps only.

    Final cosine (min over outputs) >= ``threshold`` and no failed task verdict: pass (with a
    task metric measured, no step asks to check one). Else the headline, where the loss
    starts and which layers cause it (:func:`where_lines`), then every trial that was measured
    to raise the final cosine, best first ("MSE calibration: 0.9671 -> 0.9906 (tried)"); when
    the task verdict failed, every trial measured to lower the task metric's drop (its
    ``task`` figures, :func:`axnb.trials.measure`), smallest drop first. A trial that
    does not help is listed in ``details["not_recommended"]``, never as a step; a step that
    was not measured is not recommended (:func:`measure` tries them on a Workbench). Verdict
    "warn" when a measured step alone reaches the threshold (the task verdict failed: brings
    the drop within ``max_drop``), else "fail". ``ok`` stays the cosine's.

    Args:
        final: output -> final cosine (float vs quantized) in ``mode``.
        reports: label -> LayerReport (or (label, DataFrame, meta) triples).
        outliers: the OutlierReport (says whether SmoothQuant is worth trying), or None.
        method: the calibration method of ``final``.
        smooth: the SmoothQuant summary ({"applied": [...], "alpha": ...}) when it is on.
        plan_summary: ``QuantPlan.summary()``.
        mode: the analysis mode of ``final``.
        by_method: calibration method -> measured final cosine (min over outputs).
        threshold, fine: the final-output and the per-layer lines.
        trials: measured steps (:func:`trial` dicts, e.g. from :func:`measure`); calibration
            trials are also made from ``by_method``.
        spread: the per-sample :func:`spread` of the worst output (the verdict says when a
            few samples carry the loss).
        task: the task verdict (acceptable, one line) when a task metric was measured
            (:meth:`axnb.results.Analysis.task_verdict`), else None.
        max_drop: the accepted task-metric drop of that verdict.
        notes: what the verdict must say about how the final figure was measured (near-silent
            samples judged by their error, outputs not scored, where NaN/Inf start): each is
            said after the headline and kept in ``details["notes"]``.

    Example:
        >>> a = advise({"out": 0.95}, method="MinMax", by_method={"MSE": 0.985})
        >>> a.verdict, a.steps[0][:41]
        ('warn', 'MSE calibration: 0.9500 -> 0.9850 (tried)')
    """
    final = {o: float(c) for o, c in (final or {}).items()}
    worst_out = min(final, key=lambda o: final[o]) if final else ""
    score = final.get(worst_out, math.nan)
    ok = bool(final) and score >= threshold
    where = f" ({mode})" if mode else ""
    short = (f"final cosine {score:.3f} {'>=' if ok else '<'} {threshold} ({worst_out}; "
             f"{method}{', ' + mode if mode else ''})")
    by_m = {method: score, **{m: float(v) for m, v in (by_method or {}).items()
                              if m != method}}
    det: dict = {"final_cosine": final, "target": threshold, "layer_target": fine,
                 "method": method, "mode": mode, "by_method": by_m, "plan": plan_summary}
    det["spread"] = dict(spread) if spread else None
    det["task_verdict"] = None if task is None else {"ok": bool(task[0]), "verdict": task[1]}
    task_bad = task is not None and not task[0]
    det["notes"] = list(notes)
    places = tuple(notes) + _spread_line(spread, threshold) + where_lines(reports, fine) + ((
        f"SmoothQuant is on ({len(smooth.get('applied', ()))} tensors smoothed, alpha "
        f"{smooth.get('alpha')}).",) if smooth is not None else ())
    head = (f"Final-output cosine {_pct(score)}{where} >= {line(threshold)}: roughly normal "
            "by Pulsar2's accuracy-tuning guide.")
    head += _notes_clause(notes)
    if ok and not task_bad:
        # NOTE: a measured task metric is the check this step asked for
        steps = ([] if task is not None else [
            f"Check the task metric (accuracy, mAP...) on real data; if it still falls "
            f"short, tune the layers under {line(fine)}."]) + [
            "Confirm with precision_analysis_mode NPUBackend and on the board."]
        return Advice(True, "pass", head, tuple(steps), short, steps[-1], det, threshold, fine,
                      places, ())
    if not ok:
        head = (f"Final-output cosine {_pct(score)} at {worst_out}{where} < {line(threshold)}: "
                "quantization loses accuracy." if final else
                "No final-output cosine was computed.") + _notes_clause(notes)
    given = list(trials or ())
    kinds = {t.kind for t in given}
    tried = given + ([] if TrialKind.calibration in kinds else
                     calibration_trials(method, score, by_m))
    good = sorted((t for t in tried if helps(t)), key=_best_first)
    det |= {"outliers_level5": len(_smooth_hint(outliers)), "smooth_quant": smooth is not None,
            "not_recommended": [step_text(t) for t in tried if not helps(t)]}
    steps = [step_text(t) for t in good]
    untried = _untried(kinds | {t.kind for t in tried}, outliers, smooth)
    if untried:
        steps.append(f"Not measured yet (so not recommended): {untried}; "
                     "axnb.trials.measured(wb) or `axnb build` tries them.")
    if not good:
        steps.append("No step measured lowers the task metric's drop: look at the flipped "
                     "samples (task metric), the layers that cause the loss (above) and the "
                     "data (checks)." if task_bad else
                     "No step measured raises the final cosine: look at the layers that "
                     "cause the loss (above), the data (checks) and the task metric.")
    if task_bad and good and good[0].task:
        reach = max_drop is not None and good[0].task.after <= max_drop + 1e-12
    else:
        reach = bool(good) and good[0].after >= threshold
    if not reach:
        # NOTE: each step above was measured alone; combined (and FP32 front ends) they may
        # reach what none does: layout_cdla 0.756 -> 0.981, basic_pitch 0.843 -> 0.996 (tune)
        steps.append("Combine them: the tuner measures calibration method + SmoothQuant + "
                     "U16 / FP32 groups together at the least cost (`axnb build --tune` or "
                     "wb.tune()).")
    if mode != "NPUBackend":            # NOTE: the figures above are NPUBackend's already
        steps.append(("Then confirm" if good else "Confirm") +
                     " with precision_analysis_mode NPUBackend.")
    det["steps"] = steps
    hot = _smooth_hint(outliers)
    parts = [short] + ([f"task metric: {task[1]}"] if task_bad else []) + (
        [f"outlier table: {len(hot)} tensors with level>=5 channels"] if hot else []) + (
        [f"best measured: {step_text(good[0])}"] if good else [])
    fix = step_text(good[0]) if good else steps[0]
    return Advice(ok, "warn" if reach else "fail", head, tuple(steps), "; ".join(parts), fix,
                  det, threshold, fine, places, tuple(good))


def _notes_clause(notes) -> str:
    return f" ({len(notes)} note{'s' if len(notes) > 1 else ''} on how it was measured below.)" \
        if notes else ""


def _untried(kinds: set, outliers, smooth) -> str:
    out = []
    if TrialKind.calibration not in kinds:
        out.append("the other calibration methods")
    if smooth is None and TrialKind.smooth_quant not in kinds and _smooth_hint(outliers):
        out.append(f"SmoothQuant ({len(_smooth_hint(outliers))} tensors have level>=5 "
                   "outlier channels)")
    if TrialKind.weights not in kinds:
        out.append("weight fixes (bias correction, scale search, GPTQ)")
    if TrialKind.u16 not in kinds:
        out.append("U16 for the most sensitive layers")
    return ", ".join(out)


def for_analysis(analysis, threshold: float = FINAL, fine: float = LAYER) -> Advice:
    """The advice of an :class:`~axnb.results.Analysis` (pure: no model run), with its task
    verdict when it has a task metric (:meth:`~axnb.results.Analysis.task_verdict`).

    Example:
        >>> for_analysis(wb.snapshot()).steps              # doctest: +SKIP
    """
    a = analysis
    fin = a.final_cosine()
    worst = min(fin, key=fin.get) if fin else None
    per = a.final.get(a.mode, {}).get(worst, {}).get("per_sample") if worst else None
    outs = a.final.get(a.mode, {})
    notes = tuple(f"{o}: {t}" for o, m in scored(outs).items() for t in final_notes(m)) + \
        tuple(f"{o}: {why}" for o, why in skipped(outs).items())
    return advise(fin, a.reports, a.outliers, a.method, a.smoothing,
                  a.plan.get("summary", ""), a.mode, a.by_method, threshold, fine,
                  getattr(a, "trials", ()), spread(per, a.sample_names, threshold),
                  a.task_verdict(), a.max_drop, notes)
