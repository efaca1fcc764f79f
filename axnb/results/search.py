"""Results of the mixed-precision search: :class:`Evaluation` and :class:`SearchResult`."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from axnb.errors import AxnbError
from axnb.results.serialize import load_json, save_json
from axnb.types import QType


@dataclass(frozen=True)
class Evaluation:
    """One evaluated plan: promoted layers, metric per output, target met, seconds, phase."""

    plan_layers: tuple[str, ...]
    metric: dict[str, float]
    ok: bool
    seconds: float
    phase: str

    @property
    def score(self) -> float:
        """The minimum of the metric over the outputs."""
        return min(self.metric.values()) if self.metric else float("nan")


@dataclass(frozen=True, repr=False)
class SearchResult:
    """The answer of :func:`search`, with every evaluation it made (saveable, resumable).

    ``promoted`` (worst first) go to ``qtype`` in ``plan``; ``met``: every output reaches
    ``target``; ``stopped``: "met", "budget", "time" (``max_seconds`` ran out) or
    "unreachable"; ``baseline`` / ``final``: the metric per output before and with the
    promotion ({} if never evaluated); ``ranking``: the candidates worst first;
    ``base_layer_configs``: the plan the search started from; ``nonfinite``: when the
    baseline is NaN/Inf, the first tensor where it starts (:func:`axnb.metrics.nonfinite_text`);
    ``budget`` / ``max_seconds``:
    the limits it ran under.

    Example:
        >>> res = search(wb.evaluator(), wb.plan)            # doctest: +SKIP
        >>> res.to_layer_configs()                           # doctest: +SKIP
        [{'layer_names': ['Softmax.0'], 'data_type': 'U16'}]
    """

    promoted: tuple[str, ...]
    qtype: QType
    target: float
    metric_name: str
    met: bool
    baseline: dict[str, float]
    final: dict[str, float]
    trace: tuple[Evaluation, ...]
    evaluations: int
    seconds: float
    budget: int | None
    stopped: str
    ranking: tuple[str, ...] = ()
    base_layer_configs: tuple[dict, ...] = ()
    context: dict = field(default_factory=dict, compare=False)
    base_plan: Any = field(default=None, compare=False)  # the QuantPlan searched from
    max_seconds: float | None = None
    nonfinite: dict | None = None  # where a NaN/Inf baseline starts (search's _nonfinite)

    @property
    def plan(self):
        """The base plan with the promoted layers set to ``qtype``."""
        if self.base_plan is None:
            raise AxnbError("a loaded SearchResult has no model: use result.apply(workbench) "
                            "or QuantPlan.from_config(model, result.to_layer_configs())")
        return self.base_plan.set(self.promoted, self.qtype) if self.promoted else self.base_plan

    @property
    def before_after(self) -> tuple[float, float]:
        """The score (min over outputs) of the base plan and of the answer (NaN if never
        evaluated)."""
        return tuple(min(d.values(), default=float("nan")) for d in (self.baseline, self.final))

    @property
    def improves(self) -> bool:
        """Whether the answer scores at least its base plan: the CLI and the Explorer adopt
        only such a plan (all-U16 can score below U8, so a search can end lower)."""
        before, after = self.before_after
        return after >= before

    def to_layer_configs(self) -> list[dict]:
        """Pulsar2 ``layer_configs``: the base plan's entries, then the promoted layers.

        Example:
            >>> res.to_layer_configs()                       # doctest: +SKIP
            [{'layer_names': ['Relu.1', 'Softmax.0'], 'data_type': 'U16'}]
        """
        out = [dict(e) for e in self.base_layer_configs]
        if self.promoted:
            entry = {"layer_names": list(self.promoted), "data_type": self.qtype.value}
            if self.qtype.is_float:  # NOTE: an FP32 override keeps the weights float too
                entry["weight_data_type"] = "FP32"
            out.append(entry)
        return out

    def apply(self, workbench) -> Applied:
        """Set the workbench's plan to this result's plan; returns what was applied (its repr
        names the layers and the search's before -> after score, so a REPL shows what was
        found); ``.workbench`` is the workbench.

        Example:
            >>> res.apply(wb)                                # doctest: +SKIP
            Applied to the workbench: 1 layer to U16 (cosine 0.96712 -> 0.98951, target 0.98, met)
              U16: p2o.pd_op.conv2d.3.0
            >>> res.apply(wb).workbench.final_cosine()       # doctest: +SKIP
        """
        if self.base_plan is not None and self.base_plan.model is workbench.model:
            workbench.set_plan(self.plan)
        else:
            # NOTE: the workbench's own plan class rebuilds it: results import no stage module
            plan_type = type(workbench.plan)
            workbench.set_plan(plan_type.from_config(workbench.model, self.to_layer_configs()))
        return Applied(self, workbench)

    def to_frame(self):
        """One row per evaluation: step, phase, layer count, score, metric per output, ok, s."""
        import pandas as pd

        rows = [{"step": i, "phase": e.phase, "promoted": len(e.plan_layers), "score": e.score,
                 **e.metric, "ok": e.ok, "seconds": e.seconds, "layers": ", ".join(e.plan_layers)}
                for i, e in enumerate(self.trace)]
        return pd.DataFrame(rows).set_index("step") if rows else pd.DataFrame()

    def save(self, path: str | Path) -> Path:
        """Write JSON, the trace included (temp name, then rename)."""
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
             if f.name != "base_plan"}
        d.update(qtype=self.qtype.value, trace=[dataclasses.asdict(e) for e in self.trace])
        return save_json(path, "SearchResult", d)

    @classmethod
    def load(cls, path: str | Path) -> SearchResult:
        """Read a result written by :meth:`save` (``plan`` then needs :meth:`apply`)."""
        d = load_json(path, "SearchResult")
        trace = tuple(Evaluation(**{**e, "plan_layers": tuple(e["plan_layers"])})
                      for e in d.pop("trace"))
        tup = {k: tuple(d.pop(k)) for k in ("promoted", "ranking", "base_layer_configs")}
        return cls(**{**d, **tup, "trace": trace, "qtype": QType(d["qtype"])})

    def __repr__(self) -> str:
        b, f = self.before_after
        return (f"SearchResult({len(self.promoted)} layers to {self.qtype.value}, "
                f"{self.metric_name} {b:.5g} -> {f:.5g} "
                f"(target {self.target:g}), {'met' if self.met else 'NOT met'}, stopped: "
                f"{self.stopped}, {self.evaluations} evaluations, {self.seconds:.1f} s)")

    def _repr_html_(self) -> str:
        from html import escape

        return (f"<p>{escape(repr(self))}</p><p>promoted: {escape(', '.join(self.promoted))}</p>"
                + self.to_frame().to_html(max_rows=30))


@dataclass(frozen=True, repr=False)
class Applied:
    """A :class:`SearchResult` applied to a workbench (what :meth:`SearchResult.apply` returns):
    its repr says which layers were set to which type and the score the search measured before
    and with them; ``workbench`` is the workbench, its plan now the result's.

    Example:
        >>> r = SearchResult(("a", "b"), QType.U16, 0.98, "cosine", True, {"o": 0.9}, {"o": 0.99},
        ...                  (), 5, 1.0, None, "met")
        >>> print(repr(Applied(r, None)))
        Applied to the workbench: 2 layers to U16 (cosine 0.90000 -> 0.99000, target 0.98, met)
          U16: a, b
    """

    result: SearchResult
    workbench: Any = field(default=None, compare=False)

    def __repr__(self) -> str:
        r = self.result
        b, f = r.before_after
        n = len(r.promoted)
        what = f"{n} layer{'s' if n != 1 else ''} to {r.qtype.value}" if n else "no layer changed"
        head = (f"Applied to the workbench: {what} ({r.metric_name} {b:.5f} -> {f:.5f}, "
                f"target {r.target:g}, {'met' if r.met else 'NOT met'})")
        return head + (f"\n  {r.qtype.value}: {', '.join(r.promoted)}" if n else "")

    def _repr_html_(self) -> str:
        from html import escape

        head, _, names = repr(self).partition("\n")
        return f"<p>{escape(head)}</p>" + (f"<p>{escape(names.strip())}</p>" if names else "")
