"""The thresholds and the tuning flowchart of Pulsar2's accuracy-tuning guide, written once.

The guide: a final-output cosine >= :data:`FINAL` (98%) is roughly normal; under it, run the
PerLayer analysis to find the layers under :data:`LAYER` (99.9%), try the MSE or Percentile
calibration, enable SmoothQuant when the outlier table shows channels at level >= 5, and set the
worst layers to U16. :func:`advise` turns this model's numbers into an :class:`Advice`; the HTML
report, the Explorer, the CLI and the checks all show that one result (:func:`for_analysis`
gives the advice of an :class:`~axnb.results.Analysis`).

Imports only engine-level modules (types, results), so every layer can use the constants.

Example:
    >>> a = advise({"out": 0.99})
    >>> a.ok, a.verdict, a.headline[:24]
    (True, 'pass', 'Final-output cosine 99.0')
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from axnb.results import Advice, OCol
from axnb.types import Col

__all__ = ["FINAL", "LAYER", "METHODS_TRIED", "Advice", "advise", "for_analysis", "grade",
           "line", "layer_step"]

FINAL = 0.98
"""Final-output cosine line: at or above it the quantized model is roughly normal."""
LAYER = 0.999
"""Per-layer cosine line: layers under it are worth a look (PerLayer analysis)."""
METHODS_TRIED = ("MinMax", "MSE", "Percentile")
"""Calibration methods measured (no model re-run) when the final cosine misses :data:`FINAL`."""
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


def layer_step(reports, fine: float = LAYER) -> tuple[str, str]:
    """(where the loss is, which layers to set to U16) from the best report available.

    Args:
        reports: label -> LayerReport, or (label, DataFrame, meta) triples.
        fine: the per-layer line.

    Example:
        >>> import pandas as pd
        >>> df = pd.DataFrame({"Operator": ["a", "b"], "Cosin": [0.99, 0.9999]})
        >>> layer_step([("PerLayer", df, {"method": "PerLayer"})], 0.999)[0]
        'PerLayer: 1 of 2 tensors under 99.9%; worst: a (0.9900).'
    """
    reports = _frames(reports)

    def method(r) -> str:
        return str(getattr(r[2].get("method", ""), "value", r[2].get("method", "")))

    def under(df):
        return df[df[Col.COSINE] < fine]

    # NOTE: PerLayer (each layer's own error) beats Isolation (each layer alone, scored at
    # the outputs) beats EndToEnd (accumulated) for naming the layers to fix.
    per = sorted((r for r in reports if method(r) in ("PerLayer", "Isolation")),
                 key=lambda r: method(r) != "PerLayer")
    e2e = [r for r in reports if r not in per]
    if per:
        label, df, _ = per[0]
        label, what = _name(label, method(per[0])), "tensors"
        if method(per[0]) == "Isolation":
            what = "layers, quantized alone, leave the outputs"
        bad = under(df).sort_values(Col.COSINE, kind="stable")
        if bad.empty:
            return (f"{label}: nothing is under {line(fine)}; the loss is spread over many "
                    "layers, so try another calibration method first.", "")
        return (f"{label}: {len(bad)} of {len(df)} {what} under {line(fine)}; "
                f"worst: {_names(bad)}.", _names(bad, 3))
    if e2e:
        label, df, _ = e2e[0]
        label = _name(label, "EndToEnd")
        bad = under(df)
        head = (f"{label} accumulates the error: {len(bad)} of {len(df)} tensors "
                f"are under {line(fine)}" + (f", the first ones (where the loss starts): "
                                            f"{_names(bad)}" if len(bad) else "") + ". ")
        return (head + "Run PerLayer (quant.precision_analysis_method = \"PerLayer\") to see "
                f"each layer's own loss and find the layers under {line(fine)}.", _names(bad, 3))
    return (f"Run the PerLayer analysis to find the layers under {line(fine)} "
            "(quant.precision_analysis_method = \"PerLayer\").", "")


def _smooth_step(outliers, smooth: Mapping | None) -> str:
    if smooth is not None:
        return (f"SmoothQuant is on ({len(smooth.get('applied', ()))} tensors smoothed, alpha "
                f"{smooth.get('alpha')}); try another smooth_quant_strength if outliers remain.")
    if outliers is None:
        return "SmoothQuant: compute the outlier table to see whether it can help."
    hits = outliers.tensors_at_level(5)
    if not hits:
        return ("SmoothQuant: no tensor has channels at level>=5 in the outlier table, so it "
                "is unlikely to help.")
    rows = sorted((r for r in outliers.rows if r[OCol.TENSOR] in set(hits)),
                  key=lambda r: -r[OCol.level(5)])[:3]
    top = ", ".join(f"{r[OCol.TENSOR]} ({r[OCol.level(5)]:.1%} of {r[OCol.CHANNELS]} "
                    "channels)" for r in rows)
    return (f"SmoothQuant: {len(hits)} tensors have channels at level>=5 in the outlier table "
            f"(most: {top}); try quant.enable_smooth_quant = true.")


def _calibration_step(method: str, score: float, by_m: dict[str, float]) -> str:
    if len(by_m) <= 1:  # NOTE: nothing measured: the guide's generic advice
        other = "Percentile or MSE" if method == "MinMax" else \
            ", ".join(m for m in ("MSE", "Percentile", "MinMax") if m != method)
        return f"Calibration: try {other} (quant.calibration_method; now {method})."
    best = max(by_m, key=by_m.get)
    measured = ", ".join(f"{m} {v:.4f}" for m, v in by_m.items())
    if best != method and by_m[best] > score + GAIN:
        return (f"Calibration: set calibration_method {best} (final cosine {by_m[best]:.4f} "
                f"vs {score:.4f} with {method}; measured: {measured}).")
    return f"Calibration: {method} is as good as any method measured ({measured})."


def advise(final: Mapping[str, float], reports=(), outliers=None, method: str = "MinMax",
           smooth: Mapping | None = None, plan_summary: str = "", mode: str = "",
           by_method: Mapping[str, float] | None = None, threshold: float = FINAL,
           fine: float = LAYER) -> Advice:
    """The tuning flowchart with this model's numbers, ending in the concrete next steps.

    Final cosine (min over outputs) >= ``threshold``: pass. Else: where the loss is (the best
    layer report), the calibration method (measured ones in ``by_method`` are compared, no
    model run here), SmoothQuant (the outlier table's level>=5 channels) and U16 for the worst
    layers. Warn when a measured method alone reaches the threshold (the rest can wait), else
    fail.

    Args:
        final: output -> final cosine (float vs quantized) in ``mode``.
        reports: label -> LayerReport (or (label, DataFrame, meta) triples).
        outliers: the OutlierReport (for the SmoothQuant step), or None.
        method: the calibration method of ``final``.
        smooth: the SmoothQuant summary ({"applied": [...], "alpha": ...}) when it is on.
        plan_summary: ``QuantPlan.summary()``.
        mode: the analysis mode of ``final``.
        by_method: calibration method -> measured final cosine (min over outputs).
        threshold, fine: the final-output and the per-layer lines.

    Example:
        >>> a = advise({"out": 0.95}, method="MinMax")
        >>> a.verdict, a.steps[1][:28]
        ('fail', 'Calibration: try Percentile ')
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
                 "method": method, "mode": mode, "by_method": by_m}
    if ok:
        steps = [f"Check the task metric (accuracy, mAP...) on real data; if it still falls "
                 f"short, tune the layers under {line(fine)}."]
        if reports:
            steps.append(layer_step(reports, fine)[0])
        steps.append("Confirm with precision_analysis_mode NPUBackend and on the board.")
        head = (f"Final-output cosine {_pct(score)}{where} >= {line(threshold)}: roughly normal "
                "by Pulsar2's accuracy-tuning guide.")
        return Advice(True, "pass", head, tuple(steps), short, steps[-1], det, threshold, fine)
    head = (f"Final-output cosine {_pct(score)} at {worst_out}{where} < {line(threshold)}: "
            "quantization loses accuracy." if final else "No final-output cosine was computed.")
    best = max(by_m, key=by_m.get)
    hot = outliers.tensors_at_level(5) if outliers is not None else []
    det |= {"outliers_level5": len(hot), "smooth_quant": smooth is not None}
    parts = [short]
    if len(by_m) > 1:
        parts.append("methods " + ", ".join(f"{m} {v:.3f}" for m, v in by_m.items()))
    if hot:
        rows = sorted((r for r in outliers.rows if r[OCol.TENSOR] in set(hot)),
                      key=lambda r: -r[OCol.level(5)])[:3]
        det["worst_outliers"] = ", ".join(f"{r[OCol.TENSOR]} ({r[OCol.level(5)]:.0%})"
                                          for r in rows)
        parts.append(f"outlier table: {len(hot)} tensors with level>=5 channels (worst: "
                     f"{det['worst_outliers']})" + ("; SmoothQuant is on" if smooth else ""))
    where_text, u16 = layer_step(reports, fine)
    steps = [where_text, _calibration_step(method, score, by_m)]
    verdict = "warn" if by_m[best] >= threshold else "fail"
    if verdict == "warn":  # NOTE: the method alone is enough; the rest of the chart can wait
        steps.append("Then confirm with precision_analysis_mode NPUBackend.")
    else:
        steps.append(_smooth_step(outliers, smooth))
        steps.append("Mixed precision: set the worst layers to U16 (layer_configs, or "
                     "wb.set_qtype(layer, \"U16\"))" + (f": {u16}" if u16 else "") + "; or let "
                     f"axnb.search(wb.evaluator(), wb.plan, target={threshold}) find the fewest."
                     + (f" Plan now: {plan_summary}." if plan_summary else ""))
    det["steps"] = steps
    return Advice(False, verdict, head, tuple(steps), "; ".join(parts), " ".join(steps), det,
                  threshold, fine)


def for_analysis(analysis, threshold: float = FINAL, fine: float = LAYER) -> Advice:
    """The advice of an :class:`~axnb.results.Analysis` (pure: no model run).

    Example:
        >>> for_analysis(wb.snapshot()).steps              # doctest: +SKIP
    """
    a = analysis
    return advise(a.final_cosine(), a.reports, a.outliers, a.method, a.smoothing,
                  a.plan.get("summary", ""), a.mode, a.by_method, threshold, fine)
