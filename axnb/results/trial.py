"""A measured next step (:class:`Trial`): what was tried, the score before and with it, and how to
apply it. Frozen data; :mod:`axnb.trials` measures them, :mod:`axnb.advice` judges them.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace

from axnb.results.serialize import plain
from axnb.types import _Str

__all__ = ["TaskDelta", "Trial", "TrialKind"]


class TrialKind(_Str):
    """What a trial changes."""

    calibration = "calibration"     # the calibration method (change: calibration_method)
    smooth_quant = "smooth_quant"   # SmoothQuant on (change: smooth_quant_strength)
    u16 = "u16"                     # some layers to U16 (change: u16 = [layer names])
    weights = "weights"             # a weight fix on every weight (change: weight_fix = label)
    equalization = "equalization"   # cross-layer equalization (change: enable_equalization)


@dataclass(frozen=True)
class TaskDelta:
    """A trial's task-metric drop before and with it, in the mode that decides the verdict."""

    metric: str
    mode: str
    before: float
    after: float
    text: str


@dataclass(frozen=True)
class Trial:
    """One measured next step.

    Attributes:
        kind: what it changes; change: the config keys it sets (``{"calibration_method":
            "MSE"}``, ``{"enable_smooth_quant": True, ...}``, ``{"u16": [layers]}``).
        label: its name in one line; before / after: the final cosine (min over outputs)
            without and with it; how: how to apply it (config and Python); cost: what it costs.
        task: the task-metric drop before and with it, when the task verdict failed.

    Example:
        >>> t = Trial(TrialKind.calibration, "MSE calibration", 0.9671, 0.9906,
        ...           {"calibration_method": "MSE"}, 'quant.calibration_method = "MSE"')
        >>> Trial.from_dict(t.to_dict()) == t, t.kind
        (True, <TrialKind.calibration: 'calibration'>)
    """

    kind: TrialKind
    label: str
    before: float
    after: float
    change: dict = field(default_factory=dict, hash=False)
    how: str = ""
    cost: str = ""
    task: TaskDelta | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "kind", TrialKind(self.kind))
        object.__setattr__(self, "before", float(self.before))
        object.__setattr__(self, "after", float(self.after))
        object.__setattr__(self, "change", plain(dict(self.change)))
        if isinstance(self.task, dict):
            object.__setattr__(self, "task", TaskDelta(**self.task))

    def with_task(self, task: TaskDelta) -> Trial:
        return replace(self, task=task)

    def to_dict(self) -> dict:
        return plain(asdict(self))

    @classmethod
    def from_dict(cls, d: dict) -> Trial:
        return cls(**d)
