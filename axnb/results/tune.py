"""Result of the tuner (:func:`axnb.tune.tune`): :class:`TuneStep` and :class:`TuneResult`."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

from axnb.errors import AxnbError
from axnb.results.serialize import load_json, save_json
from axnb.types import CalibMethod, QType

RANGE = "range:"  # NOTE: a per-tensor range move in ``overrides``: ("range:<tensor>", method)
WEIGHTS = "weights:all"  # NOTE: a weight fix of every weight: (WEIGHTS, WeightFix label)


@dataclass(frozen=True)
class TuneStep:
    """One evaluated plan: the phase that asked for it, the setting (calibration method and
    SmoothQuant), how many groups are 16-bit and FP32, its score (min over outputs), its cost
    (extra MACs over all-8-bit, as a share of the model's MACs) and its seconds."""

    phase: str
    setting: str
    n16: int
    nfp32: int
    score: float
    cost: float
    seconds: float
    metric: dict[str, float] = field(default_factory=dict)
    moves: tuple[tuple[str, str], ...] | None = None  # (group head, QType) on the start plan


def _minutes(s: float) -> str:
    return f"{s:.0f} s" if s < 60 else f"{int(s // 60)} min {s % 60:.0f} s"


def setting_label(method: CalibMethod, smooth: float | None) -> str:
    """``"Percentile"`` or ``"MSE + SmoothQuant 0.6"``.

    Example:
        >>> setting_label(CalibMethod.MSE, 0.6)
        'MSE + SmoothQuant 0.6'
    """
    return method.value + ("" if smooth is None else f" + SmoothQuant {smooth:g}")


def parse_setting(label: str) -> tuple[CalibMethod, float | None]:
    """The inverse of :func:`setting_label`.

    Example:
        >>> parse_setting("MSE + SmoothQuant 0.6")
        (<CalibMethod.MSE: 'MSE'>, 0.6)
    """
    method, _, smooth = label.partition(" + SmoothQuant ")
    return CalibMethod(method), float(smooth) if smooth else None


@dataclass(frozen=True, repr=False)
class TuneResult:
    """The tuner's answer: a calibration method, SmoothQuant on/off, and layers (fused groups)
    at 16-bit or FP32 on top of the plan it started from; every plan it evaluated is in
    ``trace``.

    ``met``: every output reaches ``target`` (min over outputs of ``metric_name``);
    ``stopped``: "met", "unreachable" (the most precise plan the allowed moves give was measured
    and misses: ``ceiling``), "time" or "budget"; ``start`` / ``score``: the start and the
    answer (never below the start: a move that lowers the score is not kept); ``cost16`` /
    ``costfp32``: the MAC shares of the layers at 16-bit and FP32 (:func:`axnb.tune.plan_cost`).

    Example:
        >>> res = wb.tune(target=0.98)                         # doctest: +SKIP
        >>> print(res.summary())                               # doctest: +SKIP
        tuned: Percentile + U16 for 12 groups (3.1% of MACs): cosine 0.69632 -> 0.98120 ...
        >>> res.apply(wb); wb.export_config("out/config.json")  # doctest: +SKIP
    """

    target: float
    metric_name: str
    met: bool
    stopped: str
    start: float
    score: float
    method: CalibMethod
    smooth: float | None
    overrides: tuple[tuple[str, str], ...]
    base_layer_configs: tuple[dict, ...]
    cost16: float
    costfp32: float
    ceiling: dict[str, float]
    trace: tuple[TuneStep, ...]
    evaluations: int
    seconds: float
    final: dict[str, float] = field(default_factory=dict)
    start_setting: str = ""
    context: dict = field(default_factory=dict, compare=False)

    @property
    def setting(self) -> str:
        """The calibration method and SmoothQuant of the answer, as one label."""
        return setting_label(self.method, self.smooth)

    def layers(self, qtype: QType | str) -> list[str]:
        """The layers (group heads) the answer sets to ``qtype`` on top of the start plan."""
        q = QType(qtype) if isinstance(qtype, str) else qtype
        return [n for n, t in self.overrides if t == q.value]

    def ranges(self) -> dict[str, CalibMethod]:
        """Tensors whose range the answer takes from another calibration method (carried by the
        QDQ / QuantONNX exports; Pulsar2's config cannot say it)."""
        return {n[len(RANGE):]: CalibMethod(m) for n, m in self.overrides if n.startswith(RANGE)}

    def weight_fix(self) -> str | None:
        """The weight fix of the answer (a :class:`~axnb.types.WeightFix` label), if any."""
        return next((m for n, m in self.overrides if n == WEIGHTS), None)

    def _types(self) -> dict[str, str]:
        return {n: q for n, q in self.overrides if not n.startswith(RANGE) and n != WEIGHTS}

    def to_layer_configs(self) -> list[dict]:
        """Pulsar2 ``layer_configs``: the start plan's entries, then the tuned layers by name
        (FP32 ones keep their weights float too).

        Example:
            >>> res.to_layer_configs()[-1]                      # doctest: +SKIP
            {'layer_names': ['conv_0'], 'data_type': 'FP32', 'weight_data_type': 'FP32'}
        """
        out = [dict(e) for e in self.base_layer_configs]
        for q in (QType.U16, QType.S16, QType.FP32):
            names = self.layers(q)
            if names:
                e = {"layer_names": names, "data_type": q.value}
                out.append({**e, "weight_data_type": "FP32"} if q.is_float else e)
        return out

    def quant_keys(self) -> dict:
        """The config's ``quant`` keys the answer sets (calibration, SmoothQuant, layers)."""
        d = {"calibration_method": self.method.value,
             "enable_smooth_quant": self.smooth is not None,
             "layer_configs": self.to_layer_configs()}
        if self.smooth is not None:
            d["smooth_quant_strength"] = self.smooth
        fix = self.weight_fix()
        if fix:  # NOTE: the keys that ask for it (Pulsar2 runs its own version, or none)
            d.update(enable_adaround="AdaRound" in fix, enable_easy_quant="scale" in fix,
                     weight_rounding="GPTQ" if "GPTQ" in fix else "nearest",
                     enable_bias_correction="bias" in fix)
        return d

    def apply(self, workbench):
        """Set the workbench to the answer (method, SmoothQuant, plan); returns the workbench.

        Example:
            >>> res.apply(wb).final_cosine()                    # doctest: +SKIP
        """
        workbench.set_method(self.method)
        workbench.set_smooth_quant(self.smooth is not None, alpha=self.smooth)
        # NOTE: the workbench's own plan class rebuilds it: results import no stage module
        plan = type(workbench.plan).from_config(workbench.model, list(self.base_layer_configs))
        plan = plan.override(self._types())
        workbench.set_plan(plan.with_methods(self.ranges()) if self.ranges() else plan)
        return workbench.set_weight_fix(self.weight_fix()) if self.weight_fix() else workbench

    def summary(self) -> str:
        """One line: what was tuned, the score before -> after, the cost, the work.

        Example:
            >>> r = TuneResult(0.98, "cosine", True, "met", 0.7, 0.985, CalibMethod.Percentile,
            ...                None, (("conv_3", "U16"),), (), 0.031, 0.0, {}, (), 41, 190.0)
            >>> print(r.summary())  # doctest: +NORMALIZE_WHITESPACE
            tuned: Percentile + U16 for 1 group (3.1% of MACs): cosine 0.70000 -> 0.98500 (tried),
            target 0.98 met; 41 evaluations, 3 min 10 s
        """
        n16 = len(self.layers(QType.U16)) + len(self.layers(QType.S16))
        nfp = len(self.layers(QType.FP32))
        parts = [self.setting]
        if n16:
            parts.append(f"U16 for {n16} group{'s' if n16 > 1 else ''} "
                         f"({100 * self.cost16:.1f}% of MACs)")
        if nfp:
            parts.append(f"FP32 for {nfp} group{'s' if nfp > 1 else ''} "
                         f"({100 * self.costfp32:.1f}% of MACs)")
        if self.ranges():
            n = len(self.ranges())
            parts.append(f"own range for {n} tensor{'s' if n > 1 else ''}")
        if self.weight_fix():
            parts.append(f"weights: {self.weight_fix()}")
        verdict = "met" if self.met else f"NOT met ({self.stopped})"
        return (f"tuned: {' + '.join(parts)}: {self.metric_name} {self.start:.5f} -> "
                f"{self.score:.5f} (tried), target {self.target:g} {verdict}; "
                f"{self.evaluations} evaluation{'s' if self.evaluations != 1 else ''}, "
                f"{_minutes(self.seconds)}")

    def line(self) -> str:
        """:meth:`summary` with the ceilings it measured (what the CLI and the Explorer print)."""
        ceiling = "; ".join(f"{k} {v:.5f}" for k, v in self.ceiling.items())
        return self.summary() + (f" (measured: {ceiling})" if ceiling else "")

    def to_frame(self):
        """One row per evaluated plan, in the order the tuner asked for them."""
        import pandas as pd

        rows = [{k: v for k, v in dataclasses.asdict(s).items() if k not in ("metric", "moves")}
                for s in self.trace]
        return pd.DataFrame(rows)

    def save(self, path: str | Path) -> Path:
        """Write JSON, the trace included (temp name, then rename)."""
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        d.update(method=self.method.value, trace=[dataclasses.asdict(s) for s in self.trace])
        return save_json(path, "TuneResult", d)

    @classmethod
    def load(cls, path: str | Path) -> TuneResult:
        """Read a result written by :meth:`save`."""
        d = load_json(path, "TuneResult")
        try:
            return cls(**{**d, "method": CalibMethod(d["method"]),
                          "overrides": tuple(tuple(o) for o in d["overrides"]),
                          "base_layer_configs": tuple(d["base_layer_configs"]),
                          "trace": tuple(TuneStep(**{**s, "moves": None if s["moves"] is None
                                                     else tuple(map(tuple, s["moves"]))})
                                        for s in d["trace"])})
        except (KeyError, TypeError) as e:
            raise AxnbError(f"{path}: not a TuneResult written by this axnb ({e})") from None

    def __repr__(self) -> str:
        return f"TuneResult({self.summary()})"

    def _repr_html_(self) -> str:
        import html

        return f"<pre>{html.escape(self.summary())}</pre>"
