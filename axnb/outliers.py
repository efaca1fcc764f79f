"""The outlier table: which tensors have channels that per-tensor quantization starves.

A tensor whose largest channel is 2**k times larger than channel c leaves c with k fewer bits
under one per-tensor scale. Many channels at level >= 5 are what SmoothQuant (or U16) fixes.
Definitions are in :class:`axnb.results.OutlierReport`.

Example:
    >>> rep = outliers(stats, model)      # doctest: +SKIP
    >>> rep.to_frame()                    # doctest: +SKIP
"""

from __future__ import annotations

import numpy as np

from axnb.results import OUTLIER_LEVELS, CalibStats, OCol, OutlierReport


def channel_levels(absmax: np.ndarray) -> np.ndarray:
    """level_c = log2(max absmax / absmax_c); inf for all-zero (sparse) channels.

    Example:
        >>> channel_levels(np.array([8.0, 1.0, 0.25, 0.0])).tolist()
        [0.0, 3.0, 5.0, inf]
    """
    a = np.abs(np.asarray(absmax, np.float64)).ravel()
    top = a.max() if a.size else 0.0
    with np.errstate(divide="ignore"):
        return np.where(a > 0, np.log2(top / np.where(a > 0, a, 1.0)), np.inf) if top > 0 \
            else np.full(a.shape, np.inf)


def outlier_row(name: str, absmax: np.ndarray, op_type: str = "") -> dict:
    """One row of the table from a tensor's per-channel absolute maxima."""
    lv = channel_levels(absmax)
    n = max(lv.size, 1)
    finite = lv[np.isfinite(lv)]
    row = {OCol.TENSOR: name, OCol.OP_TYPE: op_type, OCol.CHANNELS: int(lv.size),
           OCol.SPARSE: float(np.isinf(lv).sum() / n)}
    for k in OUTLIER_LEVELS:
        row[OCol.level(k)] = float((finite >= k).sum() / n)
    row[OCol.MAX_LEVEL] = float(finite.max()) if finite.size else 0.0
    return row


def outliers(stats: CalibStats, model=None, weights: bool = False) -> OutlierReport:
    """The outlier table of every activation (or weight) that has per-channel statistics.

    Args:
        stats: calibration statistics.
        model: optional :class:`axnb.graph.Model`, to fill the "Op type" column.
        weights: tabulate weights per output channel instead of activations.

    Returns:
        OutlierReport; ``to_frame()`` shows tensors with level>=3 or sparse channels, worst
        first (``show_all=True`` for every tensor).
    """
    obs = stats.weights if weights else stats.activations
    rows = []
    for name, o in obs.items():
        if o.channel_absmax is None or np.size(o.channel_absmax) < 2:
            continue
        rows.append(outlier_row(name, o.channel_absmax, _op_type(model, name, weights)))
    return OutlierReport(rows, "weight" if weights else "activation")


def _op_type(model, name: str, weights: bool) -> str:
    if model is None:
        return ""
    if weights:
        users = model.consumers.get(name, [])
        return users[0].op_type if users else ""
    node = model.node_of(name)
    return node.op_type if node is not None else "Input"
