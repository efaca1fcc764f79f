"""The layer-by-layer precision table: :class:`LayerReport` (rendering lives in axnb.view)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from axnb.metrics import silent_tensors
from axnb.results.serialize import load_json, save_json
from axnb.results.serialize import plain as _plain
from axnb.types import Col


def silent_rows(df) -> np.ndarray:
    """Where the rows of a table (DataFrame) are near-silent tensors
    (:func:`axnb.metrics.silent_tensors` of the ``Float RMS`` column; none without it).

    Example:
        >>> import pandas as pd
        >>> silent_rows(pd.DataFrame({"Cosin": [0.9, -0.4], "Float RMS": [1.0, 1e-5]})).tolist()
        [False, True]
    """
    if Col.RMS not in df:
        return np.zeros(len(df), bool)
    return silent_tensors(df[Col.RMS].to_numpy(np.float64))


def worst_order(df) -> np.ndarray:
    """Row positions of a table, worst first: non-finite cosines, then the cosine ascending;
    near-silent tensors (:func:`silent_rows`) last, whatever their cosine (their error is
    explained by their magnitude). The one worst-rows order of the tables, the terminal and
    the search ranking.

    Example:
        >>> import pandas as pd
        >>> df = pd.DataFrame({"Cosin": [0.99, -0.5, float("nan"), 0.9],
        ...                    "Float RMS": [1.0, 2e-5, 1.0, 0.8]})
        >>> worst_order(df).tolist()
        [2, 3, 0, 1]
    """
    cos = df[Col.COSINE].to_numpy(np.float64)
    return np.lexsort((cos, silent_rows(df), np.isfinite(cos)))


@dataclass(frozen=True)
class LayerReport:
    """A precision table: one row per tensor (EndToEnd/PerLayer) or per layer (isolation).

    Columns follow Pulsar2's ``Operator | Type | Output Tensor | Shape | DType | QDType | Cosin |
    MSE`` plus ``SQNR``, ``MaxAbs``, ``Source`` (why the tensor has its QDType) and ``Original
    Tensor`` (the name in the user's model before the float frontend). Metrics are means over the
    analysis samples of per-sample values; formulas in :mod:`axnb.metrics` and ``meta["formulas"]``.

    Attributes:
        rows: one dict per row, in graph order (isolation: worst first).
        meta: method, mode, samples, notes, columns, edges (tensor graph for the .mmd), ...
        final: model output -> metric -> value, for the whole quantized model (end to end).

    Example:
        >>> rep = axnb.compare(model, qmodel, feeds, method="PerLayer")   # doctest: +SKIP
        >>> rep.worst(5)[["Output Tensor", "Cosin"]]                      # doctest: +SKIP
    """

    rows: list[dict]
    meta: dict = field(default_factory=dict)
    final: dict[str, dict[str, float]] = field(default_factory=dict)

    @classmethod
    def from_frame(cls, df) -> LayerReport:
        """A report from a DataFrame with Pulsar2 columns; ``df.attrs["meta"]`` and
        ``df.attrs["final"]`` (optional) become ``meta`` and ``final``.

        Example:
            >>> import pandas as pd
            >>> LayerReport.from_frame(pd.DataFrame({"Cosin": [0.5]})).rows
            [{'Cosin': 0.5}]
        """
        meta = dict(df.attrs.get("meta", {}))
        meta.setdefault("columns", [str(c) for c in df.columns])
        rows = _plain(df.to_dict("records"))
        return cls(rows, meta, _plain(dict(df.attrs.get("final", {}))))

    @property
    def title(self) -> str:
        return f"Quant Precision Table【{self.meta.get('method', '')} {self.meta.get('mode', '')}】"

    def to_frame(self):
        """The table as a pandas DataFrame (Shape as a tuple)."""
        import pandas as pd

        cols = self.meta.get("columns") or (list(self.rows[0]) if self.rows else [])
        df = pd.DataFrame(self.rows, columns=cols)
        if Col.SHAPE in df:
            df[Col.SHAPE] = df[Col.SHAPE].map(lambda s: tuple(s) if isinstance(s, list) else s)
        return df

    def worst(self, n: int = 10):
        """The ``n`` rows with the lowest cosine, as a DataFrame (:func:`worst_order`: NaN first,
        near-silent tensors last)."""
        df = self.to_frame()
        return df.iloc[worst_order(df)].head(n)

    def save(self, path: str | Path) -> Path:
        """Write JSON (inf/NaN kept as JSON's Infinity/NaN); temp name, then rename."""
        return save_json(path, "LayerReport",
                         _plain({"rows": self.rows, "meta": self.meta, "final": self.final}))

    @classmethod
    def load(cls, path: str | Path) -> LayerReport:
        d = load_json(path, "LayerReport")
        return cls(d["rows"], d["meta"], d["final"])

    def _repr_html_(self) -> str:
        import html

        fin = "; ".join(f"{html.escape(o)}: cosine {m[Col.COSINE]:.6f}"
                        for o, m in self.final.items())
        notes = "".join(f"<br/><i>{html.escape(n)}</i>" for n in self.meta.get("notes", []))
        return (f"<p><b>{html.escape(self.title)}</b> {len(self.rows)} rows, "
                f"{self.meta.get('samples', '?')} samples; final {fin}{notes}</p>"
                + self.to_frame().to_html(max_rows=40))

    def __repr__(self) -> str:
        fin = ", ".join(f"{o}={m[Col.COSINE]:.5f}" for o, m in self.final.items())
        return (f"LayerReport({self.meta.get('method')} {self.meta.get('mode')}: "
                f"{len(self.rows)} rows, {self.meta.get('samples')} samples, final cosine {fin})")
