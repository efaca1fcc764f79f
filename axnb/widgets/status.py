"""The Explorer's Summary and status line as pure functions of an
:class:`~axnb.results.Analysis` (the report's and the CLI's numbers and advice), no ipywidgets.

Example:
    >>> change(0.9675, 0.9894)
    'cosine 0.967500 -> 0.989400 (1-cos 3.25% -> 1.06%, x0.326), '
"""

from __future__ import annotations

from axnb.advice import FINAL
from axnb.types import QType

THRESHOLD = FINAL


def task_short(report) -> str:
    """A task report in a few words, for the status line.

    Example:
        >>> from axnb.results.task import TaskReport
        >>> task_short(TaskReport("top1", "p", 0.90625, 0.9140625))
        'top-1 float 0.906 -> quantized 0.914'
    """
    from axnb.results.task import task_label

    def num(v):
        return f"{v:.3f}" if v == v else "NaN (no finite value)"
    return f"{task_label(report)} float {num(report.float_score)} -> quantized " \
           f"{num(report.quant_score)}"


def dashboard_link(cluster) -> str | None:
    """The Dask dashboard URL of a Workbench's cluster (``wb.cluster``), or None.

    Example:
        >>> dashboard_link(None) is None
        True
    """
    if cluster is None:
        return None
    try:
        link = getattr(cluster, "dashboard_link", None) or cluster.client.dashboard_link
    except Exception:  # noqa: BLE001 - a closed or odd cluster shows no link, not an error
        return None
    return str(link) if link else None


def summary(analysis, method: str | None = None, dashboard: str | None = None) -> dict:
    """What the Summary tab shows, from an :class:`~axnb.results.Analysis` (the report's and
    the CLI's numbers and advice): verdict, next steps, U16 count, plan, methods, outputs, the
    task metric (when the snapshot has one) and the Dask ``dashboard`` link (when given).

    Example:
        >>> summary(wb.snapshot(), "EndToEnd")["u16"]               # doctest: +SKIP
        0
    """
    from axnb.advice import spread_text, spreads
    from axnb.results.task import flipped_text, task_line

    an = analysis
    adv, final = an.advice, an.final_cosine()
    sp = spreads(an, adv.threshold).get(an.mode, {})
    layers = an.plan.get("layers", {})
    tv = an.task_verdict()
    return {"ok": adv.ok, "verdict": adv.headline, "steps": list(an.steps()),
            "task": [(m, task_line(r), task_short(r)) for m, r in an.task.items()],
            "task_samples": [r.samples for r in an.task.values()],
            "flipped": [flipped_text(r) for r in an.task.values()],
            "task_ok": tv[0] if tv else None, "task_verdict": tv[1] if tv else "",
            "dashboard": dashboard,
            "where": list(adv.where), "rejected": list(adv.details.get("not_recommended", [])),
            "u16": sum(len(v) for q, v in layers.items() if QType(q).bits == 16),
            "plan": an.plan.get("summary", ""),
            "calibration": an.method, "analysis": method or an.analysis_method,
            "mode": an.mode, "smooth": an.smoothing is not None,
            "samples": an.samples.get("analysis"),
            "outputs": [(o, c, c >= adv.threshold, spread_text(sp.get(o), adv.threshold))
                        for o, c in final.items()]}


def _loss(c: float) -> str:
    """1 - cos in percent, with 3 significant digits however small (0.000490%)."""
    return f"{(1 - c) * 100:#.3g}%"


def change(before: float | None, after: float | None) -> str:
    """The change of the final cosine (min over outputs) an action made, for the status line:
    the cosine and its loss 1 - cos (in percent, 3 significant digits, and the factor), so
    that a change in the 6th digit shows; a drop is marked. Empty when there is no "before".

    Example:
        >>> change(0.9999951, 0.9999963)
        'cosine 0.999995 -> 0.999996 (1-cos 0.000490% -> 0.000370%, x0.755), '
        >>> change(0.9675, 0.9447)
        'cosine 0.967500 -> 0.944700 (1-cos 3.25% -> 5.53%, x1.70, lowers it), '
        >>> change(0.9, 0.9), change(None, 0.9)
        ('cosine 0.900000 unchanged, ', '')
    """
    if before is None or after is None:
        return ""
    if after == before:
        return f"cosine {after:.6f} unchanged, "
    lb, la = 1 - before, 1 - after
    factor = f", x{la / lb:#.3g}" if lb > 0 and la >= 0 else ""
    return (f"cosine {before:.6f} -> {after:.6f} (1-cos {_loss(before)} -> {_loss(after)}"
            f"{factor}{', lowers it' if after < before else ''}), ")


def task_change(before, after) -> str:
    """The change of the task metric (quantized score) an action made, flagged like a cosine
    drop; empty without both reports or when another metric is measured.

    Example:
        >>> from axnb.results.task import TaskReport
        >>> a, b = (TaskReport("top1", "p", 0.906, q) for q in (0.922, 0.914))
        >>> task_change(a, b)
        'top-1 0.922 -> 0.914 (-0.80 points, lowers it), '
    """
    from axnb.results.task import task_label

    if before is None or after is None or before.metric != after.metric:
        return ""
    b, a = before.quant_score, after.quant_score
    if a == b:
        return f"{task_label(after)} {a:.3f} unchanged, "
    worse = a < b if after.higher_is_better else a > b
    return (f"{task_label(after)} {b:.3f} -> {a:.3f} ({(a - b) * 100:+.2f} points"
            f"{', lowers it' if worse else ''}), ")


def status_line(s: dict) -> str:
    """A :func:`summary` as one line of text (the Explorer's header).

    Example:
        >>> status_line(summary(wb.snapshot(), "EndToEnd"))         # doctest: +SKIP
        'U16 layers: 0 | final cosine 99.0000% >= 98% (32 samples) | MinMax | EndToEnd | ...'
    """
    worst = min((c for _, c, *_ in s["outputs"]), default=float("nan"))
    n = f" ({s['samples']} samples)" if s.get("samples") else ""
    task = "".join(f" | {short}" + (f" ({k} samples)" if k else "")
                   for short, k in zip((t[2] for t in s.get("task", ())),
                                       s.get("task_samples", ())))
    return (f"U16 layers: {s['u16']} | final cosine {worst:.4%} "
            f"{'>=' if s['ok'] else '<'} {THRESHOLD:.0%}{n}{task} | {s['calibration']} | "
            f"{s['analysis']} | {s['mode']} | SmoothQuant {'on' if s['smooth'] else 'off'}")


def deployed_html(check) -> str:
    """The Summary's one line of the deployed-input check (:func:`axnb.checks.deployed_input`):
    what the compiled model will take, and the config change when it differs.

    Example:
        >>> from axnb.results import Check
        >>> deployed_html(Check("deployed input", "pass", "x as float32"))[-40:]
        'input: pass</b> &mdash; x as float32</p>'
    """
    import html

    if check is None:
        return ""
    colour = {"pass": "#2e7d32", "warn": "#ef6c00"}.get(check.verdict, "#c62828")
    fix = f'<br><span style="color:#555">{html.escape(check.fix)}</span>' if check.fix else ""
    return (f'<p class="axnb-deployed"><b style="color:{colour}">Deployed input: '
            f"{check.verdict}</b> &mdash; {html.escape(check.summary)}{fix}</p>")
