"""Automatic mixed precision: the fewest layers to promote (U16 by default) to reach a target.

Pulsar2's accuracy-tuning guide has the user find the layers under 98% cosine and set them to
U16 one by one; :func:`search` runs that loop. It promotes layers to ``qtype`` (U16, S16 or
FP32) until EVERY output reaches the target: a plan's score is the minimum over the outputs of
the metric (``cosine``: mean over the analysis samples of the float-vs-quantized cosine).

Algorithm (:class:`SearchState`, a pure state machine fed with scores by :func:`search`):

1. **baseline**: evaluate the current plan; if it meets the target, stop.
2. **rank**: order the candidates worst first. A given ``ranking`` (e.g. an isolation report,
   worst first) is free and its layers are the candidates; by default the candidates are the
   layers below ``qtype`` except data-movement layers that follow their input (Pulsar2 ignores
   a type set on them), ordered by the evaluator's ``rank(plan)`` when it has one (a
   Workbench's evaluators: the PerLayer table, one compare pass). ``ranking="each"`` (and an
   evaluator without ``rank``) evaluates each promoted alone and sorts by score gained (ties
   keep topological order). NOTE: N evaluations for N layers; on MiniLM that order finds 7
   layers for 0.98 in 129 evaluations where the PerLayer order finds 12 in 23.
3. **full**: evaluate all candidates promoted (unless a prefix of the ranking is already known
   to meet the target); if even that misses, stop: ``"unreachable"``.
4. **bisect**: the smallest k whose top-k prefix meets the target, galloping up from the
   largest prefix known to miss (1, 2, 4, ... past it) then bisecting: about 2 log2(k)
   evaluations, as few layers usually need U16. It assumes the score grows with k, which
   fails when a promotion lowers the score (errors that cancelled out) or when layers matter
   jointly but little alone (the ranking misorders them); the prefix found then meets the
   target but is not the smallest, and the prune step has more to remove.
5. **prune**: try removing each promoted layer, least sensitive first; keep each removal after
   which the target still holds (one pass, enough under monotonicity).

The answer is the smallest evaluated set that meets the target (ties: the higher score), else
all candidates with ``met=False``. Evaluations are memoised by the frozenset of promoted layers
and recorded in the trace. ``budget`` bounds the distinct evaluations, those of a resumed trace
included: a resumed search with the same budget re-runs nothing, a larger one continues.
``max_seconds`` bounds the time the same way (a resumed search's earlier seconds included): no
evaluation starts once it is spent, and the search stops with ``stopped="time"``, its answer
the best so far as for ``"budget"``.

Batches (:meth:`SearchState.pending`): the rank step's singletons do not depend on each other's
scores, so the state machine asks for all of them at once (as far as the budget reaches); with
``speculate=k`` it also offers the next k prune candidates as they are if every earlier removal
fails (k = the evaluator's ``concurrent`` - 1, ``concurrent`` being how many plans it runs side
by side without slowing each: on a cluster its threads per sample, as a lone plan already
splits its samples across the workers; a removal that succeeds wastes the candidates after it).
An evaluator with ``evaluate_many`` (a Workbench on a Dask cluster) runs a batch side by side;
the state machine stays here and takes the scores in the sequential order, whatever order they
arrive in, so the trace, the promoted set and every score are the sequential search's (the
trace is in that order; a speculative score the sequential path never asks for is dropped:
not in the trace, not counted by the budget). Baseline, full and the bisection stay one plan
at a time (each depends on the last); on a cluster each of those splits its samples instead.

The search sees no Workbench: it asks an ``evaluate(plan) -> {output: score}`` callable
(:meth:`axnb.Workbench.evaluator` gives one that leaves the workbench as it was). A task
metric is one more such callable (:class:`axnb.evaluators.TaskEvaluator`: ``{metric: score}``,
higher is better); ``max_drop`` turns "lose at most 1 point of top-1" into its target.

Example:
    >>> wb = axnb.Workbench("zoo:minilm", progress=False)            # doctest: +SKIP
    >>> res = search(wb.evaluator(), wb.plan, target=0.98, budget=40)   # doctest: +SKIP
    >>> res.promoted, res.met, res.evaluations                        # doctest: +SKIP
    >>> res.apply(wb); res.save("out/search.json")                    # doctest: +SKIP
    >>> wb = axnb.Workbench("zoo:minilm", cluster="local:2")           # doctest: +SKIP
    >>> search(wb.evaluator(), wb.plan, max_seconds=600).stopped        # doctest: +SKIP
    'met'
"""

from __future__ import annotations

import dataclasses
import math
import time
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path

from axnb.advice import FINAL
from axnb.errors import AxnbError, ConfigError, NonFiniteWarning, did_you_mean
from axnb.metrics import nonfinite_text
from axnb.plan import QuantPlan
from axnb.results import Evaluation, SearchResult
from axnb.types import QType, parse_enum

__all__ = ["Evaluation", "SearchResult", "SearchState", "search"]


class _Budget(Exception):
    """A new evaluation is needed but the budget is spent."""


class _Halt(Exception):
    """A new evaluation is needed but the driver stopped the search (:meth:`SearchState.stop`)."""


class SearchState:
    """The search as a state machine: ask :meth:`pending` (or :meth:`next`), :meth:`tell` the
    scores.

    Args:
        ranked: candidate layers, worst first (or in any order with ``rank=True``).
        target: the score (min over outputs, higher is better) to reach.
        budget: most distinct evaluations (None = no limit), ``trace`` ones included.
        trace: earlier evaluations (:class:`Evaluation` or ``(layers, score)`` pairs) that
            answer requests without new runs.
        rank: rank ``ranked`` first by evaluating each layer promoted alone.
        speculate: :meth:`pending` also offers up to this many prune candidates that are
            needed only if every earlier removal fails (for a driver that evaluates side by
            side; 0 = none).

    Example:
        >>> s = SearchState(["a", "b", "c"], target=1.0)
        >>> while (want := s.next()) is not None:
        ...     s.tell(want, 1.0 if "b" in want else 0.5)
        >>> s.promoted, s.met, s.stopped
        (('b',), True, 'met')
    """

    def __init__(self, ranked: Iterable[str], target: float, budget: int | None = None,
                 trace: Iterable = (), rank: bool = False, speculate: int = 0) -> None:
        self.ranked = list(dict.fromkeys(ranked))
        self.target, self.budget, self._rank = float(target), budget, rank
        self.speculate = int(speculate)
        self.memo: dict[frozenset, float] = {}
        for e in trace:
            layers, score = (e.plan_layers, e.score) if isinstance(e, Evaluation) else e
            self.memo[frozenset(layers)] = float(score)
        self.phase, self.stopped = "baseline", ""
        # NOTE: (set, phase) of each new evaluation in the order the sequential search takes
        # it: the trace order, whatever order the scores arrived in
        self.log: list[tuple[frozenset, str]] = []
        self._told: dict[frozenset, float] = {}  # NOTE: scores not yet taken by the search
        self._batch: list[frozenset] = []
        self._halt = ""
        # NOTE: decisions use only sets this run asked for, so a resumed run replays the same
        # path (a cache hit never changes the search, it only saves the run)
        self._seen: set[frozenset] = set()
        self._gen = self._run()

    def pending(self) -> list[frozenset[str]]:
        """Every set of layers to evaluate now, in the order the sequential search asks them
        ([] once the search is done). They do not depend on each other's scores, except with
        ``speculate``: a prune candidate after the first is needed only if the removals before
        it fail, and a score told for a set the search never takes is dropped (not in
        :attr:`log`, not counted by the budget).

        Example:
            >>> s = SearchState(["a", "b"], target=1.0, rank=True)
            >>> s.tell(s.next(), 0.5)
            >>> sorted(map(sorted, s.pending()))
            [['a'], ['b']]
        """
        if self._halt or not self._batch or self._batch[0] in self._told \
                or self._batch[0] in self.memo:
            try:
                self._batch = next(self._gen)
            except StopIteration:
                self._batch = []
        return [s for s in self._batch if s not in self._told and s not in self.memo]

    def next(self) -> frozenset[str] | None:
        """The next set of layers to evaluate (the first of :meth:`pending`); None once done."""
        todo = self.pending()
        return todo[0] if todo else None

    def tell(self, layers: frozenset[str], score: float) -> None:
        """Report the score (min over outputs of the metric) of an evaluated set."""
        self._told[frozenset(layers)] = float(score)

    def stop(self, reason: str) -> None:
        """Start no new evaluation: the search takes the scores told so far, then stops with
        ``stopped = reason`` at the first set it would have to evaluate (e.g. ``"time"``)."""
        self._halt = reason

    def _ask(self, layers: Iterable[str], phase: str,
             ahead: Callable[[], Iterable[frozenset]] = tuple) -> Iterator[list[frozenset]]:
        """The score of ``layers``; a new evaluation is asked with ``ahead()``, the sets the
        search will ask next (as far as the budget allows), as one batch."""
        s = frozenset(layers)
        self._seen.add(s)
        while s not in self.memo:
            if self.budget is not None and len(self.memo) >= self.budget:
                raise _Budget
            if s in self._told:
                self.memo[s] = self._told.pop(s)
                self.log.append((s, phase))
                break
            if self._halt:
                raise _Halt
            self.phase = phase
            yield self._batch_of(s, ahead)
        return self.memo[s]

    def _batch_of(self, s: frozenset, ahead: Callable[[], Iterable[frozenset]]) -> list:
        room = math.inf if self.budget is None else self.budget - len(self.memo)
        batch, seen = [s], {s}
        for t in ahead():
            if len(batch) >= room:
                break
            if t not in seen and t not in self.memo and t not in self._told:
                batch.append(t)
                seen.add(t)
        return batch

    def _ok(self, score: float) -> bool:
        return score >= self.target  # NOTE: NaN (a broken run) never meets the target

    def _run(self) -> Iterator[list[frozenset]]:
        try:
            self.stopped = yield from self._search()
        except _Budget:
            self.stopped = "budget"
        except _Halt:
            self.stopped = self._halt

    def _search(self) -> Iterator[list[frozenset]]:
        """The algorithm of the module docstring; returns why it stopped."""
        if self._ok((yield from self._ask((), "baseline"))):
            return "met"
        if self._rank:
            gain = {}
            for i, n in enumerate(self.ranked):
                # NOTE: every singleton is asked whatever the scores: one batch
                gain[n] = yield from self._ask([n], "rank", lambda i=i: (
                    frozenset([m]) for m in self.ranked[i + 1:]))
            self.ranked.sort(key=lambda n: -gain[n])  # NOTE: stable: ties keep the order given
        known = {k: self._ok(self.memo[p]) for k in range(len(self.ranked) + 1)
                 if (p := frozenset(self.ranked[:k])) in self._seen}
        hi = min((k for k, ok in known.items() if ok), default=None)
        if hi is None:
            if not self._ok((yield from self._ask(self.ranked, "full"))):
                # NOTE: a smaller set that met the target (not monotone) is still an answer
                return "met" if self._best() is not None else "unreachable"
            hi = len(self.ranked)
        lo, step = max(k for k, ok in known.items() if not ok and k < hi), 1
        while hi - lo > 1:  # NOTE: invariant: top-lo misses, top-hi meets
            mid = min(lo + step, (lo + hi) // 2)  # NOTE: gallop up from lo: small k is common
            if self._ok((yield from self._ask(self.ranked[:mid], "bisect"))):
                hi = mid
            else:
                lo, step = mid, step * 2
        yield from self._prune(list(self.ranked[:hi]))
        return "met"

    def _prune(self, keep: list[str]) -> Iterator[list[frozenset]]:
        order = list(reversed(keep))
        for i, n in enumerate(order):
            # NOTE: speculation: the later candidates as they are if every removal before
            # them fails (the common case once bisection found a minimal prefix)
            def ahead(i=i, kept=frozenset(keep)):
                return (kept - {m} for m in order[i + 1:i + 1 + self.speculate])
            if self._ok((yield from self._ask(set(keep) - {n}, "prune", ahead))):
                keep.remove(n)

    def _best(self) -> frozenset | None:
        ok = [s for s, v in self.memo.items() if self._ok(v) and s <= set(self.ranked)]
        return min(ok, key=lambda s: (len(s), -self.memo[s]), default=None)

    @property
    def met(self) -> bool:
        """Whether the answer meets the target."""
        return self._best() is not None

    @property
    def promoted(self) -> tuple[str, ...]:
        """The smallest evaluated set meeting the target (worst first), else all candidates."""
        best = self._best()
        return tuple(n for n in self.ranked if best is None or n in best)


# ---------------------------------------------------------------- the frozen result


# ---------------------------------------------------------------- the driver


def _qtype(qtype) -> QType:
    q = parse_enum(QType, qtype, "search qtype")
    if q.bits == 8:
        raise ConfigError(f"search qtype: promoting to {q.value} gains nothing; "
                          "valid: U16, S16, FP32")
    return q


def _default_ranking(evaluate, base: QuantPlan, q: QType, ranking):
    """The candidates' order: given, the evaluator's cheap ``rank(plan)`` (the PerLayer table
    of a Workbench's evaluators; every candidate, worst first), or None = one evaluation each
    (``ranking="each"``, and evaluators without ``rank``)."""
    if isinstance(ranking, str):
        if ranking != "each":
            raise ConfigError(f"search ranking {ranking!r}: pass a list of layers (worst "
                              "first), 'each' (rank by one evaluation per layer) or None")
        return None
    if ranking is not None or not callable(getattr(evaluate, "rank", None)):
        return ranking
    cands = base.candidates(below=q)
    known = set(cands)
    first = [n for n in evaluate.rank(base) if n in known]
    ranked = set(first)
    return first + [n for n in cands if n not in ranked]


def _node_names(model, ranking: Iterable[str]) -> list[str]:
    out = []
    for name in ranking:
        if name not in model.node_by_name:
            if name not in model.producer:
                raise ConfigError(f"search ranking: unknown layer or tensor {name!r}"
                                  f"{did_you_mean(name, [*model.node_by_name, *model.producer])}")
            name = model.producer[name].name
        out.append(name)
    return list(dict.fromkeys(out))


def _context(evaluate, q: QType) -> dict:
    """What must not change for a trace to be reused (the evaluator's own context included)."""
    metric = getattr(evaluate, "metric", getattr(evaluate, "__name__", "custom"))
    return {"metric": metric, "qtype": q.value, **dict(getattr(evaluate, "context", {}))}


def _previous(resume, ctx: dict, base_configs: list) -> SearchResult | None:
    if resume is None:
        return None
    prev = resume if isinstance(resume, SearchResult) else SearchResult.load(resume)
    if list(prev.base_layer_configs) != base_configs:
        raise AxnbError("search resume: the base plan is not the one the previous search "
                        "started from; set it back (e.g. wb.reset_plan()) before resuming")
    for k, v in ctx.items():
        if prev.context.get(k) != v:
            raise AxnbError(f"search resume: the previous search had {k} = {prev.context.get(k)!r}"
                            f", this one {v!r}; its evaluations do not apply")
    return prev


def _drop_target(evaluate: Callable, max_drop: float) -> float:
    """The target a maximum task-metric drop means for this evaluator."""
    target_for = getattr(evaluate, "target_for", None)
    if target_for is None:
        raise ConfigError("search max_drop: needs a task-metric evaluator, e.g. "
                          "axnb.evaluators.TaskEvaluator(wb, 'top1'); with a cosine evaluator "
                          "give target instead")
    return float(target_for(max_drop))


def _results(evaluate: Callable, plans: list[QuantPlan], late: Callable[[], bool]
             ) -> Iterator[tuple[int, Mapping[str, float], float]]:
    """``(index, metric, seconds)`` of ``plans`` as they complete, none started once ``late()``:
    side by side by the evaluator's ``evaluate_many`` when it has one, else one at a time."""
    many = getattr(evaluate, "evaluate_many", None)
    if many is not None:
        yield from many(plans, stop=late)
        return
    for i, plan in enumerate(plans):
        if late():
            return
        t = time.perf_counter()
        metric = evaluate(plan)
        yield i, metric, time.perf_counter() - t


def _run_batch(evaluate: Callable, state: SearchState, base: QuantPlan, q: QType,
               late: Callable[[], bool], bar) -> dict[frozenset, tuple]:
    """Evaluate :meth:`SearchState.pending` (told to ``state``): set -> (layers, metric, s)."""
    batch = state.pending()
    # NOTE: layers in the ranking's order as it is now, as the sequential search writes them
    layers = [tuple(n for n in state.ranked if n in s) for s in batch]
    plans = [base.set(ls, q) if ls else base for ls in layers]
    out = {}
    for i, metric, secs in _results(evaluate, plans, late):
        metric = {k: float(v) for k, v in metric.items()}
        out[batch[i]] = (layers[i], metric, secs)
        state.tell(batch[i], min(metric.values()))
        bar.update()
        bar.set_postfix(phase=state.phase, layers=len(layers[i]),
                        score=f"{min(metric.values()):.5f}")
    return out


def search(evaluate: Callable[[QuantPlan], Mapping[str, float]], base_plan: QuantPlan,
           target: float = FINAL, budget: int | None = None, qtype="U16",
           ranking: list[str] | str | None = None, resume: SearchResult | str | Path | None = None,
           progress: bool = True, max_drop: float | None = None,
           max_seconds: float | None = None) -> SearchResult:
    """Find the fewest layers to promote to ``qtype`` so that every output reaches ``target``.

    Args:
        evaluate: ``evaluate(plan) -> {output: score}`` (higher is better), without side
            effects, e.g. :meth:`axnb.Workbench.evaluator`; its ``metric`` and ``context``
            attributes (if any) are recorded, and a resumed search must match them. One with
            ``evaluate_many(plans, stop)`` (yielding ``(index, scores, seconds)`` as plans
            complete; the evaluators of a Workbench on a Dask cluster) gets each batch of
            independent plans at once, and ``concurrent - 1`` speculative prune candidates
            (``concurrent``: how many plans it runs side by side without slowing each,
            default 1; module docstring).
        base_plan: the plan to start from (the promotions are added to it).
        target: the score every output must reach (cosine: 0.98 as in Pulsar2's guide).
        budget: most evaluations (resumed ones included); None = no limit.
        qtype: the promotion type: U16 (default), S16 or FP32.
        ranking: layers (or tensors) worst first, e.g. from an isolation report; only these
            are candidates. None = the evaluator's own cheap ranking if it has one
            (``evaluate.rank(plan)``: a Workbench's evaluators order every layer below
            ``qtype`` by the PerLayer table, one compare pass), else ``"each"``: rank every
            layer below ``qtype`` by one evaluation each (N evaluations, a better order).
        resume: a previous result (or its JSON path): its evaluations are reused, not re-run.
        progress: show a progress bar.
        max_drop: instead of ``target``, the largest accepted task-metric drop (metric units,
            0.01 = 1 point of top-1); needs a task evaluator
            (:class:`axnb.evaluators.TaskEvaluator`), whose float score minus ``max_drop``
            becomes the target.
        max_seconds: start no new evaluation once the search has run this long (a resumed
            search's earlier seconds included, like ``budget``); then ``stopped="time"``.

    Returns:
        SearchResult (see the module docstring for the algorithm); ``.apply(wb)`` adopts it.

    Example:
        >>> res = search(wb.evaluator(), wb.plan, target=0.98, budget=50)   # doctest: +SKIP
        >>> res.promoted, res.final                                       # doctest: +SKIP
        >>> search(wb.evaluator(), wb.plan, max_seconds=60).stopped       # doctest: +SKIP
        'time'
    """
    from tqdm.auto import tqdm

    if max_drop is not None:
        target = _drop_target(evaluate, max_drop)
    q, base = _qtype(qtype), base_plan
    base_configs, ctx = base.to_layer_configs(), _context(evaluate, q)
    prev = _previous(resume, ctx, base_configs)
    old = [dataclasses.replace(e, ok=e.score >= target) for e in (prev.trace if prev else ())]
    ranking = _default_ranking(evaluate, base, q, ranking)
    cands = base.candidates(below=q) if ranking is None else _node_names(base.model, ranking)
    # NOTE: speculating only pays where plans run side by side (a Dask cluster's threads)
    side = int(getattr(evaluate, "concurrent", 1)) if hasattr(evaluate, "evaluate_many") else 1
    state = SearchState(cands, target, budget, old, rank=ranking is None,
                        speculate=max(0, side - 1))
    t0, before = time.perf_counter(), prev.seconds if prev else 0.0

    def late() -> bool:
        return max_seconds is not None and before + time.perf_counter() - t0 >= max_seconds

    done: dict[frozenset, tuple] = {}
    bar = tqdm(total=budget, desc="search", disable=not progress, initial=len(old))
    try:
        while state.pending():
            if late():
                state.stop("time")
                continue
            got = _run_batch(evaluate, state, base, q, late, bar)
            if not got and not late():
                raise AxnbError("search: the evaluator's evaluate_many gave no result for "
                                f"{len(state.pending())} plans (it must yield (index, scores, "
                                "seconds) for each plan it starts)")
            done.update(got)
    finally:
        bar.close()
    trace = old + [Evaluation(done[s][0], done[s][1], min(done[s][1].values()) >= target,
                              done[s][2], phase) for s, phase in state.log]
    by_set = {frozenset(e.plan_layers): e.metric for e in trace}
    nonfinite = _nonfinite(evaluate, base, by_set.get(frozenset(), {}))
    return SearchResult(
        promoted=state.promoted, qtype=q, target=state.target, metric_name=ctx["metric"],
        met=state.met, baseline=by_set.get(frozenset(), {}),
        final=by_set.get(frozenset(state.promoted), {}), trace=tuple(trace),
        evaluations=len(by_set), seconds=time.perf_counter() - t0 + before,
        budget=budget, stopped=state.stopped, ranking=tuple(state.ranked),
        base_layer_configs=tuple(base_configs), context=ctx, base_plan=base,
        max_seconds=max_seconds, nonfinite=nonfinite)


def _nonfinite(evaluate, plan: QuantPlan, scores: Mapping[str, float]) -> dict | None:
    """Where a NaN/Inf baseline starts (the evaluator's ``locate(plan)``, the first non-finite
    tensor of the EndToEnd table), with a :class:`~axnb.errors.NonFiniteWarning`: a search
    never starts from a silent NaN."""
    bad = [o for o, v in scores.items() if not math.isfinite(v)]
    if not bad:
        return None
    locate = getattr(evaluate, "locate", None)
    info = locate(plan) if locate is not None else None
    where = nonfinite_text(info) if info else "the evaluator cannot say where it starts"
    warnings.warn(f"search: the baseline score of {', '.join(bad)} is NaN/Inf: {where}",
                  NonFiniteWarning, stacklevel=3)
    return info
