"""The layer-by-layer precision table: :class:`LayerReport` (rendering lives in axnb.view)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from axnb.results.serialize import load_json, save_json
from axnb.results.serialize import plain as _plain
from axnb.types import Col


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
        """The ``n`` rows with the lowest cosine (NaN first), as a DataFrame."""
        df = self.to_frame()
        return df.sort_values(Col.COSINE, ascending=True, kind="stable",
                              na_position="first").head(n)

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
