"""The next steps (:class:`Advice`) and the frozen snapshot of a whole analysis (:class:`Analysis`).

An Analysis holds everything the HTML report, the Explorer summary and the CLI print, as plain
data: it renders without the model, and ``save`` / ``load`` round-trip it through JSON.
"""

from __future__ import annotations

import html
import math
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

from axnb.metrics import scored, skipped
from axnb.results.calib import OutlierReport
from axnb.results.checks import Check, Diagnosis
from axnb.results.layers import LayerReport
from axnb.results.serialize import load_json, plain, save_json
from axnb.results.task import MAX_DROP, TaskReport, task_line, task_verdict
from axnb.results.trial import Trial
from axnb.types import Col


@dataclass(frozen=True)
class Advice:
    """The verdict on the final-output cosine and the next steps (see :mod:`axnb.advice`).

    Attributes:
        ok: every final output reaches ``threshold`` (the cosine's verdict).
        verdict: "pass", "warn" (a measured step alone reaches it) or "fail"; "warn" or "fail"
            too when the cosine passes but the task verdict failed (a measured step brings the
            drop within max_drop, or none does).
        headline: one sentence; steps: what to do next, with the figures behind each step.
        summary, fix: the same decision as one checklist line and its action (the "next step"
            check of :func:`axnb.checks.diagnose`).
        details: the figures (final cosine, by_method, outliers_level5, not_recommended...).
        threshold, fine: the final-output and the per-layer lines used.
        where: where the loss starts (EndToEnd) and the layers that cause it (PerLayer), kept
            apart.
        trials: the measured steps that raise the final cosine, best first
            (:class:`~axnb.results.Trial`); ``trials[0]`` is ``steps[0]``.
    """

    ok: bool
    verdict: str
    headline: str
    steps: tuple[str, ...] = ()
    summary: str = ""
    fix: str = ""
    details: dict = field(default_factory=dict, hash=False)
    threshold: float = math.nan
    fine: float = math.nan
    where: tuple[str, ...] = ()
    trials: tuple[Trial, ...] = field(default=(), hash=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "steps", tuple(self.steps))
        object.__setattr__(self, "where", tuple(self.where))
        object.__setattr__(self, "trials", _trials(self.trials))
        object.__setattr__(self, "details", plain(self.details))

    def to_check(self) -> Check:
        """The advice as the checklist's "next step" check."""
        return Check("next step", self.verdict, self.summary, self.details, self.fix)

    def to_dict(self) -> dict:
        return {**asdict(self), "steps": list(self.steps), "where": list(self.where),
                "trials": [t.to_dict() for t in self.trials]}

    @classmethod
    def from_dict(cls, d: dict) -> Advice:
        return cls(**d)

    def to_frame(self):
        """One row per step."""
        import pandas as pd

        return pd.DataFrame({"step": list(self.steps)})

    def save(self, path: str | Path) -> Path:
        return save_json(path, "Advice", self.to_dict())

    @classmethod
    def load(cls, path: str | Path) -> Advice:
        return cls.from_dict(load_json(path, "Advice"))

    def _repr_html_(self) -> str:
        where = "".join(f"<li>{html.escape(s)}</li>" for s in self.where)
        steps = "".join(f"<li>{html.escape(s)}</li>" for s in self.steps)
        return (f"<p><b>{html.escape(self.headline)}</b></p>"
                + (f"<ul>{where}</ul>" if where else "") + f"<ol>{steps}</ol>")

    def __str__(self) -> str:
        return "\n".join([self.headline, *(f"   {s}" for s in self.where),
                          *(f" - {s}" for s in self.steps)])


def _trials(trials) -> tuple[Trial, ...]:
    return tuple(t if isinstance(t, Trial) else Trial.from_dict(t) for t in trials)


def _diag_dict(d: Diagnosis | None) -> list | None:
    return None if d is None else [asdict(c) for c in d.checks]


@dataclass(frozen=True, repr=False)
class Analysis:
    """A frozen snapshot of one analysis: what the report, the Explorer and the CLI show.

    Made by :meth:`axnb.Workbench.snapshot`; every field is plain data (no model, no session).

    Attributes:
        config: the Pulsar2 config as a dict.
        method, mode: calibration method and analysis mode of the snapshot.
        analysis_method: the configured precision_analysis_method.
        plan: {"summary", "default", "layer_configs", "rows" (per-tensor QType table: tensor,
            kind, layer, op_type, qtype, source), "layers" ({QType: [layer names]})}.
        reports: label -> LayerReport (meta says method and mode).
        final: mode -> output -> final metrics (:func:`axnb.metrics.output_metrics`).
        by_method: calibration method -> measured final cosine (min over outputs), when the
            final cosine missed the line; {} otherwise.
        outliers: the OutlierReport; outlier_absmax: tensor -> per-channel abs-max (the
            tensors the report plots).
        smoothing: SmoothQuant summary {"alpha", "threshold", "applied", "skipped"} or None.
        diagnosis: the troubleshooting checks, when run.
        advice: :func:`axnb.advice.for_analysis` of this snapshot.
        trials: the next steps measured on the workbench (:func:`axnb.trials.measure`), or ().
        sample_names: the analysis samples' names (file names, else "sample #i"), in the order
            of every ``per_sample`` list.
        model: {"name", "nodes", "opset", "io": [(kind, name, shape, dtype)], "node_order"}.
        samples: {"calibration": n, "analysis": n, "analysis_origin": where the analysis
            samples come from, in words (:func:`axnb.data.analysis_set`)}.
        environment: (name, version) pairs.
        task: mode -> :class:`axnb.results.TaskReport`, the task metric (top-1, agreement...)
            float vs quantized on the config's evaluation samples (``wb.snapshot(task=True)``);
            {} when not measured.
        max_drop: the accepted task-metric drop of the verdict (metric units; ``--max-drop``,
            else the config's ``evaluation.max_drop``, else :data:`MAX_DROP`).

    Example:
        >>> an = wb.snapshot()                                # doctest: +SKIP
        >>> Analysis.load(an.save("out/analysis.json")).final_cosine()   # doctest: +SKIP
    """

    config: dict
    method: str
    mode: str
    analysis_method: str
    plan: dict
    reports: dict[str, LayerReport]
    final: dict[str, dict[str, dict]]
    by_method: dict[str, float] = field(default_factory=dict)
    outliers: OutlierReport | None = None
    outlier_absmax: dict[str, list[float]] = field(default_factory=dict)
    smoothing: dict | None = None
    diagnosis: Diagnosis | None = None
    advice: object = None  # an Advice
    trials: tuple = ()
    sample_names: tuple = ()
    model: dict = field(default_factory=dict)
    samples: dict = field(default_factory=dict)
    environment: tuple = ()
    task: dict = field(default_factory=dict)
    max_drop: float = MAX_DROP

    def task_verdict(self) -> tuple[bool, str] | None:
        """(acceptable, one line) of the task metric at :attr:`max_drop` (:func:`task_verdict`),
        or None when no task metric was measured; the line says where the max drop came from.

        Example:
            >>> an = wb.snapshot(task=True); an.task_verdict()          # doctest: +SKIP
            (True, 'top-1 gains 0.8 points (0.906 -> 0.914, Reference): acceptable at ...')
        """
        return task_verdict(self.task, self.max_drop, self.max_drop_source()) if self.task \
            else None

    def max_drop_source(self) -> str:
        """Where :attr:`max_drop` came from: the config's ``evaluation.max_drop``, the default,
        or (neither) the caller, e.g. ``axnb build --max-drop``."""
        cfg = (self.config.get("evaluation") or {}).get("max_drop")
        if cfg is not None and float(cfg) == self.max_drop:
            return "the config's evaluation.max_drop"
        return "the default max drop" if cfg is None and self.max_drop == MAX_DROP else \
            "your --max-drop"

    def steps(self) -> tuple[str, ...]:
        """The advice's next steps (:func:`axnb.advice.for_analysis` reads the task verdict:
        with a task metric measured it asks for none, and a task metric that drops too much
        gets measured steps).

        Example:
            >>> wb.snapshot(task=True).steps()               # doctest: +SKIP
            ('Confirm with precision_analysis_mode NPUBackend and on the board.',)
        """
        return tuple(self.advice.steps) if self.advice is not None else ()

    def final_cosine(self, mode: str | None = None) -> dict[str, float]:
        """Output -> final cosine in ``mode`` (default: the snapshot's mode)."""
        return {o: float(m[Col.COSINE]) for o, m in scored(self.final.get(mode or self.mode,
                                                                         {})).items()}

    def skipped(self, mode: str | None = None) -> dict[str, str]:
        """Output -> why it is not scored (not a float output: :func:`axnb.metrics.is_scored`).

        Example:
            >>> wb.snapshot().skipped()                        # doctest: +SKIP
            {'input_ids_copy': 'int64 output (ids, indices or a mask): not scored by cosine; ...'}
        """
        return skipped(self.final.get(mode or self.mode, {}))

    def replace(self, **changes) -> Analysis:
        """A copy with some fields changed (e.g. ``diagnosis=``)."""
        return replace(self, **changes)

    def to_frame(self):
        """Final metrics: one row per (mode, scored output; :meth:`skipped` says the others)."""
        import pandas as pd

        rows = [{"Mode": m, "Output": o, **{k: v[k] for k in Col.METRICS if k in v}}
                for m, outs in self.final.items() for o, v in scored(outs).items()]
        return pd.DataFrame(rows)

    def to_dict(self) -> dict:
        d = {f.name: getattr(self, f.name) for f in fields(self)}
        d["reports"] = {k: {"rows": r.rows, "meta": r.meta, "final": r.final}
                        for k, r in self.reports.items()}
        d["outliers"] = None if self.outliers is None else \
            {"rows": self.outliers.rows, "kind": self.outliers.kind}
        d["diagnosis"] = _diag_dict(self.diagnosis)
        d["advice"] = None if self.advice is None else self.advice.to_dict()
        d["task"] = {m: r.to_dict() for m, r in self.task.items()}
        d["trials"] = [t.to_dict() for t in self.trials]
        return plain(d)

    @classmethod
    def from_dict(cls, d: dict) -> Analysis:
        d = dict(d)
        d["reports"] = {k: LayerReport(r["rows"], r["meta"], r["final"])
                        for k, r in d["reports"].items()}
        if d.get("outliers") is not None:
            d["outliers"] = OutlierReport(d["outliers"]["rows"], d["outliers"]["kind"])
        if d.get("diagnosis") is not None:
            d["diagnosis"] = Diagnosis(tuple(Check(**c) for c in d["diagnosis"]))
        if d.get("advice") is not None:
            d["advice"] = Advice.from_dict(d["advice"])
        d["environment"] = tuple(tuple(e) for e in d.get("environment", ()))
        d["trials"] = _trials(d.get("trials", ()))
        d["sample_names"] = tuple(d.get("sample_names", ()))
        model = dict(d.get("model", {}))
        model["io"] = [tuple(x) for x in model.get("io", [])]
        d["model"] = model
        d["task"] = {m: TaskReport.from_dict(r) for m, r in d.get("task", {}).items()}
        return cls(**d)

    def save(self, path: str | Path) -> Path:
        """Write JSON (inf/NaN as JSON's Infinity/NaN); temp name, then rename."""
        return save_json(path, "Analysis", self.to_dict())

    @classmethod
    def load(cls, path: str | Path) -> Analysis:
        return cls.from_dict(load_json(path, "Analysis"))

    def __repr__(self) -> str:
        fin = ", ".join(f"{o}={c:.5f}" for o, c in self.final_cosine().items())
        task = "".join(f"; {task_line(r)}" for r in self.task.values())
        return (f"Analysis({self.model.get('name', '?')}: {self.method}, {self.mode}, "
                f"{self.plan.get('summary', '')}; final cosine {fin}{task}; "
                f"{len(self.reports)} reports)")

    def _repr_html_(self) -> str:
        head = f"<p><b>{html.escape(repr(self))}</b></p>"
        adv = self.advice._repr_html_() if self.advice is not None else ""
        tv = self.task_verdict()
        task = "" if tv is None else (f"<p><b>{html.escape(tv[1])}</b></p><ul>" + "".join(
            f"<li>{html.escape(task_line(r))}</li>" for r in self.task.values()) + "</ul>")
        return head + task + adv + self.to_frame().to_html(index=False)
