"""A task metric's result (:class:`TaskReport`) and the one task verdict and text of every surface.

The CLI, the report, the Explorer, the Advice and ``TaskReport.verdict`` all judge and word a
task metric through :func:`task_verdict`, :func:`task_line` and :func:`amount` (here, once).
The metrics themselves are computed by :mod:`axnb.taskmetrics`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

from axnb.results.serialize import load_json, plain, save_json

__all__ = ["MAX_DROP", "TaskReport", "amount", "flipped_text", "task_label", "task_line",
           "task_verdict", "worst_mode"]

MAX_DROP = 0.01
"""The accepted task-metric drop when neither ``--max-drop`` nor the config's
``evaluation.max_drop`` says one: 1 point of top-1 / agreement / IoU (in the metric's units)."""
# NOTE: metrics whose drop reads in percentage points; MAE and callables read in their units
_POINTS = ("top1", "topk", "agreement", "iou", "nn_agreement")
_LABELS = {"top1": "top-1", "agreement": "agreement", "iou": "IoU", "mae": "MAE",
           "nn_agreement": "nearest-neighbour agreement"}


@dataclass(frozen=True, repr=False)
class TaskReport:
    """A task metric, float vs quantized, on one set of samples (saveable).

    ``rows``: one dict per sample: ``sample``, ``label``, ``float_pred``, ``quant_pred``,
    ``float_score``, ``quant_score``, ``cosine`` (of ``output``, float vs quantized).
    ``float_score`` / ``quant_score`` are the means of the per-sample scores (a callable's own
    value when it returns one number); ``cosine`` is the final cosine of ``output`` on the same
    samples (:func:`axnb.metrics.output_metrics`).

    Example:
        >>> import numpy as np
        >>> from axnb.taskmetrics import score
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

    def verdict(self, max_drop: float, name: str = "the accepted drop") -> tuple[bool, str]:
        """(acceptable, one line) at an accepted ``max_drop`` in the metric's units: this
        report alone through :func:`task_verdict`, the one verdict of every surface.

        Example:
            >>> ok, text = TaskReport("top1", "p", 0.92, 0.914).verdict(0.01)
            >>> ok, text[:41]
            (True, 'top-1 drops 0.6 points (0.920 -> 0.914): ')
            >>> text[41:]
            'acceptable at the accepted drop of 1.0 points'

        """
        return task_verdict({self.mode: self}, max_drop, name)

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
    def from_dict(cls, d: dict) -> TaskReport:
        """The report of :meth:`to_dict` (its derived ``drop`` and ``flips`` recomputed)."""
        d = {k: v for k, v in d.items() if k not in ("drop", "flips")}
        return cls(**{**d, "rows": tuple(d.get("rows", ()))})

    @classmethod
    def load(cls, path: str | Path) -> TaskReport:
        return cls.from_dict(load_json(path, "TaskReport"))


def task_label(report) -> str:
    """How a task metric is named on every surface ("top-1", "top-5", "IoU", ...).

    Example:
        >>> from axnb.results.task import TaskReport
        >>> task_label(TaskReport("top1", "p", 0.9, 0.9)), task_label(
        ...     TaskReport("topk", "p", 0.9, 0.9, params={"k": 3}))
        ('top-1', 'top-3')
    """
    if report.metric == "topk":
        return f"top-{report.params.get('k', 5)}"
    return _LABELS.get(report.metric, report.metric)


def _num(v: float) -> str:
    return f"{v:.3f}" if math.isfinite(v) else "NaN (the metric gave no finite value)"


def amount(report, v: float) -> str:
    """A drop (or a max drop) in the metric's units: percentage points for accuracies.

    Example:
        >>> from axnb.results.task import TaskReport
        >>> amount(TaskReport("top1", "p", 0.9, 0.9), -0.0078), amount(
        ...     TaskReport("mae", "p", 0.1, 0.1, higher_is_better=False), 0.02)
        ('-0.8 points', '0.02')
    """
    if not math.isfinite(v):
        return "NaN (the metric gave no finite value)"
    return f"{v * 100:.1f} points" if report.metric in _POINTS else f"{v:.4g}"


def task_line(report) -> str:
    """One task report as the line every surface prints.

    Example:
        >>> from axnb.results.task import TaskReport
        >>> task_line(TaskReport("top1", "p", 0.90625, 0.9140625, mode="NPUBackend"))
        'top-1 float 0.906, quantized 0.914 (NPUBackend): drop -0.8 points'
    """
    r = report
    text = (f"{task_label(r)} float {_num(r.float_score)}, quantized {_num(r.quant_score)}"
            f"{f' ({r.mode})' if r.mode else ''}: drop {amount(r, r.drop)}")
    if r.binary and r.rows:
        text += f", {len(r.flips)} of {r.samples} samples flip"
    return text


def flipped_text(report, n: int = 5) -> str:
    """The samples whose score flipped (first ``n``, with their float-vs-quantized cosine), or
    "" when none did.

    Example:
        >>> from axnb.taskmetrics import score
        >>> import numpy as np
        >>> r = score("top1", [{"p": np.array([[0.1, 0.9]])}], [{"p": np.array([[0.9, 0.1]])}],
        ...           labels=[1], names=["a.png"])
        >>> flipped_text(r)
        'flipped: a.png (cosine 0.2195)'
    """
    rows = [x for x in report.rows if x["sample"] in set(report.flips)]
    if not rows:
        return ""
    more = f", and {len(rows) - n} more" if len(rows) > n else ""
    return "flipped: " + ", ".join(f"{x['sample']} (cosine {x['cosine']:.4f})"
                                   for x in rows[:n]) + more


def worst_mode(task: dict) -> str:
    """The mode whose task metric decides the verdict: the largest drop (a NaN drop first); on
    a tie the deployed one (NPUBackend, listed last).

    Example:
        >>> from axnb.results.task import TaskReport
        >>> worst_mode({"Reference": TaskReport("top1", "p", 0.9, 0.9),
        ...             "NPUBackend": TaskReport("top1", "p", 0.9, 0.9)})
        'NPUBackend'
    """
    return max(reversed(list(task)), key=lambda m: (
        not math.isfinite(task[m].drop), task[m].drop if math.isfinite(task[m].drop) else 0.0))


def task_verdict(task: dict, max_drop: float, name: str = "the accepted drop"
                 ) -> tuple[bool, str]:
    """(acceptable in every mode, one line on the worst mode) of mode -> TaskReport at an
    accepted ``max_drop``; a NaN drop is not acceptable (and says why).

    Example:
        >>> from axnb.results.task import TaskReport
        >>> ok, text = task_verdict({"NPUBackend": TaskReport(
        ...     "top1", "p", 0.92, 0.914, mode="NPUBackend")}, 0.01, "your --max-drop")
        >>> ok, text[:51]
        (True, 'top-1 drops 0.6 points (0.920 -> 0.914, NPUBackend)')
        >>> text[51:]
        ': acceptable at your --max-drop of 1.0 points'
    """
    if not task:
        raise ValueError("task_verdict: no task reports")
    worst = task[worst_mode(task)]
    ok = all(math.isfinite(r.drop) and r.drop <= max_drop + 1e-12 for r in task.values())
    how = "gains" if math.isfinite(worst.drop) and worst.drop < 0 else "drops"
    size = amount(worst, abs(worst.drop)) if math.isfinite(worst.drop) else amount(worst,
                                                                                  worst.drop)
    return ok, (f"{task_label(worst)} {how} {size} ({_num(worst.float_score)} -> "
                f"{_num(worst.quant_score)}{', ' + worst.mode if worst.mode else ''}): "
                f"{'acceptable' if ok else 'too much'} at {name} of "
                f"{amount(worst, max_drop)}")
