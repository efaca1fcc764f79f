"""Frozen, saveable results: ``CalibStats`` and ``OutlierReport``.

Every result gives ``to_frame()`` (a pandas DataFrame; pandas is imported on first use),
``save(path)`` / ``load(path)`` and an HTML repr for notebooks.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from axnb.errors import AxnbError, did_you_mean
from axnb.io import write_bytes as _atomic_write
from axnb.observers import Observer
from axnb.types import CalibMethod, QType, parse_enum

DEFAULT_PERCENTILE = 99.99


def _pack(groups: Mapping[str, Mapping[str, Observer]], meta: dict) -> bytes:
    arrays = {}
    for g, obs in groups.items():
        for i, (name, o) in enumerate(obs.items()):
            meta.setdefault(f"{g}_names", []).append(name)
            for k, v in o.to_arrays().items():
                arrays[f"{g}/{i}/{k}"] = v
    arrays["__meta__"] = np.frombuffer(json.dumps(meta).encode(), np.uint8)
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    return buf.getvalue()


def _unpack(path: Path) -> tuple[dict, dict[str, dict[str, Observer]]]:
    with np.load(path, allow_pickle=False) as z:
        meta = json.loads(z["__meta__"].tobytes().decode())
        per: dict[str, dict[int, dict[str, np.ndarray]]] = {}
        for key in z.files:
            if key == "__meta__":
                continue
            g, i, k = key.split("/", 2)
            per.setdefault(g, {}).setdefault(int(i), {})[k] = z[key]
    groups = {}
    for g, items in per.items():
        names = meta[f"{g}_names"]
        groups[g] = {names[i]: Observer.from_arrays(a) for i, a in sorted(items.items())}
    return meta, groups


@dataclass
class CalibStats:
    """Calibration statistics: one Observer per float activation tensor and per weight.

    Ranges for any method are computed on demand from the observers, so changing the
    calibration method never re-runs the model (histogram methods need ``has_histograms``).

    Example:
        >>> stats.range("x", "Percentile")          # doctest: +SKIP
        (-2.1, 2.6)
        >>> stats.to_frame().head()                  # doctest: +SKIP
    """

    activations: dict[str, Observer]
    weights: dict[str, Observer] = field(default_factory=dict)
    method: CalibMethod = CalibMethod.MinMax
    samples: int = 0
    shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)
    percentile: float = DEFAULT_PERCENTILE

    @property
    def has_histograms(self) -> bool:
        return all(o.has_histogram for o in self.activations.values())

    def observer(self, tensor: str) -> Observer:
        """The observer of an activation or weight tensor; unknown names suggest the nearest."""
        o = self.activations.get(tensor) or self.weights.get(tensor)
        if o is None:
            names = list(self.activations) + list(self.weights)
            raise AxnbError(f"no calibration statistics for {tensor!r}"
                            f"{did_you_mean(tensor, names)}")
        return o

    def range(self, tensor: str, method=None, qtype=QType.U8) -> tuple[float, float]:
        """(lo, hi) quantization range of a tensor for ``method`` (default: self.method)."""
        m = parse_enum(CalibMethod, method or self.method, "calibration_method")
        o = self.observer(tensor)
        if m is not CalibMethod.MinMax and not o.has_histogram:
            raise AxnbError(f"{m.value} needs histograms, but these statistics were collected "
                            "with MinMax only; recalibrate with histograms=True")
        return o.range(m, parse_enum(QType, qtype, "qtype"), percentile=self.percentile)

    def ranges(self, method=None, qtypes: Mapping[str, QType] | None = None,
               tensors: Iterable[str] | None = None) -> dict[str, tuple[float, float]]:
        """Ranges of many activation tensors (qtypes per tensor, U8 by default)."""
        qtypes = qtypes or {}
        return {t: self.range(t, method, qtypes.get(t, QType.U8))
                for t in (tensors or self.activations)}

    def with_method(self, method) -> CalibStats:
        """The same statistics with another default method (no model run)."""
        m = parse_enum(CalibMethod, method, "calibration_method")
        if m is not CalibMethod.MinMax and not self.has_histograms:
            raise AxnbError(f"{m.value} needs histograms; recalibrate with histograms=True")
        return CalibStats(self.activations, self.weights, m, self.samples, self.shapes,
                          self.percentile)

    def merge(self, other: CalibStats) -> CalibStats:
        """Statistics of both calibration sets, as if collected in one pass."""
        acts = {t: o.merge(other.activations[t]) for t, o in self.activations.items()}
        return CalibStats(acts, self.weights, self.method, self.samples + other.samples,
                          self.shapes, self.percentile)

    def to_frame(self, methods: Iterable[str] | None = None):
        """One row per activation tensor: shape, min, max, and the range of each method."""
        import pandas as pd

        if methods is None:
            methods = ([m.value for m in CalibMethod] if self.has_histograms else ["MinMax"])
        rows = []
        for t, o in self.activations.items():
            row = {"tensor": t, "shape": "x".join(map(str, self.shapes.get(t, ()))),
                   "min": o.min, "max": o.max}
            for m in methods:
                lo, hi = self.range(t, m)
                row[f"{m} lo"], row[f"{m} hi"] = lo, hi
            row["nonfinite"] = o.nonfinite
            rows.append(row)
        return pd.DataFrame(rows).set_index("tensor")

    def save(self, path: str | Path) -> Path:
        """Write to a compressed ``.npz`` (temp name, then rename)."""
        meta = {"kind": "CalibStats", "method": self.method.value, "samples": self.samples,
                "percentile": self.percentile,
                "shapes": {k: list(v) for k, v in self.shapes.items()}}
        return _atomic_write(Path(path), _pack({"a": self.activations, "w": self.weights}, meta))

    @classmethod
    def load(cls, path: str | Path) -> CalibStats:
        meta, g = _unpack(Path(path))
        if meta.get("kind") != "CalibStats":
            raise AxnbError(f"{path}: not a saved CalibStats file")
        return cls(g.get("a", {}), g.get("w", {}), CalibMethod(meta["method"]), meta["samples"],
                   {k: tuple(v) for k, v in meta["shapes"].items()}, meta["percentile"])

    def _repr_html_(self) -> str:
        head = f"<p>CalibStats: {len(self.activations)} tensors, {len(self.weights)} weights, " \
               f"{self.samples} samples, method {self.method.value}</p>"
        return head + self.to_frame(["MinMax", self.method.value] if self.has_histograms
                                    else ["MinMax"]).to_html(max_rows=30)

    def __repr__(self) -> str:
        return (f"CalibStats({len(self.activations)} tensors, {len(self.weights)} weights, "
                f"{self.samples} samples, method={self.method.value}, "
                f"histograms={self.has_histograms})")


OUTLIER_LEVELS = (3, 4, 5, 6)


@dataclass
class OutlierReport:
    """Pulsar2's "Ratio of outliers in tensor [level=Log(Max_Pertensor/Max_Perchannel)]".

    One row per tensor with per-channel statistics. Definitions (absmax_c = max |x| of channel c
    over all calibration data):

    - level_c = log2(max_c' absmax_c' / absmax_c): the bits channel c loses to the largest
      channel when the tensor shares one per-tensor scale;
    - level>=k ratio = (channels with absmax_c > 0 and level_c >= k) / channels;
    - sparse channel ratio = (channels with absmax_c == 0, i.e. zero on all data) / channels.

    Example:
        >>> rep = axnb.outliers(stats)          # doctest: +SKIP
        >>> rep.to_frame().head()               # doctest: +SKIP
    """

    rows: list[dict]
    kind: str = "activation"

    def to_frame(self, show_all: bool = False):
        """The table, worst first; by default only tensors with level>=3 or sparse channels."""
        import pandas as pd

        cols = ["Op outputs", "Op type", "Channels", "Sparse channel ratio",
                *[f"level>={k} ratio" for k in OUTLIER_LEVELS], "Max level"]
        df = pd.DataFrame(self.rows, columns=cols)
        if not show_all:
            df = df[(df["level>=3 ratio"] > 0) | (df["Sparse channel ratio"] > 0)]
        keys = [f"level>={k} ratio" for k in reversed(OUTLIER_LEVELS)] + ["Sparse channel ratio"]
        return df.sort_values(keys, ascending=False, kind="stable").reset_index(drop=True)

    def worst(self, n: int = 10):
        return self.to_frame().head(n)

    def tensors_at_level(self, k: int = 5) -> list[str]:
        """Tensors with at least one channel at level >= k."""
        return [r["Op outputs"] for r in self.rows if r[f"level>={k} ratio"] > 0]

    def save(self, path: str | Path) -> Path:
        return _atomic_write(Path(path), json.dumps({"kind": self.kind, "rows": self.rows},
                                                    indent=1).encode())

    @classmethod
    def load(cls, path: str | Path) -> OutlierReport:
        d = json.loads(Path(path).read_text())
        return cls(d["rows"], d["kind"])

    def _repr_html_(self) -> str:
        return (f"<p>Outliers ({self.kind}s): {len(self.rows)} tensors, "
                f"{len(self.tensors_at_level(5))} with level>=5 channels</p>"
                + self.to_frame().to_html(max_rows=30))


@dataclass
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

    @property
    def title(self) -> str:
        return f"Quant Precision Table【{self.meta.get('method', '')} {self.meta.get('mode', '')}】"

    def to_frame(self):
        """The table as a pandas DataFrame (Shape as a tuple)."""
        import pandas as pd

        cols = self.meta.get("columns") or (list(self.rows[0]) if self.rows else [])
        df = pd.DataFrame(self.rows, columns=cols)
        if "Shape" in df:
            df["Shape"] = df["Shape"].map(lambda s: tuple(s) if isinstance(s, list) else s)
        return df

    def worst(self, n: int = 10):
        """The ``n`` rows with the lowest cosine (NaN first), as a DataFrame."""
        df = self.to_frame()
        return df.sort_values("Cosin", ascending=True, kind="stable",
                              na_position="first").head(n)

    def save(self, path: str | Path) -> Path:
        """Write JSON (inf/NaN kept as JSON's Infinity/NaN); temp name, then rename."""
        d = {"kind": "LayerReport", "rows": self.rows, "meta": self.meta, "final": self.final}
        return _atomic_write(Path(path), json.dumps(d, indent=1).encode())

    @classmethod
    def load(cls, path: str | Path) -> LayerReport:
        d = json.loads(Path(path).read_text())
        if d.get("kind") != "LayerReport":
            raise AxnbError(f"{path}: not a saved LayerReport file")
        return cls(d["rows"], d["meta"], d["final"])

    def to_rich(self, rows: int | None = None):
        """A rich Table (cosine coloured: >= 0.999 green, >= 0.99 yellow, else red)."""
        from rich.table import Table

        df = self.to_frame()
        fin = "; ".join(f"{o}: Cosin {m['Cosin']:.6f}" for o, m in self.final.items())
        notes = " ".join(self.meta.get("notes", []))
        t = Table(title=self.title, caption=f"{self.meta.get('samples')} samples (all used); "
                  f"final {fin}. {notes}".strip())
        for c in df.columns:
            t.add_column(c, justify="right" if df[c].dtype.kind == "f" else "left")
        for r in df.head(rows).itertuples(index=False):
            t.add_row(*[f"[{_cos_style(v)}]{_fmt(c, v)}[/]" if c == "Cosin" else _fmt(c, v)
                        for c, v in zip(df.columns, r)])
        return t

    def to_mermaid(self) -> str:
        """A mermaid ``graph TD``: a node per row's tensor (shape, types, cosine, MSE), edges
        labelled with op type and node name, nodes coloured by cosine."""
        def q(s) -> str:
            return str(s).replace('"', "#quot;").replace("|", "#124;")

        ids = {r["Output Tensor"]: f"t{i}" for i, r in enumerate(self.rows)}
        lines, cls = ["graph TD"], {"good": [], "warn": [], "bad": []}
        for r in self.rows:
            i, c = ids[r["Output Tensor"]], r["Cosin"]
            shape = "x".join(map(str, r.get("Shape", []))) or r.get("Operator", "")
            lines.append(f'  {i}["{q(r["Output Tensor"])}<br/>{shape}<br/>'
                         f'{r.get("DType", "FP32")}->{r["QDType"]}<br/>'
                         f'cos {c:.6f} mse {r["MSE"]:.3e}"]')
            cls[{"green": "good", "yellow": "warn"}.get(_cos_style(c), "bad")].append(i)
        for a, b, op, name in self.meta.get("edges", []):
            if a in ids and b in ids:
                lines.append(f'  {ids[a]} -->|"{q(op)} {q(name)}"| {ids[b]}')
        lines += [f"  classDef {k} fill:{f},stroke:{s}" for k, f, s in _MERMAID_CLASSES]
        lines += [f"  class {','.join(v)} {k}" for k, v in cls.items() if v]
        return "\n".join(lines) + "\n"

    def write_debug(self, out_dir: str | Path) -> tuple[Path, Path]:
        """Write Pulsar2's ``quant/debug/precision_analysis_table.txt`` (the rich table as wide
        plain text) and ``precision_analysis.mmd``; temp names, then rename."""
        from rich.console import Console

        d = Path(out_dir) / "quant" / "debug"
        con = Console(file=io.StringIO(), width=4000, record=True, color_system=None)
        con.print(self.to_rich())
        lines = [ln.rstrip() for ln in con.export_text().splitlines()]
        lines += ["", "Metrics:", *(f"  {f}" for f in self.meta.get("formulas", []))]
        text = "\n".join(lines) + "\n"
        return (_atomic_write(d / "precision_analysis_table.txt", text.encode()),
                _atomic_write(d / "precision_analysis.mmd", self.to_mermaid().encode()))

    def _repr_html_(self) -> str:
        import html

        fin = "; ".join(f"{html.escape(o)}: cosine {m['Cosin']:.6f}" for o, m in self.final.items())
        notes = "".join(f"<br/><i>{html.escape(n)}</i>" for n in self.meta.get("notes", []))
        return (f"<p><b>{html.escape(self.title)}</b> {len(self.rows)} rows, "
                f"{self.meta.get('samples', '?')} samples; final {fin}{notes}</p>"
                + self.to_frame().to_html(max_rows=40))

    def __repr__(self) -> str:
        fin = ", ".join(f"{o}={m['Cosin']:.5f}" for o, m in self.final.items())
        return (f"LayerReport({self.meta.get('method')} {self.meta.get('mode')}: "
                f"{len(self.rows)} rows, {self.meta.get('samples')} samples, final cosine {fin})")


_MERMAID_CLASSES = (("good", "#c8f7c5", "#2e7d32"), ("warn", "#fff3b0", "#b8860b"),
                    ("bad", "#ffc9c9", "#c62828"))


def _cos_style(v: float) -> str:
    """green / yellow / red for cosine >= 0.999 / >= 0.99 / below (NaN: red)."""
    return "green" if v >= 0.999 else "yellow" if v >= 0.99 else "red"


def _fmt(col: str, v) -> str:
    if isinstance(v, float):
        return f"{v:.6f}" if col.startswith(("Cosin", "Ref vs")) else \
            f"{v:.2f}" if col == "SQNR" else f"{v:.4e}"
    return str(tuple(v)) if isinstance(v, list) else str(v)
