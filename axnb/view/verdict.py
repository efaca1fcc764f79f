"""The verdict of a report and the next step, following Pulsar2's accuracy-tuning guide.

The guide: a final-output cosine >= 98% is roughly normal; under it, run the PerLayer analysis
to find the layers under 99.9%, try the MSE or Percentile calibration, enable SmoothQuant when
the outlier table shows channels at level >= 5, and set the worst layers to U16.

Example:
    >>> v = verdict({"out": 0.99})
    >>> v.ok, v.headline[:24]
    (True, 'Final-output cosine 99.0')
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Verdict:
    """ok: every final output reaches the threshold; headline: one sentence; steps: what to do
    next, with the figures that justify each step."""

    ok: bool
    headline: str
    steps: list[str] = field(default_factory=list)


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
    col = "Operator" if "Operator" in df else "Output Tensor"
    rows = df.drop_duplicates(col).head(n)
    return ", ".join(f"{r[col]} ({r['Cosin']:.4f})" for _, r in rows.iterrows())


def _under(df, fine: float):
    return df[df["Cosin"] < fine]


def layer_step(reports: Sequence[tuple[str, object, dict]], fine: float) -> tuple[str, str]:
    """(where the loss is, which layers to set to U16) from the best report available.

    Example:
        >>> import pandas as pd
        >>> df = pd.DataFrame({"Operator": ["a", "b"], "Cosin": [0.99, 0.9999]})
        >>> layer_step([("PerLayer", df, {"method": "PerLayer"})], 0.999)[0]
        'PerLayer: 1 of 2 tensors under 99.9%; worst: a (0.9900).'
    """
    def method(r) -> str:
        return str(r[2].get("method", ""))

    # NOTE: PerLayer (each layer's own error) beats Isolation (each layer alone, scored at
    # the outputs) beats EndToEnd (accumulated) for naming the layers to fix.
    per = sorted((r for r in reports if method(r) in ("PerLayer", "Isolation")),
                 key=lambda r: method(r) != "PerLayer")
    e2e = [r for r in reports if r not in per]
    if per:
        label, df, meta = per[0]
        label, what = _name(label, method(per[0])), "tensors"
        if method(per[0]) == "Isolation":
            what = "layers, quantized alone, leave the outputs"
        bad = _under(df, fine).sort_values("Cosin", kind="stable")
        if bad.empty:
            return (f"{label}: nothing is under {line(fine)}; the loss is spread over many "
                    "layers, so try another calibration method first.", "")
        return (f"{label}: {len(bad)} of {len(df)} {what} under {line(fine)}; "
                f"worst: {_names(bad)}.", _names(bad, 3))
    if e2e:
        label, df, _ = e2e[0]
        label = _name(label, "EndToEnd")
        bad = _under(df, fine)
        head = (f"{label} accumulates the error: {len(bad)} of {len(df)} tensors "
                f"are under {line(fine)}" + (f", the first ones (where the loss starts): "
                                            f"{_names(bad)}" if len(bad) else "") + ". ")
        return (head + "Run PerLayer (quant.precision_analysis_method = \"PerLayer\") to see "
                f"each layer's own loss and find the layers under {line(fine)}.", _names(bad, 3))
    return (f"Run the PerLayer analysis to find the layers under {line(fine)} "
            "(quant.precision_analysis_method = \"PerLayer\").", "")


def verdict(final: Mapping[str, float], reports: Sequence[tuple[str, object, dict]] = (),
            outliers=None, method: str = "MinMax", smooth=None, plan_summary: str = "",
            threshold: float = 0.98, fine: float = 0.999, mode: str = "") -> Verdict:
    """The verdict on the final-output cosines and the next steps.

    Args:
        final: output -> cosine (float vs quantized, mean over samples).
        reports: (label, layer DataFrame, meta) of each layer report.
        outliers: an OutlierReport (for the SmoothQuant hint), or None.
        method: the calibration method in use.
        smooth: the SmoothResult when SmoothQuant is on, else None.
        plan_summary: ``QuantPlan.summary()``.
        threshold, fine: the 98% final-output line and the 99.9% layer line.
        mode: the analysis mode of ``final`` (for the headline).

    Example:
        >>> verdict({"out": 0.95}, method="MinMax").steps[1][:28]
        'Calibration: try Percentile '
    """
    worst_out = min(final, key=lambda o: final[o]) if final else ""
    worst = final.get(worst_out, math.nan)
    where = f" ({mode})" if mode else ""
    if final and worst >= threshold:
        head = (f"Final-output cosine {_pct(worst)}{where} >= {line(threshold)}: roughly normal "
                "by Pulsar2's accuracy-tuning guide.")
        steps = ["Check the task metric (accuracy, mAP...) on real data; if it still falls "
                 f"short, tune the layers under {line(fine)}."]
        if reports:
            steps.append(layer_step(reports, fine)[0])
        return Verdict(True, head, steps)
    head = (f"Final-output cosine {_pct(worst)} at {worst_out}{where} < {line(threshold)}: "
            "quantization loses accuracy." if final else "No final-output cosine was computed.")
    where_text, u16 = layer_step(reports, fine)
    steps = [where_text]
    other = "Percentile or MSE" if method == "MinMax" else \
        ", ".join(m for m in ("MSE", "Percentile", "MinMax") if m != method)
    steps.append(f"Calibration: try {other} (quant.calibration_method; now {method}).")
    steps.append(_smooth_step(outliers, smooth))
    steps.append("Mixed precision: set the worst layers to U16 (layer_configs, or "
                 "wb.set_qtype(layer, \"U16\"))" + (f": {u16}" if u16 else "") + "."
                 + (f" Plan now: {plan_summary}." if plan_summary else ""))
    return Verdict(False, head, steps)


def _smooth_step(outliers, smooth) -> str:
    if smooth is not None:
        return (f"SmoothQuant is on ({len(smooth.applied)} tensors smoothed, alpha "
                f"{smooth.alpha}); try another smooth_quant_strength if outliers remain.")
    if outliers is None:
        return "SmoothQuant: compute the outlier table to see whether it can help."
    hits = outliers.tensors_at_level(5)
    if not hits:
        return ("SmoothQuant: no tensor has channels at level>=5 in the outlier table, so it "
                "is unlikely to help.")
    rows = sorted((r for r in outliers.rows if r["Op outputs"] in set(hits)),
                  key=lambda r: -r["level>=5 ratio"])[:3]
    top = ", ".join(f"{r['Op outputs']} ({r['level>=5 ratio']:.1%} of {r['Channels']} "
                    "channels)" for r in rows)
    return (f"SmoothQuant: {len(hits)} tensors have channels at level>=5 in the outlier table "
            f"(most: {top}); try quant.enable_smooth_quant = true.")
