"""Calibration results: :class:`CalibStats` (the observers) and :class:`OutlierReport`."""

from __future__ import annotations

import dataclasses
import io
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from axnb.errors import AxnbError, did_you_mean
from axnb.files import write_bytes
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


@dataclass(frozen=True)
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
    follows: dict[str, str] = field(default_factory=dict)
    # NOTE: the layer-input moments weight fixes are computed from (axnb.recover.collect): not
    # saved with the statistics (recomputed in one float pass when a fix needs them).
    moments: Mapping = field(default_factory=dict, compare=False, repr=False)

    def with_moments(self, moments: Mapping) -> CalibStats:
        """These statistics with the layer-input moments of :func:`axnb.recover.collect`
        attached (returns self). NOTE: in place: they are derived data of the same model and
        calibration set, so every holder of these statistics (a Workbench's cached rewrites,
        an evaluator) sees them, and no number computed before changes."""
        object.__setattr__(self, "moments", moments)
        return self

    @property
    def has_histograms(self) -> bool:
        # NOTE: any, not all: tensors that take their source's range (Model.shares) have none
        return any(o.has_histogram for o in self.activations.values())

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
        # NOTE: a reshape / slice / pool output has its source's range (``follows``: no
        # requantization in a deployed model; it keeps no histogram of its own)
        o = self.observer(self.follows.get(tensor, tensor))
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
        return dataclasses.replace(self, method=m)

    def merge(self, other: CalibStats) -> CalibStats:
        """Statistics of both calibration sets, as if collected in one pass."""
        acts = {t: o.merge(other.activations[t]) for t, o in self.activations.items()}
        return CalibStats(acts, self.weights, self.method, self.samples + other.samples,
                          self.shapes, self.percentile, self.follows)

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
                "percentile": self.percentile, "follows": self.follows,
                "shapes": {k: list(v) for k, v in self.shapes.items()}}
        return write_bytes(Path(path), _pack({"a": self.activations, "w": self.weights}, meta))

    @classmethod
    def load(cls, path: str | Path) -> CalibStats:
        meta, g = _unpack(Path(path))
        if meta.get("kind") != "CalibStats":
            raise AxnbError(f"{path}: not a saved CalibStats file")
        return cls(g.get("a", {}), g.get("w", {}), CalibMethod(meta["method"]), meta["samples"],
                   {k: tuple(v) for k, v in meta["shapes"].items()}, meta["percentile"],
                   meta.get("follows", {}))

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


class OCol:
    """Column names of the outlier table, spelled as Pulsar2 prints them."""

    TENSOR = "Op outputs"
    OP_TYPE = "Op type"
    CHANNELS = "Channels"
    SPARSE = "Sparse channel ratio"
    MAX_LEVEL = "Max level"

    @staticmethod
    def level(k: int) -> str:
        """``level>=k ratio``."""
        return f"level>={k} ratio"


@dataclass(frozen=True)
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

        cols = [OCol.TENSOR, OCol.OP_TYPE, OCol.CHANNELS, OCol.SPARSE,
                *[OCol.level(k) for k in OUTLIER_LEVELS], OCol.MAX_LEVEL]
        df = pd.DataFrame(self.rows, columns=cols)
        if not show_all:
            df = df[(df[OCol.level(3)] > 0) | (df[OCol.SPARSE] > 0)]
        keys = [OCol.level(k) for k in reversed(OUTLIER_LEVELS)] + [OCol.SPARSE]
        return df.sort_values(keys, ascending=False, kind="stable").reset_index(drop=True)

    def worst(self, n: int = 10):
        return self.to_frame().head(n)

    def tensors_at_level(self, k: int = 5) -> list[str]:
        """Tensors with at least one channel at level >= k."""
        return [r[OCol.TENSOR] for r in self.rows if r[OCol.level(k)] > 0]

    def save(self, path: str | Path) -> Path:
        return write_bytes(Path(path), json.dumps({"kind": self.kind, "rows": self.rows},
                                                    indent=1).encode())

    @classmethod
    def load(cls, path: str | Path) -> OutlierReport:
        d = json.loads(Path(path).read_text())
        return cls(d["rows"], d["kind"])

    def _repr_html_(self) -> str:
        return (f"<p>Outliers ({self.kind}s): {len(self.rows)} tensors, "
                f"{len(self.tensors_at_level(5))} with level>=5 channels</p>"
                + self.to_frame().to_html(max_rows=30))
