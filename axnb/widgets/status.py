"""The Explorer's Summary and status line as pure functions of an
:class:`~axnb.results.Analysis` (the report's and the CLI's numbers and advice), no ipywidgets.

Example:
    >>> change(0.9675, 0.9894)
    '0.96750 -> 0.98940 (+0.02190), '
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


def change(before: float | None, after: float | None) -> str:
    """The change of the final cosine (min over outputs) an action made, for the status line;
    a drop is marked. Empty when there is no "before".

    Example:
        >>> change(0.9675, 0.9894), change(0.9675, 0.9447), change(None, 0.9)
        ('0.96750 -> 0.98940 (+0.02190), ', '0.96750 -> 0.94470 (-0.02280, lowers it), ', '')
    """
    if before is None or after is None:
        return ""
    d = after - before
    return f"{before:.5f} -> {after:.5f} ({d:+.5f}{', lowers it' if d < 0 else ''}), "


def status_line(s: dict) -> str:
    """A :func:`summary` as one line of text (the Explorer's header).

    Example:
        >>> status_line(summary(wb.snapshot(), "EndToEnd"))         # doctest: +SKIP
        'U16 layers: 0 | final cosine 99.0000% >= 98% | MinMax | EndToEnd | Reference'
    """
    worst = min((c for _, c, *_ in s["outputs"]), default=float("nan"))
    task = "".join(f" | {short}" for _, _, short in s.get("task", ()))
    return (f"U16 layers: {s['u16']} | final cosine {worst:.4%} "
            f"{'>=' if s['ok'] else '<'} {THRESHOLD:.0%}{task} | {s['calibration']} | "
            f"{s['analysis']} | {s['mode']}{' | SmoothQuant' if s['smooth'] else ''}"
            + (f" | {s['samples']} samples" if s.get("samples") else ""))


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
